//! Enforcement: who is admitted now.
//!
//! The limiter holds the effective limit `L` in an atomic and admits a
//! request of class `c` when, after counting it:
//!
//! 1. total in-flight `≤ L` (a compare-and-swap, so never exceeded); and
//! 2. if `c` is above its reserved slots `R_c = floor(L × reserved_c)`, then
//!    `in_c + Σ_{o≠c} eff_o ≤ L`, where `eff_o = max(in_o, R_o)` for a class
//!    that had an arrival within `class_idle_window` and `in_o` otherwise.
//!
//! So an active class's unused reservation is never borrowed, while an idle
//! class's is lent out and nothing is wasted. Borrowing is also strict
//! priority: while a higher class has been refused or queued within the
//! idle window, a lower class keeps to its own reservation, so under
//! overload batch gets what interactive leaves, not an equal fight for it. A class that comes back after
//! being idle gets its slots back as borrowed requests finish: at most one
//! request duration later. A tenant at `floor(L × max_share)` slots or more
//! is refused (429) while someone under their share was refused or queued
//! within the tenant contention window *and* fewer than one share of slots
//! is free: the cap keeps a share free for the others, but never leaves the
//! rest of the gate idle. While an outside constraint is set (a
//! bottleneck probe reports saturation), classes below the first may not
//! borrow at all, so lower priorities are shed first.
//!
//! There is no global lock: admission is a handful of atomic operations on
//! per-class counters. Checks read counters that other threads may be
//! changing; every thread counts itself before checking, so a race can only
//! refuse spuriously, never admit past a bound.

use super::config::{LimiterConfig, LimiterConfigError, QueueOrder};
use super::permit::Permit;
use super::queue::{Acquire, WaitQueue};
use super::rejection::{Reason, Rejection};
use super::tenants::{TenantKey, TenantTable};
use crate::clock::{duration_nanos, Clock, Nanos};
use crate::limit::{Decision, Limit, Outcome, Sample};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A priority class, as an index into the limiter's class list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassId(pub(crate) u8);

impl ClassId {
    /// The class's position in the configured list (0 = highest priority).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What the limiter needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Its priority class.
    pub class: ClassId,
    /// Its tenant id, if it carries one. Requests without a tenant are never
    /// capped.
    pub tenant: Option<&'a str>,
}

const NEVER: u64 = u64::MAX;

/// Admission counters of one class, read by `/status` and `/metrics`.
#[derive(Debug, Default)]
struct ClassCounters {
    outcomes: [AtomicU64; 4],
    rejections: [AtomicU64; 4],
}

#[derive(Debug)]
struct ClassState {
    name: String,
    reserved_permille: usize,
    inflight: AtomicUsize,
    last_seen: AtomicU64,
    /// When the class was last refused or queued for lack of a slot.
    last_wanting: AtomicU64,
    counters: ClassCounters,
}

/// Counts refusals per second, for the retry-after estimate.
#[derive(Debug, Default)]
struct RefusalRate {
    second: AtomicU64,
    current: AtomicU64,
    previous: AtomicU64,
}

impl RefusalRate {
    fn record(&self, now: Nanos) {
        let s = now.0 / 1_000_000_000;
        let old = self.second.load(Ordering::Relaxed);
        if old != s
            && self
                .second
                .compare_exchange(old, s, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let last = self.current.swap(0, Ordering::AcqRel);
            self.previous
                .store(if s == old + 1 { last } else { 0 }, Ordering::Release);
        }
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals in the last full second, or in the current one if larger.
    fn per_second(&self, now: Nanos) -> u64 {
        let s = now.0 / 1_000_000_000;
        let at = self.second.load(Ordering::Acquire);
        let cur = self.current.load(Ordering::Relaxed);
        if at == s {
            cur.max(self.previous.load(Ordering::Relaxed))
        } else if at + 1 == s {
            cur
        } else {
            0
        }
    }
}

/// Enforces a [`Limit`] over priority classes, tenants and an optional wait
/// queue. Share it as `Arc<Limiter>`; permits hold a reference.
pub struct Limiter {
    clock: Arc<dyn Clock>,
    algorithm: Mutex<Box<dyn Limit>>,
    algorithm_name: &'static str,
    adaptive: bool,
    /// The algorithm's latest limit.
    algo_limit: AtomicUsize,
    /// An outside cap (bottleneck probes); `usize::MAX` when none.
    constraint: AtomicUsize,
    /// This replica's share of a global limit (distributed mode);
    /// `usize::MAX` when there is none. Unlike the other terms it may be 0.
    share: AtomicUsize,
    /// `min(max(min(algo_limit, constraint), 1), share)`: what admission
    /// reads.
    limit: AtomicUsize,
    inflight: AtomicUsize,
    classes: Box<[ClassState]>,
    class_window: u64,
    tenants: Option<TenantTable>,
    tenant_share: f64,
    tenant_window: u64,
    last_entitled_refusal: AtomicU64,
    pub(super) queue: WaitQueue,
    ewma_rtt: AtomicU64,
    refusals: RefusalRate,
    retry_after_max: Duration,
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

/// A point-in-time view of one class, for `/status` and `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassSnapshot {
    /// The class name.
    pub name: String,
    /// Slots reserved for it at the current limit.
    pub reserved: usize,
    /// Requests of this class in flight.
    pub inflight: usize,
    /// Whether it had an arrival within the idle window (its reservation is
    /// held).
    pub active: bool,
    /// Whether it was refused or queued for lack of a slot within the idle
    /// window (lower classes may not borrow meanwhile).
    pub wanting: bool,
    /// Requests admitted since start.
    pub admitted: u64,
    /// Finished requests by outcome, in [`Outcome::ALL`] order.
    pub outcomes: [u64; 4],
    /// Refusals by reason, in [`Reason::ALL`] order.
    pub rejections: [u64; 4],
}

/// A point-in-time view of a limiter.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The limit algorithm's name.
    pub algorithm: &'static str,
    /// The effective limit.
    pub limit: usize,
    /// Total requests in flight.
    pub inflight: usize,
    /// Requests waiting in the queue.
    pub queue_depth: usize,
    /// Tenants holding at least one slot.
    pub tenants_active: usize,
    /// Whether tenant caps are being enforced right now.
    pub tenant_contended: bool,
    /// The smoothed request duration the retry-after estimate uses.
    pub ewma_rtt: Duration,
    /// The algorithm's own limit, before any outside constraint.
    pub algorithm_limit: usize,
    /// The outside constraint (bottleneck probes), if any.
    pub constraint: Option<usize>,
    /// This replica's share of a global limit (distributed mode), if any.
    pub share: Option<usize>,
    /// The algorithm's last decision, for "why is the limit what it is".
    pub decision: Option<Decision>,
    /// Per-class figures, highest priority first.
    pub classes: Vec<ClassSnapshot>,
}

impl Limiter {
    /// A limiter enforcing `limit` with `config`, reading time from `clock`.
    pub fn new(
        config: LimiterConfig,
        limit: impl Limit,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, LimiterConfigError> {
        config.validate()?;
        let classes = config
            .classes
            .iter()
            .map(|c| ClassState {
                name: c.name.clone(),
                reserved_permille: (c.reserved * 1000.0).round() as usize,
                inflight: AtomicUsize::new(0),
                last_seen: AtomicU64::new(NEVER),
                last_wanting: AtomicU64::new(NEVER),
                counters: ClassCounters::default(),
            })
            .collect();
        let current = limit.limit().max(1);
        let threshold = match config.queue.order {
            QueueOrder::Fifo => usize::MAX,
            QueueOrder::AdaptiveLifo { threshold } => threshold.max(1),
        };
        Ok(Arc::new(Self {
            clock,
            algorithm_name: limit.name(),
            adaptive: limit.is_adaptive(),
            algorithm: Mutex::new(Box::new(limit)),
            algo_limit: AtomicUsize::new(current),
            constraint: AtomicUsize::new(usize::MAX),
            share: AtomicUsize::new(usize::MAX),
            limit: AtomicUsize::new(current),
            inflight: AtomicUsize::new(0),
            classes,
            class_window: duration_nanos(config.class_idle_window),
            tenants: (config.tenant.max_share < 1.0).then(TenantTable::new),
            tenant_share: config.tenant.max_share,
            tenant_window: duration_nanos(config.tenant.contention_window),
            last_entitled_refusal: AtomicU64::new(NEVER),
            queue: WaitQueue::new(config.queue.capacity, threshold),
            ewma_rtt: AtomicU64::new(0),
            refusals: RefusalRate::default(),
            retry_after_max: config.retry_after_max,
        }))
    }

    /// The class with this name, if configured.
    pub fn class_id(&self, name: &str) -> Option<ClassId> {
        self.classes
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
            .map(|i| ClassId(i as u8))
    }

    /// The effective limit now.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// The limit algorithm's own figure, before any outside constraint.
    pub fn algorithm_limit(&self) -> usize {
        self.algo_limit.load(Ordering::Acquire)
    }

    /// The algorithm's last decision, if it has made one.
    pub fn explain(&self) -> Option<Decision> {
        self.algorithm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .explain()
    }

    /// The outside constraint, if one is set.
    pub fn constraint(&self) -> Option<usize> {
        match self.constraint.load(Ordering::Acquire) {
            usize::MAX => None,
            c => Some(c),
        }
    }

    /// Caps the limit from outside the request stream (a bottleneck probe):
    /// the effective limit becomes `min(algorithm, constraint)`. `None`
    /// lifts the cap. Requests already admitted are never cut; the gate
    /// drains down to a lower limit as they finish.
    pub fn set_constraint(&self, constraint: Option<usize>) {
        self.constraint
            .store(constraint.unwrap_or(usize::MAX), Ordering::Release);
        self.refresh_limit();
    }

    /// This replica's share of a global limit, if one is set.
    pub fn share(&self) -> Option<usize> {
        match self.share.load(Ordering::Acquire) {
            usize::MAX => None,
            s => Some(s),
        }
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
        self.share
            .store(share.unwrap_or(usize::MAX), Ordering::Release);
        self.refresh_limit();
    }

    fn refresh_limit(&self) {
        let algo = self.algo_limit.load(Ordering::Acquire);
        let cap = self.constraint.load(Ordering::Acquire);
        let share = self.share.load(Ordering::Acquire);
        self.limit
            .store(algo.min(cap).max(1).min(share), Ordering::Release);
    }

    /// Total requests in flight now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// The most slots one tenant may hold under contention, if caps are on.
    pub fn tenant_cap(&self) -> Option<usize> {
        self.tenants
            .as_ref()
            .map(|_| ((self.limit() as f64 * self.tenant_share) as usize).max(1))
    }

    /// The slots `tenant` holds now (0 when caps are off).
    pub fn tenant_inflight(&self, tenant: &str) -> usize {
        self.tenants.as_ref().map_or(0, |t| t.held(t.key(tenant)))
    }

    /// Whether tenant caps are enforced right now.
    pub fn tenant_contended(&self) -> bool {
        self.within(
            &self.last_entitled_refusal,
            self.tenant_window,
            self.clock.now(),
        )
    }

    /// Admits `req` now or refuses it; never waits, even with a queue.
    pub fn try_acquire(self: &Arc<Self>, req: &Request<'_>) -> Result<Permit, Rejection> {
        let now = self.clock.now();
        let tenant = self.tenant_key(req.tenant);
        self.admit(req.class, tenant, now)
            .map_err(|reason| self.refuse(req.class, tenant, reason, now))
    }

    /// Admits `req`, waiting in the queue if one is configured and the gate
    /// is full. The future resolves at once when there is no queue. Dropping
    /// it (client gone) removes the waiter; on a deadline, call
    /// [`Acquire::timed_out`] to get the `queue_timeout` refusal.
    pub fn acquire(self: &Arc<Self>, req: &Request<'_>) -> Acquire {
        Acquire::new(self.clone(), req.class, self.tenant_key(req.tenant))
    }

    fn tenant_key(&self, tenant: Option<&str>) -> Option<TenantKey> {
        match (&self.tenants, tenant) {
            (Some(t), Some(id)) => Some(t.key(id)),
            _ => None,
        }
    }

    fn reserved_at(&self, class: usize, limit: usize) -> usize {
        limit * self.classes[class].reserved_permille / 1000
    }

    fn within(&self, at: &AtomicU64, window: u64, now: Nanos) -> bool {
        let t = at.load(Ordering::Relaxed);
        t != NEVER && now.0.saturating_sub(t) < window
    }

    /// The admission decision. On success every counter already includes
    /// the new permit.
    pub(super) fn admit(
        self: &Arc<Self>,
        class: ClassId,
        tenant: Option<TenantKey>,
        now: Nanos,
    ) -> Result<Permit, Reason> {
        let ci = class.index();
        let state = &self.classes[ci];
        // Mark the class active; skip the store while the mark is fresh so
        // concurrent admissions do not fight over the cache line.
        let seen = state.last_seen.load(Ordering::Relaxed);
        if seen == NEVER || now.0.saturating_sub(seen) > self.class_window / 8 {
            state.last_seen.store(now.0, Ordering::Relaxed);
        }
        let limit = self.limit();
        let cap = self.tenant_cap_now(limit, now);
        if self.tenant_over_cap(tenant, now) {
            return Err(Reason::TenantLimitExceeded);
        }
        let in_c = state.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        let total = self
            .inflight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                (t < limit).then_some(t + 1)
            });
        let Ok(before) = total else {
            state.inflight.fetch_sub(1, Ordering::SeqCst);
            return Err(Reason::WipLimitExceeded);
        };
        if in_c > self.reserved_at(ci, limit) && !self.may_borrow(ci, in_c, limit, now) {
            self.undo(ci);
            return Err(Reason::WipLimitExceeded);
        }
        if let (Some(t), Some(key)) = (&self.tenants, tenant) {
            if !t.try_take(key, cap) {
                self.undo(ci);
                return Err(Reason::TenantLimitExceeded);
            }
        }
        Ok(Permit {
            limiter: self.clone(),
            class,
            tenant,
            start: now,
            inflight: before + 1,
            outcome: None,
        })
    }

    /// Rule 2 of the module doc: borrowing never takes an active class's
    /// unused reservation.
    fn may_borrow(&self, ci: usize, in_c: usize, limit: usize, now: Nanos) -> bool {
        // While the bottleneck itself says it is saturated, lower classes
        // keep only their own reservations: batch is shed before
        // interactive loses anything.
        if ci > 0 && self.constraint.load(Ordering::Relaxed) != usize::MAX {
            return false;
        }
        // Strict priority for the shared part: a higher class that wanted a
        // slot recently gets it before this one may borrow.
        if self.classes[..ci]
            .iter()
            .any(|h| self.within(&h.last_wanting, self.class_window, now))
        {
            return false;
        }
        let mut need = in_c;
        for (oi, o) in self.classes.iter().enumerate() {
            if oi == ci {
                continue;
            }
            let in_o = o.inflight.load(Ordering::SeqCst);
            need += if self.within(&o.last_seen, self.class_window, now) {
                in_o.max(self.reserved_at(oi, limit))
            } else {
                in_o
            };
            if need > limit {
                return false;
            }
        }
        true
    }

    fn undo(&self, ci: usize) {
        self.inflight.fetch_sub(1, Ordering::SeqCst);
        self.classes[ci].inflight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether `tenant` is at its cap while caps are enforced.
    pub(super) fn tenant_over_cap(&self, tenant: Option<TenantKey>, now: Nanos) -> bool {
        match (
            &self.tenants,
            tenant,
            self.tenant_cap_now(self.limit(), now),
        ) {
            (Some(t), Some(key), Some(cap)) => t.held(key) >= cap,
            _ => false,
        }
    }

    /// The cap that applies to a new admission now, if any: only under
    /// contention, and only once the gate is within one share of full.
    /// Below that the tenant may still take free slots, so a cap never
    /// leaves capacity idle while one share stays free for the others.
    fn tenant_cap_now(&self, limit: usize, now: Nanos) -> Option<usize> {
        self.tenants.as_ref()?;
        if !self.within(&self.last_entitled_refusal, self.tenant_window, now) {
            return None;
        }
        let cap = ((limit as f64 * self.tenant_share) as usize).max(1);
        (self.inflight() + 1 + cap > limit).then_some(cap)
    }

    /// Records a refusal and builds its [`Rejection`].
    pub(super) fn refuse(
        &self,
        class: ClassId,
        tenant: Option<TenantKey>,
        reason: Reason,
        now: Nanos,
    ) -> Rejection {
        self.classes[class.index()].counters.rejections[reason.index()]
            .fetch_add(1, Ordering::Relaxed);
        self.refusals.record(now);
        if reason != Reason::TenantLimitExceeded {
            self.note_waiting(tenant, now);
            self.note_class_wanting(class, now);
        }
        Rejection {
            reason,
            retry_after: self.retry_after(now),
        }
    }

    /// A class was refused or queued for lack of a slot: lower classes stop
    /// borrowing beyond their reservations until it has gone a whole idle
    /// window without that, so shared capacity goes to the higher class.
    pub(super) fn note_class_wanting(&self, class: ClassId, now: Nanos) {
        self.classes[class.index()]
            .last_wanting
            .store(now.0, Ordering::Relaxed);
    }

    /// Someone is refused or queued: if they are within their tenant share,
    /// that is contention, and caps apply to the tenants above theirs.
    pub(super) fn note_waiting(&self, tenant: Option<TenantKey>, now: Nanos) {
        let Some(t) = &self.tenants else { return };
        let cap = ((self.limit() as f64 * self.tenant_share) as usize).max(1);
        if tenant.is_none_or(|k| t.held(k) < cap) {
            self.last_entitled_refusal.store(now.0, Ordering::Relaxed);
        }
    }

    /// The suggested wait before a refused client retries.
    ///
    /// `max(rtt, 1 s) × (1 + refused/s ÷ capacity/s)`, capped at
    /// `retry_after_max`, where capacity is `limit ÷ rtt` (Little's law)
    /// and rtt is the smoothed request duration. A client told this spreads
    /// its retry over the time the gate needs to absorb the excess, instead
    /// of coming back into the same full gate (the "Retry Storm Paradox"
    /// of the Phoenix WIP-gate article). The I/O layer adds jitter.
    pub fn retry_after(&self, now: Nanos) -> Duration {
        let rtt = match self.ewma_rtt.load(Ordering::Relaxed) {
            0 => Duration::from_millis(100),
            n => Duration::from_nanos(n),
        };
        let capacity = self.limit() as f64 / rtt.as_secs_f64().max(1e-6);
        let refused = self.refusals.per_second(now) as f64;
        let spread = 1.0 + refused / capacity.max(1.0);
        rtt.max(Duration::from_secs(1))
            .mul_f64(spread.min(1e6))
            .min(self.retry_after_max)
    }

    /// Called by a dropped [`Permit`].
    pub(super) fn release(
        self: &Arc<Self>,
        class: ClassId,
        tenant: Option<TenantKey>,
        start: Nanos,
        inflight: usize,
        outcome: Outcome,
    ) {
        let now = self.clock.now();
        let state = &self.classes[class.index()];
        self.inflight.fetch_sub(1, Ordering::SeqCst);
        state.inflight.fetch_sub(1, Ordering::SeqCst);
        if let (Some(t), Some(key)) = (&self.tenants, tenant) {
            t.give_back(key);
        }
        state.counters.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        let rtt = now.since(start);
        if matches!(outcome, Outcome::Success | Outcome::Error) {
            // A racy read-modify-write: a lost update only delays the
            // estimate, and it keeps the hot path free of CAS loops.
            let old = self.ewma_rtt.load(Ordering::Relaxed);
            let x = duration_nanos(rtt);
            let new = if old == 0 { x } else { old - old / 16 + x / 16 };
            self.ewma_rtt.store(new.max(1), Ordering::Relaxed);
        }
        if self.adaptive {
            let sample = Sample {
                start,
                rtt,
                inflight,
                outcome,
            };
            let new = {
                let mut algo = self.algorithm.lock().unwrap_or_else(|p| p.into_inner());
                algo.on_sample(now, &sample)
            };
            self.algo_limit.store(new.max(1), Ordering::Release);
            self.refresh_limit();
        }
        if self.queue.depth() > 0 {
            self.queue.grant(self, now);
        }
    }

    /// Records a `queue_timeout` refusal for `class`.
    pub(super) fn queue_timed_out(&self, class: ClassId, tenant: Option<TenantKey>) -> Rejection {
        self.refuse(class, tenant, Reason::QueueTimeout, self.clock.now())
    }

    /// Whether a queue is configured.
    pub(super) fn queue_enabled(&self) -> bool {
        self.queue.capacity() > 0
    }

    pub(super) fn now(&self) -> Nanos {
        self.clock.now()
    }

    /// A consistent-enough view for `/status` and `/metrics`.
    pub fn snapshot(&self) -> Snapshot {
        let now = self.clock.now();
        let limit = self.limit();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            algorithm: self.algorithm_name,
            limit,
            inflight: self.inflight(),
            queue_depth: self.queue.depth(),
            tenants_active: self.tenants.as_ref().map_or(0, |t| t.active()),
            tenant_contended: self.tenants.is_some() && self.tenant_contended(),
            ewma_rtt: Duration::from_nanos(load(&self.ewma_rtt)),
            algorithm_limit: self.algorithm_limit(),
            constraint: self.constraint(),
            share: self.share(),
            decision: self.explain(),
            classes: self
                .classes
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let inflight = c.inflight.load(Ordering::Acquire);
                    let outcomes = c.counters.outcomes.each_ref().map(load);
                    ClassSnapshot {
                        name: c.name.clone(),
                        reserved: self.reserved_at(i, limit),
                        inflight,
                        active: self.within(&c.last_seen, self.class_window, now),
                        wanting: self.within(&c.last_wanting, self.class_window, now),
                        // Derived rather than counted: one atomic less per
                        // admission.
                        admitted: outcomes.iter().sum::<u64>() + inflight as u64,
                        outcomes,
                        rejections: c.counters.rejections.each_ref().map(load),
                    }
                })
                .collect(),
        }
    }
}
