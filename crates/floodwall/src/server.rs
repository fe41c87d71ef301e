//! Listeners, connection handling and graceful shutdown: the part of
//! start-up that talks to sockets. [`crate::app`] decides what is served.

use crate::admin::Admin;
use crate::config::ServerConfig;
use crate::proxy::Proxy;
use crate::tls::{ArrivedOverTls, TlsListener};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Both listeners, bound.
#[derive(Debug)]
pub(crate) struct Listeners {
    proxy: TcpListener,
    admin: TcpListener,
}

impl Listeners {
    /// Binds `server.listen` and `server.admin`.
    pub(crate) async fn bind(config: &ServerConfig) -> anyhow::Result<Self> {
        let proxy = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("server.listen {}: {e}", config.listen))?;
        let admin = TcpListener::bind(config.admin)
            .await
            .map_err(|e| anyhow::anyhow!("server.admin {}: {e}", config.admin))?;
        Ok(Self { proxy, admin })
    }

    /// The bound (proxy, admin) addresses: useful with port 0.
    pub(crate) fn addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.proxy.local_addr()?, self.admin.local_addr()?))
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

fn http_builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
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
    let builder = http_builder(config);
    let drain_timeout = config.drain_timeout;
    let task = tokio::spawn(async move {
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let admin_task = tokio::spawn(serve_admin(
            listeners.admin,
            admin,
            builder.clone(),
            admin_stop_rx,
        ));
        serve_proxy(
            listeners.proxy,
            proxy,
            builder,
            tls,
            stop_rx,
            draining,
            drain_timeout,
        )
        .await;
        let _ = admin_stop.send(true);
        let _ = admin_task.await;
    });
    Serving { stop, task }
}

async fn accept(listener: &TcpListener) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok((s, peer)) => {
            let _ = s.set_nodelay(true);
            Some((s, peer))
        }
        Err(e) => {
            // Out of file descriptors and friends: back off instead of
            // spinning, and keep serving what is already admitted.
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(20)).await;
            None
        }
    }
}
async fn serve_proxy(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<Arc<TlsListener>>,
    mut stop: watch::Receiver<bool>,
    draining: Arc<AtomicBool>,
    drain_timeout: Duration,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            conn = accept(&listener) => {
                let Some((stream, peer)) = conn else { continue };
                let proxy = proxy.clone();
                let over_tls = tls.is_some();
                let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    if over_tls {
                        req.extensions_mut().insert(ArrivedOverTls);
                    }
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
                });
                match &tls {
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                        tokio::spawn(served(graceful.watch(conn), peer));
                    }
                    // The handshake runs in the connection's own task,
                    // bounded by header_read_timeout, so a silent client
                    // holds up nothing but its socket, and not for long.
                    Some(tls) => {
                        let (tls, builder, watcher) = (tls.clone(), builder.clone(), graceful.watcher());
                        tokio::spawn(async move {
                            let Some(stream) = tls.accept(stream, peer).await else { return };
                            let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                            served(watcher.watch(conn), peer).await;
                        });
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    draining.store(true, Ordering::Release);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: no new connections, draining admitted requests"
    );
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("drained"),
        _ = tokio::time::sleep(drain_timeout) => {
            tracing::warn!(?drain_timeout, "drain timeout reached, closing remaining connections");
        }
    }
}

async fn served<E: std::fmt::Display>(
    conn: impl std::future::Future<Output = Result<(), E>>,
    peer: SocketAddr,
) {
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}

async fn serve_admin(
    listener: TcpListener,
    admin: Arc<Admin>,
    builder: auto::Builder<TokioExecutor>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            conn = accept(&listener) => {
                let Some((stream, _)) = conn else { continue };
                let admin = admin.clone();
                let svc = service_fn(move |req| {
                    let resp = admin.handle(&req);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = stop.changed() => break,
        }
    }
}
