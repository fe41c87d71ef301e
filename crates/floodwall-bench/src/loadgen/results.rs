//! What a run measured: per-second rows, summaries over ranges of seconds,
//! and the latency histograms behind them, overall and per traffic group.

use std::{
    ops::{Bound, RangeBounds},
    time::Duration,
};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{RetryPolicy, Schedule};

/// One second of the run.
///
/// The outcome columns (`sent` to `late`) are about the users who *arrived*
/// during this second: `sent = ok + rejected + upstream_errors + timeouts +
/// other_status`, each counted once by its final outcome however many times
/// it retried. The load columns (`retries`, `on_wire`) count HTTP requests
/// put on the wire *during* this second, whoever they belong to. Anything put
/// on the wire after the schedule's last second (retries while the run
/// drains) is counted in the last row; end a schedule with a quiet phase to
/// see the drain second by second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SecondRow {
    /// Seconds since the start of the run.
    pub second: u64,
    /// Users scheduled, and sent their first attempt, in this second.
    pub sent: u64,
    /// 2xx answers.
    pub ok: u64,
    /// 2xx answers within the SLO: the goodput.
    pub ok_within_slo: u64,
    /// 503 or 429 (on the last attempt): the gate or the server said no.
    pub rejected: u64,
    /// Other 5xx answers, and connection or protocol errors.
    pub upstream_errors: u64,
    /// No complete answer within the client timeout.
    pub timeouts: u64,
    /// Any other status (1xx, 3xx, 4xx other than 429).
    pub other_status: u64,
    /// First attempts sent more than [`LATE_AFTER`](super::LATE_AFTER) after their scheduled
    /// time.
    pub late: u64,
    /// Retries (attempts after the first) put on the wire in this second.
    pub retries: u64,
    /// Every request put on the wire in this second: first attempts (by when
    /// they were actually sent) plus retries.
    pub on_wire: u64,
}

impl SecondRow {
    pub(super) fn add(&mut self, other: &SecondRow) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.ok_within_slo += other.ok_within_slo;
        self.rejected += other.rejected;
        self.upstream_errors += other.upstream_errors;
        self.timeouts += other.timeouts;
        self.other_status += other.other_status;
        self.late += other.late;
        self.retries += other.retries;
        self.on_wire += other.on_wire;
    }
}

/// Latency percentiles in milliseconds; `None` when there were no samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Slowest.
    pub max: Option<f64>,
}

impl LatencyMs {
    fn of(histogram: &Histogram<u64>) -> Self {
        let at = |q: f64| quantile_ms(histogram, q);
        Self {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// Totals and rates over a range of seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// How many per-second rows the range covers.
    pub seconds: u64,
    /// The counts summed over the range (`second` is the first one).
    pub totals: SecondRow,
    /// 2xx within SLO per second.
    pub goodput_rps: f64,
    /// Requests put on the wire per second, retries included: compare with
    /// the schedule's rate to see retry amplification.
    pub on_wire_rps: f64,
    /// Share of sent requests rejected with 503/429, in percent.
    pub percent_rejected: f64,
    /// Share of sent requests that hit the client timeout, in percent.
    pub percent_timed_out: f64,
    /// Share of sent requests with other 5xx or connection errors, in percent.
    pub percent_upstream_errors: f64,
    /// Latency of 2xx answers, from scheduled arrival.
    pub success_ms: LatencyMs,
    /// Latency of 503/429 answers, from scheduled arrival.
    pub rejection_ms: LatencyMs,
}

/// Everything one run measured. Serializes to per-second rows plus a
/// whole-run summary, overall and per group; the histograms behind the
/// percentiles are kept for range queries but not serialized.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// The URI that was loaded.
    pub target: String,
    /// The schedule that was played.
    pub schedule: Schedule,
    /// The SLO used for `ok_within_slo`, in milliseconds.
    pub slo_ms: f64,
    /// The client timeout, in milliseconds.
    pub client_timeout_ms: f64,
    /// What users did when refused.
    pub retry: RetryPolicy,
    /// Wall time from the first arrival to the last answer or timeout.
    pub elapsed_ms: f64,
    /// Wall time from the start to the last first attempt put on the wire:
    /// the schedule's length if the generator kept up.
    pub dispatch_ms: f64,
    /// The furthest behind schedule the generator ever was, in milliseconds.
    pub max_lateness_ms: f64,
    /// One row per second of the schedule.
    pub seconds: Vec<SecondRow>,
    /// The whole run at a glance: `summary(..)`, kept for serialization.
    pub overall: Summary,
    /// The same, group by group, in the order of [`LoadConfig::mix`](super::LoadConfig::mix) (or
    /// the one group `"all"`).
    pub groups: Vec<GroupResult>,
    #[serde(skip)]
    pub(super) histograms: Histograms,
}

impl LoadResult {
    /// One group's results by name, with the same range queries as the
    /// whole run; `None` if the mix had no such group.
    pub fn group(&self, name: &str) -> Option<&GroupResult> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The rows for a range of seconds, clamped to the run.
    pub fn rows(&self, range: impl RangeBounds<usize>) -> &[SecondRow] {
        rows(&self.seconds, range)
    }

    /// Totals, rates and percentiles over a range of seconds (`..` for the
    /// whole run, `4..16` for a spike).
    pub fn summary(&self, range: impl RangeBounds<usize>) -> Summary {
        self.histograms.summary(&self.seconds, range)
    }

    /// 2xx within SLO per second over a range of seconds.
    pub fn goodput_rps(&self, range: impl RangeBounds<usize>) -> f64 {
        self.summary(range).goodput_rps
    }

    /// Share of requests rejected (503/429) over a range, in percent.
    pub fn percent_rejected(&self, range: impl RangeBounds<usize>) -> f64 {
        self.summary(range).percent_rejected
    }

    /// Share of requests that timed out over a range, in percent.
    pub fn percent_timed_out(&self, range: impl RangeBounds<usize>) -> f64 {
        self.summary(range).percent_timed_out
    }

    /// The `q` quantile (0..=1) of 2xx latency over a range of seconds.
    pub fn success_latency(&self, range: impl RangeBounds<usize>, q: f64) -> Option<Duration> {
        self.histograms.success_latency(range, q)
    }

    /// Median 2xx latency over the whole run.
    pub fn p50(&self) -> Option<Duration> {
        quantile(&self.histograms.success, 0.5)
    }

    /// 99th percentile 2xx latency over the whole run.
    pub fn p99(&self) -> Option<Duration> {
        quantile(&self.histograms.success, 0.99)
    }
}

/// What happened to one traffic group: the same rows, summary and range
/// queries as [`LoadResult`], restricted to the group's users.
#[derive(Debug, Clone, Serialize)]
pub struct GroupResult {
    /// The group's name from the mix.
    pub name: String,
    /// The group's weight from the mix.
    pub weight: f64,
    /// One row per second of the schedule, this group only.
    pub seconds: Vec<SecondRow>,
    /// The group's whole run: `summary(..)`, kept for serialization.
    pub overall: Summary,
    #[serde(skip)]
    pub(super) histograms: Histograms,
}

impl GroupResult {
    /// The rows for a range of seconds, clamped to the run.
    pub fn rows(&self, range: impl RangeBounds<usize>) -> &[SecondRow] {
        rows(&self.seconds, range)
    }

    /// Totals, rates and percentiles over a range of seconds.
    pub fn summary(&self, range: impl RangeBounds<usize>) -> Summary {
        self.histograms.summary(&self.seconds, range)
    }

    /// 2xx within SLO per second over a range of seconds.
    pub fn goodput_rps(&self, range: impl RangeBounds<usize>) -> f64 {
        self.summary(range).goodput_rps
    }

    /// Share of the group's requests rejected (503/429) over a range, in
    /// percent.
    pub fn percent_rejected(&self, range: impl RangeBounds<usize>) -> f64 {
        self.summary(range).percent_rejected
    }

    /// Share of the group's requests that timed out over a range, in percent.
    pub fn percent_timed_out(&self, range: impl RangeBounds<usize>) -> f64 {
        self.summary(range).percent_timed_out
    }

    /// The `q` quantile (0..=1) of the group's 2xx latency over a range.
    pub fn success_latency(&self, range: impl RangeBounds<usize>, q: f64) -> Option<Duration> {
        self.histograms.success_latency(range, q)
    }

    /// Median 2xx latency of the group over the whole run.
    pub fn p50(&self) -> Option<Duration> {
        quantile(&self.histograms.success, 0.5)
    }

    /// 99th percentile 2xx latency of the group over the whole run.
    pub fn p99(&self) -> Option<Duration> {
        quantile(&self.histograms.success, 0.99)
    }
}

/// The latency histograms behind one series of rows (the run or a group).
#[derive(Debug, Clone)]
pub(super) struct Histograms {
    /// Whole-run histograms, 3 significant digits, microseconds.
    pub(super) success: Histogram<u64>,
    pub(super) rejection: Histogram<u64>,
    /// Per-second histograms, 2 significant digits (1%): enough for range
    /// percentiles and small enough for long runs.
    pub(super) success_by_second: Vec<Histogram<u64>>,
    pub(super) rejection_by_second: Vec<Histogram<u64>>,
}

impl Histograms {
    pub(super) fn new(seconds: usize) -> Self {
        Self {
            success: histogram(3),
            rejection: histogram(3),
            success_by_second: (0..seconds).map(|_| histogram(2)).collect(),
            rejection_by_second: (0..seconds).map(|_| histogram(2)).collect(),
        }
    }

    pub(super) fn summary(&self, rows: &[SecondRow], range: impl RangeBounds<usize>) -> Summary {
        let (start, end) = clamp(range, rows.len());
        let mut totals = SecondRow {
            second: start as u64,
            ..SecondRow::default()
        };
        for row in &rows[start..end] {
            totals.add(row);
        }
        let seconds = (end - start) as u64;
        let percent = |n: u64| {
            if totals.sent == 0 {
                0.0
            } else {
                100.0 * n as f64 / totals.sent as f64
            }
        };
        let per_second = |n: u64| {
            if seconds == 0 {
                0.0
            } else {
                n as f64 / seconds as f64
            }
        };
        let whole = start == 0 && end == rows.len();
        let (success_ms, rejection_ms) = if whole {
            (LatencyMs::of(&self.success), LatencyMs::of(&self.rejection))
        } else {
            (
                LatencyMs::of(&merged(&self.success_by_second[start..end])),
                LatencyMs::of(&merged(&self.rejection_by_second[start..end])),
            )
        };
        Summary {
            seconds,
            totals,
            goodput_rps: per_second(totals.ok_within_slo),
            on_wire_rps: per_second(totals.on_wire),
            percent_rejected: percent(totals.rejected),
            percent_timed_out: percent(totals.timeouts),
            percent_upstream_errors: percent(totals.upstream_errors),
            success_ms,
            rejection_ms,
        }
    }

    fn success_latency(&self, range: impl RangeBounds<usize>, q: f64) -> Option<Duration> {
        let (start, end) = clamp(range, self.success_by_second.len());
        quantile(&merged(&self.success_by_second[start..end]), q)
    }
}

fn rows(rows: &[SecondRow], range: impl RangeBounds<usize>) -> &[SecondRow] {
    let (start, end) = clamp(range, rows.len());
    &rows[start..end]
}

fn clamp(range: impl RangeBounds<usize>, len: usize) -> (usize, usize) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => len,
    };
    let end = end.min(len);
    (start.min(end), end)
}

fn quantile(histogram: &Histogram<u64>, q: f64) -> Option<Duration> {
    (!histogram.is_empty()).then(|| Duration::from_micros(histogram.value_at_quantile(q)))
}

pub(super) fn quantile_ms(histogram: &Histogram<u64>, q: f64) -> Option<f64> {
    quantile(histogram, q).map(|d| d.as_secs_f64() * 1e3)
}

pub(super) fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new(sigfig).expect("sigfig 2 or 3 is valid")
}

/// Records with auto-resize; only a latency beyond `i64::MAX / 2` µs
/// could fail, and that one is clamped rather than lost.
pub(super) fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = latency.as_micros().min(u64::MAX as u128) as u64;
    if histogram.record(micros).is_err() {
        histogram.saturating_record(micros);
    }
}

fn merged(histograms: &[Histogram<u64>]) -> Histogram<u64> {
    let mut total = histogram(2);
    for h in histograms {
        total.add(h).expect("auto-resizing histograms always add");
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_helpers_clamp() {
        assert_eq!(clamp(.., 5), (0, 5));
        assert_eq!(clamp(2..4, 5), (2, 4));
        assert_eq!(clamp(3..=10, 5), (3, 5));
        assert_eq!(clamp(7.., 5), (5, 5));
    }
}
