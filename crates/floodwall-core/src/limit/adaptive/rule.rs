//! What an algorithm is: a [`Rule`] that looks at one closed window and
//! says what to do with the limit, and why.

use super::controller::Controller;
use super::decision::Cause;
use super::window::{Statistic, WindowSummary};
use crate::limit::Sample;
use std::time::Duration;

/// What an algorithm wants done with the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Step {
    /// Overload: lower the limit to this now, and hold growth for
    /// `stable_for`.
    Decrease(f64),
    /// A small correction down, within the noise of the signal: lower the
    /// limit to this now, but do not hold growth. Without it, a baseline
    /// measured a few percent low makes a gradient trim the limit by 0.4 %
    /// on every other window, and each trim would block growth for
    /// `stable_for` — the limit would never grow again.
    Trim(f64),
    /// Healthy: raise the limit to this, if shaping allows.
    Increase(f64),
    /// Leave the limit where it is.
    Hold,
}

/// An algorithm's verdict on one window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Evaluation {
    pub step: Step,
    pub cause: Cause,
    /// The window statistic the rule compared, for the decision.
    pub latency: Option<Duration>,
    /// The reasoning, e.g. `"p99 120.0ms > 1.50 × baseline 40.0ms → ×0.85"`.
    pub detail: String,
}

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
