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
//!
//! With an empty queue the capacity is `workers / service_time` requests per
//! second ([`BackendConfig::capacity_rps`]). Above that, the queue grows, each
//! request gets slower, the queue grows faster: congestion collapse.
//!
//! The server speaks HTTP/1.1 with keep-alive and HTTP/2 over cleartext
//! (prior knowledge), on `127.0.0.1:0`, and answers `200 ok` with two
//! diagnostic headers: [`SERVICE_TIME_HEADER`] and [`QUEUED_HEADER`].

use std::{
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{ensure, Context as _};
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
    sync::{oneshot, Semaphore},
    task::{JoinHandle, JoinSet},
};

/// Response header carrying the service time this request was charged, in
/// microseconds, so tests and curious users can see contention at work.
pub const SERVICE_TIME_HEADER: &str = "x-backend-service-time-us";

/// Response header carrying how many requests were waiting for a worker when
/// this one started service: the `queued` in the contention formula.
pub const QUEUED_HEADER: &str = "x-backend-queued";

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
}

impl Default for BackendConfig {
    /// 8 workers × 20 ms = 400 req/s, and a contention that makes an
    /// unprotected 3× spike collapse within a second or two.
    fn default() -> Self {
        Self {
            workers: 8,
            service_time: Duration::from_millis(20),
            contention: 0.05,
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
            self.workers <= Semaphore::MAX_PERMITS,
            "backend workers must be at most {}",
            Semaphore::MAX_PERMITS
        );
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
    /// Requests holding a worker right now.
    pub in_service: usize,
    /// The most requests ever in service at once; never above `workers`.
    pub peak_in_service: usize,
    /// Requests waiting for a worker right now.
    pub queued: usize,
    /// The longest the wait queue has ever been.
    pub peak_queued: usize,
    /// Requests whose service finished (whether or not anyone was listening).
    pub completed: u64,
    /// Completed requests whose client had already gone: wasted work.
    pub abandoned: u64,
    /// Client connections open right now.
    pub open_connections: usize,
}

/// A running backend. Dropping it (or calling [`Backend::shutdown`]) stops
/// accepting, closes every connection and discards the queue; requests
/// already in service finish their sleep in the background and are dropped.
#[derive(Debug)]
pub struct Backend {
    /// Where to send requests: `127.0.0.1:<free port>`.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Backend {
    /// The counters right now.
    pub fn stats(&self) -> BackendStats {
        self.shared.stats()
    }

    /// The model this backend runs, or `None` for [`start_trivial`].
    pub fn config(&self) -> Option<BackendConfig> {
        self.shared.config
    }

    /// Stops the backend and waits until the listener and every connection
    /// are closed, so the port and file descriptors are free on return.
    pub async fn shutdown(mut self) {
        self.stop();
        // The accept task owns the connections' JoinSet; once it has been
        // cancelled and dropped, every connection task has been aborted.
        let _ = (&mut self.accept).await;
    }

    fn stop(&self) {
        // Waiters get an error from acquire and go away: the queue is gone.
        self.shared.workers.close();
        self.accept.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a constrained backend with the given model on `127.0.0.1:0`.
pub async fn start(config: BackendConfig) -> anyhow::Result<Backend> {
    config.validate()?;
    serve(Some(config)).await
}

/// Starts a backend that answers `200 ok` at once, with no workers and no
/// queue: the baseline for measuring floodwall's own overhead and the load
/// generator's headroom.
pub async fn start_trivial() -> anyhow::Result<Backend> {
    serve(None).await
}

async fn serve(config: Option<BackendConfig>) -> anyhow::Result<Backend> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("binding the simulated backend to 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        config,
        workers: Arc::new(Semaphore::new(config.map_or(0, |c| c.workers))),
        in_service: AtomicUsize::new(0),
        peak_in_service: AtomicUsize::new(0),
        queued: AtomicUsize::new(0),
        peak_queued: AtomicUsize::new(0),
        completed: AtomicU64::new(0),
        abandoned: AtomicU64::new(0),
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
    let Some(config) = shared.config else {
        shared.completed.fetch_add(1, Ordering::Relaxed);
        return ok_response(None);
    };
    let (done_tx, done_rx) = oneshot::channel();
    // Detached: the work goes on if this handler is dropped because the
    // client disconnected, as a database query would.
    tokio::spawn(work(shared, config, done_tx));
    match done_rx.await {
        Ok(served) => ok_response(Some(served)),
        // The queue was discarded because the backend is shutting down.
        Err(_) => Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Full::new(Bytes::from_static(b"backend shutting down\n")))
            .expect("static response is valid"),
    }
}

/// What a request was charged, reported back in the response headers.
struct Served {
    queued_at_start: usize,
    service_time: Duration,
}

async fn work(shared: Arc<Shared>, config: BackendConfig, done: oneshot::Sender<Served>) {
    let waiting = shared.queued.fetch_add(1, Ordering::SeqCst) + 1;
    shared.peak_queued.fetch_max(waiting, Ordering::Relaxed);
    // tokio's Semaphore is fair: waiters are served first come, first served.
    let permit = shared.workers.clone().acquire_owned().await;
    shared.queued.fetch_sub(1, Ordering::SeqCst);
    let Ok(_permit) = permit else {
        return; // closed: the backend was shut down
    };

    let queued_at_start = shared.queued.load(Ordering::SeqCst);
    let service_time = config.service_time_when(queued_at_start);
    let now = shared.in_service.fetch_add(1, Ordering::SeqCst) + 1;
    shared.peak_in_service.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(service_time).await;
    shared.in_service.fetch_sub(1, Ordering::SeqCst);
    shared.completed.fetch_add(1, Ordering::Relaxed);

    let served = Served {
        queued_at_start,
        service_time,
    };
    if done.send(served).is_err() {
        shared.abandoned.fetch_add(1, Ordering::Relaxed);
    }
}

fn ok_response(served: Option<Served>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok\n")));
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

#[derive(Debug)]
struct Shared {
    config: Option<BackendConfig>,
    workers: Arc<Semaphore>,
    in_service: AtomicUsize,
    peak_in_service: AtomicUsize,
    queued: AtomicUsize,
    peak_queued: AtomicUsize,
    completed: AtomicU64,
    abandoned: AtomicU64,
    open_connections: AtomicUsize,
}

impl Shared {
    fn stats(&self) -> BackendStats {
        BackendStats {
            in_service: self.in_service.load(Ordering::SeqCst),
            peak_in_service: self.peak_in_service.load(Ordering::SeqCst),
            queued: self.queued.load(Ordering::SeqCst),
            peak_queued: self.peak_queued.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
            open_connections: self.open_connections.load(Ordering::Relaxed),
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

    #[test]
    fn capacity_and_formula() {
        let config = BackendConfig::default();
        assert_eq!(config.capacity_rps(), 400.0);
        assert_eq!(config.service_time_when(0), Duration::from_millis(20));
        // 160 waiting on 8 workers with contention 0.05: 1 + 0.05 × 20 = 2×.
        assert_eq!(config.service_time_when(160), Duration::from_millis(40));
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
        let backend = start(BackendConfig {
            workers: 3,
            service_time: Duration::from_millis(20),
            contention: 0.0,
        })
        .await
        .unwrap();
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
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn service_time_grows_with_the_queue() {
        let config = BackendConfig {
            workers: 1,
            service_time: Duration::from_millis(40),
            contention: 1.0,
        };
        let backend = start(config).await.unwrap();
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
        let backend = start(BackendConfig {
            workers: 1,
            service_time: Duration::from_millis(100),
            contention: 0.0,
        })
        .await
        .unwrap();
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
        backend.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
