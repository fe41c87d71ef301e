//! The open-loop generator: every arrival sent at its scheduled instant,
//! whatever is outstanding.

use std::{fmt, sync::Arc, time::Duration};

use anyhow::{ensure, Context as _};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};
use indicatif::ProgressBar;
use tokio::{sync::mpsc, time::Instant};

use super::mix::{validate_mix, Group, GroupPlan, HeaderFn, Mixer};
use super::results::{record, GroupResult, Histograms, LoadResult, SecondRow};
use super::retry::{retry_hint, RetryPolicy};
use super::Schedule;

/// An arrival dispatched more than this after its scheduled time counts as
/// `late`: the generator, not the server, was the bottleneck for it. tokio's
/// timer ticks every millisecond, so a millisecond or two is normal.
pub const LATE_AFTER: Duration = Duration::from_millis(5);

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
    /// and its position follows the run. See [`progress_bar`](super::progress_bar).
    pub progress: Option<ProgressBar>,
    /// For an `https://` target: the TLS client config (its trust roots).
    /// Required for `https://`, unused for `http://`. HTTP/1.1 over TLS,
    /// kept alive like the plain client's connections.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// At most this many requests on the wire at once, so at most about
    /// this many connections (wrk2's `-c`): an arrival that finds them all
    /// busy waits for one, and that wait counts in its latency (it still
    /// runs from the scheduled arrival, so nothing is omitted). `None` (the
    /// default): a connection per outstanding request, as many as it takes.
    /// With TLS a cap keeps a slow patch from turning into a storm of new
    /// handshakes.
    pub max_connections: Option<usize>,
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
            tls: None,
            max_connections: None,
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
            .field("tls", &self.tls.is_some())
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// The pooled client: plain, or TLS for an `https://` target. Two
/// variants rather than one TLS-capable connector, so a plain run sends
/// through exactly the client it always did.
#[derive(Clone)]
enum HttpClient {
    Plain(Client<HttpConnector, Empty<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Empty<Bytes>>),
}

impl HttpClient {
    fn request(
        &self,
        request: Request<Empty<Bytes>>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        match self {
            HttpClient::Plain(c) => c.request(request),
            HttpClient::Tls(c) => c.request(request),
        }
    }
}

/// Plays the schedule against the target and measures every answer.
///
/// Uses one pooled HTTP/1.1 keep-alive client; it opens as many connections
/// as there are outstanding requests and keeps them all for reuse. An
/// `https://` target needs [`LoadConfig::tls`].
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadResult> {
    let https = config.target.scheme_str() == Some("https");
    ensure!(
        (https || config.target.scheme_str() == Some("http"))
            && config.target.authority().is_some(),
        "load target must be an http://host:port/ or https://host:port/ URI, got {}",
        config.target
    );
    ensure!(
        !https || config.tls.is_some(),
        "an https:// load target needs a TLS client config"
    );
    ensure!(
        config.max_connections != Some(0),
        "max_connections must be at least 1"
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
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_max_idle_per_host(usize::MAX)
        .pool_timer(TokioTimer::new());
    let client = match (&config.tls, https) {
        (Some(tls), true) => {
            connector.enforce_http(false);
            let connector = HttpsConnectorBuilder::new()
                .with_tls_config((**tls).clone())
                .https_only()
                .enable_http1()
                .wrap_connector(connector);
            HttpClient::Tls(builder.build(connector))
        }
        _ => HttpClient::Plain(builder.build(connector)),
    };

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
    let wire = config
        .max_connections
        .map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
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
        let wire = wire.clone();
        tokio::spawn(async move {
            let first_sent = last_sent.duration_since(start);
            let mut retries_sent = Vec::new();
            let attempts = async {
                let _on_the_wire = match wire {
                    Some(w) => Some(w.acquire_owned().await.expect("never closed")),
                    None => None,
                };
                user.attempts(&mut retries_sent).await
            };
            let answer = match tokio::time::timeout_at(user.deadline, attempts).await {
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

/// The header a retry carries: how many attempts came before it.
pub const RETRY_ATTEMPT_HEADER: &str = "x-retry-attempt";

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
            // Retries say so, as a well-behaved client library does
            // (`X-Retry-Attempt: retries before this one`), so a gate with
            // a retry budget can tell them from first attempts.
            if attempt > 1 {
                request
                    .headers_mut()
                    .insert(RETRY_ATTEMPT_HEADER, http::HeaderValue::from(attempt - 1));
            }
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
