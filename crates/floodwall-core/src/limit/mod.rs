//! Limit algorithms: how big the limit is.
//!
//! A [`Limit`] is pure arithmetic over samples and time, in the shape of
//! Netflix concurrency-limits' `Limit` interface: it reports the current limit
//! and takes one [`Sample`] per finished request. It knows nothing about who
//! is admitted; that is the [`Limiter`](crate::Limiter)'s job. Keeping the two
//! apart means every algorithm can be simulated in virtual time without a
//! socket, and the limiter never changes when an algorithm is added.

mod fixed;

pub use fixed::FixedLimit;

use crate::clock::Nanos;
use std::time::Duration;

/// How a request admitted through a permit ended.
///
/// Adaptive algorithms read `Error` and `Dropped` as overload signals and
/// skip `Ignored`, which says nothing about the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream answered and the answer is not an overload signal.
    Success,
    /// The upstream answered with a server error.
    Error,
    /// The upstream timed out or signalled overload (503/429): the
    /// strongest "too much load" signal.
    Dropped,
    /// Nothing was learned: the client went away, the handler panicked, or
    /// the future was cancelled before an outcome was recorded.
    Ignored,
}

impl Outcome {
    /// All outcomes, in metric order.
    pub const ALL: [Outcome; 4] = [
        Outcome::Success,
        Outcome::Error,
        Outcome::Dropped,
        Outcome::Ignored,
    ];

    /// The label value used in metrics and status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Dropped => "dropped",
            Outcome::Ignored => "ignored",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One finished request, as an algorithm sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When the request was admitted.
    pub start: Nanos,
    /// How long it held its permit.
    pub rtt: Duration,
    /// How many requests were in flight on the limiter when it was admitted,
    /// itself included (Vegas and Gradient compare this to the limit).
    pub inflight: usize,
    /// How it ended.
    pub outcome: Outcome,
}

/// A limit algorithm.
///
/// The limiter calls [`Limit::on_sample`] under its own lock, only when
/// [`Limit::is_adaptive`] is true, so a fixed limit costs nothing per
/// request. Implementations take `&mut self`: they need no interior
/// synchronisation of their own.
pub trait Limit: Send + 'static {
    /// The limit right now; at least 1.
    fn limit(&self) -> usize;

    /// Takes one sample at time `now` and returns the new limit.
    fn on_sample(&mut self, now: Nanos, sample: &Sample) -> usize;

    /// A short name for metrics and `/status`, e.g. `"fixed"`.
    fn name(&self) -> &'static str;

    /// Whether samples change the limit. A limiter skips the sample path
    /// entirely for a limit that says no.
    fn is_adaptive(&self) -> bool {
        true
    }
}
