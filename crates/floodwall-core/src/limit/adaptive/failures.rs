//! Failures as an overload signal, shared by every adaptive limit.
//!
//! Latency is the early signal; failures are the late, unambiguous one.
//! A window whose failure rate is over a threshold cuts the limit by
//! `backoff` before the algorithm's latency rule is even consulted:
//!
//! - `Dropped` (timeouts, 503/429 from the upstream) is the upstream saying
//!   "too much" outright, so it has its own, lower threshold. Netflix
//!   Gradient2 ignores drops and, worse, times them: a dropped request is
//!   fast, so drops make an overloaded upstream look quick (concurrency-limits
//!   issue #176). Here drops are counted, never timed (see `window`).
//! - `Error` and `Dropped` together against `error_rate`: the adaptive
//!   concurrency sharding article's "error rate above threshold → ×0.7"
//!   ("How I Slashed P99 Latency by 82% … with Adaptive Concurrency
//!   Sharding").
//!
//! Defaults: `error_rate` 5 %, `drop_rate` 1 %, `backoff` 0.7 (that
//! article's multiplier for errors; gentler than TCP's 0.5, because a
//! window is a second of traffic, not one lost packet, and hysteresis
//! already keeps the limit down afterwards).

use super::decision::Cause;
use super::evaluation::{Evaluation, Step};
use super::window::WindowSummary;
use crate::limit::LimitConfigError;

/// Failure thresholds and the cut they trigger.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Failures {
    /// `(errors + drops) / samples` above this cuts the limit. Default 0.05.
    pub error_rate: f64,
    /// `drops / samples` above this cuts the limit. Default 0.01.
    pub drop_rate: f64,
    /// The cut: the limit is multiplied by this. Default 0.7.
    pub backoff: f64,
}

impl Default for Failures {
    fn default() -> Self {
        Self {
            error_rate: 0.05,
            drop_rate: 0.01,
            backoff: 0.7,
        }
    }
}

impl Failures {
    /// Checks the settings; errors name the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), LimitConfigError> {
        for (k, v) in [
            ("error_rate", self.error_rate),
            ("drop_rate", self.drop_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(LimitConfigError::new(
                    format!("{prefix}{k}"),
                    format!("must be between 0 and 1, got {v}"),
                ));
            }
        }
        if !(self.backoff > 0.0 && self.backoff < 1.0) {
            return Err(LimitConfigError::new(
                format!("{prefix}failure_backoff"),
                format!("must be in (0, 1), got {}", self.backoff),
            ));
        }
        Ok(())
    }

    /// The cut a window calls for, if its failures are over a threshold.
    pub(crate) fn check(&self, w: &WindowSummary, limit: f64) -> Option<Evaluation> {
        let (cause, rate, threshold, what) = if w.drop_rate() > self.drop_rate {
            (Cause::Drops, w.drop_rate(), self.drop_rate, "drops")
        } else if w.failure_rate() > self.error_rate {
            (
                Cause::Errors,
                w.failure_rate(),
                self.error_rate,
                "errors+drops",
            )
        } else {
            return None;
        };
        Some(Evaluation {
            step: Step::Decrease(limit * self.backoff),
            cause,
            latency: None,
            detail: format!(
                "{what} {:.1}% > {:.1}% of {} samples → ×{:.2}",
                rate * 100.0,
                threshold * 100.0,
                w.samples,
                self.backoff
            ),
        })
    }
}
