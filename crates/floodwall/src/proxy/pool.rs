//! Upstream connections: one keep-alive pool per proxy worker, and the
//! request sent on a connection from it.
//!
//! **Why not hyper-util's pooled client.** That client is built for any
//! executor and any thread: every request takes its pool's lock through a
//! shared, reference-counted handle, races a checkout against a new
//! connect, and clones the client (its connector included) to do so. A
//! proxy worker here is one thread with its own pool (`server/workers.rs`),
//! so none of that buys anything. In the same run, a bare hyper proxy on
//! this machine took 24.1 and 22.7 µs of CPU per request with the pooled
//! client and 19.2 and 22.3 µs with a plain stack of idle connections
//! (`wrk -t2 -c64` in front of nginx answering at once; BENCHMARKS.md,
//! "overhead").
//!
//! **What a connection does.** It is opened by the upstream's connector
//! (connect timeout, TLS for `https://`), handshaken as HTTP/1.1 and driven
//! by a task on the worker's runtime. A request takes the most recently
//! used idle connection of its endpoint (the one whose socket and TLS
//! state are warmest), else opens one. The connection comes back when the
//! upstream has sent the whole response ([`Pooled`] is held by the
//! response's `Finish`, `body.rs`): never while a body is still arriving,
//! so a pooled connection is never busy. A response that failed, timed out
//! or was abandoned closes its connection instead.
//!
//! **A stale connection is retried once.** An idle connection the upstream
//! closed (its own keep-alive timeout) fails before anything is written;
//! the request then goes out once more on a new connection, as
//! hyper-util's client does (`retry_canceled_requests`). A request that was
//! written is never sent twice.
//!
//! **Idle connections expire** after `pool_idle_timeout`: a connection idle
//! longer is closed when its worker next touches the pool (any request to
//! this upstream, at most once a second for the sweep of every endpoint,
//! so a removed endpoint's connections go too). At most
//! `pool_max_idle_per_host` are kept per endpoint and worker; `0` closes
//! every connection after its response.

use super::upload::Upload;
use crate::tls::UpstreamConnector;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower_service::Service;

/// Which endpoint a connection goes to.
pub type Key = (Scheme, Authority);

/// How often a worker's pool looks for expired connections of every
/// endpoint, not only the one it is serving.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Why a request got no response from the upstream.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened (refused, timed out, TLS failed).
    Connect(super::BoxError),
    /// The connection failed while the request or response head was on it.
    Request(hyper::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Request(e) => write!(f, "request: {e}"),
        }
    }
}

impl std::error::Error for SendError {}

/// An idle connection and when it went idle.
struct Idle {
    tx: SendRequest<Upload>,
    since: Instant,
}

/// One worker's idle connections, by endpoint.
#[derive(Default)]
struct WorkerPool {
    idle: HashMap<Key, Vec<Idle>>,
    swept: Option<Instant>,
}

impl WorkerPool {
    /// Closes what has been idle longer than `timeout`: in `key`'s list
    /// always, in every list at most once per [`SWEEP_EVERY`]. A list is
    /// in the order its connections went idle, so in `key`'s only the
    /// front is looked at: a request costs nothing per idle connection.
    /// (A connection that closed sits where it is until it is taken,
    /// found closed, and dropped, or until the sweep.)
    fn expire(&mut self, key: &Key, timeout: Duration, now: Instant) {
        let stale = |i: &Idle| now.duration_since(i.since) >= timeout;
        if self
            .swept
            .is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY)
        {
            self.swept = Some(now);
            self.idle.retain(|_, list| {
                list.retain(|i| !stale(i) && !i.tx.is_closed());
                !list.is_empty()
            });
        } else if let Some(list) = self.idle.get_mut(key) {
            let n = list.iter().take_while(|i| stale(i)).count();
            list.drain(..n);
        }
    }
}

/// The idle connections of one upstream, a pool per proxy worker.
pub struct Pools {
    workers: Box<[Mutex<WorkerPool>]>,
    connector: UpstreamConnector,
    max_idle: usize,
    idle_timeout: Duration,
}

impl fmt::Debug for Pools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pools")
            .field("workers", &self.workers.len())
            .field("max_idle", &self.max_idle)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// A connection in use by one request, given back to its worker's pool by
/// [`Pooled::give_back`] once the upstream has sent the whole response;
/// dropped otherwise, which closes it.
pub struct Pooled {
    tx: SendRequest<Upload>,
    key: Key,
    worker: usize,
    pools: Arc<Pools>,
}

impl fmt::Debug for Pooled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled")
            .field("endpoint", &self.key.1)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl Pooled {
    /// The response was read to its end: the connection may carry the
    /// next request.
    pub fn give_back(self) {
        let Pooled {
            tx,
            key,
            worker,
            pools,
        } = self;
        pools.put(worker, key, tx);
    }
}

impl Pools {
    /// Pools for `workers` proxy workers, opening connections with
    /// `connector`, keeping at most `max_idle` idle per endpoint and worker
    /// for at most `idle_timeout`.
    pub fn new(
        connector: UpstreamConnector,
        workers: usize,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            workers: (0..workers.max(1))
                .map(|_| Mutex::new(WorkerPool::default()))
                .collect(),
            connector,
            max_idle,
            idle_timeout,
        }
    }

    fn pool(&self, worker: usize) -> std::sync::MutexGuard<'_, WorkerPool> {
        // A panic while the lock was held left at worst a list of idle
        // connections, each checked again before use.
        self.workers[worker % self.workers.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `req` (in origin form, with its `Host`: `Upstream::prepare`)
    /// to the endpoint `key` on a connection of `worker`'s pool. Returns
    /// the response head and the connection, to give back when the
    /// response body has ended.
    pub async fn send(
        self: &Arc<Self>,
        worker: usize,
        key: Key,
        mut req: Request<Upload>,
    ) -> Result<(Response<Incoming>, Pooled), SendError> {
        // An idle connection, then (if it turned out closed before the
        // request was written) a new one.
        let reused = self.take(worker, &key).await;
        let fresh = reused.is_none();
        let mut tx = match reused {
            Some(tx) => tx,
            None => self.connect(&key).await?,
        };
        match tx.try_send_request(req).await {
            Ok(resp) => return Ok((resp, self.pooled(tx, key, worker))),
            Err(mut e) => match e.take_message() {
                Some(again) if !fresh => req = again,
                _ => return Err(SendError::Request(e.into_error())),
            },
        }
        let mut tx = self.connect(&key).await?;
        match tx.send_request(req).await {
            Ok(resp) => Ok((resp, self.pooled(tx, key, worker))),
            Err(e) => Err(SendError::Request(e)),
        }
    }

    fn pooled(self: &Arc<Self>, tx: SendRequest<Upload>, key: Key, worker: usize) -> Pooled {
        Pooled {
            tx,
            key,
            worker,
            pools: self.clone(),
        }
    }

    /// The most recently used idle connection to `key` that is still
    /// open, ready for a request.
    async fn take(&self, worker: usize, key: &Key) -> Option<SendRequest<Upload>> {
        loop {
            let idle = {
                let mut pool = self.pool(worker);
                pool.expire(key, self.idle_timeout, Instant::now());
                pool.idle.get_mut(key)?.pop()?
            };
            let mut tx = idle.tx;
            // A pooled connection carries no request; `ready` only waits
            // for its task to have seen the last response end.
            if tx.ready().await.is_ok() {
                return Some(tx);
            }
        }
    }

    /// Opens a connection to `key` and starts its task on this runtime.
    async fn connect(&self, key: &Key) -> Result<SendRequest<Upload>, SendError> {
        let dst = Uri::builder()
            .scheme(key.0.clone())
            .authority(key.1.clone())
            .path_and_query("/")
            .build()
            .expect("a scheme and an authority make a URI");
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector.call(dst).await.map_err(SendError::Connect)?;
        let (tx, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        tokio::spawn(async move {
            // Ends when the upstream closes, or when the last handle to
            // the connection is dropped and it is idle.
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(tx)
    }

    /// Puts `tx` back in `worker`'s pool, unless it closed or the pool
    /// for its endpoint is full.
    fn put(&self, worker: usize, key: Key, tx: SendRequest<Upload>) {
        if self.max_idle == 0 || tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut pool = self.pool(worker);
        pool.expire(&key, self.idle_timeout, now);
        let list = pool.idle.entry(key).or_default();
        if list.len() < self.max_idle {
            list.push(Idle { tx, since: now });
        }
    }
}
