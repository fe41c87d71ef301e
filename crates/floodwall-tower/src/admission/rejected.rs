//! The typed refusal: why a request was not admitted, and when to come
//! back.

use floodwall_core::respond::Answer;
use floodwall_core::Rejection;
use http::Response;
use std::fmt;
use std::time::Duration;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The limiter said no: the gate is full, the tenant is over its
    /// share, or the queue is full or timed out.
    Limiter(floodwall_core::Reason),
    /// The tenant id is too long or not visible ASCII. Refused whole, as
    /// the gateway does, so that it can never be made to collide with
    /// another tenant's id.
    InvalidTenantId,
}

impl RejectReason {
    /// The wire name: the `X-Floodwall-Reason` value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Limiter(r) => r.as_str(),
            RejectReason::InvalidTenantId => Answer::invalid_tenant_id().reason,
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request refused by an [`AdmissionLayer`](super::AdmissionLayer), at
/// once, without calling the inner service.
///
/// The fields say everything a client needs; [`Rejected::response`] (and
/// with the `axum` feature, `IntoResponse`) turns it into exactly the
/// response the floodwall gateway sends for the same refusal, through the
/// one shared map in `floodwall_core::respond`. It has a private field so
/// that it can grow without breaking you.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejected {
    /// Why.
    pub reason: RejectReason,
    /// The suggested wait before retrying, before jitter; `None` where
    /// retrying as sent cannot help.
    pub retry_after: Option<Duration>,
    answer: Answer,
}

impl Rejected {
    pub(crate) fn limiter(r: Rejection) -> Self {
        Self {
            reason: RejectReason::Limiter(r.reason),
            retry_after: Some(r.retry_after),
            answer: Answer::from(&r),
        }
    }

    pub(crate) fn invalid_tenant_id() -> Self {
        Self {
            reason: RejectReason::InvalidTenantId,
            retry_after: None,
            answer: Answer::invalid_tenant_id(),
        }
    }

    /// What the client is told: status, reason, suggested wait.
    pub fn answer(&self) -> Answer {
        self.answer
    }

    /// The status code the gateway sends for this refusal (503, or 429 for
    /// a tenant over its share, 400 for a hostile tenant id).
    pub fn status(&self) -> http::StatusCode {
        self.answer.status
    }

    /// The gateway's response for this refusal, its `Retry-After`
    /// jittered over `[0.5, 1.5]` of the suggested wait, the JSON body
    /// made into `B` by `body`.
    pub fn response<B>(&self, body: impl FnOnce(bytes::Bytes) -> B) -> Response<B> {
        self.answer.response(fastrand::f64(), body)
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_after {
            Some(d) => write!(f, "{} (retry after {} ms)", self.reason, d.as_millis()),
            None => write!(f, "{}", self.reason),
        }
    }
}

impl std::error::Error for Rejected {}

/// The error of an [`AdmissionService`](super::AdmissionService): refused,
/// or the inner service's own error.
#[derive(Debug)]
pub enum AdmissionError<E> {
    /// Refused at once; the inner service was not called.
    Rejected(Rejected),
    /// The inner service failed.
    Inner(E),
}

impl<E> AdmissionError<E> {
    /// The refusal, if this is one.
    pub fn rejected(&self) -> Option<&Rejected> {
        match self {
            AdmissionError::Rejected(r) => Some(r),
            AdmissionError::Inner(_) => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for AdmissionError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdmissionError::Rejected(r) => write!(f, "refused: {r}"),
            AdmissionError::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for AdmissionError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AdmissionError::Rejected(r) => Some(r),
            AdmissionError::Inner(e) => Some(e),
        }
    }
}

#[cfg(feature = "axum")]
mod axum_impls {
    use super::{AdmissionError, Rejected};
    use axum::response::{IntoResponse, Response};
    use std::convert::Infallible;

    impl IntoResponse for Rejected {
        /// The gateway's own response for this refusal.
        fn into_response(self) -> Response {
            self.response(axum::body::Body::from)
        }
    }

    impl IntoResponse for AdmissionError<Infallible> {
        /// For `HandleErrorLayer`: an axum service never fails, so the
        /// error is always a refusal.
        fn into_response(self) -> Response {
            match self {
                AdmissionError::Rejected(r) => r.into_response(),
                AdmissionError::Inner(never) => match never {},
            }
        }
    }
}
