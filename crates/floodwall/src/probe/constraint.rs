//! The constraint one probe puts on one route's limit: a small state machine
//! over readings, pure and driven by injected time.
//!
//! | reading | constraint becomes |
//! |---|---|
//! | saturated | `max(min, floor(effective × backoff))`, again at every saturated reading |
//! | hard (memory) | `min` at once |
//! | healthy, within `cooldown` of the last bad reading | unchanged |
//! | healthy, after `cooldown` | `max(c + 1, floor(c × 1.2))`; lifted (`None`) once it reaches the algorithm's own limit |
//! | failed, `ignore` | lifted |
//! | failed, `hold` | unchanged |
//! | failed, `closed` | `min`, like a hard reading |
//!
//! The cut is taken from the *effective* limit (the minimum over the
//! algorithm and every probe), so a probe that stays saturated while another
//! one already holds the limit down still lowers it further. The growth is
//! slower than the cut (×1.2 against ×0.7) and waits out the cooldown: that
//! asymmetry is the hysteresis that keeps a bottleneck which recovers only
//! because the load dropped from being flooded again at once.

use std::time::Duration;

use crate::config::FailurePolicy;

/// Growth per healthy reading after the cooldown: the additive-increase side
/// of AIMD, made multiplicative so a large limit recovers in a few seconds.
pub const GROWTH: f64 = 1.2;

/// What one check said, as the state machine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The bottleneck has room.
    Healthy,
    /// The bottleneck is saturated: back off.
    Saturated,
    /// The bottleneck is about to fail (memory): throttle straight to min.
    Hard,
    /// The check failed or timed out; the failure policy decides.
    Failed,
}

/// The settings of one probe's constraint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConstraintParams {
    /// The factor of a cut, in (0, 1).
    pub backoff: f64,
    /// The lowest constraint, at least 1.
    pub min: usize,
    /// How long readings must stay healthy before the constraint grows.
    pub cooldown: Duration,
    /// What a failed check does.
    pub on_failure: FailurePolicy,
}

/// One probe's constraint on one route. Time is a [`Duration`] since any
/// fixed origin, so tests step it by hand.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    params: ConstraintParams,
    value: Option<usize>,
    last_bad: Option<Duration>,
}

impl Constraint {
    /// No constraint yet.
    pub fn new(params: ConstraintParams) -> Self {
        Self {
            params,
            value: None,
            last_bad: None,
        }
    }

    /// The constraint now; `None` when lifted.
    pub fn value(&self) -> Option<usize> {
        self.value
    }

    /// Takes one observation at `now`, given the route's effective limit and
    /// its algorithm's own limit as they are before this step, and returns
    /// the new constraint.
    pub fn step(
        &mut self,
        now: Duration,
        obs: Observation,
        effective: usize,
        algorithm: usize,
    ) -> Option<usize> {
        let min = self.params.min;
        match (obs, self.params.on_failure) {
            (Observation::Saturated, _) => {
                self.last_bad = Some(now);
                let cut = (effective as f64 * self.params.backoff).floor() as usize;
                self.value = Some(cut.max(min));
            }
            (Observation::Hard, _) | (Observation::Failed, FailurePolicy::Closed) => {
                self.last_bad = Some(now);
                self.value = Some(min);
            }
            (Observation::Failed, FailurePolicy::Hold) => {}
            (Observation::Failed, FailurePolicy::Ignore) => {
                self.value = None;
                self.last_bad = None;
            }
            (Observation::Healthy, _) => {
                let c = self.value?;
                let cooling = self
                    .last_bad
                    .is_some_and(|at| now.saturating_sub(at) < self.params.cooldown);
                if !cooling {
                    let grown = ((c as f64 * GROWTH).floor() as usize).max(c + 1);
                    self.value = (grown < algorithm).then_some(grown);
                }
            }
        }
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(on_failure: FailurePolicy) -> ConstraintParams {
        ConstraintParams {
            backoff: 0.7,
            min: 2,
            cooldown: Duration::from_secs(2),
            on_failure,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Steps `c` like the runner does: the effective limit is the algorithm's
    /// capped by the constraint itself.
    fn run(c: &mut Constraint, t: u64, obs: Observation, algorithm: usize) -> Option<usize> {
        let effective = c.value().map_or(algorithm, |v| v.min(algorithm));
        c.step(secs(t), obs, effective, algorithm)
    }

    #[test]
    fn saturation_cuts_from_the_effective_limit_every_interval_down_to_min() {
        let mut c = Constraint::new(params(FailurePolicy::Ignore));
        assert_eq!(run(&mut c, 0, Observation::Healthy, 100), None);
        let cuts: Vec<_> = (1..=12)
            .map(|t| run(&mut c, t, Observation::Saturated, 100).unwrap())
            .collect();
        assert_eq!(cuts, [70, 49, 34, 23, 16, 11, 7, 4, 2, 2, 2, 2]);
        // Another probe already holds the limit at 10: the cut is from 10.
        let mut c = Constraint::new(params(FailurePolicy::Ignore));
        assert_eq!(c.step(secs(0), Observation::Saturated, 10, 100), Some(7));
    }

    #[test]
    fn recovery_waits_for_the_cooldown_then_grows_and_lifts_at_the_algorithm_limit() {
        let mut c = Constraint::new(params(FailurePolicy::Ignore));
        run(&mut c, 0, Observation::Hard, 20);
        assert_eq!(c.value(), Some(2));
        // Healthy, but within 2 s of the hard reading: held.
        assert_eq!(run(&mut c, 1, Observation::Healthy, 20), Some(2));
        let grown: Vec<_> = (2..=13)
            .map(|t| run(&mut c, t, Observation::Healthy, 20))
            .collect();
        assert_eq!(
            grown,
            [
                Some(3),
                Some(4),
                Some(5),
                Some(6),
                Some(7),
                Some(8),
                Some(9),
                Some(10),
                Some(12),
                Some(14),
                Some(16),
                Some(19)
            ]
        );
        assert_eq!(run(&mut c, 14, Observation::Healthy, 20), None);
        assert_eq!(run(&mut c, 15, Observation::Healthy, 20), None);
    }

    #[test]
    fn a_new_saturation_restarts_the_cooldown() {
        let mut c = Constraint::new(params(FailurePolicy::Ignore));
        run(&mut c, 0, Observation::Saturated, 100);
        run(&mut c, 3, Observation::Healthy, 100);
        assert_eq!(c.value(), Some(84));
        run(&mut c, 4, Observation::Saturated, 100);
        assert_eq!(c.value(), Some(58));
        assert_eq!(run(&mut c, 5, Observation::Healthy, 100), Some(58));
        assert_eq!(run(&mut c, 6, Observation::Healthy, 100), Some(69));
    }

    #[test]
    fn a_constraint_above_a_fallen_algorithm_limit_is_lifted() {
        let mut c = Constraint::new(ConstraintParams {
            cooldown: Duration::ZERO,
            ..params(FailurePolicy::Ignore)
        });
        c.step(secs(0), Observation::Saturated, 100, 100);
        assert_eq!(c.value(), Some(70));
        // The algorithm itself dropped to 30: the probe has nothing to add.
        assert_eq!(c.step(secs(1), Observation::Healthy, 30, 30), None);
    }

    #[test]
    fn min_at_or_above_the_algorithm_limit_still_holds_while_saturated() {
        let mut c = Constraint::new(params(FailurePolicy::Ignore));
        assert_eq!(c.step(secs(0), Observation::Saturated, 1, 1), Some(2));
    }

    #[test]
    fn failure_policies() {
        // ignore: lifted while failing, and a later saturation starts afresh.
        let mut c = Constraint::new(params(FailurePolicy::Ignore));
        run(&mut c, 0, Observation::Saturated, 100);
        assert_eq!(run(&mut c, 1, Observation::Failed, 100), None);
        assert_eq!(run(&mut c, 2, Observation::Failed, 100), None);
        assert_eq!(run(&mut c, 3, Observation::Healthy, 100), None);

        // hold: the last constraint stays, neither cut nor grown.
        let mut c = Constraint::new(params(FailurePolicy::Hold));
        run(&mut c, 0, Observation::Saturated, 100);
        for t in 1..10 {
            assert_eq!(run(&mut c, t, Observation::Failed, 100), Some(70));
        }
        // A hold with nothing to hold stays lifted.
        let mut c = Constraint::new(params(FailurePolicy::Hold));
        assert_eq!(run(&mut c, 0, Observation::Failed, 100), None);

        // closed: min, and recovery waits out the cooldown like after a hard
        // reading.
        let mut c = Constraint::new(params(FailurePolicy::Closed));
        assert_eq!(run(&mut c, 0, Observation::Failed, 100), Some(2));
        assert_eq!(run(&mut c, 1, Observation::Healthy, 100), Some(2));
        assert_eq!(run(&mut c, 2, Observation::Healthy, 100), Some(3));
    }
}
