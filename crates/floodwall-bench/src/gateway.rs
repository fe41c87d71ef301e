//! The real floodwall proxy as the demo's and bench's gate.

use super::demo::Gate;
use floodwall::config::{Config, LimitConfig};
use floodwall::server::{self, Running};
use std::net::SocketAddr;

/// Starts a real floodwall (the same `server::start` as `floodwall serve`)
/// on loopback ports chosen by the OS, with a fixed limit or the default
/// adaptive one.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloodwallGate;

impl Gate for FloodwallGate {
    type Running = Running;

    async fn start(
        &self,
        backend: SocketAddr,
        limit: Option<usize>,
    ) -> anyhow::Result<(SocketAddr, Running)> {
        let upstream: http::Uri = format!("http://{backend}").parse()?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = Config::simple(loopback, upstream, limit.unwrap_or(64), loopback);
        if limit.is_none() {
            config.routes[0].limit = LimitConfig::default();
        }
        let running = server::start(config).await?;
        Ok((running.proxy_addr, running))
    }

    async fn stop(&self, running: Running) {
        running.shutdown().await;
    }
}
