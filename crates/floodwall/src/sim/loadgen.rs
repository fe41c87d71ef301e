//! An open-loop HTTP load generator that does not hide overload.
//!
//! Most load generators are closed-loop: N clients each send a request, wait
//! for the answer, send the next. When the server slows down they slow down
//! with it, so the overload they were meant to measure never happens and the
//! latencies they report leave out the time requests *would* have waited
//! (coordinated omission). Real users do not wait for each other.
//!
//! This one is open-loop. Arrival `i` of a phase at `rate` req/s is due at
//! `phase start + i / rate`, fixed in advance; it is sent at that instant
//! whatever is outstanding. If the generator itself falls behind, the backlog
//! is sent at once (still open loop) and counted as `late`. Latency is
//! measured from the *scheduled* arrival, and each request's client timeout
//! runs from there too: a user who arrived at `t` gives up at
//! `t + client_timeout`. So the run ends at most one client timeout after the
//! schedule, and the number of requests is exactly what the schedule says.
//!
//! Results are bucketed by the second of the scheduled arrival, so "second 5"
//! means "what happened to the users who arrived during second 5".

use std::{
    fmt,
    ops::{Bound, RangeBounds},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use anyhow::{ensure, Context as _};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::{sync::mpsc, time::Instant};

/// An arrival dispatched more than this after its scheduled time counts as
/// `late`: the generator, not the server, was the bottleneck for it. tokio's
/// timer ticks every millisecond, so a millisecond or two is normal.
pub const LATE_AFTER: Duration = Duration::from_millis(5);

/// A stretch of the schedule at a constant arrival rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Phase {
    /// How long this phase lasts.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Arrivals per second during the phase; 0 means a quiet pause.
    pub rate_rps: f64,
}

impl Phase {
    /// How many arrivals the phase schedules: `duration × rate`, rounded.
    pub fn arrivals(&self) -> u64 {
        (self.duration.as_secs_f64() * self.rate_rps).round() as u64
    }
}

/// The whole load pattern: phases played back to back.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Schedule {
    /// The phases, in order.
    pub phases: Vec<Phase>,
}

impl Schedule {
    /// Total length of the schedule.
    pub fn duration(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// How many requests the schedule sends in total.
    pub fn total_requests(&self) -> u64 {
        self.phases.iter().map(Phase::arrivals).sum()
    }

    /// How many per-second rows a result has: the duration, rounded up.
    pub fn seconds(&self) -> usize {
        self.duration().as_secs_f64().ceil() as usize
    }

    /// Every arrival's offset from the start of the run, in order.
    pub fn arrivals(&self) -> impl Iterator<Item = Duration> + '_ {
        let mut phase_start = Duration::ZERO;
        self.phases.iter().flat_map(move |phase| {
            let start = phase_start;
            phase_start += phase.duration;
            let rate = phase.rate_rps;
            (0..phase.arrivals()).map(move |i| start + Duration::from_secs_f64(i as f64 / rate))
        })
    }
}

impl fmt::Display for Schedule {
    /// The same `10s@500,20s@1500` form [`parse_schedule`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, phase) in self.phases.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let duration = humantime::format_duration(phase.duration).to_string();
            write!(f, "{}@{}", duration.replace(' ', ""), phase.rate_rps)?;
        }
        Ok(())
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_schedule(s)
    }
}

/// Why a schedule string was refused; the message names the bad phase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule {input:?}: {reason} (expected phases like \"10s@500,20s@1500\": duration@requests-per-second)")]
pub struct ScheduleError {
    input: String,
    reason: String,
}

/// Parses `"10s@500,20s@1500,10s@500"`: comma-separated phases, each a
/// humantime duration (`500ms`, `10s`, `1m`), `@`, and a rate in req/s.
pub fn parse_schedule(input: &str) -> Result<Schedule, ScheduleError> {
    let fail = |reason: String| ScheduleError {
        input: input.to_owned(),
        reason,
    };
    if input.trim().is_empty() {
        return Err(fail("it is empty".into()));
    }
    let mut phases = Vec::new();
    for (n, part) in input.split(',').map(str::trim).enumerate() {
        let n = n + 1;
        let (duration, rate) = part
            .split_once('@')
            .ok_or_else(|| fail(format!("phase {n} {part:?} has no '@'")))?;
        let duration = humantime::parse_duration(duration.trim())
            .map_err(|e| fail(format!("phase {n} duration {duration:?}: {e}")))?;
        if duration.is_zero() {
            return Err(fail(format!("phase {n} lasts zero time")));
        }
        let rate_rps: f64 = rate
            .trim()
            .parse()
            .map_err(|_| fail(format!("phase {n} rate {rate:?} is not a number")))?;
        if !rate_rps.is_finite() || rate_rps < 0.0 {
            return Err(fail(format!(
                "phase {n} rate {rate:?} must be a finite number >= 0"
            )));
        }
        phases.push(Phase { duration, rate_rps });
    }
    Ok(Schedule { phases })
}

/// Headers for arrival number `i` (counted from 0 over the whole run). This
/// is where priority classes and tenants get mixed into the load.
pub type HeaderFn = Arc<dyn Fn(u64) -> Vec<(HeaderName, HeaderValue)> + Send + Sync>;

/// What to send, where, and what counts as good.
#[derive(Clone)]
pub struct LoadConfig {
    /// The URI every request GETs, e.g. `http://127.0.0.1:8080/`.
    pub target: Uri,
    /// When requests arrive.
    pub schedule: Schedule,
    /// A 2xx answer within this is "good": it counts toward goodput.
    pub slo: Duration,
    /// How long a user waits from its scheduled arrival before giving up.
    pub client_timeout: Duration,
    /// Optional per-arrival headers (priority class, tenant, ...).
    pub headers: Option<HeaderFn>,
    /// Optional progress bar: its length is set to the schedule's seconds
    /// and its position follows the run. See [`progress_bar`].
    pub progress: Option<ProgressBar>,
}

impl LoadConfig {
    /// A config with the demo's defaults: 250 ms SLO, 1 s client timeout,
    /// no extra headers, no progress bar.
    pub fn new(target: Uri, schedule: Schedule) -> Self {
        Self {
            target,
            schedule,
            slo: Duration::from_millis(250),
            client_timeout: Duration::from_secs(1),
            headers: None,
            progress: None,
        }
    }
}

impl fmt::Debug for LoadConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadConfig")
            .field("target", &self.target)
            .field("schedule", &self.schedule.to_string())
            .field("slo", &self.slo)
            .field("client_timeout", &self.client_timeout)
            .field("headers", &self.headers.as_ref().map(|_| "Fn(u64)"))
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// A progress bar in floodwall's style ("label [=====>   ] 7/20s"). indicatif
/// draws on stderr and stays hidden when stderr is not a terminal.
pub fn progress_bar(label: impl Into<String>) -> ProgressBar {
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len}s")
        .expect("static template is valid")
        .progress_chars("=> ");
    ProgressBar::new(0)
        .with_style(style)
        .with_prefix(label.into())
}

/// What happened to the users who arrived during one second of the schedule.
/// `sent = ok + rejected + upstream_errors + timeouts + other_status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SecondRow {
    /// Seconds since the start of the run.
    pub second: u64,
    /// Requests scheduled, and sent, in this second.
    pub sent: u64,
    /// 2xx answers.
    pub ok: u64,
    /// 2xx answers within the SLO: the goodput.
    pub ok_within_slo: u64,
    /// 503 or 429: the gate (or the server) said no, quickly.
    pub rejected: u64,
    /// Other 5xx answers, and connection or protocol errors.
    pub upstream_errors: u64,
    /// No complete answer within the client timeout.
    pub timeouts: u64,
    /// Any other status (1xx, 3xx, 4xx other than 429).
    pub other_status: u64,
    /// Sent more than [`LATE_AFTER`] after their scheduled time.
    pub late: u64,
}

impl SecondRow {
    fn add(&mut self, other: &SecondRow) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.ok_within_slo += other.ok_within_slo;
        self.rejected += other.rejected;
        self.upstream_errors += other.upstream_errors;
        self.timeouts += other.timeouts;
        self.other_status += other.other_status;
        self.late += other.late;
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
        let at = |q: f64| quantile(histogram, q).map(|d| d.as_secs_f64() * 1e3);
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
/// whole-run summary; the histograms behind the percentiles are kept for
/// range queries but not serialized.
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
    /// Wall time from the first arrival to the last answer or timeout.
    pub elapsed_ms: f64,
    /// The furthest behind schedule the generator ever was, in milliseconds.
    pub max_lateness_ms: f64,
    /// One row per second of the schedule.
    pub seconds: Vec<SecondRow>,
    /// The whole run at a glance: `summary(..)`, kept for serialization.
    pub overall: Summary,
    /// Whole-run histograms, 3 significant digits, microseconds.
    #[serde(skip)]
    success: Histogram<u64>,
    #[serde(skip)]
    rejection: Histogram<u64>,
    /// Per-second histograms, 2 significant digits (1%): enough for range
    /// percentiles and small enough for long runs.
    #[serde(skip)]
    success_by_second: Vec<Histogram<u64>>,
    #[serde(skip)]
    rejection_by_second: Vec<Histogram<u64>>,
}

impl LoadResult {
    /// The rows for a range of seconds, clamped to the run.
    pub fn rows(&self, range: impl RangeBounds<usize>) -> &[SecondRow] {
        let (start, end) = clamp(range, self.seconds.len());
        &self.seconds[start..end]
    }

    /// Totals, rates and percentiles over a range of seconds (`..` for the
    /// whole run, `4..16` for a spike).
    pub fn summary(&self, range: impl RangeBounds<usize>) -> Summary {
        let (start, end) = clamp(range, self.seconds.len());
        let mut totals = SecondRow {
            second: start as u64,
            ..SecondRow::default()
        };
        for row in &self.seconds[start..end] {
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
        let whole = start == 0 && end == self.seconds.len();
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
            goodput_rps: if seconds == 0 {
                0.0
            } else {
                totals.ok_within_slo as f64 / seconds as f64
            },
            percent_rejected: percent(totals.rejected),
            percent_timed_out: percent(totals.timeouts),
            percent_upstream_errors: percent(totals.upstream_errors),
            success_ms,
            rejection_ms,
        }
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
        let (start, end) = clamp(range, self.seconds.len());
        quantile(&merged(&self.success_by_second[start..end]), q)
    }

    /// Median 2xx latency over the whole run.
    pub fn p50(&self) -> Option<Duration> {
        quantile(&self.success, 0.5)
    }

    /// 99th percentile 2xx latency over the whole run.
    pub fn p99(&self) -> Option<Duration> {
        quantile(&self.success, 0.99)
    }
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

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new(sigfig).expect("sigfig 2 or 3 is valid")
}

/// Records with auto-resize; only a latency beyond `i64::MAX / 2` µs
/// could fail, and that one is clamped rather than lost.
fn record(histogram: &mut Histogram<u64>, micros: u64) {
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

/// Plays the schedule against the target and measures every answer.
///
/// Uses one pooled HTTP/1.1 keep-alive client; it opens as many connections
/// as there are outstanding requests and keeps them all for reuse.
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadResult> {
    ensure!(
        config.target.scheme_str() == Some("http") && config.target.authority().is_some(),
        "load target must be an http://host:port/ URI, got {}",
        config.target
    );
    ensure!(
        !config.client_timeout.is_zero(),
        "client timeout must be greater than zero"
    );
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .pool_timer(TokioTimer::new())
        .build(connector);

    let seconds = config.schedule.seconds();
    if let Some(bar) = &config.progress {
        bar.set_length(seconds as u64);
        bar.set_position(0);
    }
    let (samples_tx, samples_rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let ticker = config.progress.clone().map(|bar| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                bar.set_position(start.elapsed().as_secs().min(seconds as u64));
            }
        })
    });

    let dispatch = dispatch(&config, &client, start, samples_tx);
    let collect = collect(samples_rx, seconds, config.slo);
    let ((), collected) = tokio::join!(dispatch, collect);
    let elapsed = start.elapsed();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Some(bar) = &config.progress {
        bar.set_position(seconds as u64);
    }

    let mut result = LoadResult {
        target: config.target.to_string(),
        schedule: config.schedule.clone(),
        slo_ms: config.slo.as_secs_f64() * 1e3,
        client_timeout_ms: config.client_timeout.as_secs_f64() * 1e3,
        elapsed_ms: elapsed.as_secs_f64() * 1e3,
        max_lateness_ms: collected.max_lateness.as_secs_f64() * 1e3,
        seconds: collected.rows,
        overall: Summary::default(),
        success: collected.success,
        rejection: collected.rejection,
        success_by_second: collected.success_by_second,
        rejection_by_second: collected.rejection_by_second,
    };
    result.overall = result.summary(..);
    Ok(result)
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Rejected,
    UpstreamError,
    Timeout,
    OtherStatus,
}

impl Answer {
    fn of(status: StatusCode) -> Self {
        match status {
            s if s.is_success() => Answer::Ok,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => Answer::Rejected,
            s if s.is_server_error() => Answer::UpstreamError,
            _ => Answer::OtherStatus,
        }
    }
}

struct Sample {
    second: usize,
    answer: Answer,
    latency: Duration,
    lateness: Duration,
}

/// Sends every arrival at its scheduled instant, each in its own task.
async fn dispatch(
    config: &LoadConfig,
    client: &Client<HttpConnector, Empty<Bytes>>,
    start: Instant,
    samples: mpsc::UnboundedSender<Sample>,
) {
    let mut behind_in_a_row = 0u32;
    for (index, offset) in config.schedule.arrivals().enumerate() {
        let due = start + offset;
        if Instant::now() < due {
            behind_in_a_row = 0;
            tokio::time::sleep_until(due).await;
        } else {
            // Catching up on a backlog: still send at once, but let the
            // request tasks run now and then on a small runtime.
            behind_in_a_row += 1;
            if behind_in_a_row % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let lateness = Instant::now().saturating_duration_since(due);

        let mut request = Request::new(Empty::new());
        *request.uri_mut() = config.target.clone();
        if let Some(headers) = &config.headers {
            for (name, value) in headers(index as u64) {
                request.headers_mut().append(name, value);
            }
        }
        let client = client.clone();
        let samples = samples.clone();
        let deadline = due + config.client_timeout;
        let second = offset.as_secs() as usize;
        tokio::spawn(async move {
            let answer = match tokio::time::timeout_at(deadline, exchange(&client, request)).await {
                Err(_elapsed) => Answer::Timeout,
                Ok(Err(_connection_or_protocol_error)) => Answer::UpstreamError,
                Ok(Ok(status)) => Answer::of(status),
            };
            let latency = Instant::now().saturating_duration_since(due);
            let _ = samples.send(Sample {
                second,
                answer,
                latency,
                lateness,
            });
        });
    }
}

/// One request and its whole body: an answer is not in until it is read.
async fn exchange(
    client: &Client<HttpConnector, Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
) -> anyhow::Result<StatusCode> {
    let response = client.request(request).await.context("request failed")?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .context("reading the body failed")?;
    Ok(status)
}

struct Collected {
    rows: Vec<SecondRow>,
    success: Histogram<u64>,
    rejection: Histogram<u64>,
    success_by_second: Vec<Histogram<u64>>,
    rejection_by_second: Vec<Histogram<u64>>,
    max_lateness: Duration,
}

/// Folds samples into rows and histograms until every request task is done.
async fn collect(
    mut samples: mpsc::UnboundedReceiver<Sample>,
    seconds: usize,
    slo: Duration,
) -> Collected {
    let mut c = Collected {
        rows: (0..seconds as u64)
            .map(|second| SecondRow {
                second,
                ..SecondRow::default()
            })
            .collect(),
        success: histogram(3),
        rejection: histogram(3),
        success_by_second: (0..seconds).map(|_| histogram(2)).collect(),
        rejection_by_second: (0..seconds).map(|_| histogram(2)).collect(),
        max_lateness: Duration::ZERO,
    };
    while let Some(sample) = samples.recv().await {
        let Some(row) = c.rows.get_mut(sample.second) else {
            continue; // cannot happen: arrivals lie within the schedule
        };
        let micros = sample.latency.as_micros().min(u64::MAX as u128) as u64;
        row.sent += 1;
        if sample.lateness > LATE_AFTER {
            row.late += 1;
        }
        c.max_lateness = c.max_lateness.max(sample.lateness);
        match sample.answer {
            Answer::Ok => {
                row.ok += 1;
                if sample.latency <= slo {
                    row.ok_within_slo += 1;
                }
                record(&mut c.success, micros);
                record(&mut c.success_by_second[sample.second], micros);
            }
            Answer::Rejected => {
                row.rejected += 1;
                record(&mut c.rejection, micros);
                record(&mut c.rejection_by_second[sample.second], micros);
            }
            Answer::UpstreamError => row.upstream_errors += 1,
            Answer::Timeout => row.timeouts += 1,
            Answer::OtherStatus => row.other_status += 1,
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::backend;

    #[test]
    fn parses_the_example() {
        let schedule = parse_schedule("10s@500,20s@1500,10s@500").unwrap();
        assert_eq!(
            schedule.phases,
            vec![
                Phase {
                    duration: Duration::from_secs(10),
                    rate_rps: 500.0
                },
                Phase {
                    duration: Duration::from_secs(20),
                    rate_rps: 1500.0
                },
                Phase {
                    duration: Duration::from_secs(10),
                    rate_rps: 500.0
                },
            ]
        );
        assert_eq!(schedule.duration(), Duration::from_secs(40));
        assert_eq!(schedule.total_requests(), 5_000 + 30_000 + 5_000);
        assert_eq!(schedule.to_string(), "10s@500,20s@1500,10s@500");
        assert_eq!(schedule.to_string().parse::<Schedule>().unwrap(), schedule);
        let fractional: Schedule = " 500ms @ 2.5 , 1m30s@0".parse().unwrap();
        assert_eq!(fractional.duration(), Duration::from_millis(90_500));
        assert_eq!(fractional.seconds(), 91);
    }

    #[test]
    fn rejects_garbage_with_a_clear_error() {
        for (input, mentions) in [
            ("", "empty"),
            ("garbage", "phase 1 \"garbage\" has no '@'"),
            ("10s@500,abc@5", "phase 2 duration \"abc\""),
            ("10s@fast", "phase 1 rate \"fast\" is not a number"),
            ("10s@-5", "must be a finite number >= 0"),
            ("10s@inf", "must be a finite number >= 0"),
            ("0s@5", "zero time"),
            ("10s@500,", "phase 2"),
        ] {
            let err = parse_schedule(input).unwrap_err().to_string();
            assert!(err.contains(mentions), "{input:?} gave {err:?}");
            assert!(err.contains("10s@500,20s@1500"), "hint missing: {err}");
        }
    }

    #[test]
    fn arrivals_follow_the_phases() {
        let schedule = parse_schedule("1s@4,500ms@0,1s@2").unwrap();
        let arrivals: Vec<_> = schedule.arrivals().map(|d| d.as_millis()).collect();
        assert_eq!(arrivals, vec![0, 250, 500, 750, 1500, 2000]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_the_schedule_open_loop_against_a_trivial_backend() {
        let backend = backend::start_trivial().await.unwrap();
        let target: Uri = format!("http://{}/", backend.addr).parse().unwrap();
        let tenant = HeaderName::from_static("x-tenant");
        let mut config = LoadConfig::new(target, parse_schedule("2s@1000").unwrap());
        config.headers = Some(Arc::new(move |i| {
            vec![(tenant.clone(), HeaderValue::from(i % 3))]
        }));
        let result = run(config).await.unwrap();

        let total = result.summary(..).totals;
        assert!((1960..=2040).contains(&total.sent), "{total:?}");
        assert_eq!(total.ok, total.sent, "{total:?}");
        assert_eq!(total.ok_within_slo, total.sent, "{total:?}");
        assert_eq!(backend.stats().completed, total.sent);
        assert_eq!(result.seconds.len(), 2);
        for row in &result.seconds {
            assert!((980..=1020).contains(&row.sent), "{row:?}");
        }
        let p50 = result.p50().unwrap();
        assert!(
            p50 > Duration::ZERO && p50 < Duration::from_millis(50),
            "{p50:?}"
        );
        assert!(result.p99().unwrap() >= p50);
        assert!(result.elapsed_ms < 3_000.0, "{}", result.elapsed_ms);
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["overall"]["totals"]["sent"], total.sent);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_timeouts_and_connection_errors_and_stops_after_one_timeout() {
        // Workers 1 × 200 ms: 5 req/s capacity against 20 req/s.
        let slow = backend::start(backend::BackendConfig {
            workers: 1,
            service_time: Duration::from_millis(200),
            contention: 0.0,
        })
        .await
        .unwrap();
        let mut config = LoadConfig::new(
            format!("http://{}/", slow.addr).parse().unwrap(),
            parse_schedule("1s@20").unwrap(),
        );
        config.client_timeout = Duration::from_millis(300);
        let result = run(config).await.unwrap();
        let s = result.summary(..);
        assert_eq!(s.totals.sent, 20);
        assert!(s.totals.ok >= 1 && s.totals.ok <= 3, "{s:?}");
        assert!(s.totals.timeouts >= 17, "{s:?}");
        assert!(s.percent_timed_out >= 85.0, "{s:?}");
        assert!(result.elapsed_ms < 1_000.0 + 300.0 + 100.0, "{result:?}");
        // The one success waited its 200 ms of service, measured from arrival.
        let p50 = s.success_ms.p50.unwrap();
        assert!((195.0..300.0).contains(&p50), "{s:?}");

        // A closed port: every request is an upstream (connection) error.
        let closed = backend::start_trivial().await.unwrap();
        let addr = closed.addr;
        closed.shutdown().await;
        let result = run(LoadConfig::new(
            format!("http://{addr}/").parse().unwrap(),
            parse_schedule("200ms@50").unwrap(),
        ))
        .await
        .unwrap();
        assert_eq!(result.summary(..).totals.upstream_errors, 10, "{result:?}");
    }

    #[test]
    fn range_helpers_clamp() {
        assert_eq!(clamp(.., 5), (0, 5));
        assert_eq!(clamp(2..4, 5), (2, 4));
        assert_eq!(clamp(3..=10, 5), (3, 5));
        assert_eq!(clamp(7.., 5), (5, 5));
    }
}
