//! The closed-loop check of `floodwall tune`: does the limit it recommends
//! from recorded history hold up against the best static limit?
//!
//! 1. The demo's spike (a database-like backend, 3× its capacity in the
//!    middle) goes through floodwall in shadow mode with the decision log
//!    on: nothing is refused, every decision is logged with the in-use
//!    count.
//! 2. `floodwall tune`'s arithmetic (`floodwall::tune`) reads that log with
//!    the spike and what follows it left out of the baseline, and checked
//!    against as the incident, as the Shopify article "Tuning bulkheads
//!    and circuit breakers" prescribes.
//! 3. The same spike, on a fresh backend each time, through floodwall with
//!    each static limit of a sweep, and with the recommended one.
//!
//! The recommendation passes if its goodput in the spike is at least 0.95
//! of the best static limit's.

use crate::demo::{play, run_gated, DemoOptions};
use crate::gateway::{Gateway, GatewayOptions};
use crate::{backend, BackendConfig};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the check measured.
#[derive(Debug, Clone, Serialize)]
pub struct TuneCheck {
    /// Decisions recorded in shadow mode.
    pub recorded: usize,
    /// `tune`'s figures for the route.
    pub tuning: floodwall::tune::analysis::Tuning,
    /// Goodput in the spike (% of the backend's capacity) by static limit.
    pub sweep: Vec<(usize, f64)>,
    /// The recommended limit's goodput ÷ the best static limit's.
    pub ratio: f64,
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

/// Runs the check, sweeping `limits`.
pub async fn run(options: &DemoOptions, limits: &[usize]) -> anyhow::Result<TuneCheck> {
    let schedule = options.schedule();
    let dir = std::env::temp_dir().join(format!("floodwall-tune-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("events.jsonl");
    let _ = std::fs::remove_file(&log);

    // 1. Record, in shadow mode (a limit far above the load: nothing it
    //    says matters, the log's counts do).
    let back = backend::start(options.backend).await?;
    let upstream = format!("http://{}", back.addr).parse()?;
    let gateway = Gateway::start(
        &upstream,
        &GatewayOptions {
            limit: Some(1000),
            shadow: true,
            events: Some(log.clone()),
            ..GatewayOptions::default()
        },
    )
    .await?;
    let t0 = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    play(options, &schedule, gateway.addr(), "record").await?;
    gateway.stop().await;
    back.shutdown().await;

    // 2. Tune: the baseline is the quiet part before the spike.
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
    let _ = std::fs::remove_dir_all(&dir);

    // 3. Sweep, the recommendation included.
    let mut all: Vec<usize> = limits.to_vec();
    if !all.contains(&tuning.recommended) {
        all.push(tuning.recommended);
    }
    all.sort_unstable();
    let mut sweep = Vec::new();
    for l in all {
        let run = run_gated(options, &schedule, Some(l)).await?;
        sweep.push((l, run.goodput_percent_of_capacity));
    }
    let best = sweep.iter().map(|(_, g)| *g).fold(0.0, f64::max);
    let recommended = sweep
        .iter()
        .find(|(l, _)| *l == tuning.recommended)
        .map_or(0.0, |(_, g)| *g);
    Ok(TuneCheck {
        recorded: decisions.len(),
        tuning,
        sweep,
        ratio: if best > 0.0 { recommended / best } else { 0.0 },
    })
}

impl TuneCheck {
    /// The tables in BENCHMARKS.md.
    pub fn to_markdown(&self) -> String {
        let t = &self.tuning;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Recorded {} decisions in shadow mode; baseline {} decisions: max {}, 99.999th {}, \
             99.99th {}, 99.9th {} in use; recommended **{}**.\n",
            self.recorded, t.baseline, t.max, t.p99999, t.p9999, t.p999, t.recommended
        );
        let _ = writeln!(out, "| static limit | goodput in the spike | |");
        let _ = writeln!(out, "|---:|---:|---|");
        let best = self.sweep.iter().map(|(_, g)| *g).fold(0.0, f64::max);
        for (l, g) in &self.sweep {
            let mut note = Vec::new();
            if *l == t.recommended {
                note.push("recommended");
            }
            if *g == best {
                note.push("best");
            }
            let _ = writeln!(out, "| {l} | {g:.0}% | {} |", note.join(", "));
        }
        let _ = writeln!(
            out,
            "\nThe recommended limit's goodput is {:.2} of the best static limit's (bar: 0.95).",
            self.ratio
        );
        out
    }
}
