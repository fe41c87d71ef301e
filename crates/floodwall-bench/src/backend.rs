//! A constrained backend that collapses the way a saturated database does.
//!
//! floodwall exists to stand in front of a bottleneck like PostgreSQL. To show
//! (and test) what it buys, we need a bottleneck that fails the way a real one
//! does when nobody protects it:
//!
//! - **A fixed number of workers.** Each request needs one of `workers`
//!   slots (think CPU cores or connections doing real work). Requests that
//!   find none wait in a FIFO queue, unbounded, like connections piling up on
//!   a database.
//! - **Contention grows with the queue.** A request that starts service while
//!   `queued` others are waiting takes
//!   `service_time × (1 + contention × queued / workers)`: lock waits,
//!   context switches and cache misses make every query slower when the
//!   server is oversubscribed. So throughput *falls* as the queue grows; it
//!   does not just plateau at capacity.
//! - **Work is not cancelled when the client goes away.** The work runs in a
//!   detached task. A client that times out and disconnects still costs the
//!   backend a full service time, later, exactly like a query whose client
//!   gave up. The backend counts that wasted work as `abandoned`.
//! - **Optionally, it refuses when the queue is deep.** With
//!   [`BackendConfig::overload_error_at`] set, a request that arrives while
//!   that many others already wait is answered `503 too many connections` at
//!   once, the way PostgreSQL refuses connections past `max_connections`.
//!   Off by default: the unprotected database of the demo just queues.
//!
//! With an empty queue the capacity is `workers / service_time` requests per
//! second ([`BackendConfig::capacity_rps`]). Above that, the queue grows, each
//! request gets slower, the queue grows faster: congestion collapse.
//!
//! The model can change while the backend runs, through a [`BackendControl`]:
//! the service time can grow (a slow query plan, a cold cache) and workers can
//! come and go (a batch job takes half the connections). A change applies to
//! requests that *start* service afterwards; nothing already in service is cut
//! short, so after a shrink the backend drains down to the new worker count
//! before it admits anyone from the queue.
//!
//! The server speaks HTTP/1.1 with keep-alive and HTTP/2 over cleartext
//! (prior knowledge), on `127.0.0.1:0` ([`start`]) or a given address
//! ([`start_on`]), and answers `200 ok` with two diagnostic headers:
//! [`SERVICE_TIME_HEADER`] and [`QUEUED_HEADER`].

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde::{Deserialize, Serialize};
use tokio::{
    net::TcpListener,
    sync::oneshot,
    task::{JoinHandle, JoinSet},
};

/// Response header carrying the service time this request was charged, in
/// microseconds, so tests and curious users can see contention at work.
pub const SERVICE_TIME_HEADER: &str = "x-backend-service-time-us";

/// Response header carrying how many requests were waiting for a worker when
/// this one started service: the `queued` in the contention formula.
pub const QUEUED_HEADER: &str = "x-backend-queued";

/// The body of the 503 the backend answers in its error mode (see
/// [`BackendConfig::overload_error_at`]), worded like PostgreSQL's refusal so
/// a report can tell it from a gate's 503.
pub const REFUSED_BODY: &str = "too many connections\n";

/// The shape of the simulated bottleneck; see the module docs for the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// How many requests can be in service at once (cores, busy connections).
    pub workers: usize,
    /// How long one request takes when nobody is queued.
    #[serde(with = "humantime_serde")]
    pub service_time: Duration,
    /// How much each queued request per worker slows service down: with
    /// `contention = 0.05`, twenty waiters per worker double service time.
    pub contention: f64,
    /// Error mode: when at least this many requests already wait for a
    /// worker, a new one is answered `503` with [`REFUSED_BODY`] at once
    /// instead of queueing, and counted as `refused`. `Some(0)` means "no
    /// queue at all: refuse whenever every worker is busy". `None` (the
    /// default) queues without bound, like the demo's unprotected database.
    #[serde(default)]
    pub overload_error_at: Option<usize>,
}

impl Default for BackendConfig {
    /// 8 workers × 20 ms = 400 req/s, and a contention that makes an
    /// unprotected 3× spike collapse within a second or two; no error mode.
    fn default() -> Self {
        Self {
            workers: 8,
            service_time: Duration::from_millis(20),
            contention: 0.05,
            overload_error_at: None,
        }
    }
}

impl BackendConfig {
    /// Requests per second the backend sustains with an empty queue: the
    /// yardstick every goodput figure in the demo is measured against.
    pub fn capacity_rps(&self) -> f64 {
        self.workers as f64 / self.service_time.as_secs_f64()
    }

    /// Service time of a request that starts while `queued` others wait:
    /// `service_time × (1 + contention × queued / workers)`.
    pub fn service_time_when(&self, queued: usize) -> Duration {
        let factor = 1.0 + self.contention * queued as f64 / self.workers as f64;
        self.service_time.mul_f64(factor)
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.workers > 0, "backend workers must be at least 1");
        ensure!(
            !self.service_time.is_zero(),
            "backend service_time must be greater than zero"
        );
        ensure!(
            self.contention.is_finite() && self.contention >= 0.0,
            "backend contention must be a finite number >= 0, got {}",
            self.contention
        );
        Ok(())
    }
}

/// A snapshot of the backend's counters, for assertions and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BackendStats {
    /// Workers right now (changes with [`BackendControl::set_workers`]); 0
    /// for [`start_trivial`], which has no workers.
    pub workers: usize,
    /// Requests holding a worker right now. Just after a shrink this can be
    /// above `workers` until the extra requests finish.
    pub in_service: usize,
    /// The most requests in service at once since the start or the last
    /// [`BackendControl::reset_peaks`]; never above the largest worker count
    /// in force during that time.
    pub peak_in_service: usize,
    /// Requests waiting for a worker right now.
    pub queued: usize,
    /// The longest the wait queue has been since the start or the last
    /// [`BackendControl::reset_peaks`].
    pub peak_queued: usize,
    /// Requests whose service finished (whether or not anyone was listening).
    pub completed: u64,
    /// Completed requests whose client had already gone: wasted work.
    pub abandoned: u64,
    /// Requests answered `503 too many connections` by the error mode.
    pub refused: u64,
    /// Client connections open right now.
    pub open_connections: usize,
}

/// A running backend. Dropping it (or calling [`Backend::shutdown`]) stops
/// accepting, closes every connection and discards the queue; requests
/// already in service finish their sleep in the background and are dropped.
#[derive(Debug)]
pub struct Backend {
    /// Where to send requests: `127.0.0.1:<free port>`, or what
    /// [`start_on`] was given.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Backend {
    /// The counters right now.
    pub fn stats(&self) -> BackendStats {
        self.shared.stats()
    }

    /// The model this backend runs *now* (after any runtime changes), or
    /// `None` for [`start_trivial`].
    pub fn config(&self) -> Option<BackendConfig> {
        self.shared.config()
    }

    /// A handle that changes the model while the backend runs, for scenarios
    /// like "the database slows down at t = 10 s". Cheap to clone and to
    /// move into another task.
    pub fn control(&self) -> BackendControl {
        BackendControl {
            shared: self.shared.clone(),
        }
    }

    /// Stops the backend and waits until the listener and every connection
    /// are closed, so the port and file descriptors are free on return (and
    /// [`start_on`] can bind the same address again at once).
    pub async fn shutdown(mut self) {
        self.stop();
        // The accept task owns the listener and the connections' JoinSet;
        // once it has been cancelled and dropped, every connection task has
        // been aborted and the listening socket is closed.
        let _ = (&mut self.accept).await;
    }

    fn stop(&self) {
        // Waiters see their channel close and go away: the queue is gone.
        if let Some(pool) = &self.shared.pool {
            pool.close();
        }
        self.accept.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Changes a running backend's model: what a benchmark scenario uses to make
/// the bottleneck slower or smaller mid-run. Clones share the backend; the
/// handle keeps working (to no effect) after the backend shut down.
#[derive(Debug, Clone)]
pub struct BackendControl {
    shared: Arc<Shared>,
}

impl BackendControl {
    /// Sets the uncontended service time. Requests that start service from
    /// now on are charged the new time (scaled by contention as usual);
    /// requests already in service keep theirs. Fails for a zero duration or
    /// on the trivial backend, which has no model.
    pub fn set_service_time(&self, service_time: Duration) -> anyhow::Result<()> {
        ensure!(
            !service_time.is_zero(),
            "backend service_time must be greater than zero"
        );
        self.pool()?.lock().config.service_time = service_time;
        Ok(())
    }

    /// Sets how many requests can be in service at once. Growing admits
    /// queued requests at once. Shrinking cuts nothing short: requests in
    /// service finish, and the queue waits until fewer than `workers` are in
    /// service. Fails for 0 or on the trivial backend.
    pub fn set_workers(&self, workers: usize) -> anyhow::Result<()> {
        ensure!(workers > 0, "backend workers must be at least 1");
        let pool = self.pool()?;
        let mut state = pool.lock();
        state.config.workers = workers;
        state.admit_waiters();
        Ok(())
    }

    /// Restarts `peak_in_service` and `peak_queued` from the current values,
    /// so a scenario can measure the peaks of one phase alone.
    pub fn reset_peaks(&self) {
        if let Some(pool) = &self.shared.pool {
            let mut state = pool.lock();
            state.peak_in_service = state.in_service;
            state.peak_queued = state.waiters.len();
        }
    }

    /// The counters right now, as [`Backend::stats`].
    pub fn stats(&self) -> BackendStats {
        self.shared.stats()
    }

    /// The model right now, as [`Backend::config`].
    pub fn config(&self) -> Option<BackendConfig> {
        self.shared.config()
    }

    fn pool(&self) -> anyhow::Result<&Pool> {
        match &self.shared.pool {
            Some(pool) => Ok(pool),
            None => bail!("the trivial backend has no workers or service time to change"),
        }
    }
}

/// Starts a constrained backend with the given model on `127.0.0.1:0`.
pub async fn start(config: BackendConfig) -> anyhow::Result<Backend> {
    start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
}

/// Starts a constrained backend on a given address, for setups where
/// something else (an HAProxy or nginx config) was told the port in
/// advance. The listener sets `SO_REUSEADDR` (tokio does on Unix), so the
/// same address can be bound again right after [`Backend::shutdown`].
pub async fn start_on(addr: SocketAddr, config: BackendConfig) -> anyhow::Result<Backend> {
    config.validate()?;
    serve(addr, Some(config)).await
}

/// Starts a backend that answers `200 ok` at once, with no workers and no
/// queue: the baseline for measuring floodwall's own overhead and the load
/// generator's headroom.
pub async fn start_trivial() -> anyhow::Result<Backend> {
    start_trivial_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
}

/// [`start_trivial`] on a given address, as [`start_on`] is to [`start`].
pub async fn start_trivial_on(addr: SocketAddr) -> anyhow::Result<Backend> {
    serve(addr, None).await
}

async fn serve(addr: SocketAddr, config: Option<BackendConfig>) -> anyhow::Result<Backend> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the simulated backend to {addr}"))?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        pool: config.map(Pool::new),
        completed: AtomicU64::new(0),
        abandoned: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        open_connections: AtomicUsize::new(0),
    });
    let accept = tokio::spawn(accept_loop(listener, shared.clone()));
    Ok(Backend {
        addr,
        shared,
        accept,
    })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else {
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let builder = builder.clone();
                connections.spawn(async move {
                    let _open = ConnectionGuard::new(&shared.open_connections);
                    let service = service_fn(|_req: Request<Incoming>| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared).await) }
                    });
                    // A client hanging up mid-request is routine here.
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(shared: Arc<Shared>) -> Response<Full<Bytes>> {
    let Some(pool) = &shared.pool else {
        shared.completed.fetch_add(1, Ordering::Relaxed);
        return ok_response(None);
    };
    // Decided synchronously, before any await: the request either starts,
    // queues, or is refused at once.
    let ticket = match pool.arrive() {
        Arrival::Refused => {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            return text_response(StatusCode::SERVICE_UNAVAILABLE, REFUSED_BODY);
        }
        Arrival::Closed => return shutting_down(),
        Arrival::Start(start) => Ticket::Started(start),
        Arrival::Wait(waiting) => Ticket::Waiting(waiting),
    };
    let (done_tx, done_rx) = oneshot::channel();
    // Detached: the work goes on if this handler is dropped because the
    // client disconnected, as a database query would.
    tokio::spawn(work(shared.clone(), ticket, done_tx));
    match done_rx.await {
        Ok(served) => ok_response(Some(served)),
        // The queue was discarded because the backend is shutting down.
        Err(_) => shutting_down(),
    }
}

/// A request's place at the backend once it has been let in.
enum Ticket {
    Started(Start),
    Waiting(oneshot::Receiver<Start>),
}

async fn work(shared: Arc<Shared>, ticket: Ticket, done: oneshot::Sender<Start>) {
    let Some(pool) = &shared.pool else { return };
    let start = match ticket {
        Ticket::Started(start) => start,
        Ticket::Waiting(waiting) => match waiting.await {
            Ok(start) => start,
            Err(_) => return, // closed: the backend was shut down
        },
    };
    tokio::time::sleep(start.service_time).await;
    pool.release();
    shared.completed.fetch_add(1, Ordering::Relaxed);
    if done.send(start).is_err() {
        shared.abandoned.fetch_add(1, Ordering::Relaxed);
    }
}

fn ok_response(served: Option<Start>) -> Response<Full<Bytes>> {
    let mut response = text_response(StatusCode::OK, "ok\n");
    if let Some(served) = served {
        let headers = response.headers_mut();
        headers.insert(
            SERVICE_TIME_HEADER,
            HeaderValue::from(served.service_time.as_micros() as u64),
        );
        headers.insert(QUEUED_HEADER, HeaderValue::from(served.queued_at_start));
    }
    response
}

fn shutting_down() -> Response<Full<Bytes>> {
    text_response(StatusCode::SERVICE_UNAVAILABLE, "backend shutting down\n")
}

fn text_response(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

#[derive(Debug)]
struct Shared {
    /// The workers and their queue; `None` for the trivial backend.
    pool: Option<Pool>,
    completed: AtomicU64,
    abandoned: AtomicU64,
    refused: AtomicU64,
    open_connections: AtomicUsize,
}

impl Shared {
    fn stats(&self) -> BackendStats {
        let mut stats = BackendStats {
            completed: self.completed.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            open_connections: self.open_connections.load(Ordering::Relaxed),
            ..BackendStats::default()
        };
        if let Some(pool) = &self.pool {
            let state = pool.lock();
            stats.workers = state.config.workers;
            stats.in_service = state.in_service;
            stats.peak_in_service = state.peak_in_service;
            stats.queued = state.waiters.len();
            stats.peak_queued = state.peak_queued;
        }
        stats
    }

    fn config(&self) -> Option<BackendConfig> {
        self.pool.as_ref().map(|pool| pool.lock().config)
    }
}

/// When a request starts service, and what it is charged: decided by
/// whoever hands it a worker, under the pool's lock, so the `queued` in the
/// contention formula is exact.
#[derive(Debug, Clone, Copy)]
struct Start {
    queued_at_start: usize,
    service_time: Duration,
}

/// What [`Pool::arrive`] decided for a new request.
enum Arrival {
    Start(Start),
    Wait(oneshot::Receiver<Start>),
    Refused,
    Closed,
}

/// The workers and their FIFO queue.
///
/// A hand-rolled pool rather than a `tokio::sync::Semaphore`, because the
/// worker count changes at runtime: a semaphore can only forget permits that
/// are free, so shrinking below the number in service would need permits
/// owed back later. Here the rule is one line: a finishing request hands its
/// worker to the next in line only while `in_service < workers`.
#[derive(Debug)]
struct Pool {
    state: Mutex<PoolState>,
}

#[derive(Debug)]
struct PoolState {
    /// The model in force now; `workers` and `service_time` change at runtime.
    config: BackendConfig,
    in_service: usize,
    peak_in_service: usize,
    /// First come, first served; each gets its [`Start`] through the channel.
    waiters: VecDeque<oneshot::Sender<Start>>,
    peak_queued: usize,
    closed: bool,
}

impl Pool {
    fn new(config: BackendConfig) -> Self {
        Self {
            state: Mutex::new(PoolState {
                config,
                in_service: 0,
                peak_in_service: 0,
                waiters: VecDeque::new(),
                peak_queued: 0,
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Nothing panics while holding the lock; recover rather than
        // poisoning every later request if that ever changes.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn arrive(&self) -> Arrival {
        let mut state = self.lock();
        if state.closed {
            return Arrival::Closed;
        }
        // A free worker implies an empty queue: waiters are admitted as soon
        // as a worker frees up.
        if state.in_service < state.config.workers {
            return Arrival::Start(state.begin_service());
        }
        if let Some(limit) = state.config.overload_error_at {
            if state.waiters.len() >= limit {
                return Arrival::Refused;
            }
        }
        let (tx, rx) = oneshot::channel();
        state.waiters.push_back(tx);
        state.peak_queued = state.peak_queued.max(state.waiters.len());
        Arrival::Wait(rx)
    }

    fn release(&self) {
        let mut state = self.lock();
        state.in_service -= 1;
        state.admit_waiters();
    }

    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        // Dropping the senders wakes every waiter with an error.
        state.waiters.clear();
    }
}

impl PoolState {
    /// Takes a worker for a request; the caller checked one is free.
    fn begin_service(&mut self) -> Start {
        self.in_service += 1;
        self.peak_in_service = self.peak_in_service.max(self.in_service);
        let queued_at_start = self.waiters.len();
        Start {
            queued_at_start,
            service_time: self.config.service_time_when(queued_at_start),
        }
    }

    /// Hands free workers to the head of the queue.
    fn admit_waiters(&mut self) {
        while self.in_service < self.config.workers {
            let Some(waiter) = self.waiters.pop_front() else {
                break;
            };
            let start = self.begin_service();
            if waiter.send(start).is_err() {
                // Its task is gone (runtime shutting down): free the worker.
                self.in_service -= 1;
            }
        }
    }
}

/// Counts a connection as open for as long as its task lives, including
/// when the task is aborted at shutdown.
struct ConnectionGuard<'a>(&'a AtomicUsize);

impl<'a> ConnectionGuard<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    use std::sync::atomic::AtomicBool;
    use tokio::time::Instant;

    fn client() -> Client<HttpConnector, Empty<Bytes>> {
        Client::builder(TokioExecutor::new()).build_http()
    }

    async fn get(
        client: &Client<HttpConnector, Empty<Bytes>>,
        addr: SocketAddr,
    ) -> Response<Bytes> {
        let uri = format!("http://{addr}/").parse::<http::Uri>().unwrap();
        let response = client.get(uri).await.expect("backend answers");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Response::from_parts(parts, body)
    }

    fn header_u64(response: &Response<Bytes>, name: &str) -> u64 {
        response.headers()[name].to_str().unwrap().parse().unwrap()
    }

    fn model(workers: usize, service_ms: u64, contention: f64) -> BackendConfig {
        BackendConfig {
            workers,
            service_time: Duration::from_millis(service_ms),
            contention,
            ..BackendConfig::default()
        }
    }

    /// `clients` loops sending back to back until `stop`; each returns the
    /// statuses it saw.
    fn hammer(
        addr: SocketAddr,
        clients: usize,
        stop: &Arc<AtomicBool>,
    ) -> Vec<JoinHandle<Vec<StatusCode>>> {
        let client = client();
        (0..clients)
            .map(|_| {
                let (client, stop) = (client.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        statuses.push(get(&client, addr).await.status());
                    }
                    statuses
                })
            })
            .collect()
    }

    #[test]
    fn capacity_and_formula() {
        let config = BackendConfig::default();
        assert_eq!(config.capacity_rps(), 400.0);
        assert_eq!(config.overload_error_at, None);
        assert_eq!(config.service_time_when(0), Duration::from_millis(20));
        // 160 waiting on 8 workers with contention 0.05: 1 + 0.05 × 20 = 2×.
        assert_eq!(config.service_time_when(160), Duration::from_millis(40));
    }

    #[test]
    fn config_reads_without_the_new_key_and_with_it() {
        let old: BackendConfig =
            toml::from_str("workers = 4\nservice_time = \"10ms\"\ncontention = 0.1").unwrap();
        assert_eq!(old, model(4, 10, 0.1));
        let refusing: BackendConfig = toml::from_str(
            "workers = 4\nservice_time = \"10ms\"\ncontention = 0.1\noverload_error_at = 100",
        )
        .unwrap();
        assert_eq!(refusing.overload_error_at, Some(100));
    }

    #[tokio::test]
    async fn rejects_invalid_config() {
        let bad = BackendConfig {
            workers: 0,
            ..BackendConfig::default()
        };
        let err = start(bad).await.unwrap_err().to_string();
        assert!(err.contains("workers"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peak_concurrency_never_exceeds_workers() {
        let backend = start(model(3, 20, 0.0)).await.unwrap();
        let client = client();
        let addr = backend.addr;
        let requests: Vec<_> = (0..30)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { get(&client, addr).await.status() })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap(), StatusCode::OK);
        }
        let stats = backend.stats();
        assert_eq!(stats.peak_in_service, 3, "{stats:?}");
        assert_eq!(stats.completed, 30);
        assert!(stats.peak_queued > 0, "30 requests on 3 workers must queue");
        assert_eq!(stats.in_service, 0);
        assert_eq!(stats.queued, 0);
        assert_eq!(stats.refused, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn service_time_grows_with_the_queue() {
        let backend = start(model(1, 40, 1.0)).await.unwrap();
        let client = client();
        let addr = backend.addr;

        let alone = get(&client, addr).await;
        assert_eq!(header_u64(&alone, QUEUED_HEADER), 0);
        assert_eq!(header_u64(&alone, SERVICE_TIME_HEADER), 40_000);

        // One request holds the only worker; three more arrive and queue.
        let started = Instant::now();
        let first = {
            let client = client.clone();
            tokio::spawn(async move { get(&client, addr).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let queued: Vec<_> = (0..3)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { get(&client, addr).await })
            })
            .collect();
        first.await.unwrap();
        let mut charged = Vec::new();
        for request in queued {
            let response = request.await.unwrap();
            charged.push((
                header_u64(&response, QUEUED_HEADER),
                header_u64(&response, SERVICE_TIME_HEADER),
            ));
        }
        let elapsed = started.elapsed();
        charged.sort();
        // The one that started while two others waited paid 1 + 1 × 2/1 = 3×.
        assert_eq!(charged, vec![(0, 40_000), (1, 80_000), (2, 120_000)]);
        // Four requests at a flat 40 ms would take 160 ms; contention makes
        // it 40 + 120 + 80 + 40 = 280 ms.
        assert!(elapsed >= Duration::from_millis(270), "{elapsed:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_continues_after_the_client_leaves() {
        let backend = start(model(1, 100, 0.0)).await.unwrap();
        let client = client();
        let gave_up =
            tokio::time::timeout(Duration::from_millis(20), get(&client, backend.addr)).await;
        assert!(gave_up.is_err(), "the client should have timed out");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let stats = backend.stats();
        assert_eq!(stats.completed, 1, "{stats:?}");
        assert_eq!(stats.abandoned, 1, "{stats:?}");
        assert_eq!(stats.open_connections, 0, "{stats:?}");
    }

    #[tokio::test]
    async fn trivial_backend_answers_at_once_and_shuts_down() {
        let backend = start_trivial().await.unwrap();
        let addr = backend.addr;
        let response = get(&client(), addr).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body().as_ref(), b"ok\n");
        assert_eq!(backend.stats().completed, 1);
        let control = backend.control();
        let err = control.set_workers(4).unwrap_err().to_string();
        assert!(err.contains("trivial"), "{err}");
        assert!(control.set_service_time(Duration::from_millis(1)).is_err());
        assert_eq!(control.config(), None);
        backend.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    /// A batch job takes half the workers mid-run: peak concurrency and
    /// throughput halve, nothing in service is cut, and growing back admits
    /// the queue at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn set_workers_halves_peak_concurrency_without_cutting_requests() {
        let backend = start(model(8, 40, 0.0)).await.unwrap();
        let control = backend.control();
        let stop = Arc::new(AtomicBool::new(false));
        // 24 closed-loop clients keep 8 workers busy and 16 queued.
        let clients = hammer(backend.addr, 24, &stop);

        tokio::time::sleep(Duration::from_millis(100)).await;
        control.reset_peaks();
        let before = backend.stats().completed;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let full = backend.stats();
        let full_done = full.completed - before;
        assert_eq!(full.peak_in_service, 8, "{full:?}");

        control.set_workers(4).unwrap();
        assert_eq!(backend.config().unwrap().workers, 4);
        assert_eq!(backend.stats().workers, 4);
        // The eight already in service finish; then only four at a time.
        tokio::time::sleep(Duration::from_millis(60)).await;
        control.reset_peaks();
        let before = backend.stats().completed;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let half = backend.stats();
        let half_done = half.completed - before;
        assert_eq!(half.peak_in_service, 4, "{half:?}");
        let ratio = half_done as f64 / full_done as f64;
        assert!((0.3..0.7).contains(&ratio), "{full_done} then {half_done}");

        control.set_workers(8).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(backend.stats().peak_in_service, 8, "growing admits at once");

        stop.store(true, Ordering::Relaxed);
        for client in clients {
            let statuses = client.await.unwrap();
            assert!(
                statuses.iter().all(|s| *s == StatusCode::OK),
                "{statuses:?}"
            );
        }
        assert_eq!(backend.stats().abandoned, 0, "no request was cut short");
    }

    /// A mid-run slowdown: requests that start afterwards take twice as long.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn set_service_time_doubles_measured_service() {
        let backend = start(model(2, 25, 0.0)).await.unwrap();
        let client = client();
        let mean_of_five = || async {
            let started = Instant::now();
            let mut charged = Vec::new();
            for _ in 0..5 {
                charged.push(header_u64(
                    &get(&client, backend.addr).await,
                    SERVICE_TIME_HEADER,
                ));
            }
            (started.elapsed() / 5, charged)
        };
        let (normal, charged) = mean_of_five().await;
        assert!(charged.iter().all(|&us| us == 25_000), "{charged:?}");

        backend
            .control()
            .set_service_time(Duration::from_millis(50))
            .unwrap();
        assert_eq!(
            backend.config().unwrap().service_time,
            Duration::from_millis(50)
        );
        let (slow, charged) = mean_of_five().await;
        assert!(charged.iter().all(|&us| us == 50_000), "{charged:?}");
        let ratio = slow.as_secs_f64() / normal.as_secs_f64();
        assert!(slow >= Duration::from_millis(50), "{slow:?}");
        assert!((1.6..2.4).contains(&ratio), "{normal:?} then {slow:?}");
    }

    /// Error mode: 2 in service, 3 queued, the other 5 refused at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overload_error_at_answers_503_once_the_queue_is_deep() {
        let backend = start(BackendConfig {
            overload_error_at: Some(3),
            ..model(2, 500, 0.0)
        })
        .await
        .unwrap();
        let client = client();
        let addr = backend.addr;
        let started = Instant::now();
        let requests: Vec<_> = (0..10)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move {
                    let response = get(&client, addr).await;
                    (response, started.elapsed())
                })
            })
            .collect();
        let mut refused = 0;
        for request in requests {
            let (response, took) = request.await.unwrap();
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                refused += 1;
                assert_eq!(response.body().as_ref(), REFUSED_BODY.as_bytes());
                assert!(
                    took < Duration::from_millis(250),
                    "refused at once: {took:?}"
                );
            } else {
                assert_eq!(response.status(), StatusCode::OK);
                assert!(took >= Duration::from_millis(500), "{took:?}");
            }
        }
        let stats = backend.stats();
        assert_eq!(refused, 5, "{stats:?}");
        assert_eq!(stats.refused, 5, "{stats:?}");
        assert_eq!(stats.completed, 5, "{stats:?}");
        assert_eq!(stats.peak_queued, 3, "{stats:?}");
    }

    /// The bench restarts a backend on a port fixed in a proxy's config.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn start_on_rebinds_the_same_address_right_after_shutdown() {
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let first = start_on(any, model(2, 5, 0.0)).await.unwrap();
        let addr = first.addr;
        assert_ne!(addr.port(), 0);
        // A served connection, closed by the server at shutdown, leaves the
        // port in TIME_WAIT: rebinding must still work.
        assert_eq!(get(&client(), addr).await.status(), StatusCode::OK);
        first.shutdown().await;

        let second = start_on(addr, model(2, 5, 0.0)).await.unwrap();
        assert_eq!(second.addr, addr);
        assert_eq!(get(&client(), addr).await.status(), StatusCode::OK);
        assert_eq!(second.stats().completed, 1, "a fresh backend");
        second.shutdown().await;

        let trivial = start_trivial_on(addr).await.unwrap();
        assert_eq!(get(&client(), addr).await.status(), StatusCode::OK);
        trivial.shutdown().await;
    }
}
