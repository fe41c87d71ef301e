//! Shaping: the rules every adaptive limit obeys whatever its formula —
//! a floor, a cap, a cold-start ramp, hysteresis, and no growth on a guess.
//!
//! - **Floor and cap** (`min`, `max`): the limit never leaves `[min, max]`.
//!   The floor keeps a noisy signal from throttling a route to nothing
//!   (the Phoenix WIP-gate article's `MinWIPLimit`); the cap bounds the
//!   damage of a signal that says "more" forever (a stuck clock, a baseline
//!   that is wrong).
//! - **Cold-start ramp** (`ramp_up`): for `ramp_up` after the first
//!   sample the cap is `initial + (max − initial) × elapsed / ramp_up`
//!   instead of `max`. A pod that
//!   joins a fleet must not open at full concurrency on a database that the
//!   other pods already load (the Phoenix WIP-gate article ramps over 60 s
//!   after a join; the adaptive concurrency sharding article starts at the
//!   minimum and ramps over 30 s, after `too many connections` storms on
//!   scale-out).
//! - **Hysteresis** (`stable_for`): a decrease applies at once, but after a
//!   decrease the limit may not grow again until no decrease has been
//!   called for `stable_for`. The Phoenix WIP-gate article added this after
//!   its limit flapped on latency noise ("control systems need
//!   hysteresis"). Decreases stay immediate: being late to shed load costs
//!   far more than being late to take it back.
//! - **No growth on a guess** (`busy_ratio`): a window whose largest
//!   in-flight count stayed below `busy_ratio × limit` never grows the
//!   limit, since nothing showed the upstream copes with more. Without this,
//!   a quiet hour grows the limit to `max` and the next burst is admitted
//!   whole (Netflix VegasLimit and Gradient2Limit skip the update when
//!   `inflight < limit / 2`; Netflix PR #134 shows Gradient2 creeping up
//!   under modest overload without a growth guard).

use crate::clock::Nanos;
use crate::limit::LimitConfigError;
use std::time::Duration;

/// Floor, cap, ramp-up, hysteresis and the growth guard, shared by every
/// adaptive limit. See the module doc for why each exists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapingConfig {
    /// The floor (and the starting limit with a fixed baseline; a measured
    /// one starts at `initial`). Also the concurrency at which the
    /// baseline probe measures. Default 3: Envoy's `min_concurrency` —
    /// low enough that a probe sees an unqueued upstream on anything that
    /// runs three requests in parallel, high enough that a probe does not
    /// serialise traffic (Envoy raised it from 1 for that reason, PR #9007).
    pub min: usize,
    /// The cap. Default 1000 (Netflix's and Envoy's default maximum): the
    /// algorithm, not the cap, should find the limit.
    pub max: usize,
    /// How long after the first sample the cap takes to rise linearly from
    /// `initial` to `max`. Default 60 s (the Phoenix WIP-gate article's ramp
    /// after a pod join). Zero disables the ramp.
    pub ramp_up: Duration,
    /// How long after a decrease the limit may not grow. Default 10 s: ten
    /// windows, enough that one noisy window cannot make the limit flap,
    /// while a false decrease costs at most ten seconds at 15–30 % below
    /// the best limit. The Phoenix WIP-gate article runs 30 s in production
    /// — with a limit that only toggles between base and half, where each
    /// flap costs half the capacity; our steps are smaller, so less damping is needed. Set
    /// it to 30 s for that article's behaviour (the `wip` default does).
    pub stable_for: Duration,
    /// A window may grow the limit only if some request in it was admitted
    /// with at least `busy_ratio × limit` in flight. Default 0.5 (Netflix).
    pub busy_ratio: f64,
    /// From a cold start, a healthy window that filled the limit at least
    /// doubles it (TCP's slow start), still under the ramp cap. Slow start
    /// ends for good at the first decrease or the first window that did
    /// not fill the limit.
    /// Default on: growing by ×1.1 (or +1) a window from the floor of 3
    /// took the bench a dozen seconds to reach a limit of 20, refusing
    /// traffic the backend could serve all along.
    pub slow_start: bool,
    /// The limit of a cold start's first, open, baseline measurement, and
    /// where the cold-start ramp starts. Default 64. The measurement runs
    /// at the traffic's own concurrency under this limit instead of pinned
    /// at `min` (see `BaselineProbe`): restarting in front of a service at
    /// 0.8 of its capacity, pinning the floor refused 77 % of its traffic
    /// in the first second. If traffic reaches this limit while measuring,
    /// it falls back to the pinned measurement. At or below `min`, cold
    /// starts pin the floor as before; above `max`, `max` is used.
    pub initial: usize,
}

impl Default for ShapingConfig {
    fn default() -> Self {
        Self {
            min: 3,
            max: 1000,
            ramp_up: Duration::from_secs(60),
            stable_for: Duration::from_secs(10),
            busy_ratio: 0.5,
            slow_start: true,
            initial: 64,
        }
    }
}

impl ShapingConfig {
    /// Checks the settings; errors name the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), LimitConfigError> {
        let key = |k: &str| format!("{prefix}{k}");
        if self.min == 0 {
            return Err(LimitConfigError::new(key("min"), "must be at least 1"));
        }
        if self.max < self.min {
            return Err(LimitConfigError::new(
                key("max"),
                format!("must be at least min ({}), got {}", self.min, self.max),
            ));
        }
        if !(0.0..=1.0).contains(&self.busy_ratio) {
            return Err(LimitConfigError::new(
                key("busy_ratio"),
                format!("must be between 0 and 1, got {}", self.busy_ratio),
            ));
        }
        Ok(())
    }
}

/// The state behind [`ShapingConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Shaping {
    cfg: ShapingConfig,
    started: Option<Nanos>,
    last_decrease: Option<Nanos>,
    /// A warm start's limit: the ramp starts there instead of at
    /// `initial`, if higher (see [`Shaping::warm`]).
    warm: Option<f64>,
}

impl Shaping {
    pub(crate) fn new(cfg: ShapingConfig) -> Self {
        Self {
            cfg,
            started: None,
            last_decrease: None,
            warm: None,
        }
    }

    pub(crate) fn config(&self) -> &ShapingConfig {
        &self.cfg
    }

    /// Whether the ramp clock has started.
    pub(crate) fn started(&self) -> bool {
        self.started.is_some()
    }

    /// Starts the ramp clock at the first sample.
    pub(crate) fn start(&mut self, now: Nanos) {
        self.started.get_or_insert(now);
    }

    pub(crate) fn floor(&self) -> f64 {
        self.cfg.min as f64
    }

    pub(crate) fn max(&self) -> f64 {
        self.cfg.max as f64
    }

    /// Where a cold start's open measurement runs and the ramp starts:
    /// `initial`, within `[min, max]`.
    pub(crate) fn initial(&self) -> f64 {
        (self.cfg.initial as f64).clamp(self.floor(), self.max())
    }

    /// The highest the limit may be at `now`: `max`, or less while ramping
    /// up from `initial`.
    pub(crate) fn cap(&self, now: Nanos) -> f64 {
        let min = self.warm.map_or(self.initial(), |w| w.max(self.initial()));
        let max = self.max();
        let Some(started) = self.started else {
            return min;
        };
        if self.cfg.ramp_up.is_zero() {
            return max;
        }
        let f = now.since(started).as_secs_f64() / self.cfg.ramp_up.as_secs_f64();
        min + (max - min) * f.min(1.0)
    }

    /// Starts the ramp at `limit`, the limit a previous process learned,
    /// when that is above `initial`: the ramp protects an upstream from a
    /// gate that does not know it yet, and this one does.
    pub(crate) fn warm(&mut self, limit: f64) {
        self.warm = Some(limit);
    }

    pub(crate) fn note_decrease(&mut self, now: Nanos) {
        self.last_decrease = Some(now);
    }

    /// Forgets the last decrease: it was a mistake (made against a stale
    /// baseline), so it must not hold growth.
    pub(crate) fn clear_hold(&mut self) {
        self.last_decrease = None;
    }

    /// How much longer growth is held after the last decrease, if at all.
    pub(crate) fn held(&self, now: Nanos) -> Option<Duration> {
        let since = now.since(self.last_decrease?);
        (since < self.cfg.stable_for).then(|| self.cfg.stable_for - since)
    }

    /// Whether a window that saw at most `max_inflight` in flight may grow
    /// a limit of `limit`.
    pub(crate) fn busy(&self, max_inflight: usize, limit: f64) -> bool {
        max_inflight as f64 >= self.cfg.busy_ratio * limit.floor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_cap_rises_linearly_from_initial_to_max() {
        let mut s = Shaping::new(ShapingConfig {
            min: 5,
            initial: 10,
            max: 110,
            ramp_up: Duration::from_secs(10),
            ..ShapingConfig::default()
        });
        assert_eq!(s.cap(Nanos(0)), 10.0, "before the first sample");
        s.start(Nanos(1_000_000_000));
        assert_eq!(s.cap(Nanos(1_000_000_000)), 10.0);
        assert_eq!(s.cap(Nanos(6_000_000_000)), 60.0);
        assert_eq!(s.cap(Nanos(60_000_000_000)), 110.0);
    }

    #[test]
    fn hysteresis_holds_growth_for_stable_for_after_a_decrease() {
        let mut s = Shaping::new(ShapingConfig {
            stable_for: Duration::from_secs(5),
            ..ShapingConfig::default()
        });
        assert_eq!(s.held(Nanos(0)), None);
        s.note_decrease(Nanos(1_000_000_000));
        assert_eq!(s.held(Nanos(2_000_000_000)), Some(Duration::from_secs(4)));
        assert_eq!(s.held(Nanos(6_000_000_000)), None);
    }

    #[test]
    fn validation_names_the_key() {
        let bad = ShapingConfig {
            min: 5,
            max: 4,
            ..ShapingConfig::default()
        };
        let e = bad.validate("limit.").unwrap_err();
        assert_eq!(e.key, "limit.max");
    }
}
