//! floodwall's admission engine inside your own service, as tower layers.
//!
//! The floodwall gateway protects a service from the outside, one network
//! hop in front of it. This crate gives a Rust service the same engine
//! in-process, both ways:
//!
//! - **Inbound**, [`AdmissionLayer`]: every request is classified
//!   (priority class, tenant, route), admitted through a
//!   [`floodwall_core::Limiter`] (a fixed or adaptive limit, reserved
//!   slices per class, tenant shares, an optional bounded queue, outside
//!   constraints from probes) or **refused at once** with a typed
//!   [`Rejected`], which turns into exactly the gateway's 503/429 response
//!   (same status, headers and JSON body, from the one map in
//!   [`floodwall_core::respond`]). The permit rides the response body, so
//!   a streaming response holds its slot until it ends.
//! - **Outbound**, [`BreakerLayer`], [`BulkheadLayer`] and [`Guard`]: a
//!   Semian-style circuit breaker and bulkhead around what the service
//!   calls (an HTTP client, a database), with an event stream and
//!   Prometheus metrics in a registry you pass in ([`Events`]).
//! - **Metrics**, both ways, into the caller's `prometheus_client`
//!   registry, never a global one: [`AdmissionLayer::register_metrics`]
//!   for the inbound gates (read at scrape time, under the gateway's
//!   names), [`Events::new`] for the outbound side. [`metrics`] lists them.
//!
//! # Quick start
//!
//! An axum service with an adaptive limit; a full gate answers 503 with
//! `Retry-After` and `X-Floodwall-Reason`, as the gateway would:
//!
//! ```
//! use axum::{routing::get, Router};
//! use floodwall_tower::AdmissionLayer;
//! use tower::ServiceExt; // oneshot, to run one request without a socket
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // AIMD on latency and errors, as `floodwall serve` runs without --limit.
//! let limiter = floodwall_tower::adaptive_limiter()?;
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(AdmissionLayer::new(limiter.clone()).answer_refusals());
//!
//! let req = http::Request::get("/").body(axum::body::Body::empty())?;
//! let resp = app.oneshot(req).await?;
//! assert_eq!(resp.status(), 200);
//! // The slot is held until the body has been read.
//! assert_eq!(limiter.inflight(), 1);
//! drop(axum::body::to_bytes(resp.into_body(), 1024).await?);
//! assert_eq!(limiter.inflight(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! # axum, hyper, tonic
//!
//! The layer fits anything that takes a tower layer over `http::Request`;
//! each has a runnable example, run by the crate's tests against a real
//! server on a loopback port:
//!
//! - **axum**: `Router::layer(AdmissionLayer::new(l).answer_refusals())`
//!   (or `route_layer` for a limit per route); above, and
//!   `examples/axum-postgres`, a service on PostgreSQL with a pool probe
//!   and a guarded database.
//! - **hyper** with `hyper_util`: a `tower::ServiceBuilder` stack made a
//!   hyper service by `hyper_util::service::TowerToHyperService` and served
//!   by `hyper_util::server::conn::auto` (`examples/hyper-server`).
//! - **tonic**: `Server::builder().layer(AdmissionLayer::new(l).answer_refusals_grpc())`
//!   (`examples/tonic-health`, the ready-made `grpc.health.v1` service).
//!   gRPC needs its own wording of a refusal, for two reasons: a gRPC
//!   client reads `grpc-status`, not an HTTP status and a JSON body; and
//!   tonic's server turns a service error that is not a `tonic::Status`
//!   into a reset stream, so the typed [`AdmissionError`] would reach the
//!   client as a stream reset, which no retry policy reads as "come back
//!   later". [`AdmissionLayer::answer_refusals_grpc`]
//!   answers `UNAVAILABLE` (a full gate; `RESOURCE_EXHAUSTED` for a tenant
//!   over its share, [`grpc_code_of`]) as a trailers-only response, with
//!   the gateway's reason and wait headers and gRPC's
//!   `grpc-retry-pushback-ms`. The crate itself does not depend on tonic.
//!   A server stream holds its slot until it ends, as any streaming body.
//!
//! # Why `poll_ready` does not reserve a slot
//!
//! tower's `ConcurrencyLimit` takes its semaphore permit in `poll_ready`.
//! That is why it *waits* instead of refusing (a caller polling for
//! readiness is parked until a permit frees, tower issue #793), and why a
//! connection polled ready and then idle holds a slot it does not use.
//! [`AdmissionService`] passes `poll_ready` through to the inner service
//! and decides in `call`, where the request (its class and tenant) is
//! known: a full limiter is a refusal in microseconds, never a wait.
//!
//! # Outcomes
//!
//! What the limit learns is the gateway's rule (see [`outcome_of`]): a
//! response's status decides success, error or drop when its body ends; a
//! body dropped before its end is ignored; a response future dropped
//! before the answer (the client hung up) lets the limiter judge at
//! release whether that was a client timeout ([`Permit::abandon`]); a
//! panic unwinding through the future drops the permit the same way.
//!
//! # Feature flags
//!
//! - `axum` (off by default): `IntoResponse` for [`Rejected`] and for
//!   `AdmissionError<Infallible>` (for `axum::error_handling::HandleErrorLayer`).
//!   Nothing else in the crate needs axum.
//!
//! [`Permit::abandon`]: floodwall_core::Permit::abandon

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admission;
pub mod breaker;
pub mod bulkhead;
mod clock;
pub mod events;
pub mod failure;
pub mod guard;
pub mod metrics;
pub mod probe;

pub use admission::{
    grpc_code_of, outcome_of, AdmissionError, AdmissionLayer, AdmissionService, Answering,
    AnsweringLayer, Classifier, Classify, Head, PermitBody, RejectReason, Rejected,
};
pub use breaker::{BreakerLayer, BreakerService};
pub use bulkhead::{BulkheadLayer, BulkheadService};
pub use clock::TokioClock;
pub use events::{Event, EventKind, Events};
pub use failure::{AnyError, Failure, HttpFailures, Refused, TimedOut, Verdict};
/// The engine itself, re-exported so one dependency is enough.
pub use floodwall_core as core;
pub use floodwall_core::{Limiter, LimiterConfig};
pub use guard::{BoxError, Guard, GuardError, GuardService, Ticket};

use floodwall_core::{AimdConfig, AimdLimit, FixedLimit, LimitConfigError, MonotonicClock};
use std::sync::Arc;

/// A limiter with a fixed limit of `limit` concurrent requests and the
/// gateway's default classes (interactive with half reserved, batch).
pub fn fixed_limiter(limit: usize) -> Arc<Limiter> {
    Limiter::new(
        LimiterConfig::default(),
        FixedLimit::new(limit),
        Arc::new(MonotonicClock::new()),
    )
    .expect("the default limiter config is valid")
}

/// A limiter with the gateway's default adaptive limit (AIMD on latency and
/// errors, starting at 64 after its baseline measurement) and its default
/// classes: what `floodwall serve` runs when told no limit.
pub fn adaptive_limiter() -> Result<Arc<Limiter>, LimitConfigError> {
    let limit = AimdLimit::new(AimdConfig::default())?;
    Ok(Limiter::new(
        LimiterConfig::default(),
        limit,
        Arc::new(MonotonicClock::new()),
    )
    .expect("the default limiter config is valid"))
}
