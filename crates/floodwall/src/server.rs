//! Listeners, connection handling and graceful shutdown.

use crate::admin::Admin;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::probe::{self, ProbeSet};
use crate::proxy::{Proxy, Router};
use crate::store::Store;
use floodwall_core::MonotonicClock;
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

/// A started floodwall: its bound addresses and the handle to stop it.
#[derive(Debug)]
pub struct Running {
    /// Where the proxy listens (useful with port 0).
    pub proxy_addr: SocketAddr,
    /// Where the admin endpoints listen.
    pub admin_addr: SocketAddr,
    /// The proxy state, for in-process inspection.
    pub proxy: Arc<Proxy>,
    /// The bottleneck probes (`[[probes]]`), for in-process inspection.
    pub probes: Arc<ProbeSet>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Begins a graceful shutdown and waits for it: stop accepting, let
    /// admitted requests finish within the drain timeout, close the admin
    /// listener last.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.probes.stop().await;
        if let Some(store) = &self.proxy.store {
            store.stop().await;
        }
    }
}

fn http_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.server.header_read_timeout)
        .keep_alive(true);
    b.http2().timer(TokioTimer::new());
    b
}

/// Binds both listeners and starts serving. Returns once both are bound, so
/// the addresses are usable immediately.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config.validate()?;
    let clock = Arc::new(MonotonicClock::new());
    let router = Router::new(&config, clock)?;
    // Before any listener: the first renewal sets every route's share, so
    // nothing is admitted beyond what this replica holds.
    let store = Store::new(&config, &router)?;
    if let Some(s) = &store {
        s.start().await;
    }
    let proxy = Arc::new(Proxy {
        router,
        metrics: Arc::new(Metrics::new()),
        store: store.clone(),
    });
    let proxy_listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("server.listen {}: {e}", config.server.listen))?;
    let admin_listener = TcpListener::bind(config.server.admin)
        .await
        .map_err(|e| anyhow::anyhow!("server.admin {}: {e}", config.server.admin))?;
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let draining = Arc::new(AtomicBool::new(false));
    // After the router, so probes constrain the gates requests will use.
    let probes = probe::start(&config, &proxy)?;
    let admin = Arc::new(Admin {
        router: proxy.clone(),
        draining: draining.clone(),
        probes: probes.clone(),
    });
    let (stop, stop_rx) = watch::channel(false);
    let builder = http_builder(&config);
    let drain_timeout = config.server.drain_timeout;

    let p = proxy.clone();
    let task = tokio::spawn(async move {
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let admin_task = tokio::spawn(serve_admin(
            admin_listener,
            admin,
            builder.clone(),
            admin_stop_rx,
        ));
        serve_proxy(proxy_listener, p, builder, stop_rx, draining, drain_timeout).await;
        let _ = admin_stop.send(true);
        let _ = admin_task.await;
    });
    tracing::info!(%proxy_addr, %admin_addr, "floodwall listening");
    Ok(Running {
        proxy_addr,
        admin_addr,
        proxy,
        probes,
        stop,
        task,
    })
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
                let svc = service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "client connection ended with an error");
                    }
                });
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
