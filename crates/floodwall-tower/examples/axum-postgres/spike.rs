//! The spike bench of the axum-postgres example: the same service,
//! unprotected, behind tower's `ConcurrencyLimit(W)` + `LoadShed`, and
//! behind floodwall-tower's adaptive `AdmissionLayer` with its pool probe,
//! in one run against one real PostgreSQL (started here, initdb/pg_ctl in
//! a temp dir). Each gets 4 s at 0.5x its capacity, 8 s at 3x, 4 s at
//! 0.5x, open loop (floodwall-bench's load generator: latency from the
//! scheduled arrival, 1 s client timeout, goodput = 2xx within 250 ms).
//!
//! ```sh
//! cargo run --release -p floodwall-tower --example spike [-- --pool 8 --query-ms 20]
//! ```
//!
//! The capacity is `pool / query time` (8 connections x 20 ms = 400/s),
//! and W, tower's limit, is the pool size: the best fixed number a reader
//! could choose without measuring.

#[path = "../../../floodwall/tests/pg/mod.rs"]
mod pg;
#[path = "service.rs"]
mod service;

use floodwall_bench::loadgen::{run, LoadConfig, Phase, Schedule};
use prometheus_client::registry::Registry;
use service::Protection;
use std::time::Duration;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let size = arg(&args, "--pool", 8) as usize;
    let query_ms = arg(&args, "--query-ms", 20);
    let capacity = size as f64 * 1000.0 / query_ms as f64;
    let cluster = pg::PgCluster::start(size as u32 * 3 + 10);
    let query = format!("SELECT pg_sleep({})", query_ms as f64 / 1000.0);
    let schedule = Schedule {
        phases: vec![
            Phase {
                duration: Duration::from_secs(4),
                rate_rps: capacity * 0.5,
            },
            Phase {
                duration: Duration::from_secs(8),
                rate_rps: capacity * 3.0,
            },
            Phase {
                duration: Duration::from_secs(4),
                rate_rps: capacity * 0.5,
            },
        ],
    };
    println!(
        "pool {size} x {query_ms} ms query = {capacity:.0} req/s; 4 s at 0.5x, 8 s at 3x, 4 s at 0.5x\n"
    );
    println!(
        "| service | goodput in spike | of capacity | p50 (spike) | p99 (spike) | rejected | timed out | good after spike |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, protection) in [
        ("axum, unprotected", Protection::None),
        (
            "tower ConcurrencyLimit(W) + LoadShed",
            Protection::Tower(size),
        ),
        (
            "floodwall-tower AdmissionLayer, adaptive + PoolProbe",
            Protection::Floodwall,
        ),
    ] {
        let pool = service::pool(&cluster.dsn(), size);
        // Open every connection before the clock starts.
        let warm: Vec<_> = futures_util::future::join_all((0..size).map(|_| pool.get()))
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        drop(warm);
        let mut registry = Registry::default();
        let built = service::build(pool, &query, protection, &mut registry);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move { axum::serve(listener, built.router).await });
        let config = LoadConfig::new(format!("http://{addr}/").parse()?, schedule.clone());
        let result = run(config).await?;
        server.abort();
        if let Some(p) = built.probe {
            p.abort();
        }
        let spike = result.summary(4..12);
        let after = result.summary(13..16);
        let offered_after = capacity * 0.5;
        let ms = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.1} ms"));
        println!(
            "| {name} | {:.0} req/s | {:.0}% | {} | {} | {:.1}% | {:.1}% | {:.0}% |",
            spike.goodput_rps,
            100.0 * spike.goodput_rps / capacity,
            ms(spike.success_ms.p50),
            ms(spike.success_ms.p99),
            spike.percent_rejected,
            spike.percent_timed_out,
            100.0 * after.goodput_rps / offered_after,
        );
        if let Some(l) = built.limiter {
            eprintln!(
                "  (AdmissionLayer: limit {} at the end, constraint {:?})",
                l.limit(),
                l.constraint()
            );
        }
        // Let the previous run's abandoned queries drain.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}
