//! floodwall-core: the admission engine of floodwall, with no I/O.
//!
//! Three ideas, kept in separate modules so each can be read and tested on
//! its own; the algorithm, the enforcement and the clock meet only through
//! the [`Limit`] and [`Clock`] traits:
//!
//! - [`limit`]: *how big* the limit is. A [`Limit`] takes samples and says
//!   what the limit is now; a fixed limit ships here, adaptive ones slot in
//!   behind the same trait.
//! - [`limiter`]: *who is admitted now*. A [`Limiter`] hands out RAII
//!   [`Permit`]s under priority classes with reserved slices, per-tenant
//!   caps and an optional wait queue, and refuses with a [`Rejection`] that
//!   carries a reason and a suggested retry-after.
//! - [`clock`]: injected time, so all of the above is tested without
//!   sleeping.
//!
//! For what a service calls rather than what calls it, two outbound
//! primitives on the same clock: [`breaker`] (Semian's circuit breaker,
//! with backoff and a rate mode) and [`bulkhead`] (a ticket cap that
//! refuses at once); and for what a service is called by, [`retry_budget`]
//! (Finagle's cap on retries as a share of first attempts). [`respond`] is the one map
//! from any refusal to its HTTP status, headers and body, shared by the
//! gateway and `floodwall-tower`.
//!
//! For an upstream of many endpoints, [`balance`] chooses one per request
//! (least in-flight, round robin, or a ketama ring with a graceful drain)
//! and ejects failing endpoints for a backoff.
//!
//! The crate depends on no runtime: the queue's future is a plain
//! [`std::future::Future`] and timeouts belong to the caller.

#![forbid(unsafe_code)]

pub mod balance;
pub mod breaker;
pub mod bulkhead;
pub mod clock;
pub mod limit;
pub mod limiter;
pub mod respond;
pub mod retry_budget;
#[cfg(feature = "simulate")]
pub mod simulate;

pub use breaker::{Breaker, BreakerConfig, CircuitOpen, HttpFailures, Verdict};
pub use bulkhead::{Bulkhead, BulkheadFull, BulkheadPermit};
pub use clock::{Clock, ManualClock, MonotonicClock, Nanos};
pub use limit::{
    Adaptive, AimdConfig, AimdLimit, Baseline, BaselineProbe, Cause, Decision, Failures,
    FixedLimit, GradientConfig, GradientLimit, Learned, Limit, LimitConfigError, Outcome, Sample,
    ShapingConfig, Statistic, VegasConfig, VegasLimit, WindowConfig, WipConfig, WipLimit,
};
pub use limiter::{
    Acquire, ClassId, ClassSpec, Limiter, LimiterConfig, Permit, QueueOrder, QueueSpec, Reason,
    Rejection, Request, Snapshot, TenantSpec,
};
pub use retry_budget::{RetryBudget, RetryBudgetConfig, RetryBudgetExhausted};
