//! Why the limit is what it is: the last decision an adaptive limit made,
//! for `/status`, logs and metrics.

use crate::clock::Nanos;
use std::fmt;
use std::time::Duration;

/// What drove a decision. A closed set, so it can label a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The baseline probe has pinned the limit at the floor to measure the
    /// upstream's unloaded latency.
    Probing,
    /// The probe finished; the limit went back to where it was.
    Probed,
    /// Errors and drops together were above the error-rate threshold.
    Errors,
    /// Drops (timeouts, 503/429 from the upstream) were above the drop-rate
    /// threshold.
    Drops,
    /// Latency was above what the algorithm tolerates.
    Latency,
    /// Latency was a little above tolerance, within the noise of the
    /// comparison: the limit was trimmed without holding growth (gradient).
    Trim,
    /// Latency was fine: the limit grew.
    Healthy,
    /// Latency was fine and the algorithm sits in its target band: no
    /// change (Vegas between alpha and beta).
    Steady,
    /// The algorithm asked for more, but the last decrease was less than
    /// `stable_for` ago.
    Hysteresis,
    /// The algorithm asked for more, but traffic did not use the limit it
    /// has (fewer in flight than `busy_ratio` × limit): growing it would be
    /// a guess.
    AppLimited,
    /// The algorithm asked for more, but the cold-start ramp capped it.
    RampUp,
    /// The limit and baseline were restored from what a previous process
    /// learned (a warm start from `server.state_file`).
    Restored,
}

impl Cause {
    /// The metric label, e.g. `"hysteresis"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Probing => "probing",
            Cause::Probed => "probed",
            Cause::Errors => "errors",
            Cause::Drops => "drops",
            Cause::Latency => "latency",
            Cause::Trim => "trim",
            Cause::Healthy => "healthy",
            Cause::Steady => "steady",
            Cause::Hysteresis => "hysteresis",
            Cause::AppLimited => "app_limited",
            Cause::RampUp => "ramp_up",
            Cause::Restored => "restored",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last decision of an adaptive limit, so an operator can read why the
/// limit is what it is without replaying the samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// When it was made, on the limiter's clock.
    pub at: Nanos,
    /// What drove it.
    pub cause: Cause,
    /// The limit before.
    pub from: usize,
    /// The limit after.
    pub to: usize,
    /// The window latency statistic the algorithm compared, if any.
    pub latency: Option<Duration>,
    /// The baseline it was compared with, if any.
    pub baseline: Option<Duration>,
    /// The reasoning in one line, e.g.
    /// `"p99 120.0ms > 1.50 × baseline 40.0ms → ×0.85"`.
    pub detail: String,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} → {} ({}): {}",
            self.from, self.to, self.cause, self.detail
        )
    }
}

/// Formats a duration for a decision's detail: milliseconds with one
/// decimal, which reads well from 0.1 ms to minutes.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1e3)
}
