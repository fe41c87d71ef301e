//! An axum service on PostgreSQL, protected by floodwall-tower: inbound by
//! an adaptive `AdmissionLayer` capped by the connection pool's wait queue
//! (`PoolProbe`), outbound by a guard (breaker and bulkhead) around each
//! query.
//!
//! Run it against a throwaway PostgreSQL with `run.sh` beside this file,
//! or by hand:
//!
//! ```sh
//! cargo run --release -p floodwall-tower --example axum-postgres -- \
//!     --dsn "host=127.0.0.1 port=5432 user=postgres dbname=postgres" \
//!     [--listen 127.0.0.1:0] [--protection floodwall|tower:8|none] [--pool 8]
//! ```
//!
//! `GET /` runs `SELECT pg_sleep(0.02)` on a pooled connection (a query
//! that takes 20 ms: 8 connections serve about 400 requests a second);
//! `GET /metrics` on the same port is the outbound guard's metrics.

#[path = "service.rs"]
mod service;

use axum::routing::get;
use prometheus_client::registry::Registry;
use service::Protection;
use std::sync::{Arc, Mutex};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dsn = arg(&args, "--dsn")
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .ok_or_else(|| anyhow::anyhow!("--dsn (or DATABASE_URL) is required"))?;
    let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:0".into());
    let protection: Protection = arg(&args, "--protection")
        .unwrap_or_else(|| "floodwall".into())
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let size: usize = match arg(&args, "--pool") {
        Some(s) => s.parse().map_err(|_| anyhow::anyhow!("--pool: a number"))?,
        None => 8,
    };

    let pool = service::pool(&dsn, size);
    // Fail now, with the reason, if the database is not there.
    drop(pool.get().await?);
    let mut registry = Registry::default();
    let built = service::build(pool, "SELECT pg_sleep(0.02)", protection, &mut registry);
    // The probe runs while the service does; the limiter is the one the
    // layer admits through.
    let _probe = built.probe;
    if let Some(l) = &built.limiter {
        eprintln!("adaptive limit starts at {}", l.limit());
    }
    let registry = Arc::new(Mutex::new(registry));
    let router = built.router.route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut text = String::new();
                let _ =
                    prometheus_client::encoding::text::encode(&mut text, &registry.lock().unwrap());
                text
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "axum-postgres listening {} ({protection:?})",
        listener.local_addr()?
    );
    axum::serve(listener, router).await?;
    Ok(())
}
