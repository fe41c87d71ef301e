//! Vegas: estimate how many requests are queued at the upstream, and keep
//! that number small (TCP Vegas, as Netflix's `VegasLimit` applies it to
//! concurrency).
//!
//! ```text
//! per closed window, with L the limit, D = max(1, ⌊log10 L⌋):
//!   failures over threshold (see `failures`)  → L × 0.7
//!   queue = L × (1 − rtt_noload / rtt)          (Little's law, mean RTTs)
//!   queue ≤ 1 × D   (nothing queues)           → L + 6 × D   (+ beta)
//!   queue < 3 × D   (below alpha)              → L + D
//!   queue > 6 × D   (above beta)               → L − D
//!   otherwise       (between alpha and beta)   → hold
//! but while rtt − rtt_noload < min_queue_delay (2 ms), a queue estimate at
//! or above alpha counts as below it                 → L + D
//! ```
//!
//! Why the queue: with L requests in flight and the upstream serving W of
//! them at a time, each request spends `rtt = rtt_noload × L / W`, so
//! `L × (1 − rtt_noload / rtt) = L − W` is exactly the number waiting. Vegas
//! aims to keep between alpha and beta of them queued: enough that the
//! upstream never idles between requests, few enough that the wait stays a
//! small fraction of a service time. So it settles at about
//! `W + 3·D … W + 6·D` — 3 to 6 above the best limit for W below 100, 6 to
//! 12 for W in the hundreds — a relative excess that shrinks as W grows
//! (8–14 % at W = 50, 20–24 % at W = 25 and 2.5 % at W = 200 in the
//! simulations). Its additive decrease also makes it the slowest to follow
//! a capacity drop: about 30 s to get from 1.1 × 50 to 1.2 × 25.
//!
//! `rtt_noload` is the measured baseline (see `Baseline`), never the running
//! minimum: Netflix's VegasLimit resets `rtt_noload` to the current RTT
//! every `probeMultiplier × limit` samples, and under sustained load that is
//! a loaded RTT, so the queue estimate reads zero and the limit grows
//! (Netflix concurrency-limits issue #165).
//!
//! **Never less than 2 ms of queueing** (`min_queue_delay`, as in aimd and
//! gradient). The estimate is a ratio of RTTs, so at a 0.3 ms baseline
//! 0.15 ms of scheduling noise reads as a third of the limit queued: in the
//! fast-upstream simulation (64 workers at 0.3 ms, a quarter loaded, with
//! bursts of CPU noise) Vegas without the floor refused 40 % of what an
//! idle upstream could serve. Under the floor, a window whose mean waited
//! less than 2 ms over the baseline is not a queue worth holding or
//! shrinking for: it grows by D, the step below alpha, so it still finds a
//! fast bottleneck's limit from above the floor rather than racing past it
//! by beta. At baselines of 10 ms and more the floor is under a fifth of a
//! service time and the band decides, as before.
//!
//! **Defaults** (Netflix `VegasLimit`): alpha 3·D, beta 6·D, threshold D,
//! increase D, decrease D, with D the integer log10 of L, at least 1
//! (Netflix's `Log10RootIntFunction`): the band stays put while L moves
//! within a decade. The mean RTT is compared, because the queue formula is
//! Little's law. Drops
//! cut by 0.7 rather than Netflix's `L − D`: a drop is the upstream
//! refusing work, which an additive step answers too slowly.
//!
//! **Source**: Brakmo & Peterson, "TCP Vegas: End to End Congestion
//! Avoidance on a Global Internet" (1995); Netflix concurrency-limits
//! `VegasLimit`.

use super::adaptive::{
    ms, Adaptive, Baseline, Cause, Controller, Evaluation, Failures, Rule, ShapingConfig,
    Statistic, Step, WindowConfig, WindowSummary,
};
use super::LimitConfigError;

/// Settings of [`VegasLimit`]; see the module doc for the formula and why
/// each default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VegasConfig {
    /// Floor, cap, ramp-up, hysteresis, growth guard.
    pub shaping: ShapingConfig,
    /// Window size.
    pub window: WindowConfig,
    /// Where `rtt_noload` comes from.
    pub baseline: Baseline,
    /// Failure thresholds and their cut.
    pub failures: Failures,
    /// Alpha = `alpha × D`: below it the limit grows. Default 3.
    pub alpha: f64,
    /// Beta = `beta × D`: above it the limit shrinks. Default 6.
    pub beta: f64,
    /// Threshold = `threshold × D`: at or below it nothing queues and the
    /// limit grows by beta. Default 1.
    pub threshold: f64,
    /// Mean queueing (window mean minus `rtt_noload`) below this is never a
    /// reason to hold or shrink. Default 2 ms; see the module doc.
    pub min_queue_delay: std::time::Duration,
}

impl Default for VegasConfig {
    fn default() -> Self {
        Self {
            // Vegas grows fast on its own while its queue estimate is below
            // `threshold`, and comes down by one a window: a doubling
            // overshoot would take it tens of windows to shed.
            shaping: ShapingConfig {
                slow_start: false,
                ..ShapingConfig::default()
            },
            window: WindowConfig::default(),
            baseline: Baseline::default(),
            failures: Failures::default(),
            alpha: 3.0,
            beta: 6.0,
            threshold: 1.0,
            min_queue_delay: std::time::Duration::from_millis(2),
        }
    }
}

impl VegasConfig {
    /// Checks the settings; errors name the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), LimitConfigError> {
        self.shaping.validate(prefix)?;
        self.baseline.validate(prefix)?;
        self.failures.validate(prefix)?;
        if !(0.0 <= self.threshold && self.threshold <= self.alpha && self.alpha < self.beta) {
            return Err(LimitConfigError::new(
                format!("{prefix}beta"),
                format!(
                    "need 0 ≤ threshold ≤ alpha < beta, got threshold {}, alpha {}, beta {}",
                    self.threshold, self.alpha, self.beta
                ),
            ));
        }
        if self.min_queue_delay > std::time::Duration::from_secs(60) {
            return Err(LimitConfigError::new(
                format!("{prefix}min_queue_delay"),
                format!("must be at most 60s, got {:?}", self.min_queue_delay),
            ));
        }
        Ok(())
    }
}

/// A Vegas limit; see the module doc. Its [`baseline`](Adaptive::baseline)
/// is `rtt_noload`, the mean latency at the floor.
pub type VegasLimit = Adaptive<Vegas>;

impl Adaptive<Vegas> {
    /// A Vegas limit starting at `cfg.shaping.min`, or the key of the first
    /// invalid setting.
    pub fn new(cfg: VegasConfig) -> Result<Self, LimitConfigError> {
        cfg.validate("")?;
        Ok(Adaptive::build(
            Vegas { cfg },
            cfg.shaping,
            cfg.window,
            cfg.baseline,
        ))
    }
}

/// The Vegas rule, as [`VegasLimit`] runs it; see the module doc.
#[derive(Debug, Clone)]
pub struct Vegas {
    cfg: VegasConfig,
}

impl Rule for Vegas {
    fn name(&self) -> &'static str {
        "vegas"
    }

    /// The mean: the queue estimate is Little's law.
    fn statistic(&self) -> Statistic {
        Statistic::Mean
    }

    fn queue_floor(&self) -> std::time::Duration {
        self.cfg.min_queue_delay
    }

    fn evaluate(&self, ctl: &Controller, w: &WindowSummary) -> Evaluation {
        let limit = ctl.value();
        if let Some(cut) = self.cfg.failures.check(w, limit) {
            return cut;
        }
        let latency = w.latency.map(|l| l.mean);
        let (Some(rtt), Some(noload)) = (latency, ctl.baseline(Statistic::Mean)) else {
            return Evaluation {
                step: Step::Hold,
                cause: Cause::Steady,
                latency,
                detail: "no latency to compare".to_owned(),
            };
        };
        let d = limit.log10().floor().max(1.0);
        let queue = (limit * (1.0 - noload.as_secs_f64() / rtt.as_secs_f64().max(1e-9))).max(0.0);
        let (alpha, beta, threshold) = (
            self.cfg.alpha * d,
            self.cfg.beta * d,
            self.cfg.threshold * d,
        );
        let what = format!(
            "queue {queue:.1} = {limit:.0} × (1 − {} / {})",
            ms(noload),
            ms(rtt)
        );
        let waited = rtt.saturating_sub(noload);
        let (step, cause, how) = if queue <= threshold {
            let how = format!("≤ threshold {threshold:.1} → +beta {beta:.1}");
            (Step::Increase(limit + beta), Cause::Healthy, how)
        } else if queue >= alpha && waited < self.cfg.min_queue_delay {
            let how = format!(
                "but waited {} < {} → +{d:.1}",
                ms(waited),
                ms(self.cfg.min_queue_delay)
            );
            (Step::Increase(limit + d), Cause::Healthy, how)
        } else if queue < alpha {
            let how = format!("< alpha {alpha:.1} → +{d:.1}");
            (Step::Increase(limit + d), Cause::Healthy, how)
        } else if queue > beta {
            let how = format!("> beta {beta:.1} → −{d:.1}");
            (Step::Decrease(limit - d), Cause::Latency, how)
        } else {
            let how = format!("within alpha {alpha:.1} … beta {beta:.1} → hold");
            (Step::Hold, Cause::Steady, how)
        };
        Evaluation {
            step,
            cause,
            latency,
            detail: format!("{what} {how}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::adaptive::testing::Feeder;
    use crate::limit::{Cause, Limit};
    use std::time::Duration;

    /// A Vegas limit at 20 with no ramp or hysteresis, against a fixed
    /// `rtt_noload` of `baseline_us`.
    fn vegas(baseline_us: u64) -> VegasLimit {
        VegasLimit::new(VegasConfig {
            shaping: ShapingConfig {
                slow_start: false,
                min: 20,
                ramp_up: Duration::ZERO,
                stable_for: Duration::ZERO,
                ..ShapingConfig::default()
            },
            baseline: Baseline::Fixed(Duration::from_micros(baseline_us)),
            ..VegasConfig::default()
        })
        .unwrap()
    }

    fn us(l: &VegasLimit, f: &mut Feeder, rtt_us: u64) -> f64 {
        f.window(l, Duration::from_micros(rtt_us), |_| {
            crate::Outcome::Success
        });
        l.value()
    }

    #[test]
    fn the_queue_estimate_drives_the_steps() {
        let (l, mut f) = (vegas(10_000), Feeder::new());
        // L = 20, D = 1. rtt = noload: queue 0 ≤ threshold 1 → +beta (6).
        assert_eq!(us(&l, &mut f, 10_000), 26.0);
        // queue = 26 × (1 − 10/10.5) = 1.2: above threshold, below alpha 3
        // → +D.
        assert_eq!(us(&l, &mut f, 10_500), 27.0);
        // queue = 27 × (1 − 10/12.5) = 5.4: between alpha and beta → hold.
        assert_eq!(us(&l, &mut f, 12_500), 27.0);
        assert_eq!(l.explain().unwrap().cause, Cause::Steady);
        // queue = 27 × (1 − 10/20) = 13.5 > beta 6 → −D.
        assert_eq!(us(&l, &mut f, 20_000), 26.0);
        assert_eq!(l.explain().unwrap().cause, Cause::Latency);
    }

    #[test]
    fn less_than_the_floor_of_queueing_is_not_a_queue() {
        let (l, mut f) = (vegas(300), Feeder::new());
        // L = 20 at a 0.3 ms baseline, a 1.2 ms mean: the ratio says 15 of
        // 20 are queued (above beta), but each waited 0.9 ms: grow by D.
        assert_eq!(us(&l, &mut f, 1_200), 21.0);
        assert!(l.explain().unwrap().detail.contains("waited"));
        // 2.5 ms of waiting is past the floor: the band decides again.
        assert_eq!(us(&l, &mut f, 2_800), 20.0);
        assert_eq!(l.explain().unwrap().cause, Cause::Latency);
    }
}
