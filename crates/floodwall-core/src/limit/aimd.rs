//! AIMD: the rule of the article "How I Slashed P99 Latency by 82% … with
//! Adaptive Concurrency Sharding" (below, the sharding article), evaluated
//! once per window.
//!
//! ```text
//! per closed window, with L the limit:
//!   failures over threshold (see `failures`)     → L × 0.7
//!   p50 > T = max((1.15 + 1/L) × baseline p50,
//!                 baseline p50 + 2 ms)           → L × clamp(T ÷ p50, 0.5, 0.85)
//!   otherwise                                    → max(L × 1.1, L + 1)
//! ```
//!
//! Multiplicative steps both ways, so it reaches a limit of 500 from 3 in
//! about 55 windows and halves in four. The `+ 1` lets it grow from a
//! small limit at all (3 × 1.1 rounds back down to 3).
//!
//! **Why relative to a baseline, not an absolute threshold.** The sharding
//! article compares p99 with a fixed `ScaleUpThreshold` in milliseconds. That number
//! is right for one upstream on one day: a deploy that makes queries 30 %
//! slower turns it into "always overloaded" and pins the limit at the floor;
//! one that makes them faster lets a real queue build before the threshold
//! trips. Comparing with the measured unloaded p99 (see `Baseline`) keeps the
//! meaning — "requests are queueing" — whatever the upstream's speed. The
//! absolute form is still there: `Baseline::Fixed(d)` with `tolerance`
//! 1.0 is "p99 > d".
//!
//! **But never less than 2 ms of queueing** (`min_queue_delay`). At a
//! sub-millisecond baseline, 15 % is 45 µs: less than the scheduling and
//! network noise on any real host, so a relative threshold alone reads
//! noise as queueing. In front of an upstream that answered in 0.3 ms and
//! was not the bottleneck, it cut the limit to 14 and refused 87 % of a
//! closed loop of 64 connections that the upstream served without effort
//! (the fast-upstream simulation: 67 % refused). An absolute floor on the
//! queueing delay is what CoDel (a 5 ms target of standing queue) and
//! DAGOR (20 ms of queueing as the overload signal) use; Netflix ignores
//! RTTs under 100 µs for the same reason. 2 ms is far below anything a
//! user notices, and at baselines above about 13 ms the relative term is
//! the larger, so the floor changes nothing there. The cost is at fast
//! bottlenecks: one that serves in 1 ms settles with up to 2 ms of queue,
//! which is the point — 2 ms of queueing is not worth refusing anyone.
//!
//! **Where it settles.** Queueing adds about `(L − W) / W` service times to
//! every request, so the window median crosses `tolerance ×` the unloaded
//! one at `L ≈ tolerance × W`; the cut then drops the limit 15 % below
//! that and hysteresis holds it there for `stable_for` before it climbs
//! again. With tolerance 1.15 the sawtooth runs from about W to 1.15 W
//! (peaks to 1.3 W for one window); in the simulations its time average is
//! 1.0–1.10 W at W = 50 and up to 1.14 W at W = 25, on tight and on
//! long-tailed latencies alike, and it follows a halving of capacity in
//! 3–4 s. A tolerance of 1.1 sits closer to W on tight latencies but, on
//! long-tailed ones, lets noise cut it to its floor.
//!
//! **Defaults** (the sharding article's unless said): backoff 0.85 on
//! latency, 0.7 on failures, growth ×1.1 and at least +1; ours: statistic
//! p50, tolerance 1.15. The article says "p99", but its code keeps an exponential moving
//! average of raw latencies, i.e. a mean. A real p99 cannot be compared
//! with a probed baseline: no probe of a few hundred requests estimates a
//! p99, and on a long-tailed upstream the simulations pinned a p99 AIMD at
//! its floor. The median is what a probe measures best (see
//! [`Statistic`]). Shaping, window and probe defaults are those of
//! [`ShapingConfig`], [`WindowConfig`] and [`Baseline`].
//!
//! **Source**: the sharding article (`recalculate()`: errors ×0.7, p99
//! ×0.85, healthy ×1.1); AIMD itself is TCP's congestion avoidance (Jacobson 1988); Netflix
//! concurrency-limits ships the same idea as `AIMDLimit`.

use super::adaptive::{
    ms, Adaptive, Baseline, Cause, Controller, Evaluation, Failures, Rule, ShapingConfig,
    Statistic, Step, WindowConfig, WindowSummary,
};
use super::LimitConfigError;

/// Settings of [`AimdLimit`]; see the module doc for the formula and why
/// each default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AimdConfig {
    /// Floor, cap, ramp-up, hysteresis, growth guard.
    pub shaping: ShapingConfig,
    /// Window size.
    pub window: WindowConfig,
    /// Where the unloaded latency comes from.
    pub baseline: Baseline,
    /// Failure thresholds and their cut (×0.7).
    pub failures: Failures,
    /// Which latency statistic is compared. Default p50.
    pub statistic: Statistic,
    /// The window statistic may reach `tolerance × baseline` before it
    /// counts as overload. Default 1.15.
    pub tolerance: f64,
    /// The cut on latency overload just past the threshold. Default 0.85.
    pub backoff: f64,
    /// The deepest cut one window can make when latency is far past the
    /// threshold (the cut is `threshold ÷ latency` between the two).
    /// Default 0.5, Gradient2's and Envoy's lowest gradient.
    pub max_cut: f64,
    /// The growth factor on a healthy window. Default 1.1.
    pub increase: f64,
    /// Queueing (window statistic minus baseline) below this is never
    /// overload, whatever the ratio. Default 2 ms; see the module doc.
    pub min_queue_delay: std::time::Duration,
}

impl Default for AimdConfig {
    fn default() -> Self {
        Self {
            shaping: ShapingConfig::default(),
            window: WindowConfig::default(),
            baseline: Baseline::default(),
            failures: Failures::default(),
            statistic: Statistic::P50,
            tolerance: 1.15,
            backoff: 0.85,
            max_cut: 0.5,
            increase: 1.1,
            min_queue_delay: std::time::Duration::from_millis(2),
        }
    }
}

impl AimdConfig {
    /// Checks the settings; errors name the key under `prefix`
    /// (e.g. `"routes[0].limit."`).
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
        if !(self.backoff > 0.0 && self.backoff < 1.0) {
            return Err(LimitConfigError::new(
                key("backoff"),
                format!("must be in (0, 1), got {}", self.backoff),
            ));
        }
        if !(self.max_cut > 0.0 && self.max_cut <= self.backoff) {
            return Err(LimitConfigError::new(
                key("max_cut"),
                format!(
                    "must be in (0, backoff = {}], got {}",
                    self.backoff, self.max_cut
                ),
            ));
        }
        if self.min_queue_delay > std::time::Duration::from_secs(60) {
            return Err(LimitConfigError::new(
                key("min_queue_delay"),
                format!("must be at most 60s, got {:?}", self.min_queue_delay),
            ));
        }
        if self.increase.is_nan() || self.increase <= 1.0 {
            return Err(LimitConfigError::new(
                key("increase"),
                format!("must be above 1.0, got {}", self.increase),
            ));
        }
        Ok(())
    }
}

/// Additive-increase-multiplicative-decrease on errors and tail latency,
/// per window (the sharding article). See the module doc.
pub type AimdLimit = Adaptive<Aimd>;

impl Adaptive<Aimd> {
    /// An AIMD limit starting at `cfg.shaping.min`, or the key of the first
    /// invalid setting.
    pub fn new(cfg: AimdConfig) -> Result<Self, LimitConfigError> {
        cfg.validate("")?;
        Ok(Adaptive::build(
            Aimd { cfg },
            cfg.shaping,
            cfg.window,
            cfg.baseline,
        ))
    }
}

/// The AIMD rule, as [`AimdLimit`] runs it; see the module doc.
#[derive(Debug, Clone)]
pub struct Aimd {
    cfg: AimdConfig,
}

impl Aimd {
    /// How many times the baseline the window statistic may be at `limit`
    /// before it counts as queueing: `tolerance + 1 / limit`. The `1 /
    /// limit` is one request's worth of queueing: with W workers, a limit
    /// of W + 1 keeps one request waiting, which adds about `1 / W` of a
    /// service time. Without it a small limit cannot hold that one spare
    /// request, which is what keeps every worker busy across the hand-off
    /// between a response and the next admission: at W = 4, 15 % is less
    /// than one request, so AIMD would sit at exactly W and leave workers
    /// idle between requests (the bench's workers-drop lost 9 % that way).
    /// At W = 50 the term is 0.02 and changes little.
    fn allowance(&self, limit: f64) -> f64 {
        self.cfg.tolerance + 1.0 / limit.floor().max(1.0)
    }

    /// The factor of a latency cut: `backoff` (0.85) for a window just over
    /// the threshold, deeper in proportion to how far over it is
    /// (`threshold ÷ latency`), never below `max_cut`. Queueing delay is
    /// proportional to the excess concurrency, so a window at twice the
    /// threshold says the limit is about twice too high; cutting by 0.85 a
    /// window would take eight windows to get there from a limit four
    /// times too high while the backend drowns (the bench's workers-drop
    /// did exactly that). DCTCP scales its cut by the extent of congestion
    /// for the same reason.
    fn cut(&self, threshold: std::time::Duration, lat: std::time::Duration) -> f64 {
        let proportional = threshold.as_secs_f64() / lat.as_secs_f64().max(1e-9);
        proportional.min(self.cfg.backoff).max(self.cfg.max_cut)
    }
}

impl Rule for Aimd {
    fn name(&self) -> &'static str {
        "aimd"
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
        let grow = Step::Increase((limit * self.cfg.increase).max(limit + 1.0));
        let (Some(lat), Some(base)) = (latency, ctl.baseline(stat)) else {
            return Evaluation {
                step: grow,
                cause: Cause::Healthy,
                latency,
                detail: format!(
                    "no latency to compare, no failures → ×{}",
                    self.cfg.increase
                ),
            };
        };
        let allowance = self.allowance(limit);
        let threshold = base.mul_f64(allowance).max(base + self.cfg.min_queue_delay);
        if lat > threshold {
            let cut = self.cut(threshold, lat);
            Evaluation {
                step: Step::Decrease(limit * cut),
                cause: Cause::Latency,
                latency,
                detail: format!(
                    "{} {} > threshold {} (max of {:.2} × baseline {}, baseline + {}) → ×{:.2}",
                    stat.as_str(),
                    ms(lat),
                    ms(threshold),
                    allowance,
                    ms(base),
                    ms(self.cfg.min_queue_delay),
                    cut
                ),
            }
        } else {
            Evaluation {
                step: grow,
                cause: Cause::Healthy,
                latency,
                detail: format!(
                    "{} {} ≤ threshold {} ({:.2} × baseline {}, at least + {}), failures {:.1}% → ×{:.2} (at least +1)",
                    stat.as_str(),
                    ms(lat),
                    ms(threshold),
                    allowance,
                    ms(base),
                    ms(self.cfg.min_queue_delay),
                    w.failure_rate() * 100.0,
                    self.cfg.increase
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::adaptive::testing::Feeder;
    use crate::limit::{Cause, Limit, Outcome};
    use std::time::Duration;

    fn aimd() -> AimdLimit {
        AimdLimit::new(AimdConfig {
            shaping: ShapingConfig {
                slow_start: false,
                min: 3,
                ramp_up: Duration::ZERO,
                stable_for: Duration::ZERO,
                ..ShapingConfig::default()
            },
            baseline: Baseline::Fixed(Duration::from_millis(10)),
            tolerance: 1.15,
            // The relative rule alone; the floor has its own test.
            min_queue_delay: Duration::ZERO,
            ..AimdConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn queueing_under_the_floor_is_never_overload() {
        let l = AimdLimit::new(AimdConfig {
            shaping: ShapingConfig {
                slow_start: false,
                ramp_up: Duration::ZERO,
                stable_for: Duration::ZERO,
                ..ShapingConfig::default()
            },
            baseline: Baseline::Fixed(Duration::from_micros(300)),
            ..AimdConfig::default()
        })
        .unwrap();
        let mut f = Feeder::new();
        for _ in 0..10 {
            f.ok(&l, 0);
        }
        // 2 ms is 6.7 × a 0.3 ms baseline, but only 1.7 ms of queueing.
        let before = l.value();
        f.window(&l, Duration::from_millis(2), |_| Outcome::Success);
        assert!(l.value() > before, "{}", l.explain().unwrap());
        // 3 ms is 2.7 ms of queueing: over the floor, a cut.
        let before = l.value();
        f.window(&l, Duration::from_millis(3), |_| Outcome::Success);
        let d = l.explain().unwrap();
        assert!(l.value() < before, "{d}");
        assert!(d.detail.contains("baseline + 2.0ms"), "{d}");
    }

    #[test]
    fn grows_by_one_when_small_then_by_ten_percent() {
        let (l, mut f) = (aimd(), Feeder::new());
        assert_eq!(l.limit(), 3);
        assert_eq!(f.ok(&l, 10), 4, "3 × 1.1 = 3.3 would not move; +1");
        for _ in 0..20 {
            f.ok(&l, 10);
        }
        let before = l.value();
        f.ok(&l, 10);
        assert!((l.value() - before * 1.1).abs() < 1e-9);
        assert_eq!(l.explain().unwrap().cause, Cause::Healthy);
    }

    #[test]
    fn errors_cut_by_0_7_and_latency_by_0_85() {
        let (l, mut f) = (aimd(), Feeder::new());
        for _ in 0..25 {
            f.ok(&l, 10);
        }
        let before = l.value();
        // 2 errors in 20 = 10 % > 5 %.
        let err = |i: usize| {
            if i % 10 == 0 {
                Outcome::Error
            } else {
                Outcome::Success
            }
        };
        f.window(&l, Duration::from_millis(10), err);
        assert!((l.value() - before * 0.7).abs() < 1e-9);
        assert_eq!(l.explain().unwrap().cause, Cause::Errors);

        let before = l.value();
        f.ok(&l, 12); // p50 12 ms > (1.15 + 1/L) × 10 ms
        assert!((l.value() - before * 0.85).abs() < 1e-9);
        let d = l.explain().unwrap();
        assert_eq!(d.cause, Cause::Latency);
        let allowance = format!("{:.2}", 1.15 + 1.0 / (before.floor()));
        assert!(d.detail.contains("p50 12.0ms > threshold"), "{d}");
        assert!(
            d.detail.contains(&format!("{allowance} × baseline 10.0ms")),
            "{d}"
        );

        let before = l.value();
        f.ok(&l, 11); // 11 ms ≤ 1.15 × 10 ms: healthy
        assert!(l.value() > before);
    }

    #[test]
    fn slow_start_doubles_until_the_first_cut() {
        let l = AimdLimit::new(AimdConfig {
            shaping: ShapingConfig {
                min: 3,
                ramp_up: Duration::ZERO,
                stable_for: Duration::ZERO,
                ..ShapingConfig::default()
            },
            baseline: Baseline::Fixed(Duration::from_millis(10)),
            ..AimdConfig::default()
        })
        .unwrap();
        let mut f = Feeder::new();
        assert_eq!(f.ok(&l, 10), 6);
        assert_eq!(f.ok(&l, 10), 12);
        assert!(l.explain().unwrap().detail.contains("slow start"));
        assert_eq!(f.ok(&l, 10), 24);
        // 20 ms is 1.7 × the threshold: a proportional cut, at most ÷2.
        let cut = f.ok(&l, 20);
        assert!((12..=14).contains(&cut), "{cut}");
        // Slow start is over: growth is ×1.1 again.
        let before = l.value();
        f.ok(&l, 10);
        assert!((l.value() - before * 1.1).abs() < 1e-9);
    }
}
