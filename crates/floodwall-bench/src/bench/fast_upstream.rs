//! The `fast-upstream` scenario: does an adaptive limit cost anything in
//! front of an upstream that needs no protection?
//!
//! A backend that answers at once, loaded closed loop: 64 connections each
//! sending its next request as soon as the last answer is in. Nothing is
//! overloaded, so a gate should refuse nothing and cost only its hop. The
//! baseline is floodwall with a fixed limit far above anything 64
//! connections reach (1000): the same hop, a gate that never binds. Against
//! it, floodwall told nothing (the default adaptive limit, started fresh):
//! its latency samples are tens of microseconds of scheduler noise, and an
//! algorithm that reads that noise as queueing cuts its limit and refuses
//! connections that were never a danger. And the peers, started in front of
//! the same backend with limits that do not bind either.
//!
//! Each contender runs `rounds` times, interleaved (every contender once,
//! then again), each round on a freshly started gate, so one busy moment on
//! this shared machine does not land on one contender only; the table gives
//! the median round's throughput and every round's refusals.

use super::contender::{self, Contender, ContenderKind};
use super::plot::{self, Figure, Series};
use super::run::LIMIT_TRACE_STEP;
use crate::backend;
use crate::loadgen::{self, ClosedLoopResult};
use serde::Serialize;
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

pub use super::scenario::FAST_UPSTREAM_FIXED_LIMIT as FIXED_LIMIT;

/// Closed-loop connections.
pub const CONNECTIONS: usize = 64;

/// Knobs of the fast-upstream scenario.
#[derive(Debug, Clone)]
pub struct FastUpstreamOptions {
    /// The contenders, in run order within each round.
    pub contenders: Vec<Contender>,
    /// Bind the trivial backend here (for gates started outside).
    pub backend_addr: Option<SocketAddr>,
    /// Closed-loop connections.
    pub concurrency: usize,
    /// How long each round loads each contender; whole seconds read best
    /// (the per-second rows line up).
    pub round: Duration,
    /// How many rounds.
    pub rounds: usize,
}

/// One round through one contender.
#[derive(Debug, Clone, Serialize)]
pub struct FastRound {
    /// Which round, from 0.
    pub round: usize,
    /// What the closed loop measured.
    pub result: ClosedLoopResult,
    /// The gate's limit just before the first request (a fresh gate's
    /// initial limit).
    pub limit_at_start: Option<usize>,
    /// The gate's limit every 100 ms from the start of the closed loop.
    pub limit_trace: Vec<Option<usize>>,
}

/// Minimum, median and maximum of a series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median (the lower middle of an even count).
    pub median: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        Some(Spread {
            min: *v.first()?,
            median: v[(v.len() - 1) / 2],
            max: *v.last()?,
        })
    }
}

/// One contender over every round.
#[derive(Debug, Clone, Serialize)]
pub struct FastUpstreamRow {
    /// The contender.
    pub contender: Contender,
    /// Each round, in order.
    pub rounds: Vec<FastRound>,
    /// 2xx per second over the rounds: the median is the throughput figure.
    pub rps: Spread,
    /// Answers over every round (any status).
    pub requests: u64,
    /// 503/429 answers over every round.
    pub refused: u64,
    /// Connection errors over every round.
    pub errors: u64,
    /// `refused / requests` over every round, in percent.
    pub percent_refused: f64,
    /// p50 of the rounds' p50s, ms.
    pub p50_ms: Option<f64>,
    /// p50 of the rounds' p99s, ms.
    pub p99_ms: Option<f64>,
    /// The gate's limit over every sample of every round (`None` for
    /// direct and for outside gates without a known limit).
    pub limit: Option<Spread>,
}

/// The whole fast-upstream run.
#[derive(Debug, Clone, Serialize)]
pub struct FastUpstreamReport {
    /// Closed-loop connections.
    pub concurrency: usize,
    /// Each round's length through each contender, ms.
    pub round_ms: f64,
    /// How many rounds.
    pub rounds: usize,
    /// One row per contender, in the order given.
    pub rows: Vec<FastUpstreamRow>,
}

impl FastUpstreamReport {
    /// The row the others are compared with: the fixed-limit floodwall.
    pub fn fixed(&self) -> Option<&FastUpstreamRow> {
        self.rows
            .iter()
            .find(|r| matches!(r.contender.kind, ContenderKind::Floodwall { .. }))
    }

    /// A row by contender name.
    pub fn row(&self, name: &str) -> Option<&FastUpstreamRow> {
        self.rows.iter().find(|r| r.contender.name == name)
    }
}

async fn round(
    contender: &Contender,
    upstream: &http::Uri,
    opts: &FastUpstreamOptions,
    index: usize,
) -> anyhow::Result<FastRound> {
    // A fresh gate every round: each round is also a cold start.
    let started = contender::start(contender, upstream, 0.0).await?;
    let limiter = started.limiter();
    let static_limit = started.limit();
    let limit_at_start = started.limit();
    let steps = (opts.round.as_secs_f64() / LIMIT_TRACE_STEP.as_secs_f64()).ceil() as usize;
    let samples = Arc::new(Mutex::new(Vec::with_capacity(steps)));
    let t0 = Instant::now();
    let sampler = {
        let samples = samples.clone();
        tokio::spawn(async move {
            for i in 0..steps {
                tokio::time::sleep_until(t0 + LIMIT_TRACE_STEP * i as u32).await;
                let v = limiter.as_ref().map(|l| l.limit()).or(static_limit);
                samples.lock().expect("sampler lock").push(v);
            }
        })
    };
    let result = loadgen::run_closed_loop(started.url.clone(), opts.concurrency, opts.round).await;
    sampler.abort();
    let _ = sampler.await;
    started.stop().await;
    let mut limit_trace = std::mem::take(&mut *samples.lock().expect("sampler lock"));
    limit_trace.resize(steps, None);
    Ok(FastRound {
        round: index,
        result: result?,
        limit_at_start,
        limit_trace,
    })
}

fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    Spread::of(values).map(|s| s.median)
}

/// Runs the fast-upstream scenario.
pub async fn run_fast_upstream(opts: &FastUpstreamOptions) -> anyhow::Result<FastUpstreamReport> {
    anyhow::ensure!(opts.rounds > 0, "fast-upstream needs at least one round");
    let backend = match opts.backend_addr {
        Some(a) => backend::start_trivial_on(a).await?,
        None => backend::start_trivial().await?,
    };
    let upstream: http::Uri = format!("http://{}", backend.addr).parse()?;
    let mut rounds: Vec<Vec<FastRound>> = vec![Vec::new(); opts.contenders.len()];
    let mut failed = None;
    'rounds: for r in 0..opts.rounds {
        for (i, c) in opts.contenders.iter().enumerate() {
            eprintln!(
                "fast-upstream: round {}/{}, closed loop through {} ({} connections)...",
                r + 1,
                opts.rounds,
                c.name,
                opts.concurrency
            );
            match round(c, &upstream, opts, r).await {
                Ok(fr) => rounds[i].push(fr),
                Err(e) => {
                    failed = Some(e.context(format!("fast-upstream through {}", c.name)));
                    break 'rounds;
                }
            }
        }
    }
    backend.shutdown().await;
    if let Some(e) = failed {
        return Err(e);
    }
    let rows = opts
        .contenders
        .iter()
        .zip(rounds)
        .map(|(c, rounds)| {
            let sum = |f: fn(&ClosedLoopResult) -> u64| rounds.iter().map(|r| f(&r.result)).sum();
            let requests: u64 = sum(|r| r.requests);
            let refused: u64 = sum(|r| r.refused);
            FastUpstreamRow {
                contender: c.clone(),
                rps: Spread::of(rounds.iter().map(|r| r.result.rps)).expect("at least one round"),
                requests,
                refused,
                errors: sum(|r| r.errors),
                percent_refused: if requests == 0 {
                    0.0
                } else {
                    100.0 * refused as f64 / requests as f64
                },
                p50_ms: median(rounds.iter().filter_map(|r| r.result.p50_ms)),
                p99_ms: median(rounds.iter().filter_map(|r| r.result.p99_ms)),
                limit: Spread::of(
                    rounds
                        .iter()
                        .flat_map(|r| r.limit_trace.iter().flatten())
                        .map(|&l| l as f64),
                ),
                rounds,
            }
        })
        .collect();
    Ok(FastUpstreamReport {
        concurrency: opts.concurrency,
        round_ms: opts.round.as_secs_f64() * 1e3,
        rounds: opts.rounds,
        rows,
    })
}

fn ms(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.2} ms"))
}

fn ratio(x: f64, base: Option<&FastUpstreamRow>) -> String {
    base.filter(|b| b.rps.median > 0.0)
        .map_or("n/a".into(), |b| format!("{:.2}x", x / b.rps.median))
}

/// The markdown table: throughput against the fixed limit and direct,
/// refusals, latency and the limit's spread.
pub fn markdown(r: &FastUpstreamReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### fast-upstream: a backend that answers at once, closed loop, {} connections\n",
        r.concurrency
    );
    let fixed = r.fixed();
    let direct = r
        .rows
        .iter()
        .find(|row| matches!(row.contender.kind, ContenderKind::Direct));
    let _ = writeln!(
        out,
        "| target | req/s (median of {}) | rounds' range | vs {} | vs direct | refused | p50 | p99 | limit min / median / max |",
        r.rounds,
        fixed.map_or("fixed", |f| f.contender.name.as_str())
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for row in &r.rows {
        let limit = row.limit.map_or("n/a".into(), |l| {
            format!("{:.0} / {:.0} / {:.0}", l.min, l.median, l.max)
        });
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0}-{:.0} | {} | {} | {:.3}% | {} | {} | {} |",
            row.contender.name,
            row.rps.median,
            row.rps.min,
            row.rps.max,
            ratio(row.rps.median, fixed),
            ratio(row.rps.median, direct),
            row.percent_refused,
            ms(row.p50_ms),
            ms(row.p99_ms),
            limit
        );
    }
    let _ = writeln!(
        out,
        "\n{} rounds of {:.1} s per target, interleaved, each on a freshly started gate (so every round includes a cold start); refused = 503/429 over every answer of every round; p50 and p99 are the median round's, of every answer; the limit is sampled every 100 ms. Everything shares the machine's cores, and the in-process floodwall also shares the load generator's and the backend's runtime threads while HAProxy and nginx run as processes of their own: compare the floodwall rows with each other, the peers only loosely.",
        r.rounds,
        r.round_ms / 1e3
    );
    out
}

/// The figure: each contender's throughput, p99 and limit per second, its
/// rounds back to back.
pub fn figure(r: &FastUpstreamReport) -> Figure {
    let per_second = (1.0 / LIMIT_TRACE_STEP.as_secs_f64()).round() as usize;
    let series = r
        .rows
        .iter()
        .map(|row| {
            // A limit that never binds (1000) would flatten the adaptive
            // one to the axis: the table gives it, the plot leaves it out.
            let draw_limit = !matches!(
                row.contender.kind,
                ContenderKind::Floodwall { .. } | ContenderKind::External { .. }
            );
            let seconds = row.rounds.iter().flat_map(|fr| fr.result.seconds.iter());
            Series {
                name: row.contender.name.clone(),
                goodput: seconds.clone().map(|s| s.ok as f64).collect(),
                p99_ms: seconds.map(|s| s.p99_ms).collect(),
                limit: row
                    .rounds
                    .iter()
                    .flat_map(|fr| {
                        let n = fr.result.seconds.len();
                        (0..n).map(move |i| {
                            fr.limit_trace
                                .get(i * per_second + per_second / 2)
                                .copied()
                                .flatten()
                                .filter(|_| draw_limit)
                                .map(|l| l as f64)
                        })
                    })
                    .collect(),
            }
        })
        .collect();
    Figure {
        title: format!(
            "fast-upstream: a backend that answers at once, {} connections closed loop, {} rounds back to back",
            r.concurrency, r.rounds
        ),
        goodput_caption: "throughput: 2xx per second".into(),
        latency_caption: "p99 latency of every answer (ms, log scale)".into(),
        limit_caption: "adaptive gate limit (slots; static limits are in the table)".into(),
        capacity: Vec::new(),
        series,
    }
}

/// Writes `fast-upstream.{json,md,svg,png}` into `dir`.
pub fn write_all(r: &FastUpstreamReport, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let stem = "fast-upstream";
    let json = dir.join(format!("{stem}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(r)?)?;
    let md = dir.join(format!("{stem}.md"));
    std::fs::write(&md, markdown(r))?;
    let mut paths = vec![json, md];
    paths.extend(plot::write(&figure(r), dir, stem)?);
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn spread_takes_min_lower_median_and_max() {
        assert_eq!(Spread::of([]), None);
        let s = Spread::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = Spread::of([4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 4.0));
    }
}
