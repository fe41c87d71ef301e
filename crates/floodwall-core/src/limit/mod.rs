//! Limit algorithms: how big the limit is.
//!
//! A [`Limit`] is pure arithmetic over samples and time, in the shape of
//! Netflix concurrency-limits' `Limit` interface: it reports the current limit
//! and takes one [`Sample`] per finished request. It knows nothing about who
//! is admitted; that is the [`Limiter`](crate::Limiter)'s job. Keeping the two
//! apart means every algorithm can be simulated in virtual time without a
//! socket, and the limiter never changes when an algorithm is added.
//!
//! | algorithm | rule, per window | settles at (simulated, W = best) | source |
//! |---|---|---|---|
//! | [`FixedLimit`] | constant | where you put it | HAProxy `maxconn` |
//! | [`AimdLimit`] | failures ×0.7; p50 > max(1.15 × baseline, baseline + 2 ms) ×0.85 (deeper when far over); else ×1.1 (≥ +1) | W … 1.15 W sawtooth, mean 1.0–1.14 W | the adaptive concurrency sharding article, TCP |
//! | [`GradientLimit`] | `L × clamp(1.1 × baseline / p50, 0.5, 1)` smoothed; `+√L` when unqueued | 1.08–1.18 W, flat | Netflix Gradient2, Envoy |
//! | [`VegasLimit`] | keep `L × (1 − rtt_noload / rtt)` between 3·D and 6·D | W + 3 … W + 6 (W < 100) | TCP Vegas, Netflix |
//! | [`WipLimit`] | halve while latency > 2 × baseline, else back toward base | W … 2 W sawtooth | the Phoenix WIP-gate article |
//!
//! The numbers come from `tests/simulation.rs` (the `simulate` module,
//! behind the `simulate` feature); `aimd` is the one that keeps closest to
//! the best limit on both tight and long-tailed latencies, and tracks a
//! halving of capacity in about 4 s.
//!
//! The adaptive ones are one type, [`Adaptive`], around each algorithm's
//! rule (`AimdLimit` is `Adaptive<Aimd>`, and so on). It implements, once,
//! windowed sampling ([`WindowConfig`]), the baseline measurement
//! ([`Baseline`], [`BaselineProbe`]), failure cuts ([`Failures`]) and
//! shaping — floor, cap, cold-start ramp, hysteresis, growth guard
//! ([`ShapingConfig`]) — so each algorithm's file holds only its formula
//! (see the `adaptive` module). Each explains its last move with a
//! [`Decision`] ([`Limit::explain`]).
//!
//! **Synchronisation is the limit's own.** [`Limit::on_sample`] takes
//! `&self` and may be called from many threads at once: the limiter holds
//! no lock around it. [`FixedLimit`] needs none; [`Adaptive`] fills its
//! open window with atomics and locks only to close a window (about once a
//! second), so the request path does not serialise on it.

mod adaptive;
mod aimd;
mod fixed;
mod gradient;
mod vegas;
mod wip;

pub use adaptive::{
    Adaptive, Baseline, BaselineProbe, Cause, Decision, Failures, Learned, ShapingConfig,
    Statistic, WindowConfig,
};
pub use aimd::{Aimd, AimdConfig, AimdLimit};
pub use fixed::FixedLimit;
pub use gradient::{Gradient, GradientConfig, GradientLimit};
pub use vegas::{Vegas, VegasConfig, VegasLimit};
pub use wip::{Wip, WipConfig, WipLimit};

#[cfg(feature = "simulate")]
pub(crate) use adaptive::rng;

use crate::clock::Nanos;
use std::fmt;
use std::sync::Arc;
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
/// The limiter calls [`Limit::on_sample`] for every finished request, only
/// when [`Limit::is_adaptive`] is true, so a fixed limit costs nothing per
/// request. It calls it from whichever thread finished the request, with no
/// lock of its own: an implementation synchronises itself, and should keep
/// the per-sample path free of locks (see [`Adaptive`]), since every
/// request goes through it.
pub trait Limit: Send + Sync + 'static {
    /// The limit right now; at least 1.
    fn limit(&self) -> usize;

    /// Takes one sample at time `now` and returns the new limit.
    fn on_sample(&self, now: Nanos, sample: &Sample) -> usize;

    /// A short name for metrics and `/status`, e.g. `"fixed"`.
    fn name(&self) -> &'static str;

    /// Whether samples change the limit. A limiter skips the sample path
    /// entirely for a limit that says no.
    fn is_adaptive(&self) -> bool {
        true
    }

    /// Why the limit is what it is: the last decision, for `/status`.
    /// `None` for a limit that never decides (fixed) or has not yet.
    fn explain(&self) -> Option<Decision> {
        None
    }

    /// What the limit has learned, for a new process to start from
    /// ([`Learned`]); `None` for one that learns nothing (fixed) or has
    /// not yet.
    fn learned(&self) -> Option<Learned> {
        None
    }

    /// Starts from what a previous process learned, before any sample;
    /// true if it was taken. The default takes nothing.
    fn warm(&self, _now: Nanos, _learned: &Learned) -> bool {
        false
    }
}

/// A boxed limit is a limit, so a configuration can pick the algorithm at
/// run time (`let l: Box<dyn Limit> = match …`) and hand it to
/// [`Limiter::new`](crate::Limiter::new) like any other.
impl<L: Limit + ?Sized> Limit for Box<L> {
    fn limit(&self) -> usize {
        (**self).limit()
    }

    fn on_sample(&self, now: Nanos, sample: &Sample) -> usize {
        (**self).on_sample(now, sample)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn is_adaptive(&self) -> bool {
        (**self).is_adaptive()
    }

    fn explain(&self) -> Option<Decision> {
        (**self).explain()
    }

    fn learned(&self) -> Option<Learned> {
        (**self).learned()
    }

    fn warm(&self, now: Nanos, learned: &Learned) -> bool {
        (**self).warm(now, learned)
    }
}

/// A shared limit is a limit, so a caller can keep a handle on the one a
/// limiter enforces (to read [`Limit::explain`], as the simulation does).
impl<L: Limit + ?Sized> Limit for Arc<L> {
    fn limit(&self) -> usize {
        (**self).limit()
    }

    fn on_sample(&self, now: Nanos, sample: &Sample) -> usize {
        (**self).on_sample(now, sample)
    }

    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn is_adaptive(&self) -> bool {
        (**self).is_adaptive()
    }

    fn explain(&self) -> Option<Decision> {
        (**self).explain()
    }

    fn learned(&self) -> Option<Learned> {
        (**self).learned()
    }

    fn warm(&self, now: Nanos, learned: &Learned) -> bool {
        (**self).warm(now, learned)
    }
}

/// A limit setting that cannot work, naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitConfigError {
    /// The offending key, under the prefix given to `validate`, e.g.
    /// `"routes[0].limit.tolerance"`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl LimitConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for LimitConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for LimitConfigError {}
