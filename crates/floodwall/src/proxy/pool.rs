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
//!
//! **A few connects at a time.** At most `pool_max_connecting` connections
//! to one endpoint are being opened by a worker at once; a request that
//! finds none idle and every connect slot taken waits for whichever comes
//! first, a connection given back or a slot, up to the connect timeout
//! (see [`Pools::checkout`] for why).

use super::upload::Upload;
use crate::tls::UpstreamConnector;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;
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

/// One worker's connections to one endpoint: the idle ones, and how many
/// are being opened.
#[derive(Default)]
struct Endpoint {
    /// In the order they went idle; taken from the back.
    idle: Vec<Idle>,
    /// Connects under way, at most `max_connecting`.
    connecting: usize,
    /// Wakes one request waiting for a connection: one went idle, or a
    /// connect ended and its slot is free.
    wake: Arc<Notify>,
}

impl Endpoint {
    /// Whether the entry can go: nothing idle, nothing being opened, and
    /// nobody waiting (a waiter holds a clone of `wake`).
    fn unused(&self) -> bool {
        self.idle.is_empty() && self.connecting == 0 && Arc::strong_count(&self.wake) == 1
    }
}

/// One worker's connections, by endpoint.
#[derive(Default)]
struct WorkerPool {
    endpoints: HashMap<Key, Endpoint>,
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
            self.endpoints.retain(|_, e| {
                e.idle.retain(|i| !stale(i) && !i.tx.is_closed());
                !e.unused()
            });
        } else if let Some(e) = self.endpoints.get_mut(key) {
            let n = e.idle.iter().take_while(|i| stale(i)).count();
            e.idle.drain(..n);
        }
    }
}

/// The connections of one upstream, a pool per proxy worker.
pub struct Pools {
    workers: Box<[Mutex<WorkerPool>]>,
    connector: UpstreamConnector,
    max_idle: usize,
    idle_timeout: Duration,
    max_connecting: usize,
    /// The longest a request waits for a connection when `max_connecting`
    /// connects are already under way: the connect timeout, which bounds
    /// each of them.
    max_wait: Duration,
}

impl fmt::Debug for Pools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pools")
            .field("workers", &self.workers.len())
            .field("max_idle", &self.max_idle)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connecting", &self.max_connecting)
            .finish_non_exhaustive()
    }
}

/// How a pool was asked to behave (`[[upstreams]]`' `pool_*` keys and its
/// connect timeout).
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Proxy workers, each with a pool of its own.
    pub workers: usize,
    /// Idle connections kept per endpoint and worker; 0 keeps none.
    pub max_idle: usize,
    /// How long a connection may stay idle.
    pub idle_timeout: Duration,
    /// Connects under way at once per endpoint and worker (at least 1).
    pub max_connecting: usize,
    /// The connect timeout: the longest wait for a connection.
    pub connect_timeout: Duration,
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
    /// Pools opening connections with `connector`, as `settings` say.
    pub fn new(connector: UpstreamConnector, settings: PoolSettings) -> Self {
        Self {
            workers: (0..settings.workers.max(1))
                .map(|_| Mutex::new(WorkerPool::default()))
                .collect(),
            connector,
            max_idle: settings.max_idle,
            idle_timeout: settings.idle_timeout,
            max_connecting: settings.max_connecting.max(1),
            max_wait: settings.connect_timeout,
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
        // An idle connection or a new one; then, if an idle one turned out
        // closed before the request was written, a new one.
        let (mut tx, fresh) = self.checkout(worker, &key, false).await?;
        match tx.try_send_request(req).await {
            Ok(resp) => return Ok((resp, self.pooled(tx, key, worker))),
            Err(mut e) => match e.take_message() {
                Some(again) if !fresh => req = again,
                _ => return Err(SendError::Request(e.into_error())),
            },
        }
        let (mut tx, _) = self.checkout(worker, &key, true).await?;
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

    /// A connection to `key`, ready for a request, and whether it is new:
    /// the most recently used idle one that is still open (unless
    /// `fresh_only`), else a new one if fewer than `max_connecting` are
    /// being opened, else the first of those two that comes free.
    ///
    /// Why wait rather than connect: at a cold start under load, every
    /// request finds the pool empty. Opening one connection per request
    /// in flight costs a connect, a handshake and an accept at the
    /// upstream for each, which lengthens every request, which puts more
    /// in flight: on this machine a cold start at 10,000 req/s opened
    /// over 1,000 upstream connections in 150 ms and filled a gate of
    /// 1,000 (BENCHMARKS.md, "Cold start: at most 8 connects at once").
    /// Connections come back within a response time, so a few connects at
    /// a time are enough to grow the pool, and a waiting request takes the
    /// first one back.
    async fn checkout(
        &self,
        worker: usize,
        key: &Key,
        fresh_only: bool,
    ) -> Result<(SendRequest<Upload>, bool), SendError> {
        let deadline = tokio::time::Instant::now() + self.max_wait;
        loop {
            let wake;
            // Decided under the lock, acted on after it is let go.
            let next = {
                let mut pool = self.pool(worker);
                pool.expire(key, self.idle_timeout, Instant::now());
                // The usual case, an idle connection, looks the endpoint
                // up without cloning its key; only a miss makes an entry.
                let idle = match fresh_only {
                    true => None,
                    false => pool.endpoints.get_mut(key).and_then(|e| e.idle.pop()),
                };
                match idle {
                    Some(idle) => Next::Reuse(idle.tx),
                    None => {
                        let e = pool.endpoints.entry(key.clone()).or_default();
                        if e.connecting < self.max_connecting {
                            e.connecting += 1;
                            Next::Connect
                        } else {
                            // Registered before the lock is let go, so a
                            // connection that comes back after this look
                            // wakes it.
                            wake = e.wake.clone();
                            let mut woken = Box::pin(wake.notified());
                            woken.as_mut().enable();
                            Next::Wait(woken)
                        }
                    }
                }
            };
            match next {
                Next::Reuse(mut tx) => {
                    // A pooled connection carries no request; `ready` only
                    // waits for its task to have seen the last response end.
                    if tx.ready().await.is_ok() {
                        return Ok((tx, false));
                    }
                }
                Next::Connect => {
                    let slot = Connecting {
                        pools: self,
                        worker,
                        key,
                    };
                    let tx = self.connect(key).await;
                    drop(slot);
                    return tx.map(|tx| (tx, true));
                }
                Next::Wait(woken) => {
                    if tokio::time::timeout_at(deadline, woken).await.is_err() {
                        return Err(SendError::Connect(
                            "no upstream connection came free within connect_timeout \
                             while others were being opened"
                                .into(),
                        ));
                    }
                }
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
    /// for its endpoint is full, and wakes a request waiting for it.
    fn put(&self, worker: usize, key: Key, tx: SendRequest<Upload>) {
        if self.max_idle == 0 || tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut pool = self.pool(worker);
        pool.expire(&key, self.idle_timeout, now);
        let e = pool.endpoints.entry(key).or_default();
        if e.idle.len() < self.max_idle {
            e.idle.push(Idle { tx, since: now });
            e.wake.notify_one();
        }
    }
}

/// What [`Pools::checkout`] does next.
enum Next<'a> {
    /// Use this idle connection.
    Reuse(SendRequest<Upload>),
    /// Open one: a connect slot was taken.
    Connect,
    /// Wait for a connection or a slot to come free.
    Wait(Pin<Box<Notified<'a>>>),
}

/// One of an endpoint's `max_connecting` connect slots, held while the
/// connect runs; given back however it ends (done, failed, or the request
/// dropped), waking a request that waits for it.
struct Connecting<'a> {
    pools: &'a Pools,
    worker: usize,
    key: &'a Key,
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        let mut pool = self.pools.pool(self.worker);
        if let Some(e) = pool.endpoints.get_mut(self.key) {
            e.connecting -= 1;
            e.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamConfig;
    use std::net::SocketAddr;
    use tokio::net::TcpSocket;

    /// A loopback listener whose accept queue is full and never drained:
    /// the kernel drops further SYNs, so a connect to it hangs until the
    /// connect timeout. Returned with what keeps it so.
    fn blackhole() -> (SocketAddr, impl Sized) {
        let s = TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let l = s.listen(0).unwrap();
        let addr = l.local_addr().unwrap();
        // With a backlog of 0 the queue holds one; these fill it.
        let fill: Vec<_> = (0..2)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
            })
            .collect();
        (addr, (l, fill))
    }

    fn pools(addr: SocketAddr, max_connecting: usize, connect_timeout: Duration) -> Arc<Pools> {
        let mut cfg = UpstreamConfig::new("test", format!("http://{addr}").parse().unwrap());
        cfg.connect_timeout = connect_timeout;
        Arc::new(Pools::new(
            UpstreamConnector::new(&cfg).unwrap(),
            PoolSettings {
                workers: 1,
                max_idle: 16,
                idle_timeout: Duration::from_secs(60),
                max_connecting,
                connect_timeout,
            },
        ))
    }

    fn key(addr: SocketAddr) -> Key {
        (Scheme::HTTP, addr.to_string().parse().unwrap())
    }

    /// (connects under way, requests waiting) at `key` in worker 0.
    fn state(p: &Pools, key: &Key) -> (usize, usize) {
        let pool = p.pool(0);
        let e = &pool.endpoints[key];
        (e.connecting, Arc::strong_count(&e.wake) - 1)
    }

    #[tokio::test]
    async fn beyond_max_connecting_requests_wait_and_every_one_ends_by_the_connect_timeout() {
        let (addr, _hold) = blackhole();
        let timeout = Duration::from_millis(300);
        let p = pools(addr, 2, timeout);
        let k = key(addr);
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let (p, k) = (p.clone(), k.clone());
                tokio::spawn(async move { p.checkout(0, &k, false).await.map(|_| ()) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(state(&p, &k), (2, 3), "two connects, three waiting");
        for t in tasks {
            // A waiter waits for a slot at most one connect timeout, then
            // connects for at most another: none is left hanging.
            let r = tokio::time::timeout(timeout * 4, t)
                .await
                .expect("ended by its deadlines")
                .unwrap();
            assert!(matches!(r, Err(SendError::Connect(_))), "{r:?}");
        }
        assert_eq!(state(&p, &k), (0, 0), "every slot given back");
    }

    #[tokio::test]
    async fn a_waiting_request_takes_the_first_connection_given_back() {
        let (hole, _hold) = blackhole();
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = live.accept().await {
                held.push(s);
            }
        });
        let p = pools(hole, 1, Duration::from_secs(30));
        let k = key(hole);
        let (p1, k1) = (p.clone(), k.clone());
        let connecting = tokio::spawn(async move { p1.checkout(0, &k1, false).await.map(|_| ()) });
        let (p2, k2) = (p.clone(), k.clone());
        let waiting = tokio::spawn(async move { p2.checkout(0, &k2, false).await.map(|(_, f)| f) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(state(&p, &k), (1, 1));
        // A connection comes back under the blackholed endpoint's key (the
        // pool does not look at where it goes): the waiter gets it, while
        // the connect that holds the only slot still hangs.
        let tx = p.connect(&key(live_addr)).await.unwrap();
        p.put(0, k.clone(), tx);
        let fresh = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("woken by the connection given back")
            .unwrap()
            .unwrap();
        assert!(!fresh, "the idle connection, not a new one");
        assert!(!connecting.is_finished());
        assert_eq!(state(&p, &k), (1, 0));
        connecting.abort();
        let _ = connecting.await;
        assert_eq!(
            state(&p, &k).0,
            0,
            "an abandoned connect gives its slot back"
        );
    }
}
