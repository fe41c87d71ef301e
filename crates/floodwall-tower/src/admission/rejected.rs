//! The typed refusal: why a request was not admitted, and when to come
//! back.

use floodwall_core::respond::{Answer, RETRY_AFTER_MS_HEADER};
use floodwall_core::Rejection;
use http::{HeaderValue, Response};
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

    /// The gRPC status code for this refusal (see [`grpc_code_of`]).
    pub fn grpc_code(&self) -> i32 {
        grpc_code_of(self.answer.status)
    }

    /// This refusal as a gRPC client reads it: a *trailers-only* response
    /// (HTTP 200, `content-type: application/grpc`, `grpc-status` and
    /// `grpc-message` in the headers, no body), as `tonic::Status` would
    /// be sent. The gateway's headers ride along unchanged: the reason in
    /// `X-Floodwall-Reason`, and where there is a wait, `Retry-After` and
    /// `X-Floodwall-Retry-After-Ms` jittered as [`Rejected::response`]
    /// does, plus the same wait as `grpc-retry-pushback-ms`, the header
    /// gRPC's own retry policy reads (gRFC A6, "server pushback").
    pub fn grpc_response<B>(&self, body: impl FnOnce(bytes::Bytes) -> B) -> Response<B> {
        let http = self.answer.response(fastrand::f64(), |_| ());
        let mut resp = Response::new(body(bytes::Bytes::new()));
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(self.grpc_code()));
        // A reason is a lower-case wire name: nothing to percent-encode.
        h.insert("grpc-message", HeaderValue::from_static(self.answer.reason));
        for (name, value) in http.headers() {
            if name != http::header::CONTENT_TYPE {
                h.insert(name.clone(), value.clone());
            }
        }
        if let Some(ms) = http.headers().get(RETRY_AFTER_MS_HEADER) {
            h.insert("grpc-retry-pushback-ms", ms.clone());
        }
        resp
    }
}

/// The gRPC code for a refusal of HTTP status `status` (from the one map,
/// [`floodwall_core::respond`]): what a gRPC service means by the same
/// refusal, so that a client's retry policy does the right thing.
///
/// - 429, a tenant over its share: `RESOURCE_EXHAUSTED` (8), gRPC's code
///   for "a per-user quota", which this is;
/// - 400, a hostile tenant id: `INVALID_ARGUMENT` (3), since retrying as
///   sent cannot help;
/// - 503 and anything else: `UNAVAILABLE` (14), gRPC's code for "most
///   likely transient, retry with backoff", which is what a full gate is.
///   It is also what gRPC's HTTP-to-gRPC mapping gives a bare 503.
pub fn grpc_code_of(status: http::StatusCode) -> i32 {
    match status.as_u16() {
        429 => 8,
        400 => 3,
        _ => 14,
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

/// How an answering service (`AdmissionLayer::answer_refusals` or
/// `answer_refusals_grpc`) words a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// The gateway's HTTP response: [`Rejected::response`].
    Http,
    /// A gRPC status: [`Rejected::grpc_response`].
    Grpc,
}
