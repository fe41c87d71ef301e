//! Listeners, connections and graceful shutdown: the part of start-up that
//! talks to sockets. [`crate::app`] decides what is served.
//!
//! - `budget.rs`: how many connections each listener may hold, from the
//!   descriptor limit (raised to the hard limit first);
//! - `accept.rs`: a listener's accept loop: the cap, refusals past it,
//!   accept errors counted, logged once a second and backed off;
//! - `conn.rs`: one connection, served by hyper, closed by a watchdog when
//!   its headers are late or it has been idle too long;
//! - `workers.rs`: the proxy's worker threads, one runtime and one
//!   `SO_REUSEPORT` listener each;
//! - [`stats`]: the counters `/metrics` renders.
//!
//! "The connection budget" in `docs/architecture.md` tells the whole story.

mod accept;
mod budget;
mod conn;
pub mod stats;
mod workers;

use crate::admin::Admin;
use crate::config::ServerConfig;
use crate::proxy::Proxy;
use crate::tls::{ArrivedOverTls, TlsListener};
use accept::{AcceptLogs, Acceptor};
use conn::{Shared, Timeouts};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use stats::{Connections, ListenerStats, Slot};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use workers::Worker;

/// How long admin connections may finish what they are doing once the
/// proxy has drained; a scrape takes milliseconds.
const ADMIN_DRAIN: Duration = Duration::from_secs(1);

/// Both listeners, bound, with the connection budget they will serve
/// under: the proxy port once per worker (`workers.rs`), the admin port
/// once.
#[derive(Debug)]
pub(crate) struct Listeners {
    proxy: Vec<std::net::TcpListener>,
    proxy_addr: SocketAddr,
    admin: TcpListener,
    connections: Arc<Connections>,
}

impl Listeners {
    /// Raises the descriptor limit, works out each listener's cap (logging
    /// any warning about it), and binds `server.listen` and
    /// `server.admin`.
    pub(crate) async fn bind(config: &ServerConfig) -> anyhow::Result<Self> {
        let plan = budget::plan(config, budget::raise_fd_limit());
        for warning in &plan.warnings {
            tracing::warn!("{warning}");
        }
        tracing::info!(
            fd_limit = plan.fd_limit,
            max_connections = plan.proxy,
            admin_max_connections = plan.admin,
            "connection budget"
        );
        let proxy = workers::bind_reuseport(config.listen, config.worker_count())
            .map_err(|e| anyhow::anyhow!("server.listen {}: {e}", config.listen))?;
        let proxy_addr = proxy[0].local_addr()?;
        let admin = TcpListener::bind(config.admin)
            .await
            .map_err(|e| anyhow::anyhow!("server.admin {}: {e}", config.admin))?;
        let connections = Arc::new(Connections {
            fd_limit: plan.fd_limit,
            proxy: ListenerStats::new("proxy", plan.proxy),
            admin: ListenerStats::new("admin", plan.admin),
        });
        Ok(Self {
            proxy,
            proxy_addr,
            admin,
            connections,
        })
    }

    /// The bound (proxy, admin) addresses: useful with port 0.
    pub(crate) fn addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.proxy_addr, self.admin.local_addr()?))
    }

    /// Both listeners' counters, for the admin endpoints.
    pub(crate) fn connections(&self) -> Arc<Connections> {
        self.connections.clone()
    }
}

/// The serving task and the switch that stops it.
#[derive(Debug)]
pub(crate) struct Serving {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Serving {
    /// Stops accepting, lets admitted requests finish within the drain
    /// timeout, closes the admin listener last, and waits for all that.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// hyper's settings for both listeners. HTTP/1's own header timeout is
/// off: the connection watchdog (`conn.rs`) keeps that clock from the
/// accept, and lets keep-alive outlast it.
fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    b.http2().timer(TokioTimer::new());
    b
}

/// Serves `proxy` and `admin` on `listeners` until [`Serving::shutdown`].
/// `draining` is raised when shutdown begins, for `/readyz`. With `tls`
/// the proxy listener speaks TLS (the admin listener never does).
pub(crate) fn serve(
    listeners: Listeners,
    proxy: Arc<Proxy>,
    admin: Arc<Admin>,
    draining: Arc<AtomicBool>,
    tls: Option<Arc<TlsListener>>,
    config: &ServerConfig,
) -> Serving {
    let (stop, stop_rx) = watch::channel(false);
    let timeouts = Timeouts {
        header_read: config.header_read_timeout,
        keepalive: config.keepalive_timeout,
        send: config.send_timeout,
    };
    let drain_timeout = config.drain_timeout;
    let Listeners {
        proxy: proxy_listeners,
        admin: admin_listener,
        connections,
        ..
    } = listeners;
    let task = tokio::spawn(async move {
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let admin_task = tokio::spawn(serve_admin(
            Acceptor::new(admin_listener, connections.admin.clone(), AcceptLogs::new()),
            admin,
            timeouts,
            admin_stop_rx,
        ));
        // One worker per proxy listener, each accepting, serving and
        // draining its own connections; the admin port closes once every
        // worker has drained.
        let mut workers = Vec::with_capacity(proxy_listeners.len());
        let proxy_logs = AcceptLogs::new();
        for (i, listener) in proxy_listeners.into_iter().enumerate() {
            let logs = proxy_logs.clone();
            let (proxy, tls, stop, draining) = (
                proxy.clone(),
                tls.clone(),
                stop_rx.clone(),
                draining.clone(),
            );
            let stats = connections.proxy.clone();
            let started = Worker::start(i, move || async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(worker = i, error = %e, "proxy worker cannot listen");
                        return;
                    }
                };
                serve_proxy(
                    Acceptor::new(listener, stats, logs),
                    proxy,
                    tls,
                    timeouts,
                    stop,
                    draining,
                    drain_timeout,
                )
                .await
            });
            match started {
                Ok(w) => workers.push(w),
                Err(e) => tracing::error!(worker = i, error = %e, "cannot start a proxy worker"),
            }
        }
        for w in workers {
            w.finished().await;
        }
        let _ = admin_stop.send(true);
        let _ = admin_task.await;
    });
    Serving { stop, task }
}

/// Serves one accepted client connection. The one place where an
/// accepted stream becomes a served connection. With TLS, the handshake
/// runs here, in the connection's own task, bounded by
/// `header_read_timeout` (`TlsListener::accept`), so a silent client holds
/// up nothing but its socket, and not for long; the watchdog's header clock
/// then starts in `conn::serve`. Requests that arrived over TLS carry
/// [`ArrivedOverTls`], for `X-Forwarded-Proto`.
async fn serve_proxy_conn(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    tls: Option<Arc<TlsListener>>,
    shared: Arc<Shared>,
    slot: Slot,
) {
    match tls {
        None => {
            conn::serve(stream, shared, slot, move |req| {
                let proxy = proxy.clone();
                async move { proxy.handle(req, peer).await }
            })
            .await
        }
        Some(tls) => {
            let Some(stream) = tls.accept(stream, peer).await else {
                return;
            };
            conn::serve(stream, shared, slot, move |mut req| {
                req.extensions_mut().insert(ArrivedOverTls);
                let proxy = proxy.clone();
                async move { proxy.handle(req, peer).await }
            })
            .await
        }
    }
}

async fn serve_proxy(
    mut acceptor: Acceptor,
    proxy: Arc<Proxy>,
    tls: Option<Arc<TlsListener>>,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
    draining: Arc<AtomicBool>,
    drain_timeout: Duration,
) {
    let (drain, drain_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        builder: http_builder(),
        timeouts,
        drain: drain_rx,
    });
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            (stream, peer, slot) = acceptor.next() => {
                conns.spawn(serve_proxy_conn(
                    stream,
                    peer,
                    proxy.clone(),
                    tls.clone(),
                    shared.clone(),
                    slot,
                ));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(acceptor);
    draining.store(true, Ordering::Release);
    tracing::info!(
        connections = conns.len(),
        "shutting down: no new connections, draining admitted requests"
    );
    let _ = drain.send(true);
    if finish(conns, drain_timeout).await {
        tracing::info!("drained");
    } else {
        tracing::warn!(
            ?drain_timeout,
            "drain timeout reached, closed remaining connections"
        );
    }
}

async fn serve_admin(
    mut acceptor: Acceptor,
    admin: Arc<Admin>,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) {
    let (drain, drain_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        builder: http_builder(),
        timeouts,
        drain: drain_rx,
    });
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            (stream, _, slot) = acceptor.next() => {
                let admin = admin.clone();
                let shared = shared.clone();
                conns.spawn(async move {
                    conn::serve(stream, shared, slot, move |req| {
                        std::future::ready(admin.handle(&req))
                    })
                    .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(acceptor);
    let _ = drain.send(true);
    finish(conns, ADMIN_DRAIN).await;
}

/// Waits up to `timeout` for every connection task to end, then aborts
/// the rest (closing their connections). True if none had to be aborted.
async fn finish(mut conns: JoinSet<()>, timeout: Duration) -> bool {
    let all = async { while conns.join_next().await.is_some() {} };
    let drained = tokio::time::timeout(timeout, all).await.is_ok();
    conns.shutdown().await;
    drained
}
