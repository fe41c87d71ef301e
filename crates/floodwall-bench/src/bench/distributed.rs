//! `floodwall-bench distributed`: what distributed mode costs.
//!
//! One run, same machine, same backend (answers at once, so the figures are
//! the path's own cost), three setups in turn:
//!
//! 1. one floodwall process without Redis (the baseline);
//! 2. N processes sharing the global limit through Redis in lease mode;
//! 3. N processes in strict mode.
//!
//! For each: the closed-loop maximum throughput (three generators, one per
//! replica, summed), open-loop latency at a common rate (50 % of the
//! baseline's maximum, capped at what the generator sustains), and the Redis
//! commands per admitted request read from `redis-cli INFO commandstats`
//! after `CONFIG RESETSTAT`. The global limit is far above the load so that
//! nothing measured is a refusal. Needs `redis-server` and `redis-cli` on
//! the PATH (`scripts/install-deps.sh`).
//!
//! The replicas are real `floodwall serve` processes, so this benchmark
//! needs the gateway binary; [`gateway_binary`] finds it.

use super::overhead::OPEN_LOOP_CAP;
use crate::backend;
use crate::loadgen::{self, LoadConfig, Phase, Schedule};
use anyhow::Context;
use http::Uri;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `floodwall` gateway binary to start replicas from: `flag` if given,
/// else the `floodwall` next to the running executable (`cargo build
/// --release` puts both in the same target dir). Fails with what to build
/// when it is not there.
pub fn gateway_binary(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match flag {
        Some(path) => path,
        None => {
            let exe = std::env::current_exe().context("where is this executable")?;
            let dir = exe
                .parent()
                .context("the running executable has no directory")?;
            dir.join(format!("floodwall{}", std::env::consts::EXE_SUFFIX))
        }
    };
    anyhow::ensure!(
        path.is_file(),
        "no floodwall binary at {}: build it with `cargo build --release -p floodwall` \
         (or pass --floodwall PATH)",
        path.display()
    );
    Ok(path)
}

/// Knobs of the distributed benchmark.
#[derive(Debug, Clone)]
pub struct DistributedOptions {
    /// The floodwall binary to start replicas from.
    pub binary: PathBuf,
    /// Replicas in the distributed setups.
    pub replicas: usize,
    /// The global limit (`--limit`), far above the load.
    pub limit: usize,
    /// Closed-loop connections, split over the generators.
    pub concurrency: usize,
    /// Length of each closed-loop measurement.
    pub closed_for: Duration,
    /// Length of each open-loop measurement.
    pub open_for: Duration,
}

/// One setup's figures.
#[derive(Debug, Clone, Serialize)]
pub struct DistributedRow {
    /// The setup.
    pub name: String,
    /// floodwall processes.
    pub replicas: usize,
    /// Closed-loop maximum, 2xx per second, summed over generators.
    pub max_rps: f64,
    /// Open-loop p50 at the common rate, ms (the worst generator's).
    pub p50_ms: Option<f64>,
    /// Open-loop p99 at the common rate, ms (the worst generator's).
    pub p99_ms: Option<f64>,
    /// Share of open-loop requests without a 2xx.
    pub percent_failed: f64,
    /// Requests admitted (2xx) while Redis counted.
    pub admitted: u64,
    /// Round trips to Redis: EVALSHA, EVAL and SCRIPT calls.
    pub redis_calls: u64,
    /// Every command Redis executed, those inside scripts included.
    pub redis_commands: u64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct DistributedReport {
    /// The common open-loop rate, req/s.
    pub rate_rps: f64,
    /// The global limit.
    pub limit: usize,
    /// `redis-server --version`.
    pub redis_version: String,
    /// Baseline first.
    pub rows: Vec<DistributedRow>,
}

/// A child process, stopped with SIGTERM (then SIGKILL) when dropped.
pub(super) struct Proc(pub(super) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first so replicas leave the store; then make sure.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free now (bound, then released).
pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn redis_cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .context("redis-cli not found: run scripts/install-deps.sh")?;
    anyhow::ensure!(out.status.success(), "redis-cli {args:?} failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn start_redis() -> anyhow::Result<(Proc, u16)> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .context("redis-server not found: run scripts/install-deps.sh")?;
    let p = Proc(child);
    for _ in 0..250 {
        if redis_cli(port, &["PING"]).is_ok_and(|s| s.trim() == "PONG") {
            return Ok((p, port));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("redis-server did not answer on port {port}")
}

/// (script round trips, every command) from `INFO commandstats`.
fn redis_counts(port: u16) -> anyhow::Result<(u64, u64)> {
    let text = redis_cli(port, &["INFO", "commandstats"])?;
    let (mut calls, mut all) = (0, 0);
    for l in text.lines() {
        let Some((name, rest)) = l.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else {
            continue;
        };
        let n: u64 = rest
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if ["info", "config", "ping", "flushall"].contains(&name) || name.starts_with("config") {
            continue;
        }
        all += n;
        if name == "evalsha" || name == "eval" || name.starts_with("script") {
            calls += n;
        }
    }
    Ok((calls, all))
}

fn start_replica(
    binary: &PathBuf,
    upstream: &Uri,
    limit: usize,
    store: Option<(&str, &str)>,
) -> anyhow::Result<(Proc, Uri)> {
    let mut cmd = Command::new(binary);
    cmd.args(["serve", "--upstream", &upstream.to_string()])
        .args(["--limit", &limit.to_string()])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("FLOODWALL_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some((url, mode)) = store {
        cmd.args(["--store", url, "--store-mode", mode]);
    }
    let mut child = cmd.spawn().context("start a floodwall replica")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let proxy = line
        .trim()
        .strip_prefix("floodwall listening proxy=")
        .and_then(|r| r.split_once(' '))
        .map(|(p, _)| p.to_owned())
        .with_context(|| format!("unexpected ready line {line:?}"))?;
    Ok((Proc(child), format!("http://{proxy}/").parse()?))
}

/// Three generators, one per replica (round robin when fewer).
const GENERATORS: usize = 3;

async fn measure(
    name: &str,
    urls: &[Uri],
    opts: &DistributedOptions,
    rate: Option<f64>,
    redis_port: u16,
) -> anyhow::Result<DistributedRow> {
    let target = |i: usize| urls[i % urls.len()].clone();
    // Warm up connections, pools and the first renewals; not counted.
    let per = (opts.concurrency / GENERATORS).max(1);
    futures_util::future::try_join_all(
        (0..GENERATORS).map(|i| loadgen::run_closed_loop(target(i), per, Duration::from_secs(1))),
    )
    .await?;
    redis_cli(redis_port, &["CONFIG", "RESETSTAT"])?;
    eprintln!("distributed: closed loop through {name}...");
    let closed = futures_util::future::try_join_all(
        (0..GENERATORS).map(|i| loadgen::run_closed_loop(target(i), per, opts.closed_for)),
    )
    .await?;
    let max_rps: f64 = closed.iter().map(|c| c.rps).sum();
    let mut admitted: u64 = closed.iter().map(|c| c.ok).sum();
    let rate = rate.unwrap_or((max_rps * 0.5).clamp(100.0, OPEN_LOOP_CAP));
    eprintln!("distributed: open loop at {rate:.0} req/s through {name}...");
    let open = futures_util::future::try_join_all((0..GENERATORS).map(|i| {
        let mut load = LoadConfig::new(
            target(i),
            Schedule {
                phases: vec![Phase {
                    duration: opts.open_for,
                    rate_rps: rate / GENERATORS as f64,
                }],
            },
        );
        load.client_timeout = Duration::from_secs(2);
        loadgen::run(load)
    }))
    .await?;
    let (redis_calls, redis_commands) = redis_counts(redis_port)?;
    let worst = |q: f64| {
        open.iter()
            .filter_map(|r| r.success_latency(.., q))
            .max()
            .map(|d| d.as_secs_f64() * 1000.0)
    };
    let (mut sent, mut ok) = (0u64, 0u64);
    for r in &open {
        let s = r.summary(..);
        sent += s.totals.sent;
        ok += s.totals.ok;
    }
    admitted += ok;
    Ok(DistributedRow {
        name: name.to_owned(),
        replicas: urls.len(),
        max_rps,
        p50_ms: worst(0.5),
        p99_ms: worst(0.99),
        percent_failed: 100.0 * (sent - ok.min(sent)) as f64 / sent.max(1) as f64,
        admitted,
        redis_calls,
        redis_commands,
    })
}

/// Runs the three setups and returns their figures.
pub async fn run_distributed(opts: &DistributedOptions) -> anyhow::Result<DistributedReport> {
    let version = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let (_redis, port) = start_redis()?;
    let url = format!("redis://127.0.0.1:{port}");
    let backend = backend::start_trivial().await?;
    let upstream: Uri = format!("http://{}", backend.addr).parse()?;
    let setups: [(String, usize, Option<&str>); 3] = [
        ("1 replica, no Redis".into(), 1, None),
        (
            format!("{} replicas, lease", opts.replicas),
            opts.replicas,
            Some("lease"),
        ),
        (
            format!("{} replicas, strict", opts.replicas),
            opts.replicas,
            Some("strict"),
        ),
    ];
    let mut rows = Vec::new();
    let mut rate = None;
    for (name, n, mode) in setups {
        redis_cli(port, &["FLUSHALL"])?;
        let mut procs = Vec::new();
        let mut urls = Vec::new();
        for _ in 0..n {
            let (p, u) = start_replica(
                &opts.binary,
                &upstream,
                opts.limit,
                mode.map(|m| (url.as_str(), m)),
            )?;
            procs.push(p);
            urls.push(u);
        }
        let row = measure(&name, &urls, opts, rate, port).await?;
        rate.get_or_insert((row.max_rps * 0.5).clamp(100.0, OPEN_LOOP_CAP));
        rows.push(row);
        drop(procs);
    }
    backend.shutdown().await;
    Ok(DistributedReport {
        rate_rps: rate.unwrap_or(0.0),
        limit: opts.limit,
        redis_version: version,
        rows,
    })
}

fn f(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.2} ms"))
}

/// The markdown table, with added latency relative to the baseline.
pub fn markdown(r: &DistributedReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| setup | max req/s (closed loop) | vs 1 replica | p50 at {:.0} req/s | p99 | added p50 | added p99 | failed | admitted | Redis round trips / admitted | Redis commands / admitted |",
        r.rate_rps
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let base = r.rows.first();
    for row in &r.rows {
        let added = |x: Option<f64>, b: Option<f64>| match (x, b) {
            (Some(x), Some(b)) => format!("{:+.2} ms", x - b),
            _ => "n/a".into(),
        };
        let per = |n: u64| n as f64 / row.admitted.max(1) as f64;
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2}x | {} | {} | {} | {} | {:.2}% | {} | {:.4} | {:.4} |",
            row.name,
            row.max_rps,
            base.map_or(1.0, |b| row.max_rps / b.max_rps.max(1e-9)),
            f(row.p50_ms),
            f(row.p99_ms),
            added(row.p50_ms, base.and_then(|b| b.p50_ms)),
            added(row.p99_ms, base.and_then(|b| b.p99_ms)),
            row.percent_failed,
            row.admitted,
            per(row.redis_calls),
            per(row.redis_commands),
        );
    }
    let _ = writeln!(
        out,
        "\nGlobal limit {} (far above the load: nothing measured is a refusal); {}. p50/p99 are the worst of the three generators'. Everything shares the machine's cores (generators, replicas, Redis, backend), so absolute figures are pessimistic; compare within the table.",
        r.limit, r.redis_version
    );
    out
}
