//! The `overhead` scenario: what one hop through floodwall costs.
//!
//! A backend that answers at once, so everything measured is the path.
//! First each contender's closed-loop maximum throughput (N connections sending
//! back to back), then open-loop latency at 50% of the direct maximum (capped
//! at what the open-loop generator sustains), where nothing is saturated and
//! the difference is the hop itself. Everything
//! (load generator, proxy, backend) shares this machine's two cores, so the
//! figures are upper bounds on the real cost; compare them as ratios.

use super::contender::{self, Contender, ContenderKind};
use crate::backend;
use crate::loadgen::{self, ClosedLoopResult, LoadConfig, Phase, Schedule};
use http::Uri;
use serde::Serialize;
use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

/// The highest open-loop rate the overhead scenario uses, in req/s.
pub const OPEN_LOOP_CAP: f64 = 4_000.0;

/// Knobs of the overhead scenario.
#[derive(Debug, Clone)]
pub struct OverheadOptions {
    /// The contenders; the first should be `direct`, the baseline.
    pub contenders: Vec<Contender>,
    /// Bind the trivial backend here (for gates started outside).
    pub backend_addr: Option<SocketAddr>,
    /// Connections in the closed-loop phase.
    pub concurrency: usize,
    /// Length of each closed-loop measurement.
    pub closed_for: Duration,
    /// Length of each open-loop measurement.
    pub open_for: Duration,
}

/// One contender's figures.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadRow {
    /// The contender's name.
    pub name: String,
    /// Closed-loop maximum.
    pub max: ClosedLoopResult,
    /// Open-loop p50 at the common rate, ms.
    pub p50_ms: Option<f64>,
    /// Open-loop p99 at the common rate, ms.
    pub p99_ms: Option<f64>,
    /// Open-loop p99.9 at the common rate, ms.
    pub p999_ms: Option<f64>,
    /// Share of open-loop requests that did not get a 2xx.
    pub percent_failed: f64,
}

/// The whole overhead run.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadReport {
    /// The open-loop rate: 50% of the direct closed-loop maximum.
    pub rate_rps: f64,
    /// One row per contender, baseline first.
    pub rows: Vec<OverheadRow>,
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

/// Runs the overhead scenario.
pub async fn run_overhead(opts: &OverheadOptions) -> anyhow::Result<OverheadReport> {
    let backend = match opts.backend_addr {
        Some(a) => backend::start_trivial_on(a).await?,
        None => backend::start_trivial().await?,
    };
    let upstream: Uri = format!("http://{}", backend.addr).parse()?;
    let mut started = Vec::new();
    for t in &opts.contenders {
        // A limit far above anything reachable: this measures the hop, not
        // the gate refusing.
        let t = match &t.kind {
            // The hop's cost is the same whatever sets the limit; an adaptive
            // one would only add its cold start to the closed loop.
            // (fast-upstream measures exactly that cold start.)
            ContenderKind::Adaptive { .. }
            | ContenderKind::Default { .. }
            | ContenderKind::Warm { .. } => continue,
            // Peers started for the other scenarios carry a small maxconn /
            // limit_conn: measuring their hop would measure their refusals.
            ContenderKind::External { .. } => continue,
            ContenderKind::Floodwall { .. } => Contender {
                name: "floodwall".into(),
                kind: ContenderKind::Floodwall {
                    limit: 100_000,
                    retry_budget: false,
                },
            },
            _ => t.clone(),
        };
        started.push((t.name.clone(), contender::start(&t, &upstream, 0.0).await?));
    }
    let mut maxes = Vec::new();
    for (name, s) in &started {
        eprintln!(
            "overhead: closed loop through {name} ({} connections)...",
            opts.concurrency
        );
        maxes.push(
            loadgen::run_closed_loop(s.url.clone(), opts.concurrency, opts.closed_for).await?,
        );
    }
    // 50% of the direct maximum, but never more than the open-loop
    // generator sustains on this machine with room to spare (BENCHMARKS.md:
    // about 6,000 req/s on schedule): past that the figures would measure
    // the generator, not the hop.
    let rate = (maxes.first().map_or(1000.0, |m| m.rps) * 0.5).clamp(100.0, OPEN_LOOP_CAP);
    let mut rows = Vec::new();
    for ((name, s), max) in started.iter().zip(maxes) {
        eprintln!("overhead: open loop at {rate:.0} req/s through {name}...");
        let mut load = LoadConfig::new(
            s.url.clone(),
            Schedule {
                phases: vec![Phase {
                    duration: opts.open_for,
                    rate_rps: rate,
                }],
            },
        );
        load.client_timeout = Duration::from_secs(2);
        let res = loadgen::run(load).await?;
        let sum = res.summary(..);
        let sent = sum.totals.sent.max(1) as f64;
        rows.push(OverheadRow {
            name: name.clone(),
            max,
            p50_ms: ms(res.success_latency(.., 0.5)),
            p99_ms: ms(res.success_latency(.., 0.99)),
            p999_ms: ms(res.success_latency(.., 0.999)),
            percent_failed: 100.0 * (sent - sum.totals.ok as f64) / sent,
        });
    }
    for (_, s) in started {
        s.stop().await;
    }
    backend.shutdown().await;
    Ok(OverheadReport {
        rate_rps: rate,
        rows,
    })
}

fn f(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.2} ms"))
}

/// The markdown table, with added latency and throughput relative to the
/// first row.
pub fn markdown(r: &OverheadReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### overhead: a backend that answers at once\n");
    let _ = writeln!(
        out,
        "| target | max req/s (closed loop) | vs direct | p50 at {:.0} req/s | p99 | p99.9 | added p50 | added p99 | failed |",
        r.rate_rps
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let base = r.rows.first();
    for row in &r.rows {
        let ratio = base.map_or(1.0, |b| row.max.rps / b.max.rps.max(1e-9));
        let added = |x: Option<f64>, b: Option<f64>| match (x, b) {
            (Some(x), Some(b)) => format!("{:+.2} ms", x - b),
            _ => "n/a".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2}x | {} | {} | {} | {} | {} | {:.2}% |",
            row.name,
            row.max.rps,
            ratio,
            f(row.p50_ms),
            f(row.p99_ms),
            f(row.p999_ms),
            added(row.p50_ms, base.and_then(|b| b.p50_ms)),
            added(row.p99_ms, base.and_then(|b| b.p99_ms)),
            row.percent_failed
        );
    }
    let _ = writeln!(
        out,
        "\nEverything shares the machine's cores (load generator, proxy, backend), so absolute figures are pessimistic; the ratios are the point."
    );
    out
}
