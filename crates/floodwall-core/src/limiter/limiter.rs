//! Enforcement: who is admitted now.
//!
//! The limiter holds the effective limit `L` (see `capacity.rs`) and admits
//! a request of class `c` when, after counting it:
//!
//! 1. total in-flight `≤ L` (a compare-and-swap, so never exceeded);
//! 2. `c` is within its reserved slots, or may borrow beyond them: never an
//!    active class's unused reservation, never into a wanting higher
//!    class's headroom, and not below the first class while an outside
//!    constraint is set (`classes.rs`, `headroom.rs`); and
//! 3. its tenant, if it carries one, is within its share, or leaves the
//!    other tenants their headroom, while tenants contend (`tenants.rs`).
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
//! per-class counters (and, while tenants are counted, one shard of the
//! tenant table); only a request that queues takes the queue's lock. A finished
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
use super::quotas::{QuotaHold, QuotaUse, Quotas};
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
    /// held back by the tenant rule.
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
    tenants: Tenants,
    quotas: Quotas,
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
            quotas: Quotas::default(),
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

    /// The count at which a tenant is over its share now (see
    /// `tenants.rs`). Always `Some`; an `Option` for callers written when
    /// tenant caps could be off.
    pub fn tenant_cap(&self) -> Option<usize> {
        Some(self.tenants.cap(self.limit()))
    }

    /// The free slots `tenant`, once at its cap, must leave for the others
    /// now: its cap with a fixed `max_share`; with the automatic share, what
    /// the others' slots in flight say they need (see `headroom.rs`).
    pub fn tenant_headroom(&self, tenant: &str) -> usize {
        let held = self.tenant_inflight(tenant);
        self.tenants.headroom(self.limit(), held, self.inflight())
    }

    /// The counted slots `tenant` holds now. With the automatic share,
    /// slots are counted only while someone was refused within the
    /// contention window, so this is 0 while nobody is.
    pub fn tenant_inflight(&self, tenant: &str) -> usize {
        self.tenants.held(self.tenants.key(tenant))
    }

    /// How many tenants the tenant table holds an entry for now: never more
    /// than the requests in flight, whatever ids clients send.
    pub fn tenants_tracked(&self) -> usize {
        self.tenants.active()
    }

    /// Caps `tenant` at `cap` slots (`None`: no cap), on top of the
    /// fairness rule: for tenants with a configured quota, whose cap the
    /// gateway's distributed mode sets to this replica's part of the
    /// tenant's global quota. See `quotas.rs`.
    pub fn set_tenant_quota(&self, tenant: &str, cap: Option<usize>) {
        self.quotas.set(self.tenants.key(tenant), cap);
    }

    /// What a capped tenant did (`None` if it has no cap): its cap, slots
    /// held, peak since the last call, refusals. Resets the peak.
    pub fn observe_tenant_quota(&self, tenant: &str) -> Option<QuotaUse> {
        self.quotas.observe(self.tenants.key(tenant))
    }

    /// Whether the tenant rule is enforced right now.
    pub fn tenant_contended(&self) -> bool {
        self.tenants.contended(self.clock.now())
    }

    /// Admits `req` now or refuses it; never waits, even with a queue.
    /// (The waiting variant, [`Limiter::acquire`], is in `acquire.rs`
    /// beside its future.)
    pub fn try_acquire(self: &Arc<Self>, req: &Request<'_>) -> Result<Permit, Rejection> {
        let now = self.clock.now();
        match self.decide(req.class, None, req.tenant, now, None) {
            Verdict::Admit(p) => Ok(p),
            Verdict::Refuse(r) => Err(r),
            Verdict::Queued(_) => unreachable!("no waker, no queue"),
        }
    }

    pub(super) fn tenant_key(&self, tenant: Option<&str>) -> Option<TenantKey> {
        tenant.map(|id| self.tenants.key(id))
    }

    /// The admission decision, the one for every entry point. With a
    /// `waker` (an [`Acquire`](super::Acquire) future) and a queue
    /// configured, a request that finds others already waiting queues
    /// behind them rather than barging past (only its tenant cap may refuse
    /// it at once), and one that finds the gate full queues instead of
    /// being refused. Every refusal is counted here.
    ///
    /// The tenant comes as its key, or as its id (`try_acquire`), which is
    /// hashed only if the tenants are being counted or the request is
    /// refused: while nobody is refused, the id is not even hashed.
    #[inline]
    pub(super) fn decide(
        self: &Arc<Self>,
        class: ClassId,
        tenant: Option<TenantKey>,
        id: Option<&str>,
        now: Nanos,
        waker: Option<&Waker>,
    ) -> Verdict {
        let key = |id: &str| self.tenants.key(id);
        let tenant = tenant.or_else(|| {
            id.filter(|_| self.tenants.counting(now) || self.quotas.any())
                .map(key)
        });
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
            _ => {
                let tenant = tenant.or_else(|| id.map(key));
                Verdict::Refuse(self.refuse(class, tenant, reason, now))
            }
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
        let (inflight, counted, quota) = self.admit_slot(class, tenant, now)?;
        Ok(Permit::new(
            self.clone(),
            class,
            counted,
            now,
            inflight,
            quota,
        ))
    }

    /// Takes a slot now or says why not, for [`Limiter::decide`] and for
    /// the queue's grants; returns the requests in flight counting it, and
    /// the tenant if the slot was counted against it. On success every
    /// counter already includes the new slot, and the caller wraps it in a
    /// permit; on failure nothing stays counted. A tenant with a quota
    /// takes a slot of it last (see `quotas.rs`).
    #[inline]
    fn admit_slot(
        &self,
        class: ClassId,
        tenant: Option<TenantKey>,
        now: Nanos,
    ) -> Result<(usize, Option<TenantKey>, Option<QuotaHold>), Reason> {
        self.classes.arrive(class, now);
        let quota_key = tenant;
        let limit = self.limit();
        // While nobody is being refused (automatic share), a tenant's slot
        // is not counted: no table work on the uncontended path.
        let tenant = tenant.filter(|_| self.tenants.counting(now));
        let bound = self.tenant_bound(tenant, limit, now);
        if let Some(key) = tenant {
            if self.tenants.over(key, bound) {
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
        if !self.classes.may_hold(
            class,
            (in_c, before + 1),
            limit,
            || self.capacity.is_constrained(),
            now,
        ) {
            self.undo(class);
            return Err(Reason::WipLimitExceeded);
        }
        if let Some(key) = tenant {
            // The bound again, from the in-flight count this admission
            // itself moved: arrivals that read the count together above
            // each get a distinct `before` here, so two cannot both pass
            // the headroom test on the same count.
            let bound = bound.and(self.tenants.bound(key, limit, || before, now));
            if !self.tenants.try_take(key, bound) {
                self.undo(class);
                return Err(Reason::TenantLimitExceeded);
            }
        }
        let Ok(quota) = self.quotas.take(quota_key) else {
            self.undo(class);
            if let Some(key) = tenant {
                self.tenants.give_back(key);
            }
            return Err(Reason::TenantLimitExceeded);
        };
        self.classes.admitted(class, in_c);
        Ok((before + 1, tenant, quota))
    }

    fn undo(&self, class: ClassId) {
        self.inflight.fetch_sub(1, Ordering::SeqCst);
        self.classes.leave(class);
    }

    /// The count at which `tenant` is refused now, if the tenant rule
    /// applies to it.
    #[inline]
    fn tenant_bound(&self, tenant: Option<TenantKey>, limit: usize, now: Nanos) -> Option<usize> {
        self.tenants.bound(tenant?, limit, || self.inflight(), now)
    }

    /// Whether `tenant` is refused by the tenant rule now.
    fn tenant_over_cap(&self, tenant: Option<TenantKey>, now: Nanos) -> bool {
        if self.quotas.full(tenant) {
            return true;
        }
        let tenant = tenant.filter(|_| self.tenants.counting(now));
        match tenant {
            Some(key) => self
                .tenants
                .over(key, self.tenant_bound(Some(key), self.limit(), now)),
            None => false,
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
                let (inflight, counted, quota) = self.admit_slot(w.class, w.tenant, now).ok()?;
                Some(Permit::new(owner(), w.class, counted, now, inflight, quota))
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
    /// wanting (lower classes leave it its headroom), and if its tenant is
    /// within its share, tenants are contended (the tenant rule applies).
    fn note_wanting(&self, class: ClassId, tenant: Option<TenantKey>, now: Nanos) {
        self.tenants
            .note_waiting(tenant, self.limit(), self.retry_after.rtt(), now);
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
        let inflight = self.inflight();
        Snapshot {
            algorithm: self.algorithm_name,
            limit,
            inflight,
            queue_depth: self.queue.depth(),
            tenants_active: self.tenants.active(),
            tenant_contended: self.tenant_contended(),
            ewma_rtt: self.retry_after.rtt(),
            algorithm_limit: self.algorithm_limit(),
            constraint: self.constraint(),
            share: self.share(),
            decision: self.explain(),
            classes: self.classes.snapshot(limit, inflight, now),
        }
    }
}

/// A dropped [`Permit`] gives its slot back here.
impl Release for Limiter {
    fn release(&self, permit: &Permit, outcome: Outcome) {
        let now = self.clock.now();
        self.inflight.fetch_sub(1, Ordering::SeqCst);
        self.classes.leave(permit.class);
        if let Some(key) = permit.tenant {
            self.tenants.give_back(key);
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

// Reconfiguration (`Limiter::refresh_limit`) lives in its own file, a child
// of this module so it can reach the limiter's parts.
#[path = "reconfigure.rs"]
mod reconfigure;
