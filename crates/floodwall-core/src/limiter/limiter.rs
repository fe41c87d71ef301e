//! Enforcement: who is admitted now.
//!
//! The limiter holds the effective limit `L` (see `capacity.rs`) and admits
//! a request of class `c` when, after counting it:
//!
//! 1. total in-flight `≤ L` (a compare-and-swap, so never exceeded);
//! 2. `c` is within its reserved slots, or may borrow beyond them: never an
//!    active class's unused reservation, never while a higher class is
//!    wanting, and not below the first class while an outside constraint
//!    is set (`classes.rs`); and
//! 3. its tenant, if it carries one, is not at its cap while caps are
//!    enforced (`tenants.rs`).
//!
//! A refusal carries a suggested retry-after (`retry_after.rs`). With a
//! queue, a request that finds no slot, or finds others already waiting,
//! waits instead (`queue.rs`), and slots freed by releases are granted to
//! waiters by the same rules.
//!
//! This file composes those parts and is the only one that knows them all;
//! none of them knows the limiter. `acquire.rs` sits on top: the waiting
//! entry point and its future. There is one admission decision,
//! [`Limiter::decide`], for [`Limiter::try_acquire`] and the [`Acquire`]
//! future alike.
//!
//! Admission takes no global lock: it is a handful of atomic operations on
//! per-class counters (and, with tenant caps, one shard of the tenant
//! table); only a request that queues takes the queue's lock. A finished
//! request hands its sample to the algorithm without a lock too: an
//! adaptive limit locks only when a window closes. Checks read
//! counters that other threads may be changing; every thread counts itself
//! before checking, so a race can only refuse spuriously, never admit past
//! a bound.
//!
//! [`Acquire`]: super::Acquire

use super::capacity::Capacity;
use super::classes::{ClassId, Classes};
use super::config::{LimiterConfig, LimiterConfigError};
use super::padded::Padded;
use super::permit::{Permit, Release};
use super::queue::{WaitQueue, Waiter};
use super::rejection::{Reason, Rejection};
use super::retry_after::RetryAfter;
use super::snapshot::Snapshot;
use super::tenants::{TenantKey, Tenants};
use crate::clock::{Clock, Nanos};
use crate::limit::{Decision, Limit, Outcome, Sample};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

/// What the limiter needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Its priority class.
    pub class: ClassId,
    /// Its tenant id, if it carries one. Requests without a tenant are never
    /// capped.
    pub tenant: Option<&'a str>,
}

/// What the admission decision says to a request.
pub(super) enum Verdict {
    /// A slot, counted everywhere already.
    Admit(Permit),
    /// No, counted and with a retry-after.
    Refuse(Rejection),
    /// Wait in the queue as this waiter.
    Queued(Arc<Waiter>),
}

/// Enforces a [`Limit`] over priority classes, tenants and an optional wait
/// queue. Share it as `Arc<Limiter>`; permits hold a reference.
pub struct Limiter {
    clock: Arc<dyn Clock>,
    algorithm: Box<dyn Limit>,
    algorithm_name: &'static str,
    adaptive: bool,
    capacity: Capacity,
    /// Total requests in flight, bounded by the effective limit; on its own
    /// cache line (see `padded.rs`).
    inflight: Padded<AtomicUsize>,
    classes: Classes,
    /// `None` when tenant caps are off.
    tenants: Option<Tenants>,
    queue: WaitQueue,
    /// Written on every release (the smoothed rtt): its own cache line.
    retry_after: Padded<RetryAfter>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("algorithm", &self.algorithm_name)
            .field("limit", &self.limit())
            .field("inflight", &self.inflight())
            .finish_non_exhaustive()
    }
}

/// How many smoothed request durations a client must have waited before
/// its hang-up counts as a drop. Twice, so that ordinary jitter around the
/// mean is not read as overload.
const ABANDONED_AFTER: u32 = 2;

impl Limiter {
    /// A limiter enforcing `limit` with `config`, reading time from `clock`.
    pub fn new(
        config: LimiterConfig,
        limit: impl Limit,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, LimiterConfigError> {
        config.validate()?;
        Ok(Arc::new(Self {
            clock,
            algorithm_name: limit.name(),
            adaptive: limit.is_adaptive(),
            capacity: Capacity::new(limit.limit()),
            algorithm: Box::new(limit),
            inflight: Padded(AtomicUsize::new(0)),
            classes: Classes::new(&config.classes, config.class_idle_window),
            tenants: Tenants::new(&config.tenant),
            queue: WaitQueue::new(&config.queue),
            retry_after: Padded(RetryAfter::new(config.retry_after_max)),
        }))
    }

    /// The class with this name, if configured.
    pub fn class_id(&self, name: &str) -> Option<ClassId> {
        self.classes.id(name)
    }

    /// The effective limit now.
    #[inline]
    pub fn limit(&self) -> usize {
        self.capacity.limit()
    }

    /// The limit algorithm's own figure, before any outside constraint.
    pub fn algorithm_limit(&self) -> usize {
        self.capacity.algorithm()
    }

    /// The algorithm's last decision, if it has made one.
    pub fn explain(&self) -> Option<Decision> {
        self.algorithm.explain()
    }

    /// The outside constraint, if one is set.
    pub fn constraint(&self) -> Option<usize> {
        self.capacity.constraint()
    }

    /// Caps the limit from outside the request stream (a bottleneck probe):
    /// the effective limit becomes `min(algorithm, constraint)`. `None`
    /// lifts the cap. Requests already admitted are never cut; the gate
    /// drains down to a lower limit as they finish.
    pub fn set_constraint(&self, constraint: Option<usize>) {
        self.capacity.set_constraint(constraint);
    }

    /// This replica's share of a global limit, if one is set.
    pub fn share(&self) -> Option<usize> {
        self.capacity.share()
    }

    /// Caps the limit at this replica's share of a global limit shared by
    /// several gateways (distributed mode): the effective limit becomes
    /// `min(algorithm, constraint, share)`. Unlike the other terms the
    /// share may be 0, when other replicas hold the whole global limit;
    /// every admission is then refused. `None` lifts the cap. As with
    /// [`Limiter::set_constraint`], requests already admitted are never
    /// cut. The share does not stop lower classes borrowing: it is the
    /// size of this gate, not a sign that the bottleneck is saturated.
    pub fn set_share(&self, share: Option<usize>) {
        self.capacity.set_share(share);
    }

    /// Total requests in flight now.
    #[inline]
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// The most slots one tenant may hold under contention, if caps are on.
    pub fn tenant_cap(&self) -> Option<usize> {
        self.tenants.as_ref().map(|t| t.cap(self.limit()))
    }

    /// The slots `tenant` holds now (0 when caps are off).
    pub fn tenant_inflight(&self, tenant: &str) -> usize {
        self.tenants.as_ref().map_or(0, |t| t.held(t.key(tenant)))
    }

    /// Whether tenant caps are enforced right now.
    pub fn tenant_contended(&self) -> bool {
        self.tenants
            .as_ref()
            .is_some_and(|t| t.contended(self.clock.now()))
    }

    /// Admits `req` now or refuses it; never waits, even with a queue.
    /// (The waiting variant, [`Limiter::acquire`], is in `acquire.rs`
    /// beside its future.)
    pub fn try_acquire(self: &Arc<Self>, req: &Request<'_>) -> Result<Permit, Rejection> {
        let now = self.clock.now();
        match self.decide(req.class, self.tenant_key(req.tenant), now, None) {
            Verdict::Admit(p) => Ok(p),
            Verdict::Refuse(r) => Err(r),
            Verdict::Queued(_) => unreachable!("no waker, no queue"),
        }
    }

    pub(super) fn tenant_key(&self, tenant: Option<&str>) -> Option<TenantKey> {
        match (&self.tenants, tenant) {
            (Some(t), Some(id)) => Some(t.key(id)),
            _ => None,
        }
    }

    /// The admission decision, the one for every entry point. With a
    /// `waker` (an [`Acquire`](super::Acquire) future) and a queue
    /// configured, a request that finds others already waiting queues
    /// behind them rather than barging past (only its tenant cap may refuse
    /// it at once), and one that finds the gate full queues instead of
    /// being refused. Every refusal is counted here.
    #[inline]
    pub(super) fn decide(
        self: &Arc<Self>,
        class: ClassId,
        tenant: Option<TenantKey>,
        now: Nanos,
        waker: Option<&Waker>,
    ) -> Verdict {
        let waker = waker.filter(|_| self.queue.is_enabled());
        let reason = if let Some(waker) = waker.filter(|_| self.queue.depth() > 0) {
            if !self.tenant_over_cap(tenant, now) {
                return self.enqueue(class, tenant, waker, now);
            }
            Reason::TenantLimitExceeded
        } else {
            match self.admit(class, tenant, now) {
                Ok(p) => return Verdict::Admit(p),
                Err(r) => r,
            }
        };
        match waker {
            Some(waker) if reason == Reason::WipLimitExceeded => {
                self.enqueue(class, tenant, waker, now)
            }
            _ => Verdict::Refuse(self.refuse(class, tenant, reason, now)),
        }
    }

    /// [`Limiter::admit_slot`], as a permit on this limiter.
    #[inline]
    fn admit(
        self: &Arc<Self>,
        class: ClassId,
        tenant: Option<TenantKey>,
        now: Nanos,
    ) -> Result<Permit, Reason> {
        let inflight = self.admit_slot(class, tenant, now)?;
        Ok(Permit::new(self.clone(), class, tenant, now, inflight))
    }

    /// Takes a slot now or says why not, for [`Limiter::decide`] and for
    /// the queue's grants; returns the requests in flight counting it. On
    /// success every counter already includes the new slot, and the caller
    /// wraps it in a permit; on failure nothing stays counted.
    #[inline]
    fn admit_slot(
        &self,
        class: ClassId,
        tenant: Option<TenantKey>,
        now: Nanos,
    ) -> Result<usize, Reason> {
        self.classes.arrive(class, now);
        let limit = self.limit();
        let cap = self.tenant_cap_now(limit, now);
        if let (Some(t), Some(key)) = (&self.tenants, tenant) {
            if t.over_cap(key, cap) {
                return Err(Reason::TenantLimitExceeded);
            }
        }
        let in_c = self.classes.enter(class);
        let total = self
            .inflight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                (t < limit).then_some(t + 1)
            });
        let Ok(before) = total else {
            self.classes.leave(class);
            return Err(Reason::WipLimitExceeded);
        };
        if !self
            .classes
            .may_hold(class, in_c, limit, || self.capacity.is_constrained(), now)
        {
            self.undo(class);
            return Err(Reason::WipLimitExceeded);
        }
        if let (Some(t), Some(key)) = (&self.tenants, tenant) {
            if !t.try_take(key, cap) {
                self.undo(class);
                return Err(Reason::TenantLimitExceeded);
            }
        }
        Ok(before + 1)
    }

    fn undo(&self, class: ClassId) {
        self.inflight.fetch_sub(1, Ordering::SeqCst);
        self.classes.leave(class);
    }

    /// The tenant cap that applies to a new admission now, if any.
    #[inline]
    fn tenant_cap_now(&self, limit: usize, now: Nanos) -> Option<usize> {
        self.tenants
            .as_ref()?
            .cap_now(limit, || self.inflight(), now)
    }

    /// Whether `tenant` is at its cap while caps are enforced.
    fn tenant_over_cap(&self, tenant: Option<TenantKey>, now: Nanos) -> bool {
        match (&self.tenants, tenant) {
            (Some(t), Some(key)) => t.over_cap(key, self.tenant_cap_now(self.limit(), now)),
            _ => false,
        }
    }

    /// Queues the request (or refuses it, `queue_full`) and grants at once
    /// whatever slots are free: they may have been freed between the failed
    /// admission and the enqueue, and nobody else would grant them.
    fn enqueue(
        self: &Arc<Self>,
        class: ClassId,
        tenant: Option<TenantKey>,
        waker: &Waker,
        now: Nanos,
    ) -> Verdict {
        let Some(w) = self.queue.push(class, tenant, waker) else {
            return Verdict::Refuse(self.refuse(class, tenant, Reason::QueueFull, now));
        };
        self.note_wanting(class, tenant, now);
        self.grant(|| self.clone(), now);
        Verdict::Queued(w)
    }

    /// Hands free slots to waiters, each admitted by the same rules as
    /// anyone. `owner` gives each granted permit its handle on this
    /// limiter.
    fn grant(&self, owner: impl Fn() -> Arc<dyn Release>, now: Nanos) {
        self.queue.grant(
            || self.inflight() < self.limit(),
            |w| {
                let inflight = self.admit_slot(w.class, w.tenant, now).ok()?;
                Some(Permit::new(owner(), w.class, w.tenant, now, inflight))
            },
        );
    }

    /// Records a refusal and builds its [`Rejection`].
    fn refuse(
        &self,
        class: ClassId,
        tenant: Option<TenantKey>,
        reason: Reason,
        now: Nanos,
    ) -> Rejection {
        self.classes.count_refusal(class, reason);
        self.retry_after.record_refusal(now);
        if reason != Reason::TenantLimitExceeded {
            self.note_wanting(class, tenant, now);
        }
        Rejection {
            reason,
            retry_after: self.retry_after(now),
        }
    }

    /// A request was refused or queued for lack of a slot: its class is
    /// wanting (lower classes stop borrowing), and if its tenant is within
    /// its share, tenants are contended (caps apply).
    fn note_wanting(&self, class: ClassId, tenant: Option<TenantKey>, now: Nanos) {
        if let Some(t) = &self.tenants {
            t.note_waiting(tenant, self.limit(), now);
        }
        self.classes.note_wanting(class, now);
    }

    /// The suggested wait before a refused client retries:
    /// `max(rtt, 1 s) × (1 + refused/s ÷ capacity/s)`, capped at
    /// `retry_after_max`, where capacity is `limit ÷ rtt` (Little's law)
    /// and rtt is the smoothed request duration. A client told this
    /// spreads its retry over the time the gate needs to absorb the
    /// excess, instead of coming back into the same full gate (the "Retry
    /// Storm Paradox" of the Phoenix WIP-gate article). The I/O layer adds
    /// jitter.
    pub fn retry_after(&self, now: Nanos) -> Duration {
        self.retry_after.suggest(self.limit(), now)
    }

    /// Feeds one sample to the algorithm and returns its new limit. No lock
    /// here: an adaptive limit synchronises itself and locks only when a
    /// window closes (see [`Adaptive`](crate::Adaptive)).
    fn sample_algorithm(&self, now: Nanos, sample: &Sample) -> usize {
        self.algorithm.on_sample(now, sample)
    }

    /// What an abandoned permit (see [`Permit::abandon`]) that held its
    /// slot for `rtt` says: a drop if the client waited more than twice the
    /// smoothed duration of completed requests, else nothing.
    fn abandoned_outcome(&self, rtt: Duration) -> Outcome {
        let normal = self.retry_after.rtt();
        if !normal.is_zero() && rtt > normal * ABANDONED_AFTER {
            Outcome::Dropped
        } else {
            Outcome::Ignored
        }
    }

    /// Records a `queue_timeout` refusal for `class`.
    pub(super) fn queue_timed_out(&self, class: ClassId, tenant: Option<TenantKey>) -> Rejection {
        self.refuse(class, tenant, Reason::QueueTimeout, self.clock.now())
    }

    /// Takes `w` out of the queue; see [`WaitQueue::leave`].
    pub(super) fn leave_queue(&self, w: &Arc<Waiter>) {
        self.queue.leave(w);
    }

    pub(super) fn now(&self) -> Nanos {
        self.clock.now()
    }

    /// A consistent-enough view for `/status` and `/metrics`.
    pub fn snapshot(&self) -> Snapshot {
        let now = self.clock.now();
        let limit = self.limit();
        Snapshot {
            algorithm: self.algorithm_name,
            limit,
            inflight: self.inflight(),
            queue_depth: self.queue.depth(),
            tenants_active: self.tenants.as_ref().map_or(0, |t| t.active()),
            tenant_contended: self.tenant_contended(),
            ewma_rtt: self.retry_after.rtt(),
            algorithm_limit: self.algorithm_limit(),
            constraint: self.constraint(),
            share: self.share(),
            decision: self.explain(),
            classes: self.classes.snapshot(limit, now),
        }
    }
}

/// A dropped [`Permit`] gives its slot back here.
impl Release for Limiter {
    fn release(&self, permit: &Permit, outcome: Outcome) {
        let now = self.clock.now();
        self.inflight.fetch_sub(1, Ordering::SeqCst);
        self.classes.leave(permit.class);
        if let (Some(t), Some(key)) = (&self.tenants, permit.tenant) {
            t.give_back(key);
        }
        let rtt = now.since(permit.start);
        let outcome = match permit.abandoned {
            true => self.abandoned_outcome(rtt),
            false => outcome,
        };
        self.classes.count_outcome(permit.class, outcome);
        if matches!(outcome, Outcome::Success | Outcome::Error) {
            self.retry_after.record_rtt(rtt);
        }
        if self.adaptive {
            let sample = Sample {
                start: permit.start,
                rtt,
                inflight: permit.inflight,
                outcome,
            };
            let new = self.sample_algorithm(now, &sample);
            self.capacity.set_algorithm(new);
        }
        if self.queue.depth() > 0 {
            self.grant(|| permit.owner().clone(), now);
        }
    }
}
