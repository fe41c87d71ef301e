//! [`BulkheadLayer`]: a concurrency cap in front of a client service.

use crate::events::Events;
use crate::failure::AnyError;
use crate::guard::{Guard, GuardService};
use floodwall_core::Bulkhead;
use std::sync::Arc;
use tower_layer::Layer;

/// A bulkhead ([`floodwall_core::Bulkhead`]) around a client service: at
/// most its tickets' worth of calls in flight; past that, calls fail at
/// once with [`Refused::BulkheadFull`](crate::Refused::BulkheadFull)
/// (boxed) and never wait.
///
/// A ticket is held until the inner service's response future finishes
/// (for an HTTP client, until the response head arrives). Give every
/// client of one resource the same `Arc<Bulkhead>`: that is what makes it
/// a bulkhead rather than a cap per caller.
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    guard: Guard,
}

/// The service a [`BulkheadLayer`] builds.
pub type BulkheadService<S> = GuardService<S, AnyError>;

impl BulkheadLayer {
    /// Calls capped by `bulkhead`.
    pub fn new(bulkhead: Arc<Bulkhead>) -> Self {
        Self {
            guard: Guard::new(bulkhead.name(), "http").bulkhead(bulkhead),
        }
    }

    /// Reports to `events`.
    pub fn events(mut self, events: Arc<Events>) -> Self {
        self.guard = self.guard.events(events);
        self
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService::new(inner, self.guard.clone(), Arc::new(AnyError))
    }
}
