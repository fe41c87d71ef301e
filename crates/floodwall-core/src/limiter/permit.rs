//! The RAII admission permit.

use super::classes::ClassId;
use super::quotas::QuotaHold;
use super::tenants::TenantKey;
use crate::clock::Nanos;
use crate::limit::Outcome;
use std::fmt;
use std::sync::Arc;

/// What a permit gives its slot back to: the limiter that issued it.
///
/// A trait rather than the limiter itself so that this file does not
/// depend on the limiter, which holds permits (granted to waiters) in turn.
pub(crate) trait Release: Send + Sync {
    /// Takes back the slot of `permit`, which is being dropped, with the
    /// outcome it recorded.
    fn release(&self, permit: &Permit, outcome: Outcome);
}

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
    owner: Arc<dyn Release>,
    pub(super) class: ClassId,
    /// Its tenant, if the slot was counted against one.
    pub(super) tenant: Option<TenantKey>,
    pub(super) start: Nanos,
    /// Requests in flight once this one was admitted, for the sample.
    pub(super) inflight: usize,
    outcome: Option<Outcome>,
    /// Set by [`Permit::abandon`]: the client left before any answer, and
    /// the limiter judges at release whether that says anything.
    pub(super) abandoned: bool,
    /// Its slot of its tenant's quota, if the tenant has one; given back
    /// when the permit drops.
    _quota: Option<QuotaHold>,
}

impl Permit {
    /// A permit for a slot already counted by `owner`.
    #[inline]
    pub(super) fn new(
        owner: Arc<dyn Release>,
        class: ClassId,
        tenant: Option<TenantKey>,
        start: Nanos,
        inflight: usize,
        quota: Option<QuotaHold>,
    ) -> Self {
        Self {
            owner,
            class,
            tenant,
            start,
            inflight,
            outcome: None,
            abandoned: false,
            _quota: quota,
        }
    }

    /// Records how the request ended; the last call wins.
    pub fn record(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
        self.abandoned = false;
    }

    /// Records that, if the permit is dropped now, the client went away
    /// before the upstream answered. The limiter decides at release what
    /// that says: a client that waited longer than twice the smoothed
    /// request duration is what a client timeout looks like in an overload
    /// (and in a collapse, where nothing completes, it is the only signal
    /// left: Netflix concurrency-limits #176), so it is a
    /// [`Outcome::Dropped`]. One that left sooner left faster than any
    /// healthy response could have arrived, so it says nothing about the
    /// upstream and is [`Outcome::Ignored`]: otherwise a client that
    /// abandons its requests after a few milliseconds could drag the
    /// adaptive limit down. Before any request has completed there is no
    /// "normal" to compare with, and it is ignored too.
    pub fn abandon(&mut self) {
        self.outcome = None;
        self.abandoned = true;
    }

    /// The class the slot was taken for.
    pub fn class(&self) -> ClassId {
        self.class
    }

    /// When the permit was granted, on the limiter's clock.
    pub fn start(&self) -> Nanos {
        self.start
    }

    /// The issuer's handle, for permits that its release hands on (a slot
    /// freed by this permit may be granted to a waiter at once).
    pub(super) fn owner(&self) -> &Arc<dyn Release> {
        &self.owner
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("class", &self.class)
            .field("start", &self.start)
            .field("inflight", &self.inflight)
            .field("outcome", &self.outcome)
            .field("abandoned", &self.abandoned)
            .finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or(Outcome::Ignored);
        self.owner.release(self, outcome);
    }
}
