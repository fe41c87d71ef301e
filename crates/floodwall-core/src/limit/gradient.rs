//! Gradient: the limit follows the ratio of the unloaded latency to the
//! current one (Netflix Gradient2, Envoy adaptive concurrency).
//!
//! ```text
//! per closed window, with L the limit, B the baseline p50, R the window p50:
//!   failures over threshold (see `failures`)        → L × 0.7
//!   gradient g = clamp(1.1 × B / R, 0.5, 1.0)
//!   g < 1 (queueing):   L ← (1 − s) × L + s × (g × L)     decrease, smoothed
//!   g = 1 (no queue):   L ← L + √L                        increase
//!                       (L + s × √L for 3 steps after a decrease)
//!   with smoothing s = 0.2
//! ```
//!
//! While latency is within `tolerance` of the baseline the limit grows by
//! the headroom √L a window (Envoy's headroom: big limits probe in bigger
//! steps; unsmoothed, as Netflix PR #23 made Gradient grow, so a cold start
//! reaches 50 in about 11 windows instead of 53). The first three steps
//! after a decrease are smoothed (`s × √L`): just past the knee it has
//! found, the limit probes gently instead of overshooting by √L, and three
//! steps later — a false alarm, or capacity that grew — it probes fast
//! again. Once requests queue, the limit shrinks in proportion to how much
//! slower they are, at most by `s × 0.5` = 10 % a window, smoothed so one
//! slow window moves it little. A cut of less than 2 % (g ≥ 0.9) is a
//! *trim*: it does not arm hysteresis, because it is within the noise of
//! comparing a window with the baseline, and if it did, a baseline measured
//! a few percent low would trim on every other window and block growth for
//! good (the simulations showed exactly that).
//!
//! **Where it settles.** Unlike AIMD, which cuts 15 % past its threshold
//! and waits, a gradient parks *at* its threshold: the window median at
//! `tolerance ×` the baseline, about `tolerance × W` — 1.08 to 1.18 W in the
//! simulations, depending on how the baseline's sampling error falls, with
//! almost no oscillation (±2 around its mean). A
//! lower tolerance parks closer to W on tight latencies but, on long-tailed
//! ones, lets a baseline measured low hold the limit near its floor.
//!
//! Three fixes over Gradient2 as shipped:
//!
//! - **The baseline does not ratchet.** Gradient2's long-term RTT is an
//!   average of recent windows and rises with sustained load; here it is
//!   measured by probes at the floor that time only requests admitted under
//!   the pin (Envoy's minRTT, with Envoy PR #11579's fix; see `Baseline`).
//! - **Headroom only when nothing queues.** Gradient2 adds its queue
//!   allowance on every window, so under modest overload (g ≈ 0.8) the
//!   `+ queue` term outweighs the cut and the limit creeps up forever
//!   (Netflix PR #134). Here headroom is added only at g = 1, and growth
//!   is also subject to the busy check and hysteresis (see `shaping`).
//! - **Drops count.** Gradient2 ignores `didDrop` (Netflix issue #176);
//!   here drops are never timed and cut the limit (see `failures`).
//!
//! **Defaults**: statistic p50 (Envoy's default
//! `sample_aggregate_percentile`, and the one a probe estimates best, see
//! [`Statistic`]); tolerance 1.1 — Netflix uses 1.5 and Envoy a 25 %
//! buffer, both parking well above the knee; 10 % is about twice the
//! sampling error of the comparison on a long-tailed upstream, the least
//! that did not collapse in the simulations; smoothing 0.2 (Netflix);
//! minimum gradient 0.5 (Netflix and Envoy).
//!
//! **Source**: Netflix concurrency-limits `Gradient2Limit`; Envoy
//! `adaptive_concurrency` gradient controller.

use super::adaptive::{
    ms, Adaptive, Baseline, Cause, Controller, Evaluation, Failures, Rule, ShapingConfig,
    Statistic, Step, WindowConfig, WindowSummary,
};
use super::LimitConfigError;
use std::sync::atomic::{AtomicU32, Ordering};

/// The gradient is clamped below at this, so one bad window cuts the limit
/// by at most `smoothing × (1 − MIN_GRADIENT)`.
const MIN_GRADIENT: f64 = 0.5;

/// Settings of [`GradientLimit`]; see the module doc for the formula and
/// why each default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradientConfig {
    /// Floor, cap, ramp-up, hysteresis, growth guard.
    pub shaping: ShapingConfig,
    /// Window size.
    pub window: WindowConfig,
    /// Where the unloaded latency comes from.
    pub baseline: Baseline,
    /// Failure thresholds and their cut.
    pub failures: Failures,
    /// Which latency statistic is compared. Default p50.
    pub statistic: Statistic,
    /// Latency may reach `tolerance × baseline` before the gradient drops
    /// below 1. Default 1.1.
    pub tolerance: f64,
    /// How far each window moves the limit towards its target. Default 0.2.
    pub smoothing: f64,
    /// Queueing below this (window statistic minus baseline) never lowers
    /// the gradient below 1: the target latency is the larger of
    /// `tolerance × baseline` and `baseline + min_queue_delay`. Default
    /// 2 ms, for the reason given in the `aimd` module: at a
    /// sub-millisecond baseline a ratio reads scheduling noise as queueing.
    pub min_queue_delay: std::time::Duration,
}

impl Default for GradientConfig {
    fn default() -> Self {
        Self {
            shaping: ShapingConfig::default(),
            window: WindowConfig::default(),
            baseline: Baseline::default(),
            failures: Failures::default(),
            statistic: Statistic::P50,
            tolerance: 1.1,
            smoothing: 0.2,
            min_queue_delay: std::time::Duration::from_millis(2),
        }
    }
}

impl GradientConfig {
    /// Checks the settings; errors name the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), LimitConfigError> {
        self.shaping.validate(prefix)?;
        self.baseline.validate(prefix)?;
        self.failures.validate(prefix)?;
        let key = |k: &str| format!("{prefix}{k}");
        if self.tolerance.is_nan() || self.tolerance < 1.0 {
            return Err(LimitConfigError::new(
                key("tolerance"),
                format!("must be at least 1.0, got {}", self.tolerance),
            ));
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err(LimitConfigError::new(
                key("smoothing"),
                format!("must be in (0, 1], got {}", self.smoothing),
            ));
        }
        Ok(())
    }
}

/// A gradient limit; see the module doc.
pub type GradientLimit = Adaptive<Gradient>;

impl Adaptive<Gradient> {
    /// A gradient limit starting at `cfg.shaping.min`, or the key of the
    /// first invalid setting.
    pub fn new(cfg: GradientConfig) -> Result<Self, LimitConfigError> {
        cfg.validate("")?;
        let rule = Gradient {
            cfg,
            careful: AtomicU32::new(0),
        };
        Ok(Adaptive::build(rule, cfg.shaping, cfg.window, cfg.baseline))
    }
}

/// The gradient rule, as [`GradientLimit`] runs it; see the module doc.
#[derive(Debug)]
pub struct Gradient {
    cfg: GradientConfig,
    /// Growth steps left to take carefully (`s × √L`) since the last
    /// decrease. Read and written only under the limit's lock (in
    /// `evaluate` and `applied`): an atomic only because a rule is shared.
    careful: AtomicU32,
}

/// A gradient at or above this (a cut under 2 % a window) is a trim, within
/// the noise of comparing two latency estimates: it does not arm
/// hysteresis (see `controller::Step::Trim`).
const TRIM_GRADIENT: f64 = 0.9;

/// After a decrease, this many growth steps are `s × √L` instead of `√L`.
const CAREFUL_STEPS: u32 = 3;

impl Rule for Gradient {
    fn name(&self) -> &'static str {
        "gradient"
    }

    fn statistic(&self) -> Statistic {
        self.cfg.statistic
    }

    fn queue_floor(&self) -> std::time::Duration {
        self.cfg.min_queue_delay
    }

    fn evaluate(&self, ctl: &Controller, w: &WindowSummary) -> Evaluation {
        let limit = ctl.value();
        if let Some(cut) = self.cfg.failures.check(w, limit) {
            return cut;
        }
        let stat = self.cfg.statistic;
        let latency = w.latency.map(|l| stat.of(&l));
        let (Some(short), Some(base)) = (latency, ctl.baseline(stat)) else {
            return Evaluation {
                step: Step::Hold,
                cause: Cause::Steady,
                latency,
                detail: "no latency to compare".to_owned(),
            };
        };
        let s = self.cfg.smoothing;
        let target = base
            .mul_f64(self.cfg.tolerance)
            .max(base + self.cfg.min_queue_delay);
        let g = (target.as_secs_f64() / short.as_secs_f64().max(1e-9)).clamp(MIN_GRADIENT, 1.0);
        let what = format!(
            "{} {} vs target {} (max of {:.2} × baseline {}, baseline + {}): gradient {g:.2}",
            stat.as_str(),
            ms(short),
            ms(target),
            self.cfg.tolerance,
            ms(base),
            ms(self.cfg.min_queue_delay),
        );
        if g < 1.0 {
            let to = (1.0 - s) * limit + s * g * limit;
            let (step, cause) = if g < TRIM_GRADIENT {
                (Step::Decrease(to), Cause::Latency)
            } else {
                (Step::Trim(to), Cause::Trim)
            };
            Evaluation {
                step,
                cause,
                latency,
                detail: format!("{what} → ×{:.3}", 1.0 - s + s * g),
            }
        } else {
            let (k, phase) = if self.careful.load(Ordering::Relaxed) > 0 {
                (s, " (careful: near the last decrease)")
            } else {
                (1.0, "")
            };
            let step = k * limit.sqrt();
            Evaluation {
                step: Step::Increase(limit + step),
                cause: Cause::Healthy,
                latency,
                detail: format!("{what} → +{k:.1} × √{limit:.0} = +{step:.2}{phase}"),
            }
        }
    }

    fn applied(&self, step: Step, cause: Cause) {
        if matches!(step, Step::Decrease(_) | Step::Trim(_)) {
            self.careful.store(CAREFUL_STEPS, Ordering::Relaxed);
        } else if cause == Cause::Healthy {
            let left = self.careful.load(Ordering::Relaxed);
            self.careful
                .store(left.saturating_sub(1), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::adaptive::testing::Feeder;
    use crate::limit::{Cause, Limit, Outcome};
    use std::time::Duration;

    fn gradient() -> GradientLimit {
        GradientLimit::new(GradientConfig {
            shaping: ShapingConfig {
                slow_start: false,
                min: 16,
                ramp_up: Duration::ZERO,
                stable_for: Duration::ZERO,
                ..ShapingConfig::default()
            },
            baseline: Baseline::Fixed(Duration::from_millis(10)),
            // The ratio alone: at a 10 ms baseline the 2 ms floor would
            // hide the small gradients these tests exercise.
            min_queue_delay: Duration::ZERO,
            ..GradientConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn grows_by_the_square_root_while_nothing_queues() {
        let (l, mut f) = (gradient(), Feeder::new());
        assert_eq!(f.ok(&l, 10), 20, "16 + √16");
        // Within tolerance (11 ms ≤ 1.1 × 10 ms): still growing.
        let before = l.value();
        f.ok(&l, 11);
        assert!((l.value() - (before + before.sqrt())).abs() < 1e-9);
    }

    #[test]
    fn shrinks_with_the_gradient_smoothed_and_never_adds_headroom_under_load() {
        let (l, mut f) = (gradient(), Feeder::new());
        for _ in 0..5 {
            f.ok(&l, 10);
        }
        let before = l.value();
        f.ok(&l, 14); // g = 1.1 × 10 / 14 = 0.79
        let g = 1.1 * 10.0 / 14.0;
        assert!((l.value() - before * (0.8 + 0.2 * g)).abs() < 1e-6);
        // Twice as slow: the gradient is clamped at 0.5, so −10 %.
        let before = l.value();
        f.ok(&l, 40);
        assert!((l.value() - before * 0.9).abs() < 1e-6);
        assert_eq!(l.explain().unwrap().cause, Cause::Latency);
    }

    #[test]
    fn drops_are_a_strong_signal() {
        let (l, mut f) = (gradient(), Feeder::new());
        for _ in 0..5 {
            f.ok(&l, 10);
        }
        let before = l.value();
        // One drop in 20 = 5 % > 1 %; the drops are fast, and untimed.
        let drop = |i: usize| {
            if i % 20 == 3 {
                Outcome::Dropped
            } else {
                Outcome::Success
            }
        };
        f.window(&l, Duration::from_millis(10), drop);
        assert!((l.value() - before * 0.7).abs() < 1e-6);
        assert_eq!(l.explain().unwrap().cause, Cause::Drops);
    }

    #[test]
    fn probes_gently_after_a_decrease_and_a_trim_does_not_hold_growth() {
        let l = GradientLimit::new(GradientConfig {
            shaping: ShapingConfig {
                slow_start: false,
                min: 16,
                ramp_up: Duration::ZERO,
                stable_for: Duration::from_secs(3600),
                ..ShapingConfig::default()
            },
            baseline: Baseline::Fixed(Duration::from_millis(10)),
            // The ratio alone: at a 10 ms baseline the 2 ms floor would
            // hide the small gradients these tests exercise.
            min_queue_delay: Duration::ZERO,
            ..GradientConfig::default()
        })
        .unwrap();
        let mut f = Feeder::new();
        f.ok(&l, 10);
        // g = 11 / 11.5 = 0.96: a trim, not an overload.
        let before = l.value();
        f.ok(&l, 12);
        assert!(l.value() < before);
        // So growth is not held by the hour-long hysteresis, but the next
        // three steps are careful: +0.2 × √L.
        for _ in 0..3 {
            let before = l.value();
            f.ok(&l, 10);
            assert!((l.value() - (before + 0.2 * before.sqrt())).abs() < 1e-9);
            assert!(l.explain().unwrap().detail.contains("careful"));
        }
        let before = l.value();
        f.ok(&l, 10);
        assert!((l.value() - (before + before.sqrt())).abs() < 1e-9);
        // Twice as slow is an overload: it holds growth.
        f.ok(&l, 20);
        let held = l.value();
        f.ok(&l, 10);
        assert_eq!(l.value(), held);
        assert_eq!(l.explain().unwrap().cause, Cause::Hysteresis);
    }
}
