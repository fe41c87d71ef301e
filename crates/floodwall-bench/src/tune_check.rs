//! The closed-loop check of `floodwall tune`: does the limit it recommends
//! from recorded history hold up against the best static limit?
//!
//! 1. The demo's spike (a database-like backend, 3× its capacity in the
//!    middle) goes through floodwall with the decision log on, twice: in
//!    shadow mode (nothing refused, every decision logged with the in-use
//!    count), and under the default adaptive limit, enforcing.
//! 2. `floodwall tune`'s arithmetic (`floodwall::tune`) reads each log with
//!    the spike and what follows it left out of the baseline, and checked
//!    against as the incident, as the Shopify article "Tuning bulkheads
//!    and circuit breakers" prescribes.
//! 3. The same spike, on a fresh backend each time, through floodwall with
//!    each static limit of a sweep, and with the recommended ones.
//!
//! A recommendation passes if its goodput in the spike is at least 0.95
//! of the best static limit's.

use crate::demo::{play, run_gated, DemoOptions};
use crate::gateway::{Gateway, GatewayOptions};
use crate::{backend, BackendConfig};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One recording and what `tune` made of it.
#[derive(Debug, Clone, Serialize)]
pub struct Recording {
    /// How the log was recorded.
    pub how: &'static str,
    /// Decisions recorded.
    pub recorded: usize,
    /// `tune`'s figures for the route.
    pub tuning: floodwall::tune::analysis::Tuning,
    /// The recommended limit's goodput ÷ the best static limit's.
    pub ratio: f64,
}

/// What the check measured.
#[derive(Debug, Clone, Serialize)]
pub struct TuneCheck {
    /// The two recordings: in shadow mode (nothing refused, the upstream
    /// collapses in the spike), and under the default adaptive limit
    /// enforcing (the upstream works at its best through the spike).
    pub recordings: Vec<Recording>,
    /// Goodput in the spike (% of the backend's capacity) by static limit.
    pub sweep: Vec<(usize, f64)>,
}

impl TuneCheck {
    /// The worst ratio of the recordings: the check passes only if every
    /// way of recording (shadow mode included) leads to a good limit.
    pub fn worst_ratio(&self) -> f64 {
        self.recordings
            .iter()
            .map(|r| r.ratio)
            .fold(f64::INFINITY, f64::min)
    }
}

/// The spike the check runs: the demo's backend and load, shorter.
pub fn options() -> DemoOptions {
    DemoOptions {
        backend: BackendConfig::default(),
        before: Duration::from_secs(6),
        spike: Duration::from_secs(6),
        after: Duration::from_secs(3),
        print: false,
        ..DemoOptions::default()
    }
}

/// Plays the spike through floodwall with the decision log on, in shadow
/// mode (a limit far above the load: nothing it says matters, the log's
/// counts do) or under the default adaptive limit, and tunes on the log:
/// the spike is the incident, what follows it is left out.
async fn record(
    options: &DemoOptions,
    shadow: bool,
    keep: Option<&std::path::Path>,
) -> anyhow::Result<(usize, floodwall::tune::analysis::Tuning)> {
    let schedule = options.schedule();
    let dir = std::env::temp_dir().join(format!(
        "floodwall-tune-check-{}-{shadow}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("events.jsonl");
    let _ = std::fs::remove_file(&log);
    let back = backend::start(options.backend).await?;
    let upstream = format!("http://{}", back.addr).parse()?;
    let gateway = Gateway::start(
        &upstream,
        &GatewayOptions {
            limit: shadow.then_some(1000),
            shadow,
            events: Some(log.clone()),
            ..GatewayOptions::default()
        },
    )
    .await?;
    let t0 = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    play(options, &schedule, gateway.addr(), "record").await?;
    gateway.stop().await;
    back.shutdown().await;

    let spike_start = t0 + options.before.as_secs_f64();
    let spike_end = spike_start + options.spike.as_secs_f64();
    let end = spike_end + options.after.as_secs_f64() + 60.0;
    let (decisions, _) = floodwall::tune::read(&log)?;
    let incident = floodwall::tune::analysis::Window {
        start: spike_start,
        end: spike_end,
    };
    let exclude = [floodwall::tune::analysis::Window {
        start: spike_end,
        end,
    }];
    let tuning = floodwall::tune::analysis::tune(&decisions, &exclude, Some(incident))
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the decision log has no decision"))?;
    if let Some(keep) = keep {
        std::fs::copy(&log, keep)
            .map_err(|e| anyhow::anyhow!("--keep-log {}: {e}", keep.display()))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok((decisions.len(), tuning))
}

/// Runs the check, sweeping `limits`; the log recorded in shadow mode is
/// copied to `keep` if given (for `floodwall tune` by hand, or its plot).
pub async fn run(
    options: &DemoOptions,
    limits: &[usize],
    keep: Option<&std::path::Path>,
) -> anyhow::Result<TuneCheck> {
    let mut recorded = Vec::new();
    for (how, shadow) in [("shadow mode", true), ("adaptive limit, enforcing", false)] {
        let (n, tuning) = record(options, shadow, keep.filter(|_| shadow)).await?;
        recorded.push((how, n, tuning));
    }

    // Sweep, the recommendations included, on a fresh backend each time.
    let schedule = options.schedule();
    let mut all: Vec<usize> = limits.to_vec();
    for (_, _, t) in &recorded {
        if !all.contains(&t.recommended) {
            all.push(t.recommended);
        }
    }
    all.sort_unstable();
    let mut sweep = Vec::new();
    for l in all {
        let run = run_gated(options, &schedule, Some(l)).await?;
        sweep.push((l, run.goodput_percent_of_capacity));
    }
    let best = sweep.iter().map(|(_, g)| *g).fold(0.0, f64::max);
    let recordings = recorded
        .into_iter()
        .map(|(how, recorded, tuning)| {
            let got = sweep
                .iter()
                .find(|(l, _)| *l == tuning.recommended)
                .map_or(0.0, |(_, g)| *g);
            Recording {
                how,
                recorded,
                ratio: if best > 0.0 { got / best } else { 0.0 },
                tuning,
            }
        })
        .collect();
    Ok(TuneCheck { recordings, sweep })
}

impl TuneCheck {
    /// The tables in BENCHMARKS.md.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        for r in &self.recordings {
            let t = &r.tuning;
            let _ = writeln!(
                out,
                "**Recorded under {}**: {} decisions; baseline {} decisions: max {}, 99.999th {}, \
                 99.99th {}, 99.9th {} in use; knee {}; best rate × unloaded service time {}; \
                 recommended **{}**, {:.2} of the best static limit's goodput (bar: 0.95).\n",
                r.how,
                r.recorded,
                t.baseline,
                t.max,
                t.p99999,
                t.p9999,
                t.p999,
                t.knee.map_or("none".into(), |k| k.to_string()),
                t.bdp.map_or("none".into(), |b| format!(
                    "{} ({:.1} ms)",
                    b.limit, b.service_ms
                )),
                t.recommended,
                r.ratio
            );
            let _ = writeln!(out, "| in use | requests | answered/s |");
            let _ = writeln!(out, "|---:|---:|---:|");
            for p in &t.curve {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} |",
                    p.in_use, p.requests, p.answered_per_s
                );
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "| static limit | goodput in the spike | |");
        let _ = writeln!(out, "|---:|---:|---|");
        let best = self.sweep.iter().map(|(_, g)| *g).fold(0.0, f64::max);
        for (l, g) in &self.sweep {
            let mut note: Vec<String> = self
                .recordings
                .iter()
                .filter(|r| r.tuning.recommended == *l)
                .map(|r| format!("recommended ({})", r.how))
                .collect();
            if *g == best {
                note.push("best".into());
            }
            let _ = writeln!(out, "| {l} | {g:.0}% | {} |", note.join(", "));
        }
        out
    }
}
