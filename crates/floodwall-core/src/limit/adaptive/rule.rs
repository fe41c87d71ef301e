//! What an algorithm is: a [`Rule`] that looks at one closed window and
//! says what to do with the limit, and why.

use super::controller::Controller;
use super::decision::Cause;
use super::evaluation::{Evaluation, Step};
use super::window::{Statistic, WindowSummary};
use crate::limit::Sample;

/// One adaptive algorithm's rule: the only part of `aimd`, `gradient`,
/// `vegas` and `wip` that differs. [`Adaptive`](super::Adaptive) does the
/// rest — windows, the baseline, failures, shaping, the lock — once for
/// all of them.
///
/// Crate-private: a rule reads the controller and the window summary,
/// which are internals. [`evaluate`](Rule::evaluate) and
/// [`applied`](Rule::applied) run under the adaptive limit's lock, one at
/// a time; [`observe`](Rule::observe) runs on the hot path, concurrently,
/// so whatever state a rule keeps is in atomics.
pub(crate) trait Rule: Send + Sync + 'static {
    /// Whether [`observe`](Rule::observe) does anything. `false` lets the
    /// hot path skip the check that decides whether to call it.
    const OBSERVES: bool = false;

    /// The algorithm's name, for metrics and `/status`.
    fn name(&self) -> &'static str;

    /// The window statistic the rule compares with the baseline; the
    /// baseline is summarised with the same one.
    fn statistic(&self) -> Statistic;

    /// The least queueing the rule ever calls overload
    /// (`min_queue_delay`): a cold start's open measurement is not thrown
    /// away as crowded for less (see `Prober::begin_open`).
    fn queue_floor(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// The verdict on a closed window `w`, given the limit and baseline
    /// in `ctl`.
    fn evaluate(&self, ctl: &Controller, w: &WindowSummary) -> Evaluation;

    /// Sees every sample the open window times (an accepted success no
    /// faster than `min_rtt`, while no baseline measurement runs), in the
    /// order they arrive, before the window that holds it closes. For
    /// state that cannot be derived from the window summary, like `wip`'s
    /// moving average. Called without the lock.
    fn observe(&self, _s: &Sample) {}

    /// Told how its evaluation ended: the step it asked for and the cause
    /// of the decision the controller made of it (which may be a hold:
    /// hysteresis, the growth guard, the ramp).
    fn applied(&self, _step: Step, _cause: Cause) {}
}
