//! [`BreakerLayer`]: a circuit breaker in front of a client service.

use crate::events::Events;
use crate::failure::HttpFailures;
use crate::guard::{Guard, GuardService};
use floodwall_core::Breaker;
use std::sync::Arc;
use tower_layer::Layer;

/// A circuit breaker ([`floodwall_core::Breaker`], Semian's semantics)
/// around a client service, e.g. a hyper client or a tonic channel.
///
/// While the breaker is open, calls fail at once with
/// [`Refused::CircuitOpen`](crate::Refused::CircuitOpen) (boxed, as tower
/// errors are) without reaching the inner service. Half-open, a trial
/// call is cancelled after `half_open_resource_timeout` with a
/// [`TimedOut`](crate::failure::TimedOut). Each result is judged by the
/// failure rule, [`HttpFailures`] by default: errors and 5xx count.
#[derive(Debug, Clone)]
pub struct BreakerLayer<J = HttpFailures> {
    guard: Guard,
    judge: Arc<J>,
}

/// The service a [`BreakerLayer`] builds.
pub type BreakerService<S, J = HttpFailures> = GuardService<S, J>;

impl BreakerLayer<HttpFailures> {
    /// Calls through `breaker`, judged by [`HttpFailures::default`].
    pub fn new(breaker: Arc<Breaker>) -> Self {
        Self {
            guard: Guard::new(breaker.name(), "http").breaker(breaker),
            judge: Arc::new(HttpFailures::default()),
        }
    }
}

impl<J> BreakerLayer<J> {
    /// Judges results with `judge` instead.
    pub fn failures<J2>(self, judge: J2) -> BreakerLayer<J2> {
        BreakerLayer {
            guard: self.guard,
            judge: Arc::new(judge),
        }
    }

    /// Reports to `events`.
    pub fn events(mut self, events: Arc<Events>) -> Self {
        self.guard = self.guard.events(events);
        self
    }
}

impl<S, J> Layer<S> for BreakerLayer<J> {
    type Service = BreakerService<S, J>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService::new(inner, self.guard.clone(), self.judge.clone())
    }
}
