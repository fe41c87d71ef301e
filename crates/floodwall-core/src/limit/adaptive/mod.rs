//! What every adaptive algorithm shares: one [`Adaptive`] limit that runs
//! an algorithm's rule over windows of samples, against a measured
//! baseline, within shaping rules. An algorithm's own file holds only its
//! rule.
//!
//! - `limit`: [`Adaptive`], the one `impl Limit` of them all, and its
//!   lock-once-per-window hot path.
//! - `rule`: what an algorithm provides — a verdict on a closed window.
//! - `evaluation`: that verdict (`Step` and its reason), a leaf both the
//!   rule and the controller read.
//! - `controller`: applies verdicts, runs the baseline measurement, keeps
//!   the last [`Decision`].
//! - `window`: how samples are grouped ([`WindowConfig`], [`Statistic`]),
//!   and the open window's atomics.
//! - `baseline`: the unloaded latency ([`Baseline`], [`BaselineProbe`]).
//! - `shaping`: floor, cap, ramp, hysteresis, growth guard
//!   ([`ShapingConfig`]).
//! - `failures`: errors and drops as an overload signal ([`Failures`]).
//! - `learned`: what a limit has learned, for a warm start ([`Learned`]).
//! - `decision`: why the limit is what it is ([`Decision`], [`Cause`]).
//! - `histogram`, `rng`: the latency histogram (plain and lock-free) and a
//!   seeded generator for the measurement's jitter.

mod baseline;
mod controller;
mod decision;
mod evaluation;
mod failures;
mod histogram;
mod learned;
mod limit;
pub(crate) mod rng;
mod rule;
mod shaping;
mod window;

pub use baseline::{Baseline, BaselineProbe};
pub use decision::{Cause, Decision};
pub use failures::Failures;
pub use learned::Learned;
pub use limit::Adaptive;
pub use shaping::ShapingConfig;
pub use window::{Statistic, WindowConfig};

pub(crate) use controller::Controller;
pub(crate) use decision::ms;
pub(crate) use evaluation::{Evaluation, Step};
pub(crate) use rule::Rule;
pub(crate) use window::WindowSummary;

#[cfg(test)]
pub(crate) use controller::testing;
