//! An algorithm's verdict on one closed window: the [`Step`] it wants and
//! why. A leaf, so the controller that applies a verdict and the
//! [`Rule`](super::rule::Rule) that makes one both depend on it and not on
//! each other's files in a circle.

use super::decision::Cause;
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
