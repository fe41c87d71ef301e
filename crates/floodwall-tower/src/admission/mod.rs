//! Inbound admission control: [`AdmissionLayer`] and its service, future,
//! body, classifier and refusal.

mod body;
mod classify;
mod future;
mod layer;
mod rejected;
pub(crate) mod service;

pub use body::PermitBody;
pub use classify::{
    Classifier, Classify, Head, InvalidTenant, MAX_TENANT_LEN, PRIORITY_HEADER, TENANT_HEADER,
};
pub use future::{AnsweringFuture, ResponseFuture};
pub use layer::{AdmissionLayer, AnsweringLayer};
pub use rejected::{grpc_code_of, AdmissionError, RejectReason, Rejected};
pub use service::{AdmissionService, Answering};

use floodwall_core::respond::REASON_HEADER;
use floodwall_core::{CircuitOpen, Outcome};
use http::Response;

/// What a response says about the service's load, as the gateway reads an
/// upstream's status: 503 and 429 are the service shedding load (the
/// strongest overload signal, [`Outcome::Dropped`]), other 5xx are
/// [`Outcome::Error`], anything else [`Outcome::Success`].
///
/// One exception, because a service using this crate can refuse for its
/// own dependencies: a response marked `X-Floodwall-Reason: circuit_open`
/// (an outbound [`Breaker`](floodwall_core::Breaker) refused at once) is
/// [`Outcome::Ignored`]. It took no time and no capacity, so it must not
/// move the adaptive limit.
pub fn outcome_of<B>(resp: &Response<B>) -> Outcome {
    if resp
        .headers()
        .get(REASON_HEADER)
        .is_some_and(|v| v.as_bytes() == CircuitOpen::REASON.as_bytes())
    {
        return Outcome::Ignored;
    }
    match resp.status().as_u16() {
        503 | 429 => Outcome::Dropped,
        500..=599 => Outcome::Error,
        _ => Outcome::Success,
    }
}
