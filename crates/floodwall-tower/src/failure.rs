//! What counts as a failure of an outbound call, and the outbound
//! refusals.

use floodwall_core::respond::Answer;
use floodwall_core::{BulkheadFull, CircuitOpen};
use std::fmt;
use std::time::Duration;

pub use floodwall_core::breaker::{HttpFailures, Verdict};

/// Judges a call's result. Implemented for closures
/// `Fn(&Result<T, E>) -> Verdict` and by [`HttpFailures`] and
/// [`AnyError`].
pub trait Failure<T, E>: Send + Sync + 'static {
    /// The verdict on `result`.
    fn judge(&self, result: &Result<T, E>) -> Verdict;
}

impl<T, E, F> Failure<T, E> for F
where
    F: Fn(&Result<T, E>) -> Verdict + Send + Sync + 'static,
{
    fn judge(&self, result: &Result<T, E>) -> Verdict {
        self(result)
    }
}

/// Any `Err` is a failure, any `Ok` a success: the rule for a database
/// call or anything else without a status.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyError;

impl<T, E> Failure<T, E> for AnyError {
    fn judge(&self, result: &Result<T, E>) -> Verdict {
        match result {
            Ok(_) => Verdict::Success,
            Err(_) => Verdict::Failure,
        }
    }
}

impl<B, E> Failure<http::Response<B>, E> for HttpFailures {
    fn judge(&self, result: &Result<http::Response<B>, E>) -> Verdict {
        match result {
            Ok(resp) => self.judge_status(resp.status().as_u16()),
            Err(_) => Verdict::Failure,
        }
    }
}

/// An outbound call refused at once, before the resource was touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The breaker is open (or half-open with its trials in flight).
    CircuitOpen(CircuitOpen),
    /// The bulkhead has no ticket left.
    BulkheadFull(BulkheadFull),
}

impl Refused {
    /// The reason's wire name: `circuit_open` or `bulkhead_full`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::CircuitOpen(_) => CircuitOpen::REASON,
            Refused::BulkheadFull(_) => BulkheadFull::REASON,
        }
    }

    /// What a client is told if the service passes the refusal on: the
    /// gateway's map (503, `Retry-After` the time left open).
    pub fn answer(&self) -> Answer {
        match self {
            Refused::CircuitOpen(o) => Answer::from(o),
            Refused::BulkheadFull(f) => Answer::from(f),
        }
    }

    /// The gateway's response for this refusal, jittered, the body made
    /// into `B` by `body`. Answering a refused dependency call with it
    /// marks the response `X-Floodwall-Reason: circuit_open` or
    /// `bulkhead_full`; an [`AdmissionLayer`](crate::AdmissionLayer) in
    /// front records the first as ignored (see
    /// [`outcome_of`](crate::outcome_of)).
    pub fn response<B>(&self, body: impl FnOnce(bytes::Bytes) -> B) -> http::Response<B> {
        self.answer().response(fastrand::f64(), body)
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::CircuitOpen(o) => o.fmt(f),
            Refused::BulkheadFull(b) => b.fmt(f),
        }
    }
}

impl std::error::Error for Refused {}

/// A half-open trial that outran `half_open_resource_timeout` (or a call
/// that outran the guard's own timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut(pub Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the call took longer than {} ms", self.0.as_millis())
    }
}

impl std::error::Error for TimedOut {}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for Refused {
    /// The gateway's response for this refusal.
    fn into_response(self) -> axum::response::Response {
        self.response(axum::body::Body::from)
    }
}
