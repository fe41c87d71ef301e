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
//!
//! # Traffic groups
//!
//! [`LoadConfig::mix`] splits the arrivals into named [`Group`]s by weight
//! (30% interactive / 70% batch; one hot tenant and twenty quiet ones), each
//! with its own headers, so a gate's classes and tenant caps see realistic
//! traffic. The split is deterministic: smooth weighted round-robin (the
//! algorithm nginx uses for upstream weights) gives every group its share to
//! within one request at every point of the run, with no randomness to make
//! two runs differ. Everything is recorded per group as well as overall:
//! [`LoadResult::group`].
//!
//! # Client retries
//!
//! [`LoadConfig::retry`] makes users retry when told 503 or 429, as many
//! real clients do, which is how an overloaded service gets a *retry storm*:
//! every refusal comes back as more load. A retry is another HTTP request for
//! the same user. The user's outcome is that of its last attempt, its latency
//! still runs from the original scheduled arrival, and it still gives up at
//! `arrival + client_timeout`: no retry is sent past that deadline, so the run
//! still ends by itself. Per second, rows count first attempts (`sent`)
//! apart from `retries`, and `on_wire` counts everything actually put on the
//! wire, so a storm shows as `on_wire` far above `sent`.
//!
//! # Closed loop and headroom
//!
//! Open loop is right for overload; for "how fast can it go at all" (the
//! overhead of a proxy against a fast backend) [`run_closed_loop`] keeps N
//! connections busy back to back. [`measure_headroom`] checks that the
//! generator itself is not the bottleneck at a given rate.

use std::{
    collections::HashSet,
    fmt,
    ops::{Bound, RangeBounds},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use anyhow::{ensure, Context as _};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, uri::Authority, HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::{net::TcpStream, sync::mpsc, time::Instant};

use super::backend;
use floodwall::respond::RETRY_AFTER_MS_HEADER;

/// An arrival dispatched more than this after its scheduled time counts as
/// `late`: the generator, not the server, was the bottleneck for it. tokio's
/// timer ticks every millisecond, so a millisecond or two is normal.
pub const LATE_AFTER: Duration = Duration::from_millis(5);

/// How long a [`RetryPolicy::HonourRetryAfter`] client waits when a 503 or
/// 429 carries no retry hint at all, as HAProxy's and nginx's refusals
/// usually do. One second is what `Retry-After: 1` would have said, and the
/// usual first step of client back-off schemes.
pub const DEFAULT_RETRY_WAIT: Duration = Duration::from_secs(1);

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

/// Headers for arrival number `i` (counted from 0 over the whole run), added
/// after the arrival's group headers. The escape hatch for mixes that
/// [`Group`] cannot express.
pub type HeaderFn = Arc<dyn Fn(u64) -> Vec<(HeaderName, HeaderValue)> + Send + Sync>;

/// One named slice of the traffic: its share of the arrivals and the headers
/// that make a gate treat it differently (a priority class, a tenant).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// What the results call this group; unique within a mix.
    pub name: String,
    /// Relative share of the arrivals: weights 3 and 7 (or 0.3 and 0.7) give
    /// 30% and 70%. Zero is allowed and sends nothing.
    pub weight: f64,
    /// Sent with every request of the group.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// One header whose value rotates through a list, request by request
    /// within the group: twenty tenants sharing one group's weight equally.
    pub tenant_pool: Option<(HeaderName, Vec<HeaderValue>)>,
}

impl Group {
    /// A group with no headers, to build on with [`Group::header`] and
    /// [`Group::tenants`].
    pub fn new(name: impl Into<String>, weight: f64) -> Self {
        Self {
            name: name.into(),
            weight,
            headers: Vec::new(),
            tenant_pool: None,
        }
    }

    /// Adds a header sent with every request of the group.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Rotates header `name` through `values`, one per request of the group
    /// in turn, so each value gets an equal share of the group's arrivals.
    pub fn tenants(mut self, name: HeaderName, values: Vec<HeaderValue>) -> Self {
        self.tenant_pool = Some((name, values));
        self
    }
}

fn validate_mix(mix: &[Group]) -> anyhow::Result<()> {
    let mut names = HashSet::new();
    for group in mix {
        ensure!(
            !group.name.is_empty(),
            "load mix group names must not be empty"
        );
        ensure!(
            names.insert(group.name.as_str()),
            "load mix group {:?} appears twice",
            group.name
        );
        ensure!(
            group.weight.is_finite() && group.weight >= 0.0,
            "load mix group {:?} weight must be a finite number >= 0, got {}",
            group.name,
            group.weight
        );
        if let Some((name, values)) = &group.tenant_pool {
            ensure!(
                !values.is_empty(),
                "load mix group {:?} tenant pool for {name} has no values",
                group.name
            );
        }
    }
    if !mix.is_empty() {
        let total: f64 = mix.iter().map(|g| g.weight).sum();
        ensure!(
            total > 0.0,
            "load mix weights must add up to more than zero"
        );
    }
    Ok(())
}

/// Smooth weighted round-robin: each pick, every group gains its weight and
/// the richest is chosen and pays the total. Over any stretch of the run each
/// group's count stays within one request of `share × picks`, and groups are
/// interleaved rather than sent in bursts.
#[derive(Debug, Clone)]
struct Mixer {
    weights: Vec<f64>,
    total: f64,
    credit: Vec<f64>,
}

impl Mixer {
    fn new(weights: Vec<f64>) -> Self {
        let total = weights.iter().sum();
        let credit = vec![0.0; weights.len()];
        Self {
            weights,
            total,
            credit,
        }
    }

    fn next(&mut self) -> usize {
        let mut best = 0;
        for (i, weight) in self.weights.iter().enumerate() {
            self.credit[i] += weight;
            if self.credit[i] > self.credit[best] {
                best = i;
            }
        }
        self.credit[best] -= self.total;
        best
    }
}

/// What a user does when told 503 or 429 (by the gate or by the server).
/// Other answers, timeouts and connection errors are never retried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RetryPolicy {
    /// Take the answer. The default, and what the demo measures.
    #[default]
    None,
    /// Send again at once, up to `max_attempts` in all (the first attempt
    /// included): the naive client that turns overload into a retry storm.
    Immediate {
        /// Attempts per user, first one included; at least 1.
        max_attempts: u32,
    },
    /// Wait as told, then send again, up to `max_attempts` in all. The wait
    /// is `x-floodwall-retry-after-ms` if present, else `Retry-After` in
    /// whole seconds, else [`DEFAULT_RETRY_WAIT`]; never more than `cap`.
    HonourRetryAfter {
        /// Attempts per user, first one included; at least 1.
        max_attempts: u32,
        /// The longest the client will wait between attempts.
        #[serde(with = "humantime_serde")]
        cap: Duration,
    },
}

impl RetryPolicy {
    /// Attempts per user, first one included: 1 for [`RetryPolicy::None`].
    pub fn max_attempts(&self) -> u32 {
        match *self {
            RetryPolicy::None => 1,
            RetryPolicy::Immediate { max_attempts }
            | RetryPolicy::HonourRetryAfter { max_attempts, .. } => max_attempts,
        }
    }

    /// How long to wait before the next attempt, given the rejection's
    /// retry hint (see [`retry_hint`]).
    pub fn wait(&self, hint: Option<Duration>) -> Duration {
        match *self {
            RetryPolicy::None | RetryPolicy::Immediate { .. } => Duration::ZERO,
            RetryPolicy::HonourRetryAfter { cap, .. } => {
                hint.unwrap_or(DEFAULT_RETRY_WAIT).min(cap)
            }
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.max_attempts() >= 1,
            "load retry max_attempts must be at least 1 (the first attempt counts)"
        );
        Ok(())
    }
}

/// The wait a response asks for: `x-floodwall-retry-after-ms` (floodwall's
/// precise form) if it parses, else an integer `Retry-After` in seconds.
/// `Retry-After` as an HTTP date is not understood and counts as no hint.
pub fn retry_hint(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    number(RETRY_AFTER_MS_HEADER)
        .map(Duration::from_millis)
        .or_else(|| number(header::RETRY_AFTER.as_str()).map(Duration::from_secs))
}

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
    /// How arrivals split into named groups with their own headers. Empty
    /// (the default) means one group, `"all"`, with no headers.
    pub mix: Vec<Group>,
    /// Optional per-arrival headers, added after the group's.
    pub headers: Option<HeaderFn>,
    /// What users do when refused with 503/429; no retries by default.
    pub retry: RetryPolicy,
    /// Optional progress bar: its length is set to the schedule's seconds
    /// and its position follows the run. See [`progress_bar`].
    pub progress: Option<ProgressBar>,
}

impl LoadConfig {
    /// A config with the demo's defaults: 250 ms SLO, 1 s client timeout,
    /// one group, no extra headers, no retries, no progress bar.
    pub fn new(target: Uri, schedule: Schedule) -> Self {
        Self {
            target,
            schedule,
            slo: Duration::from_millis(250),
            client_timeout: Duration::from_secs(1),
            mix: Vec::new(),
            headers: None,
            retry: RetryPolicy::None,
            progress: None,
        }
    }

    /// The groups this config sends: the mix, or the implicit `"all"`.
    fn groups(&self) -> Vec<Group> {
        if self.mix.is_empty() {
            vec![Group::new("all", 1.0)]
        } else {
            self.mix.clone()
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
            .field("mix", &self.mix)
            .field("headers", &self.headers.as_ref().map(|_| "Fn(u64)"))
            .field("retry", &self.retry)
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
    /// First attempts sent more than [`LATE_AFTER`] after their scheduled
    /// time.
    pub late: u64,
    /// Retries (attempts after the first) put on the wire in this second.
    pub retries: u64,
    /// Every request put on the wire in this second: first attempts (by when
    /// they were actually sent) plus retries.
    pub on_wire: u64,
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
    /// The same, group by group, in the order of [`LoadConfig::mix`] (or
    /// the one group `"all"`).
    pub groups: Vec<GroupResult>,
    #[serde(skip)]
    histograms: Histograms,
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
    histograms: Histograms,
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
struct Histograms {
    /// Whole-run histograms, 3 significant digits, microseconds.
    success: Histogram<u64>,
    rejection: Histogram<u64>,
    /// Per-second histograms, 2 significant digits (1%): enough for range
    /// percentiles and small enough for long runs.
    success_by_second: Vec<Histogram<u64>>,
    rejection_by_second: Vec<Histogram<u64>>,
}

impl Histograms {
    fn new(seconds: usize) -> Self {
        Self {
            success: histogram(3),
            rejection: histogram(3),
            success_by_second: (0..seconds).map(|_| histogram(2)).collect(),
            rejection_by_second: (0..seconds).map(|_| histogram(2)).collect(),
        }
    }

    fn summary(&self, rows: &[SecondRow], range: impl RangeBounds<usize>) -> Summary {
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

fn quantile_ms(histogram: &Histogram<u64>, q: f64) -> Option<f64> {
    quantile(histogram, q).map(|d| d.as_secs_f64() * 1e3)
}

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new(sigfig).expect("sigfig 2 or 3 is valid")
}

/// Records with auto-resize; only a latency beyond `i64::MAX / 2` µs
/// could fail, and that one is clamped rather than lost.
fn record(histogram: &mut Histogram<u64>, latency: Duration) {
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

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

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
    validate_mix(&config.mix)?;
    config.retry.validate()?;
    let groups = config.groups();

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
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

    let dispatch = dispatch(&config, &groups, &client, start, samples_tx);
    let collect = collect(samples_rx, seconds, groups.len(), config.slo);
    let (dispatched, collected) = tokio::join!(dispatch, collect);
    let elapsed = start.elapsed();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Some(bar) = &config.progress {
        bar.set_position(seconds as u64);
    }

    let group_results = groups
        .iter()
        .zip(collected.groups)
        .map(|(group, series)| {
            let overall = series.histograms.summary(&series.rows, ..);
            GroupResult {
                name: group.name.clone(),
                weight: group.weight,
                seconds: series.rows,
                overall,
                histograms: series.histograms,
            }
        })
        .collect();
    let all = collected.all;
    Ok(LoadResult {
        target: config.target.to_string(),
        schedule: config.schedule.clone(),
        slo_ms: config.slo.as_secs_f64() * 1e3,
        client_timeout_ms: config.client_timeout.as_secs_f64() * 1e3,
        retry: config.retry,
        elapsed_ms: elapsed.as_secs_f64() * 1e3,
        dispatch_ms: dispatched.duration_since(start).as_secs_f64() * 1e3,
        max_lateness_ms: collected.max_lateness.as_secs_f64() * 1e3,
        overall: all.histograms.summary(&all.rows, ..),
        seconds: all.rows,
        groups: group_results,
        histograms: all.histograms,
    })
}

/// What became of one user.
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

/// One user's story, sent to the collector when it is over.
struct Sample {
    group: usize,
    /// The second of the scheduled arrival: the row for the outcome.
    second: usize,
    answer: Answer,
    /// From scheduled arrival to the final answer (or giving up).
    latency: Duration,
    lateness: Duration,
    /// When the first attempt went on the wire, from the start of the run.
    first_sent: Duration,
    /// When each retry went on the wire, from the start of the run.
    retries_sent: Vec<Duration>,
}

/// The per-group header plan: fixed headers, plus a tenant rotation.
struct GroupPlan {
    headers: HeaderMap,
    tenants: Option<(HeaderName, Vec<HeaderValue>)>,
    sent: usize,
}

impl GroupPlan {
    fn new(group: &Group) -> Self {
        let mut headers = HeaderMap::new();
        for (name, value) in &group.headers {
            headers.append(name.clone(), value.clone());
        }
        Self {
            headers,
            tenants: group.tenant_pool.clone(),
            sent: 0,
        }
    }

    /// The headers for this group's next request.
    fn next(&mut self) -> HeaderMap {
        let mut headers = self.headers.clone();
        if let Some((name, values)) = &self.tenants {
            headers.append(name.clone(), values[self.sent % values.len()].clone());
        }
        self.sent += 1;
        headers
    }
}

/// Sends every arrival at its scheduled instant, each in its own task, and
/// returns when the last first attempt went out.
async fn dispatch(
    config: &LoadConfig,
    groups: &[Group],
    client: &HttpClient,
    start: Instant,
    samples: mpsc::UnboundedSender<Sample>,
) -> Instant {
    let mut mixer = Mixer::new(groups.iter().map(|g| g.weight).collect());
    let mut plans: Vec<GroupPlan> = groups.iter().map(GroupPlan::new).collect();
    let mut behind_in_a_row = 0u32;
    let mut last_sent = start;
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
        last_sent = Instant::now();

        let group = mixer.next();
        let mut headers = plans[group].next();
        if let Some(extra) = &config.headers {
            for (name, value) in extra(index as u64) {
                headers.append(name, value);
            }
        }
        let user = User {
            client: client.clone(),
            target: config.target.clone(),
            headers,
            retry: config.retry,
            start,
            due,
            deadline: due + config.client_timeout,
        };
        let samples = samples.clone();
        tokio::spawn(async move {
            let first_sent = last_sent.duration_since(start);
            let mut retries_sent = Vec::new();
            let answer = match tokio::time::timeout_at(
                user.deadline,
                user.attempts(&mut retries_sent),
            )
            .await
            {
                Err(_elapsed) => Answer::Timeout,
                Ok(answer) => answer,
            };
            let _ = samples.send(Sample {
                group,
                second: offset.as_secs() as usize,
                answer,
                latency: Instant::now().saturating_duration_since(user.due),
                lateness: last_sent.saturating_duration_since(user.due),
                first_sent,
                retries_sent,
            });
        });
    }
    last_sent
}

/// One simulated user: one logical request, tried as the retry policy says.
struct User {
    client: HttpClient,
    target: Uri,
    headers: HeaderMap,
    retry: RetryPolicy,
    start: Instant,
    due: Instant,
    deadline: Instant,
}

impl User {
    /// Sends attempts until one is not a 503/429, the policy's attempts run
    /// out, or the next one would start past the deadline (then the last
    /// rejection is the outcome). Pushes each retry's send time into
    /// `retries_sent` as it goes out, so the count survives a timeout.
    async fn attempts(&self, retries_sent: &mut Vec<Duration>) -> Answer {
        let max_attempts = self.retry.max_attempts();
        let mut attempt = 1;
        loop {
            let mut request = Request::new(Empty::new());
            *request.uri_mut() = self.target.clone();
            *request.headers_mut() = self.headers.clone();
            let (answer, hint) = match exchange(&self.client, request).await {
                Ok((status, hint)) => (Answer::of(status), hint),
                Err(_connection_or_protocol_error) => return Answer::UpstreamError,
            };
            if answer != Answer::Rejected || attempt >= max_attempts {
                return answer;
            }
            let wait = self.retry.wait(hint);
            if Instant::now() + wait >= self.deadline {
                return answer;
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            attempt += 1;
            retries_sent.push(Instant::now().duration_since(self.start));
        }
    }
}

/// One request and its whole body: an answer is not in until it is read.
/// Returns the status and, for a 503/429, the wait it asked for.
async fn exchange(
    client: &HttpClient,
    request: Request<Empty<Bytes>>,
) -> anyhow::Result<(StatusCode, Option<Duration>)> {
    let response = client.request(request).await.context("request failed")?;
    let status = response.status();
    let hint = match Answer::of(status) {
        Answer::Rejected => retry_hint(response.headers()),
        _ => None,
    };
    response
        .into_body()
        .collect()
        .await
        .context("reading the body failed")?;
    Ok((status, hint))
}

/// Rows and histograms for one series: the whole run or one group.
struct Series {
    rows: Vec<SecondRow>,
    histograms: Histograms,
}

impl Series {
    fn new(seconds: usize) -> Self {
        Self {
            rows: (0..seconds as u64)
                .map(|second| SecondRow {
                    second,
                    ..SecondRow::default()
                })
                .collect(),
            histograms: Histograms::new(seconds),
        }
    }

    fn record(&mut self, sample: &Sample, slo: Duration) {
        let Some(row) = self.rows.get_mut(sample.second) else {
            return; // cannot happen: arrivals lie within the schedule
        };
        row.sent += 1;
        if sample.lateness > LATE_AFTER {
            row.late += 1;
        }
        let h = &mut self.histograms;
        match sample.answer {
            Answer::Ok => {
                row.ok += 1;
                if sample.latency <= slo {
                    row.ok_within_slo += 1;
                }
                record(&mut h.success, sample.latency);
                record(&mut h.success_by_second[sample.second], sample.latency);
            }
            Answer::Rejected => {
                row.rejected += 1;
                record(&mut h.rejection, sample.latency);
                record(&mut h.rejection_by_second[sample.second], sample.latency);
            }
            Answer::UpstreamError => row.upstream_errors += 1,
            Answer::Timeout => row.timeouts += 1,
            Answer::OtherStatus => row.other_status += 1,
        }

        // Load columns go by when things were sent; the drain after the
        // schedule lands in the last row.
        let last = self.rows.len() - 1;
        let at = |sent: Duration| (sent.as_secs() as usize).min(last);
        self.rows[at(sample.first_sent)].on_wire += 1;
        for &sent in &sample.retries_sent {
            let row = &mut self.rows[at(sent)];
            row.retries += 1;
            row.on_wire += 1;
        }
    }
}

struct Collected {
    all: Series,
    groups: Vec<Series>,
    max_lateness: Duration,
}

/// Folds samples into rows and histograms until every request task is done.
async fn collect(
    mut samples: mpsc::UnboundedReceiver<Sample>,
    seconds: usize,
    groups: usize,
    slo: Duration,
) -> Collected {
    let mut c = Collected {
        all: Series::new(seconds),
        groups: (0..groups).map(|_| Series::new(seconds)).collect(),
        max_lateness: Duration::ZERO,
    };
    while let Some(sample) = samples.recv().await {
        c.max_lateness = c.max_lateness.max(sample.lateness);
        c.all.record(&sample, slo);
        c.groups[sample.group].record(&sample, slo);
    }
    c
}

/// What a closed-loop run measured: the most a target can do with
/// `concurrency` requests always outstanding.
#[derive(Debug, Clone, Serialize)]
pub struct ClosedLoopResult {
    /// The URI that was loaded.
    pub target: String,
    /// Connections, each with one request outstanding at all times.
    pub concurrency: usize,
    /// Wall time from the first request to the last answer.
    pub elapsed_ms: f64,
    /// Requests answered (any status).
    pub requests: u64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests that failed on the connection (refused, reset, protocol).
    pub errors: u64,
    /// 2xx answers per second: the throughput figure.
    pub rps: f64,
    /// Median latency of answered requests, in milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of answered requests, in milliseconds.
    pub p99_ms: Option<f64>,
    /// 99.9th percentile latency of answered requests, in milliseconds.
    pub p999_ms: Option<f64>,
    /// Slowest answered request, in milliseconds.
    pub max_ms: Option<f64>,
}

/// Runs `concurrency` workers for `duration`, each on its own kept-alive
/// HTTP/1.1 connection, sending the next GET as soon as the last answer's
/// body is in. For maximum throughput against a fast backend, direct versus
/// through a proxy; use [`run`] for anything about overload.
///
/// Connections are opened before the clock starts; one the server closes
/// (say, after its keep-alive limit) is reopened without counting an error.
/// Fails at once if the target cannot be reached at all.
pub async fn run_closed_loop(
    target: Uri,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<ClosedLoopResult> {
    let authority = target
        .authority()
        .filter(|_| target.scheme_str() == Some("http"))
        .cloned()
        .with_context(|| format!("load target must be an http://host:port/ URI, got {target}"))?;
    ensure!(
        concurrency > 0,
        "closed-loop concurrency must be at least 1"
    );
    ensure!(
        !duration.is_zero(),
        "closed-loop duration must be greater than zero"
    );
    // Origin form on the wire, as a browser or a proxy's client sends it.
    let path: Uri = target
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .context("target path")?;

    let connections =
        futures_util::future::try_join_all((0..concurrency).map(|_| connect(&authority))).await?;
    let start = Instant::now();
    let end = start + duration;
    let workers: Vec<_> = connections
        .into_iter()
        .map(|sender| {
            let worker = ClosedLoopWorker {
                authority: authority.clone(),
                path: path.clone(),
                end,
            };
            tokio::spawn(worker.run(sender))
        })
        .collect();
    let mut total = Tally::default();
    for worker in workers {
        total.add(&worker.await.context("closed-loop worker panicked")?);
    }
    let elapsed = start.elapsed();
    let at = |q| quantile_ms(&total.latency, q);
    Ok(ClosedLoopResult {
        target: target.to_string(),
        concurrency,
        elapsed_ms: elapsed.as_secs_f64() * 1e3,
        requests: total.requests,
        ok: total.ok,
        errors: total.errors,
        rps: total.ok as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: at(1.0),
    })
}

type Connection = http1::SendRequest<Empty<Bytes>>;

async fn connect(authority: &Authority) -> anyhow::Result<Connection> {
    let stream = TcpStream::connect(authority.as_str())
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP/1.1 handshake with {authority}"))?;
    // Drives the connection; ends when the sender is dropped or it fails.
    tokio::spawn(connection);
    Ok(sender)
}

#[derive(Debug)]
struct Tally {
    requests: u64,
    ok: u64,
    errors: u64,
    latency: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            requests: 0,
            ok: 0,
            errors: 0,
            latency: histogram(3),
        }
    }
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.errors += other.errors;
        self.latency
            .add(&other.latency)
            .expect("auto-resizing histograms always add");
    }
}

struct ClosedLoopWorker {
    authority: Authority,
    path: Uri,
    end: Instant,
}

impl ClosedLoopWorker {
    async fn run(self, mut sender: Connection) -> Tally {
        let mut tally = Tally::default();
        while Instant::now() < self.end {
            if sender.ready().await.is_err() {
                // Closed by the server between requests: nothing was lost.
                match connect(&self.authority).await {
                    Ok(fresh) => sender = fresh,
                    Err(_) => {
                        tally.errors += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                continue;
            }
            let request = Request::builder()
                .uri(self.path.clone())
                .header(header::HOST, self.authority.as_str())
                .body(Empty::new())
                .expect("a path and a host make a valid request");
            let sent = Instant::now();
            let answered = async {
                let response = sender.send_request(request).await?;
                let status = response.status();
                response.into_body().collect().await?;
                Ok::<_, hyper::Error>(status)
            }
            .await;
            match answered {
                Ok(status) => {
                    tally.requests += 1;
                    if status.is_success() {
                        tally.ok += 1;
                    }
                    record(&mut tally.latency, sent.elapsed());
                }
                Err(_) => tally.errors += 1,
            }
        }
        tally
    }
}

/// Whether the open-loop generator keeps up at a rate, measured against a
/// [trivial backend](backend::start_trivial) on the same runtime.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Headroom {
    /// The rate that was asked for.
    pub rate_rps: f64,
    /// First attempts put on the wire per second, over the time it took to
    /// send them all (the schedule's length if the generator kept up).
    pub sent_rps: f64,
    /// First attempts sent within [`LATE_AFTER`] of schedule, per second of
    /// the schedule: the rate the generator really sustains.
    pub on_schedule_rps: f64,
    /// 2xx answers per second of the schedule.
    pub ok_rps: f64,
    /// Share of arrivals sent late, 0..=1.
    pub late_fraction: f64,
    /// The furthest behind schedule the generator ever was, in ms.
    pub max_lateness_ms: f64,
    /// 99th percentile latency against the trivial backend, in ms.
    pub p99_ms: Option<f64>,
}

/// Plays `rate_rps` for `duration` against a fresh trivial backend and says
/// how much of it went out on schedule. Both share the caller's runtime, so
/// the figure is a lower bound for the generator alone; run it on a
/// multi-threaded runtime in a release build to quote it.
pub async fn measure_headroom(rate_rps: f64, duration: Duration) -> anyhow::Result<Headroom> {
    ensure!(
        rate_rps.is_finite() && rate_rps > 0.0,
        "headroom rate must be a finite number > 0, got {rate_rps}"
    );
    ensure!(
        !duration.is_zero(),
        "headroom duration must be greater than zero"
    );
    let backend = backend::start_trivial().await?;
    let schedule = Schedule {
        phases: vec![Phase { duration, rate_rps }],
    };
    let result = run(LoadConfig::new(
        format!("http://{}/", backend.addr).parse()?,
        schedule,
    ))
    .await;
    backend.shutdown().await;
    let result = result?;
    let totals = result.overall.totals;
    let seconds = duration.as_secs_f64();
    let dispatch_seconds = (result.dispatch_ms / 1e3).max(seconds);
    Ok(Headroom {
        rate_rps,
        sent_rps: totals.sent as f64 / dispatch_seconds,
        on_schedule_rps: (totals.sent - totals.late) as f64 / seconds,
        ok_rps: totals.ok as f64 / seconds,
        late_fraction: if totals.sent == 0 {
            0.0
        } else {
            totals.late as f64 / totals.sent as f64
        },
        max_lateness_ms: result.max_lateness_ms,
        p99_ms: result.overall.success_ms.p99,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend;

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

        // No retries: everything on the wire is a first attempt.
        assert_eq!(total.retries, 0, "{total:?}");
        assert_eq!(total.on_wire, total.sent, "{total:?}");
        // No mix: one implicit group that is the whole run.
        assert_eq!(result.groups.len(), 1);
        let all = result.group("all").unwrap();
        assert_eq!(all.seconds, result.seconds);
        assert_eq!(all.overall, result.overall);
        assert_eq!(all.p99(), result.p99());
        assert!(
            result.dispatch_ms <= 2_000.0 + 50.0,
            "{}",
            result.dispatch_ms
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_timeouts_and_connection_errors_and_stops_after_one_timeout() {
        // Workers 1 × 200 ms: 5 req/s capacity against 20 req/s.
        let slow = backend::start(backend::BackendConfig {
            workers: 1,
            service_time: Duration::from_millis(200),
            contention: 0.0,
            overload_error_at: None,
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

    /// A server answering every request with `respond(request headers)`,
    /// for tests that must see what was sent or send retry hints.
    async fn serve_with(
        respond: impl Fn(&HeaderMap) -> http::Response<http_body_util::Full<Bytes>>
            + Send
            + Sync
            + 'static,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        use hyper_util::server::conn::auto;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let respond = Arc::new(respond);
        let server = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let respond = respond.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let response = respond(req.headers());
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, server)
    }

    fn answer(
        status: StatusCode,
        headers: &[(&'static str, &'static str)],
    ) -> impl Fn(&HeaderMap) -> http::Response<http_body_util::Full<Bytes>> {
        let headers = headers.to_vec();
        move |_| {
            let mut response =
                http::Response::new(http_body_util::Full::new(Bytes::from_static(b"no\n")));
            *response.status_mut() = status;
            for (name, value) in &headers {
                response
                    .headers_mut()
                    .insert(*name, HeaderValue::from_static(value));
            }
            response
        }
    }

    fn uri(addr: std::net::SocketAddr) -> Uri {
        format!("http://{addr}/").parse().unwrap()
    }

    fn counts(picks: impl Iterator<Item = usize>, groups: usize) -> Vec<usize> {
        let mut counts = vec![0; groups];
        for g in picks {
            counts[g] += 1;
        }
        counts
    }

    #[test]
    fn the_mixer_gives_every_group_its_share_at_every_point() {
        let mut mixer = Mixer::new(vec![0.3, 0.7]);
        let mut interactive = 0usize;
        for n in 1..=2000 {
            interactive += usize::from(mixer.next() == 0);
            let drift = interactive as f64 - 0.3 * n as f64;
            assert!(drift.abs() <= 1.0, "after {n}: {interactive}");
        }
        assert_eq!(interactive, 600);

        // One hot tenant with 80%, twenty sharing the other 20%.
        let mut weights = vec![80.0];
        weights.extend([1.0; 20]);
        let mut mixer = Mixer::new(weights);
        let got = counts((0..2000).map(|_| mixer.next()), 21);
        assert_eq!(got[0], 1600, "{got:?}");
        assert!(got[1..].iter().all(|&n| n == 20), "{got:?}");

        // Zero weight is never picked.
        let mut mixer = Mixer::new(vec![1.0, 0.0, 2.0]);
        let got = counts((0..300).map(|_| mixer.next()), 3);
        assert_eq!(got, vec![100, 0, 200]);
    }

    #[test]
    fn rejects_bad_mixes_and_policies_naming_the_group() {
        let cases = [
            (
                vec![Group::new("a", 1.0), Group::new("a", 1.0)],
                "\"a\" appears twice",
            ),
            (vec![Group::new("a", -1.0)], "\"a\" weight"),
            (vec![Group::new("a", f64::NAN)], "\"a\" weight"),
            (vec![Group::new("a", 0.0)], "add up to more than zero"),
            (vec![Group::new("", 1.0)], "must not be empty"),
            (
                vec![Group::new("t", 1.0).tenants(HeaderName::from_static("x-tenant"), vec![])],
                "\"t\" tenant pool",
            ),
        ];
        for (mix, mentions) in cases {
            let err = validate_mix(&mix).unwrap_err().to_string();
            assert!(err.contains(mentions), "{mix:?} gave {err}");
        }
        assert!(validate_mix(&[]).is_ok());
        let err = RetryPolicy::Immediate { max_attempts: 0 }
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_attempts"), "{err}");
    }

    #[test]
    fn retry_hints_prefer_floodwall_milliseconds_then_retry_after_then_the_default() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_hint(&headers), None);
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_hint(&headers), Some(Duration::from_secs(2)));
        headers.insert(RETRY_AFTER_MS_HEADER, HeaderValue::from_static("1250"));
        assert_eq!(retry_hint(&headers), Some(Duration::from_millis(1250)));
        let date = HeaderMap::from_iter([(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        )]);
        assert_eq!(retry_hint(&date), None);

        let honour = RetryPolicy::HonourRetryAfter {
            max_attempts: 3,
            cap: Duration::from_millis(500),
        };
        assert_eq!(
            honour.wait(None),
            Duration::from_millis(500),
            "default 1 s, capped"
        );
        assert_eq!(
            honour.wait(Some(Duration::from_millis(80))),
            Duration::from_millis(80)
        );
        assert_eq!(
            honour.wait(Some(Duration::from_secs(9))),
            Duration::from_millis(500)
        );
        assert_eq!(
            RetryPolicy::Immediate { max_attempts: 3 }.wait(Some(Duration::from_secs(9))),
            Duration::ZERO
        );
        assert_eq!(RetryPolicy::default(), RetryPolicy::None);
        assert_eq!(RetryPolicy::None.max_attempts(), 1);
        let json = serde_json::to_value(honour).unwrap();
        assert_eq!(json["kind"], "honour_retry_after");
        assert_eq!(json["cap"], "500ms");
    }

    /// 30% interactive / 70% batch over five tenants, then one hot tenant
    /// with 80% and twenty sharing the rest: the server sees each group's
    /// headers in proportion, and the results split the same way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mix_sends_each_group_its_headers_in_proportion() {
        let seen = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
            String,
            u64,
        >::new()));
        let (addr, server) = serve_with({
            let seen = seen.clone();
            move |headers| {
                let mut seen = seen.lock().unwrap();
                for name in ["x-class", "x-tenant", "x-extra"] {
                    for value in headers.get_all(name) {
                        *seen
                            .entry(format!("{name}={}", value.to_str().unwrap()))
                            .or_default() += 1;
                    }
                }
                http::Response::new(http_body_util::Full::new(Bytes::from_static(b"ok\n")))
            }
        })
        .await;
        let class = HeaderName::from_static("x-class");
        let tenant = HeaderName::from_static("x-tenant");
        let five: Vec<HeaderValue> = (0..5)
            .map(|t| HeaderValue::from_str(&format!("t{t}")).unwrap())
            .collect();

        let mut config = LoadConfig::new(uri(addr), parse_schedule("2s@1000").unwrap());
        config.mix = vec![
            Group::new("interactive", 0.3)
                .header(class.clone(), HeaderValue::from_static("interactive")),
            Group::new("batch", 0.7)
                .header(class.clone(), HeaderValue::from_static("batch"))
                .tenants(tenant.clone(), five),
        ];
        // The per-arrival hook still works, on top of the groups.
        config.headers = Some(Arc::new(|_| {
            vec![(
                HeaderName::from_static("x-extra"),
                HeaderValue::from_static("1"),
            )]
        }));
        let result = run(config).await.unwrap();
        let total = result.overall.totals.sent;
        assert!((1960..=2040).contains(&total), "{total}");
        let interactive = result.group("interactive").unwrap().overall.totals;
        let batch = result.group("batch").unwrap().overall.totals;
        let share = interactive.sent as f64 / total as f64;
        assert!((0.27..=0.33).contains(&share), "{interactive:?} of {total}");
        assert_eq!(interactive.sent + batch.sent, total);
        assert_eq!(interactive.ok + batch.ok, result.overall.totals.ok);
        assert!(result.group("nobody").is_none());
        // Per-second rows split too.
        for (second, row) in result.seconds.iter().enumerate() {
            let groups: u64 = result.groups.iter().map(|g| g.seconds[second].sent).sum();
            assert_eq!(groups, row.sent, "second {second}");
        }
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen["x-class=interactive"], interactive.sent, "{seen:?}");
            assert_eq!(seen["x-class=batch"], batch.sent, "{seen:?}");
            assert_eq!(seen["x-extra=1"], total, "{seen:?}");
            for t in 0..5 {
                let n = seen[&format!("x-tenant=t{t}")] as f64;
                assert!((n - batch.sent as f64 / 5.0).abs() <= 1.0, "{seen:?}");
            }
        }
        let group_p50 = result.group("interactive").unwrap().p50().unwrap();
        assert!(group_p50 < Duration::from_millis(50), "{group_p50:?}");
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["groups"][0]["name"], "interactive");
        assert_eq!(json["groups"][1]["overall"]["totals"]["sent"], batch.sent);

        seen.lock().unwrap().clear();
        let mut config = LoadConfig::new(uri(addr), parse_schedule("2s@1000").unwrap());
        config.mix = std::iter::once(
            Group::new("hot", 0.8).header(tenant.clone(), HeaderValue::from_static("hot")),
        )
        .chain((0..20).map(|t| {
            Group::new(format!("quiet-{t}"), 0.01).header(tenant.clone(), HeaderValue::from(t))
        }))
        .collect();
        let result = run(config).await.unwrap();
        let total = result.overall.totals.sent as f64;
        let hot = result.group("hot").unwrap().overall.totals.sent as f64;
        assert!((0.77..=0.83).contains(&(hot / total)), "{hot} of {total}");
        for t in 0..20 {
            let quiet = result
                .group(&format!("quiet-{t}"))
                .unwrap()
                .overall
                .totals
                .sent as f64;
            assert!((quiet / total - 0.01).abs() <= 0.03, "{quiet} of {total}");
            assert_eq!(seen.lock().unwrap()[&format!("x-tenant={t}")] as f64, quiet);
        }
        server.abort();
    }

    /// A database in error mode: one request holds the only worker for 3 s,
    /// every other one is refused at once with 503.
    fn refusing() -> backend::BackendConfig {
        backend::BackendConfig {
            workers: 1,
            service_time: Duration::from_secs(3),
            contention: 0.0,
            overload_error_at: Some(0),
        }
    }

    fn retrying(target: Uri, retry: RetryPolicy) -> LoadConfig {
        // 100 users in second 0, a quiet second 1 to see the retries land.
        let mut config = LoadConfig::new(target, parse_schedule("1s@100,1s@0").unwrap());
        config.client_timeout = Duration::from_millis(1500);
        config.retry = retry;
        config
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn immediate_retries_multiply_wire_load() {
        let db = backend::start(refusing()).await.unwrap();
        let target = format!("http://{}/", db.addr).parse().unwrap();
        let result = run(retrying(target, RetryPolicy::Immediate { max_attempts: 4 }))
            .await
            .unwrap();
        let t = result.overall.totals;
        // The first user got the worker and timed out; 99 were refused four
        // times each, all within moments of arriving.
        assert_eq!((t.sent, t.timeouts, t.rejected), (100, 1, 99), "{t:?}");
        assert_eq!(t.retries, 99 * 3, "{t:?}");
        assert_eq!(t.on_wire, 100 + 99 * 3, "{t:?}");
        assert!(result.seconds[0].on_wire >= 350, "{:?}", result.seconds);
        assert_eq!(db.stats().refused, 99 * 4);
        // The final rejection is measured from the original arrival.
        let p99 = result.overall.rejection_ms.p99.unwrap();
        assert!(p99 < 200.0, "{:?}", result.overall);
        assert!(result.elapsed_ms < 2_500.0, "{}", result.elapsed_ms);
        assert!((result.overall.on_wire_rps - 397.0 / 2.0).abs() < 1e-9);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn honouring_retry_after_spreads_the_retries() {
        let db = backend::start(refusing()).await.unwrap();
        let target = format!("http://{}/", db.addr).parse().unwrap();
        let policy = RetryPolicy::HonourRetryAfter {
            max_attempts: 4,
            cap: Duration::from_secs(10),
        };
        let result = run(retrying(target, policy)).await.unwrap();
        let t = result.overall.totals;
        // No hint from the database: each waits the default 1 s, retries
        // once, and would pass its 1.5 s deadline waiting for a second try.
        assert_eq!((t.sent, t.timeouts, t.rejected), (100, 1, 99), "{t:?}");
        assert_eq!(t.retries, 99, "{t:?}");
        let (first, second) = (result.seconds[0], result.seconds[1]);
        assert_eq!((first.on_wire, first.retries), (100, 0), "{first:?}");
        assert_eq!((second.on_wire, second.retries), (99, 99), "{second:?}");
        assert_eq!(db.stats().refused, 99 * 2);
        let p50 = result.overall.rejection_ms.p50.unwrap();
        assert!((1_000.0..1_300.0).contains(&p50), "{:?}", result.overall);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn honours_floodwall_hints_and_the_cap() {
        let one_user = || parse_schedule("100ms@10").unwrap();
        let honour = |cap| RetryPolicy::HonourRetryAfter {
            max_attempts: 3,
            cap,
        };

        // floodwall's millisecond hint beats Retry-After: two waits of 150 ms.
        let (addr, server) = serve_with(answer(
            StatusCode::SERVICE_UNAVAILABLE,
            &[(RETRY_AFTER_MS_HEADER, "150"), ("retry-after", "1")],
        ))
        .await;
        let mut config = LoadConfig::new(uri(addr), one_user());
        config.client_timeout = Duration::from_secs(3);
        config.retry = honour(Duration::from_secs(10));
        let result = run(config).await.unwrap();
        assert_eq!(result.overall.totals.retries, 2);
        let took = result.overall.rejection_ms.p50.unwrap();
        assert!((295.0..600.0).contains(&took), "{took}");
        server.abort();

        // Retry-After: 1 capped at 200 ms, 429 counts as a refusal too.
        let (addr, server) = serve_with(answer(
            StatusCode::TOO_MANY_REQUESTS,
            &[("retry-after", "1")],
        ))
        .await;
        let mut config = LoadConfig::new(uri(addr), one_user());
        config.client_timeout = Duration::from_secs(3);
        config.retry = honour(Duration::from_millis(200));
        let result = run(config).await.unwrap();
        assert_eq!(result.overall.totals.retries, 2);
        let took = result.overall.rejection_ms.p50.unwrap();
        assert!((395.0..700.0).contains(&took), "{took}");
        server.abort();
    }

    /// Even a client that would retry for ever stops at its deadline, and
    /// the run ends by itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_stop_at_the_deadline() {
        let (addr, server) = serve_with(answer(StatusCode::SERVICE_UNAVAILABLE, &[])).await;
        let mut config = LoadConfig::new(uri(addr), parse_schedule("200ms@20").unwrap());
        config.client_timeout = Duration::from_millis(200);
        config.retry = RetryPolicy::Immediate {
            max_attempts: u32::MAX,
        };
        let result = run(config).await.unwrap();
        let t = result.overall.totals;
        assert_eq!(t.sent, 4);
        assert_eq!(t.rejected + t.timeouts, 4, "{t:?}");
        assert!(t.retries > 20, "{t:?}");
        assert_eq!(t.on_wire, t.sent + t.retries);
        assert!(
            result.elapsed_ms < 200.0 + 200.0 + 300.0,
            "{}",
            result.elapsed_ms
        );
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_reports_a_sane_rps_against_a_trivial_backend() {
        let trivial = backend::start_trivial().await.unwrap();
        let result = run_closed_loop(uri(trivial.addr), 4, Duration::from_secs(1))
            .await
            .unwrap();
        eprintln!("{result:?}");
        assert_eq!(result.errors, 0, "{result:?}");
        assert_eq!(result.ok, result.requests, "{result:?}");
        assert!(result.requests > 500, "{result:?}");
        assert!(
            (1_000.0..1_500.0).contains(&result.elapsed_ms),
            "{result:?}"
        );
        let expected = result.ok as f64 / (result.elapsed_ms / 1e3);
        assert!((result.rps - expected).abs() < 1.0, "{result:?}");
        let (p50, p99, p999, max) = (
            result.p50_ms.unwrap(),
            result.p99_ms.unwrap(),
            result.p999_ms.unwrap(),
            result.max_ms.unwrap(),
        );
        assert!(
            p50 > 0.0 && p50 < 20.0 && p50 <= p99 && p99 <= p999 && p999 <= max,
            "{result:?}"
        );
        assert_eq!(trivial.stats().completed, result.requests);

        let addr = trivial.addr;
        trivial.shutdown().await;
        let err = run_closed_loop(uri(addr), 2, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("connecting"), "{err:#}");
    }

    /// The generator must not be the bottleneck of any benchmark it runs:
    /// `cargo test --release -p floodwall --lib headroom -- --nocapture`.
    /// A debug build is several times slower, so it only checks a floor.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn headroom_against_a_trivial_backend() {
        let (rate, floor) = if cfg!(debug_assertions) {
            (2_500.0, 2_000.0)
        } else {
            (6_000.0, 5_000.0)
        };
        let headroom = measure_headroom(rate, Duration::from_secs(2))
            .await
            .unwrap();
        eprintln!("{headroom:?}");
        assert!(headroom.on_schedule_rps >= floor, "{headroom:?}");
        assert!(headroom.ok_rps >= floor, "{headroom:?}");
    }

    /// Where the generator stops keeping up on this machine, for
    /// BENCHMARKS.md: `cargo test --release -p floodwall --lib headroom_sweep
    /// -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread")]
    #[ignore = "takes about 15 s; prints a table"]
    async fn headroom_sweep() {
        println!("| rate | sent/s | on schedule/s | ok/s | late | max lateness | p99 |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for rate in [5_000.0, 10_000.0, 20_000.0, 30_000.0, 40_000.0, 60_000.0] {
            let h = measure_headroom(rate, Duration::from_secs(2))
                .await
                .unwrap();
            println!(
                "| {rate} | {:.0} | {:.0} | {:.0} | {:.1}% | {:.1} ms | {:.1} ms |",
                h.sent_rps,
                h.on_schedule_rps,
                h.ok_rps,
                100.0 * h.late_fraction,
                h.max_lateness_ms,
                h.p99_ms.unwrap_or(f64::NAN),
            );
        }
    }
}
