//! The real floodwall proxy as the demo's and bench's gate.

use super::demo::Gate;
use crate::config::Config;
use crate::server::{self, Running};
use std::net::SocketAddr;

/// Starts a real floodwall (the same `server::start` as `floodwall serve`)
/// with a fixed limit on loopback ports chosen by the OS.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloodwallGate;

impl Gate for FloodwallGate {
    type Running = Running;

    async fn start(
        &self,
        backend: SocketAddr,
        limit: usize,
    ) -> anyhow::Result<(SocketAddr, Running)> {
        let upstream: http::Uri = format!("http://{backend}").parse()?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let running = server::start(Config::simple(loopback, upstream, limit, loopback)).await?;
        Ok((running.proxy_addr, running))
    }

    async fn stop(&self, running: Running) {
        running.shutdown().await;
    }
}
