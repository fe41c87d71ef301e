//! Whether the open-loop generator itself keeps up at a rate.

use std::time::Duration;

use anyhow::ensure;
use serde::Serialize;

use super::{run, LoadConfig, Phase, Schedule};
use crate::backend;

/// Whether the open-loop generator keeps up at a rate, measured against a
/// [trivial backend](backend::start_trivial) on the same runtime.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Headroom {
    /// The rate that was asked for.
    pub rate_rps: f64,
    /// First attempts put on the wire per second, over the time it took to
    /// send them all (the schedule's length if the generator kept up).
    pub sent_rps: f64,
    /// First attempts sent within [`LATE_AFTER`](super::LATE_AFTER) of schedule, per second of
    /// the schedule: the rate the generator really sustains.
    pub on_schedule_rps: f64,
    /// 2xx answers per second of the schedule.
    pub ok_rps: f64,
    /// Share of arrivals sent late, 0..=1.
    pub late_fraction: f64,
    /// The furthest behind schedule the generator ever was, in ms.
    pub max_lateness_ms: f64,
    /// 99th percentile latency against the trivial backend, in ms.
    pub p99_ms: Option<f64>,
}

/// Plays `rate_rps` for `duration` against a fresh trivial backend and says
/// how much of it went out on schedule. Both share the caller's runtime, so
/// the figure is a lower bound for the generator alone; run it on a
/// multi-threaded runtime in a release build to quote it.
pub async fn measure_headroom(rate_rps: f64, duration: Duration) -> anyhow::Result<Headroom> {
    ensure!(
        rate_rps.is_finite() && rate_rps > 0.0,
        "headroom rate must be a finite number > 0, got {rate_rps}"
    );
    ensure!(
        !duration.is_zero(),
        "headroom duration must be greater than zero"
    );
    let backend = backend::start_trivial().await?;
    let schedule = Schedule {
        phases: vec![Phase { duration, rate_rps }],
    };
    let result = run(LoadConfig::new(
        format!("http://{}/", backend.addr).parse()?,
        schedule,
    ))
    .await;
    backend.shutdown().await;
    let result = result?;
    let totals = result.overall.totals;
    let seconds = duration.as_secs_f64();
    let dispatch_seconds = (result.dispatch_ms / 1e3).max(seconds);
    Ok(Headroom {
        rate_rps,
        sent_rps: totals.sent as f64 / dispatch_seconds,
        on_schedule_rps: (totals.sent - totals.late) as f64 / seconds,
        ok_rps: totals.ok as f64 / seconds,
        late_fraction: if totals.sent == 0 {
            0.0
        } else {
            totals.late as f64 / totals.sent as f64
        },
        max_lateness_ms: result.max_lateness_ms,
        p99_ms: result.overall.success_ms.p99,
    })
}
