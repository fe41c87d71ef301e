//! The RAII admission permit.

use super::tenants::TenantKey;
use super::{ClassId, Limiter};
use crate::clock::Nanos;
use crate::limit::Outcome;
use std::fmt;
use std::sync::Arc;

/// One admitted request's slot.
///
/// Dropping the permit gives the slot back, whatever happened: a completed
/// response, a client that went away, a timeout, a panic unwinding through
/// the handler, a cancelled future. The outcome recorded last with
/// [`Permit::record`] is reported to the limit algorithm; a permit dropped
/// with none recorded reports [`Outcome::Ignored`], so a disconnect is never
/// mistaken for a fast success.
#[must_use = "dropping a permit releases its slot at once"]
pub struct Permit {
    pub(super) limiter: Arc<Limiter>,
    pub(super) class: ClassId,
    pub(super) tenant: Option<TenantKey>,
    pub(super) start: Nanos,
    pub(super) inflight: usize,
    pub(super) outcome: Option<Outcome>,
}

impl Permit {
    /// Records how the request ended; the last call wins.
    pub fn record(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
    }

    /// The class the slot was taken for.
    pub fn class(&self) -> ClassId {
        self.class
    }

    /// When the permit was granted, on the limiter's clock.
    pub fn start(&self) -> Nanos {
        self.start
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("class", &self.class)
            .field("start", &self.start)
            .field("inflight", &self.inflight)
            .field("outcome", &self.outcome)
            .finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or(Outcome::Ignored);
        self.limiter
            .release(self.class, self.tenant, self.start, self.inflight, outcome);
    }
}
