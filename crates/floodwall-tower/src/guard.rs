//! The guard: a breaker and a bulkhead around any future.
//!
//! For calls that are not tower services (a database query, a cache get),
//! wrap the future:
//!
//! ```
//! use floodwall_core::bulkhead::Capacity;
//! use floodwall_core::{Breaker, BreakerConfig, Bulkhead, MonotonicClock};
//! use floodwall_tower::Guard;
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = Arc::new(MonotonicClock::new());
//! let db_guard = Guard::new("postgres", "postgres")
//!     .breaker(Breaker::new("postgres", BreakerConfig::default(), clock)?)
//!     .bulkhead(Bulkhead::new("postgres", Capacity::Tickets(8))?);
//! # let query = async { Ok::<_, std::io::Error>(vec![1, 2, 3]) };
//! // With tokio-postgres: db_guard.run(client.query("SELECT ...", &[])).await?
//! let rows = db_guard.run(query).await?;
//! assert_eq!(rows.len(), 3);
//! # Ok(())
//! # }
//! ```
//!
//! A call passes two checks, cheapest refusal first:
//!
//! 1. **the breaker**: open, refused at once with `circuit_open`, taking
//!    no ticket (a dead resource costs nothing but the refusal);
//! 2. **the bulkhead**: no ticket left, refused at once with
//!    `bulkhead_full` (a half-open trial slot taken in step 1 is given
//!    back unreported);
//!
//! then runs, bounded by the trial deadline while half-open
//! (`half_open_resource_timeout`) and by the guard's own timeout if set,
//! and is judged (any `Err` is a failure unless told otherwise) and
//! reported to the breaker. The ticket is given back when the future
//! finishes, or when it is dropped: a cancelled call reports nothing.

use crate::events::{EventKind, Events};
use crate::failure::{AnyError, Failure, Refused, TimedOut, Verdict};
use floodwall_core::breaker::Call;
use floodwall_core::{Breaker, Bulkhead, BulkheadPermit};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower_service::Service;

/// Why a guarded call did not return the resource's answer.
#[derive(Debug)]
pub enum GuardError<E> {
    /// Refused at once; the resource was not touched.
    Refused(Refused),
    /// The call outran its deadline and was cancelled.
    TimedOut(TimedOut),
    /// The resource's own error.
    Inner(E),
}

impl<E> GuardError<E> {
    /// The refusal, if this is one.
    pub fn refused(&self) -> Option<&Refused> {
        match self {
            GuardError::Refused(r) => Some(r),
            _ => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for GuardError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardError::Refused(r) => write!(f, "refused: {r}"),
            GuardError::TimedOut(t) => t.fmt(f),
            GuardError::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for GuardError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GuardError::Refused(r) => Some(r),
            GuardError::TimedOut(t) => Some(t),
            GuardError::Inner(e) => Some(e),
        }
    }
}

/// A breaker and/or a bulkhead around one resource (see the module doc).
/// Cheap to clone; clones share the primitives.
#[derive(Debug, Clone)]
pub struct Guard {
    resource: Arc<str>,
    adapter: &'static str,
    breaker: Option<Arc<Breaker>>,
    bulkhead: Option<Arc<Bulkhead>>,
    events: Option<Arc<Events>>,
    timeout: Option<Duration>,
}

/// A call admitted by a [`Guard`]: report its verdict with
/// [`Ticket::finish`], or drop it to report nothing.
#[derive(Debug)]
#[must_use = "a ticket holds its bulkhead slot until finished or dropped"]
pub struct Ticket {
    guard: Guard,
    call: Option<Call>,
    permit: Option<BulkheadPermit>,
    started: Instant,
}

impl Ticket {
    /// The deadline for this call: the trial deadline while half-open, the
    /// guard's own timeout, whichever is shorter.
    pub fn timeout(&self) -> Option<Duration> {
        let trial = self.call.as_ref().and_then(Call::timeout);
        match (trial, self.guard.timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reports how the call went, and gives its ticket back.
    pub fn finish(mut self, verdict: Verdict) {
        let took = self.started.elapsed();
        if let Some(call) = self.call.take() {
            match verdict {
                Verdict::Success => call.success(),
                Verdict::Failure => call.failure(),
                Verdict::Ignore => drop(call),
            }
        }
        drop(self.permit.take());
        let kind = match verdict {
            Verdict::Failure => EventKind::Error,
            Verdict::Success | Verdict::Ignore => EventKind::Success,
        };
        self.guard.record(kind, Some(took));
    }
}

impl Guard {
    /// A guard named `resource` with no breaker and no bulkhead yet.
    /// `adapter` names the kind of client in events (e.g. `"postgres"`).
    pub fn new(resource: impl Into<Arc<str>>, adapter: &'static str) -> Self {
        Self {
            resource: resource.into(),
            adapter,
            breaker: None,
            bulkhead: None,
            events: None,
            timeout: None,
        }
    }

    /// Guards with `breaker` (shared: every guard given the same `Arc`
    /// sees one state).
    pub fn breaker(mut self, breaker: Arc<Breaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Caps concurrent calls with `bulkhead` (shared: the cap is across
    /// every guard given the same `Arc`).
    pub fn bulkhead(mut self, bulkhead: Arc<Bulkhead>) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// Reports to `events` (and watches the breaker's state changes and
    /// the bulkhead's gauges).
    pub fn events(mut self, events: Arc<Events>) -> Self {
        if let Some(b) = &self.breaker {
            events.watch_breaker(b);
        }
        if let Some(b) = &self.bulkhead {
            events.watch_bulkhead(b);
        }
        self.events = Some(events);
        self
    }

    /// Cancels a call after `timeout` and counts it a failure.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The resource's name.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    fn record(&self, kind: EventKind, took: Option<Duration>) {
        if let Some(e) = &self.events {
            e.used(
                &self.resource,
                self.adapter,
                self.bulkhead.as_deref(),
                kind,
                took,
            );
        }
    }

    /// Asks to use the resource now: the breaker, then the bulkhead.
    pub fn admit(&self) -> Result<Ticket, Refused> {
        let call = match &self.breaker {
            None => None,
            Some(b) => match b.try_call() {
                Ok(c) => Some(c),
                Err(open) => {
                    self.record(EventKind::CircuitOpen, None);
                    return Err(Refused::CircuitOpen(open));
                }
            },
        };
        let permit = match &self.bulkhead {
            None => None,
            Some(b) => match b.try_acquire() {
                Ok(p) => {
                    // The gauge counts this call from its start, not only
                    // once some call ends.
                    if let Some(e) = &self.events {
                        e.watch_bulkhead(b);
                    }
                    Some(p)
                }
                Err(full) => {
                    // `call` drops here unreported: a trial slot goes back.
                    self.record(EventKind::Busy, None);
                    return Err(Refused::BulkheadFull(full));
                }
            },
        };
        Ok(Ticket {
            guard: self.clone(),
            call,
            permit,
            started: Instant::now(),
        })
    }

    /// Runs `call` under the guard; any `Err` counts as a failure.
    pub async fn run<T, E, F>(&self, call: F) -> Result<T, GuardError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.run_judged(call, &AnyError).await
    }

    /// Runs `call` under the guard, judged by `judge` (e.g. a closure that
    /// does not count a unique-violation error against the database).
    pub async fn run_judged<T, E, F, J>(&self, call: F, judge: &J) -> Result<T, GuardError<E>>
    where
        F: Future<Output = Result<T, E>>,
        J: Failure<T, E>,
    {
        let ticket = self.admit().map_err(GuardError::Refused)?;
        let result = match ticket.timeout() {
            None => call.await,
            Some(t) => match tokio::time::timeout(t, call).await {
                Ok(r) => r,
                Err(_) => {
                    ticket.finish(Verdict::Failure);
                    return Err(GuardError::TimedOut(TimedOut(t)));
                }
            },
        };
        ticket.finish(judge.judge(&result));
        result.map_err(GuardError::Inner)
    }
}

/// The error of the outbound tower services: boxed, as tower's own layers
/// do. A refusal is a [`Refused`], a trial past its deadline a
/// [`TimedOut`]; anything else is the inner service's error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A tower service behind a [`Guard`]: what [`BreakerLayer`] and
/// [`BulkheadLayer`] build.
///
/// [`BreakerLayer`]: crate::BreakerLayer
/// [`BulkheadLayer`]: crate::BulkheadLayer
pub struct GuardService<S, J> {
    inner: S,
    guard: Guard,
    judge: Arc<J>,
}

impl<S: fmt::Debug, J> fmt::Debug for GuardService<S, J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardService")
            .field("inner", &self.inner)
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, J> Clone for GuardService<S, J> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            guard: self.guard.clone(),
            judge: self.judge.clone(),
        }
    }
}

impl<S, J> GuardService<S, J> {
    pub(crate) fn new(inner: S, guard: Guard, judge: Arc<J>) -> Self {
        Self {
            inner,
            guard,
            judge,
        }
    }
}

/// The future of a [`GuardService`]. Boxed: a client call is a network
/// round trip, next to which the allocation is noise.
pub type GuardFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<S, R, J> Service<R> for GuardService<S, J>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    J: Failure<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = GuardFuture<S::Response>;

    /// The inner service's readiness; nothing is taken here, for the same
    /// reason as the admission service's (see the crate doc).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let ticket = match self.guard.admit() {
            Ok(t) => t,
            Err(refused) => return Box::pin(std::future::ready(Err(refused.into()))),
        };
        let future = self.inner.call(req);
        let judge = self.judge.clone();
        Box::pin(async move {
            let result = match ticket.timeout() {
                None => future.await,
                Some(t) => match tokio::time::timeout(t, future).await {
                    Ok(r) => r,
                    Err(_) => {
                        ticket.finish(Verdict::Failure);
                        return Err(TimedOut(t).into());
                    }
                },
            };
            ticket.finish(judge.judge(&result));
            result.map_err(Into::into)
        })
    }
}
