//! WIP: the dynamic WIP limit of the Phoenix WIP-gate article (an HTTP
//! middleware WIP gate in front of PostgreSQL) — a configured base, halved
//! while the upstream is slow.
//!
//! ```text
//! per success:        ema ← 0.1 × rtt + 0.9 × ema
//! per closed window, with L the limit, base = shaping.max:
//!   failures over threshold (see `failures`)   → L × 0.7
//!   ema / baseline > multiplier (2.0)
//!     and ema − baseline ≥ min_queue_delay (2 ms) → L / 2
//!   otherwise                                  → min(base, L + 5 % × base)
//! ```
//!
//! This is the simplest of the four and the least ambitious: it does not
//! look for the best limit, it keeps latency under `multiplier ×` the
//! unloaded latency. With the default 2.0 it settles anywhere between the
//! upstream's parallelism W (where latency starts to rise) and 2W (where it
//! doubles): full goodput, up to 2× latency. Use it where the base is known
//! and the goal is "never twice as slow"; prefer `gradient` to find the
//! limit.
//!
//! The article switches between exactly two values, base and base / 2, on
//! every request. Here the halving repeats per window while the ratio stays
//! high (a base tuned for peak may be 4× too high), and the way back is
//! gradual (+5 % of base a window) and only after `stable_for` — the
//! article's own fix for its flapping ("the WIP limit only increases if
//! latency is stable for 30 seconds").
//!
//! **Never less than 2 ms of queueing** (`min_queue_delay`, as in the other
//! rules). "Twice the unloaded latency" is 0.3 ms at a 0.3 ms baseline,
//! which one descheduled thread exceeds: in the fast-upstream simulation
//! the ratio alone halved the limit on CPU noise and refused 61 % of what
//! an idle upstream could serve. A doubling that adds less than 2 ms is
//! not slowness anyone pays for. And the 2 ms must show in the window's
//! mean as well as in the moving average: with α 0.1 the average follows
//! the last ten or so samples, and on a host whose noise has a long tail
//! (exponential, 1.5 ms mean, in the fast-upstream simulation) it crossed
//! the baseline + 2 ms at an occasional window close while the window's
//! mean sat 1.3 ms over; the halvings refused 1 % of what the idle
//! upstream could serve.
//!
//! **Defaults** (the article's): multiplier 2.0 (`MaxLatencyMultiplier`), moving
//! average α 0.1 (`RecordLatency`), base 64 (floodwall's fixed default, as
//! `shaping.max`), `stable_for` 30 s, ramp-up 60 s; recovery 5 % of base a
//! window (ours: back from half in 10 windows). The baseline is probed like
//! the others' (the article hard-codes 50 ms: `Baseline::Fixed` does that).
//!
//! **The moving average without a lock.** The average is over samples in
//! the order they finish, so it cannot be derived from the window's
//! histogram. It is kept in an atomic instead, updated by a
//! compare-and-swap loop on the hot path (see `Rule::observe`): the order
//! the swaps succeed in is the order of the average, as the lock's order
//! was before, and on one thread the value is bit for bit the same.
//!
//! **Source**: the Phoenix WIP-gate article (`BaseWIPLimit`,
//! `MaxLatencyMultiplier`, `BottleneckProbe.RecordLatency`, and its
//! pitfall 4 on hysteresis and the floor).

use super::adaptive::{
    ms, Adaptive, Baseline, Cause, Controller, Evaluation, Failures, Rule, ShapingConfig,
    Statistic, Step, WindowConfig, WindowSummary,
};
use super::{LimitConfigError, Sample};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Settings of [`WipLimit`]; see the module doc for the formula and why
/// each default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WipConfig {
    /// Floor, cap, ramp-up, hysteresis, growth guard. `max` is the Phoenix
    /// WIP-gate article's `BaseWIPLimit`. Default: [`ShapingConfig::default`] with `max` 64
    /// and `stable_for` 30 s.
    pub shaping: ShapingConfig,
    /// Window size.
    pub window: WindowConfig,
    /// Where the unloaded latency comes from.
    pub baseline: Baseline,
    /// Failure thresholds and their cut.
    pub failures: Failures,
    /// The limit halves while `ema / baseline` is above this. Default 2.0.
    pub multiplier: f64,
    /// Weight of each new latency in the moving average. Default 0.1.
    pub ema_alpha: f64,
    /// Fraction of the base added back per healthy window. Default 0.05.
    pub recovery: f64,
    /// The limit halves only if the moving average is also at least this
    /// much above the baseline. Default 2 ms; see the module doc.
    pub min_queue_delay: Duration,
}

impl Default for WipConfig {
    fn default() -> Self {
        Self {
            shaping: ShapingConfig {
                max: 64,
                stable_for: Duration::from_secs(30),
                ..ShapingConfig::default()
            },
            window: WindowConfig::default(),
            baseline: Baseline::default(),
            failures: Failures::default(),
            multiplier: 2.0,
            ema_alpha: 0.1,
            recovery: 0.05,
            min_queue_delay: Duration::from_millis(2),
        }
    }
}

impl WipConfig {
    /// Checks the settings; errors name the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), LimitConfigError> {
        self.shaping.validate(prefix)?;
        self.baseline.validate(prefix)?;
        self.failures.validate(prefix)?;
        let key = |k: &str| format!("{prefix}{k}");
        if self.multiplier.is_nan() || self.multiplier <= 1.0 {
            return Err(LimitConfigError::new(
                key("multiplier"),
                format!("must be above 1.0, got {}", self.multiplier),
            ));
        }
        if !(self.ema_alpha > 0.0 && self.ema_alpha <= 1.0) {
            return Err(LimitConfigError::new(
                key("ema_alpha"),
                format!("must be in (0, 1], got {}", self.ema_alpha),
            ));
        }
        if !(self.recovery > 0.0 && self.recovery <= 1.0) {
            return Err(LimitConfigError::new(
                key("recovery"),
                format!("must be in (0, 1], got {}", self.recovery),
            ));
        }
        if self.min_queue_delay > Duration::from_secs(60) {
            return Err(LimitConfigError::new(
                key("min_queue_delay"),
                format!("must be at most 60s, got {:?}", self.min_queue_delay),
            ));
        }
        Ok(())
    }
}

/// The Phoenix WIP-gate article's dynamic WIP limit; see the module doc.
/// Its [`baseline`](Adaptive::baseline) is the mean latency at the floor.
pub type WipLimit = Adaptive<Wip>;

impl Adaptive<Wip> {
    /// A WIP limit starting at `cfg.shaping.min` and ramping to the base
    /// (`cfg.shaping.max`), or the key of the first invalid setting.
    pub fn new(cfg: WipConfig) -> Result<Self, LimitConfigError> {
        cfg.validate("")?;
        let rule = Wip {
            cfg,
            ema: AtomicU64::new(NO_EMA),
        };
        Ok(Adaptive::build(rule, cfg.shaping, cfg.window, cfg.baseline))
    }
}

/// The bits of `ema` before the first timed sample (a NaN no average of
/// finite latencies produces).
const NO_EMA: u64 = u64::MAX;

/// The WIP rule, as [`WipLimit`] runs it; see the module doc.
#[derive(Debug)]
pub struct Wip {
    cfg: WipConfig,
    /// The moving average of timed latencies, in seconds, as `f64` bits;
    /// `NO_EMA` before the first.
    ema: AtomicU64,
}

impl Wip {
    fn ema(&self) -> Option<f64> {
        match self.ema.load(Ordering::Acquire) {
            NO_EMA => None,
            bits => Some(f64::from_bits(bits)),
        }
    }
}

impl Rule for Wip {
    const OBSERVES: bool = true;

    fn name(&self) -> &'static str {
        "wip"
    }

    /// The mean: the baseline the moving average is compared with.
    fn statistic(&self) -> Statistic {
        Statistic::Mean
    }

    fn queue_floor(&self) -> std::time::Duration {
        self.cfg.min_queue_delay
    }

    /// `ema ← α × rtt + (1 − α) × ema`, by compare-and-swap.
    fn observe(&self, s: &Sample) {
        let x = s.rtt.as_secs_f64();
        let a = self.cfg.ema_alpha;
        let _ = self
            .ema
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                let next = match old {
                    NO_EMA => x,
                    e => a * x + (1.0 - a) * f64::from_bits(e),
                };
                Some(next.to_bits())
            });
    }

    fn evaluate(&self, ctl: &Controller, w: &WindowSummary) -> Evaluation {
        let limit = ctl.value();
        if let Some(cut) = self.cfg.failures.check(w, limit) {
            return cut;
        }
        let latency = self.ema().map(Duration::from_secs_f64);
        let base = self.cfg.shaping.max as f64;
        let step_up = (self.cfg.recovery * base).max(1.0);
        let (Some(ema), Some(baseline)) = (latency, ctl.baseline(Statistic::Mean)) else {
            return Evaluation {
                step: Step::Increase(limit + step_up),
                cause: Cause::Healthy,
                latency,
                detail: format!("no latency to compare → +{step_up:.1}"),
            };
        };
        let ratio = ema.as_secs_f64() / baseline.as_secs_f64().max(1e-9);
        let what = format!(
            "latency ratio {ratio:.2} = ema {} / baseline {}",
            ms(ema),
            ms(baseline)
        );
        // The queueing is the smaller of the average's and the window
        // mean's excess over the baseline: α 0.1 weighs the last ten or so
        // samples, so a few slow ones of a noisy host can put the average
        // 2 ms over for one close while the window as a whole did not
        // queue (see the module doc).
        let sustained = w.latency.map_or(ema, |l| ema.min(Statistic::Mean.of(&l)));
        let waited = sustained.saturating_sub(baseline);
        if ratio > self.cfg.multiplier && waited >= self.cfg.min_queue_delay {
            Evaluation {
                step: Step::Decrease(limit / 2.0),
                cause: Cause::Latency,
                latency,
                detail: format!("{what} > {:.2} → ÷2", self.cfg.multiplier),
            }
        } else {
            Evaluation {
                step: Step::Increase((limit + step_up).min(base)),
                cause: Cause::Healthy,
                latency,
                detail: if ratio > self.cfg.multiplier {
                    format!(
                        "{what} > {:.2} but waited {} < {} → +{step_up:.1} toward base {base:.0}",
                        self.cfg.multiplier,
                        ms(waited),
                        ms(self.cfg.min_queue_delay)
                    )
                } else {
                    format!(
                        "{what} ≤ {:.2} → +{step_up:.1} toward base {base:.0}",
                        self.cfg.multiplier
                    )
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::adaptive::testing::Feeder;
    use crate::limit::{Cause, Limit};

    #[test]
    fn halves_above_the_multiplier_and_recovers_by_steps_toward_base() {
        let l = WipLimit::new(WipConfig {
            shaping: ShapingConfig {
                slow_start: false,
                min: 3,
                max: 40,
                ramp_up: Duration::ZERO,
                stable_for: Duration::ZERO,
                ..ShapingConfig::default()
            },
            baseline: Baseline::Fixed(Duration::from_millis(10)),
            ..WipConfig::default()
        })
        .unwrap();
        let mut f = Feeder::new();
        // +5 % of base 40 = +2 per window, from 3 up to the base.
        assert_eq!(f.ok(&l, 10), 5);
        for _ in 0..30 {
            f.ok(&l, 10);
        }
        assert_eq!(l.limit(), 40);
        // 20 ms ≤ 2 × 10 ms: at the base, stays.
        assert_eq!(f.ok(&l, 20), 40);
        // 25 ms: the moving average passes 2× within the window → ÷2.
        assert_eq!(f.ok(&l, 25), 20);
        assert_eq!(l.explain().unwrap().cause, Cause::Latency);
        assert_eq!(f.ok(&l, 25), 10, "still slow: halves again");
        assert_eq!(f.ok(&l, 10), 12, "back by 2 a window");
    }
}
