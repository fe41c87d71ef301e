//! The closed-loop generator: N connections sending back to back, for
//! "how fast can it go at all".

use std::time::Duration;

use anyhow::{ensure, Context as _};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, uri::Authority, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::{net::TcpStream, time::Instant};

use super::results::{histogram, quantile_ms, record};

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
    /// Requests answered 503 or 429: a gate (or the server) said no. Against
    /// a backend that never refuses, every one is the gate's.
    pub refused: u64,
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
    /// One row per second since the clock started (by when the answer
    /// came), so a cold start's first seconds can be told from the rest.
    pub seconds: Vec<ClosedLoopSecond>,
}

impl ClosedLoopResult {
    /// Share of answered requests refused (503/429), in percent.
    pub fn percent_refused(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            100.0 * self.refused as f64 / self.requests as f64
        }
    }
}

/// One second of a closed-loop run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ClosedLoopSecond {
    /// Requests answered in this second (any status).
    pub requests: u64,
    /// 2xx answers in this second.
    pub ok: u64,
    /// 503/429 answers in this second.
    pub refused: u64,
    /// p99 latency of this second's answers, in milliseconds.
    pub p99_ms: Option<f64>,
}

/// Runs `concurrency` workers for `duration`, each on its own kept-alive
/// HTTP/1.1 connection, sending the next GET as soon as the last answer's
/// body is in. For maximum throughput against a fast backend, direct versus
/// through a proxy; use [`run`](super::run) for anything about overload.
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
                start,
                end,
            };
            tokio::spawn(worker.run(sender))
        })
        .collect();
    let mut total = Tally::new(duration);
    for worker in workers {
        total.add(&worker.await.context("closed-loop worker panicked")?);
    }
    let elapsed = start.elapsed();
    let at = |q| quantile_ms(&total.whole.latency, q);
    Ok(ClosedLoopResult {
        target: target.to_string(),
        concurrency,
        elapsed_ms: elapsed.as_secs_f64() * 1e3,
        requests: total.whole.requests,
        ok: total.whole.ok,
        refused: total.whole.refused,
        errors: total.errors,
        rps: total.whole.ok as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: at(1.0),
        seconds: total
            .by_second
            .iter()
            .map(|s| ClosedLoopSecond {
                requests: s.requests,
                ok: s.ok,
                refused: s.refused,
                p99_ms: quantile_ms(&s.latency, 0.99),
            })
            .collect(),
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

/// Answers counted over the run or over one second of it.
#[derive(Debug)]
struct Counts {
    requests: u64,
    ok: u64,
    refused: u64,
    latency: Histogram<u64>,
}

impl Counts {
    fn new(sigfig: u8) -> Self {
        Self {
            requests: 0,
            ok: 0,
            refused: 0,
            latency: histogram(sigfig),
        }
    }

    fn record(&mut self, status: StatusCode, latency: Duration) {
        self.requests += 1;
        if status.is_success() {
            self.ok += 1;
        } else if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            self.refused += 1;
        }
        record(&mut self.latency, latency);
    }

    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.refused += other.refused;
        self.latency
            .add(&other.latency)
            .expect("auto-resizing histograms always add");
    }
}

#[derive(Debug)]
struct Tally {
    whole: Counts,
    errors: u64,
    /// Per second since the clock started; 2 significant digits, as the
    /// open-loop generator's per-second histograms.
    by_second: Vec<Counts>,
}

impl Tally {
    fn new(duration: Duration) -> Self {
        let seconds = duration.as_secs_f64().ceil().max(1.0) as usize;
        Self {
            whole: Counts::new(3),
            errors: 0,
            by_second: (0..seconds).map(|_| Counts::new(2)).collect(),
        }
    }

    fn record(&mut self, second: usize, status: StatusCode, latency: Duration) {
        self.whole.record(status, latency);
        // An answer that comes after the end (the last request in flight)
        // counts in the last second.
        let last = self.by_second.len() - 1;
        self.by_second[second.min(last)].record(status, latency);
    }

    fn add(&mut self, other: &Tally) {
        self.whole.add(&other.whole);
        self.errors += other.errors;
        for (mine, theirs) in self.by_second.iter_mut().zip(&other.by_second) {
            mine.add(theirs);
        }
    }
}

struct ClosedLoopWorker {
    authority: Authority,
    path: Uri,
    start: Instant,
    end: Instant,
}

impl ClosedLoopWorker {
    async fn run(self, mut sender: Connection) -> Tally {
        let mut tally = Tally::new(self.end - self.start);
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
                    let now = Instant::now();
                    let second = (now - self.start).as_secs() as usize;
                    tally.record(second, status, now - sent);
                }
                Err(_) => tally.errors += 1,
            }
        }
        tally
    }
}
