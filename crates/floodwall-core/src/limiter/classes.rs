//! Priority classes: who may use which part of the limit.
//!
//! Each class `c` has reserved slots `R_c = floor(L × reserved_c)` at the
//! effective limit `L`. Within its reservation a class is admitted whenever
//! the gate has room. Above it, the class is *borrowing*, and may do so only
//! if, after counting itself, `in_c + Σ_{o≠c} eff_o ≤ L`, where
//! `eff_o = max(in_o, R_o)` for a class that had an arrival within
//! `class_idle_window` and `in_o` otherwise.
//!
//! So an active class's unused reservation is never borrowed, while an idle
//! class's is lent out and nothing is wasted. A class that comes back after
//! being idle gets its slots back as borrowed requests finish: at most one
//! request duration later.
//!
//! Borrowing also yields to higher classes. A class refused or queued for
//! lack of a slot within the idle window is *wanting*, and while it is, a
//! lower class may borrow only if it leaves that class its *headroom* free
//! (`headroom.rs`): about `2.2 √R` slots for a class holding `R` on average,
//! the slots its own arrivals need before releases catch up. This is trunk
//! reservation rather than strict priority: strict priority (no borrowing
//! at all while a higher class wants) left every slot the higher class did
//! not use idle. In the simulated priority spike (interactive at 90 % of
//! the capacity, batch at 210 %) it served interactive 99 % but the
//! upstream only 0.93 of its capacity, batch getting 33 req/s of the 100
//! left; with the headroom interactive keeps 98.6–99.0 % and the upstream
//! runs at 0.98–0.99 (ten seeds). A class is wanting only while the free
//! slots are
//! within its headroom, so once the gate has room again lower classes
//! borrow at once. And while an outside constraint is set (a bottleneck
//! probe reports saturation), classes below the first may not borrow at
//! all, so lower priorities are shed first.

use super::config::ClassSpec;
use super::headroom::headroom;
use super::rejection::Reason;
use super::snapshot::ClassSnapshot;
use crate::clock::{duration_nanos, Nanos, Stamp};
use crate::limit::Outcome;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    last_seen: Stamp,
    /// When the class was last refused or queued for lack of a slot.
    last_wanting: Stamp,
    /// Its requests in flight as its admissions see them, smoothed: an
    /// EWMA in fixed point, 64 times the average. What it holds on
    /// average, for its headroom.
    load: AtomicUsize,
    counters: ClassCounters,
}

/// The classes of one limiter, highest priority first.
#[derive(Debug)]
pub(super) struct Classes {
    states: Box<[ClassState]>,
    /// `class_idle_window` in nanoseconds.
    window: u64,
}

impl Classes {
    /// The classes of `specs` (already validated).
    pub(super) fn new(specs: &[ClassSpec], idle_window: Duration) -> Self {
        let states = specs
            .iter()
            .map(|c| ClassState {
                name: c.name.clone(),
                reserved_permille: (c.reserved * 1000.0).round() as usize,
                inflight: AtomicUsize::new(0),
                last_seen: Stamp::never(),
                last_wanting: Stamp::never(),
                load: AtomicUsize::new(0),
                counters: ClassCounters::default(),
            })
            .collect();
        Self {
            states,
            window: duration_nanos(idle_window),
        }
    }

    /// The class with this name, if configured.
    pub(super) fn id(&self, name: &str) -> Option<ClassId> {
        self.states
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
            .map(|i| ClassId(i as u8))
    }

    /// A request of `class` arrived: the class is active. The store is
    /// skipped while the mark is fresh, so concurrent admissions do not
    /// fight over the cache line.
    #[inline]
    pub(super) fn arrive(&self, class: ClassId, now: Nanos) {
        self.states[class.index()]
            .last_seen
            .refresh(now, self.window / 8);
    }

    /// Counts one more request of `class` in flight; returns the new count.
    #[inline]
    pub(super) fn enter(&self, class: ClassId) -> usize {
        self.states[class.index()]
            .inflight
            .fetch_add(1, Ordering::SeqCst)
            + 1
    }

    /// A request of `class` was admitted with `in_c` of the class in
    /// flight: the smoothed load moves 1/64 of the way there. Kept only for
    /// classes with a lower one, the only ones that need a headroom. A racy
    /// read-modify-write: a lost update only delays the average.
    #[inline]
    pub(super) fn admitted(&self, class: ClassId, in_c: usize) {
        let ci = class.index();
        if ci + 1 < self.states.len() {
            let load = &self.states[ci].load;
            let old = load.load(Ordering::Relaxed);
            load.store(old - old / 64 + in_c, Ordering::Relaxed);
        }
    }

    /// Counts one request of `class` fewer in flight.
    #[inline]
    pub(super) fn leave(&self, class: ClassId) {
        self.states[class.index()]
            .inflight
            .fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether `class`, now `in_c` in flight counting the new request, may
    /// hold that many at limit `limit` with `total` in flight in all
    /// (counting it too): always within its reservation, beyond it only by
    /// the borrowing rule. `constrained` is asked only for a borrower below
    /// the first class.
    #[inline]
    pub(super) fn may_hold(
        &self,
        class: ClassId,
        (in_c, total): (usize, usize),
        limit: usize,
        constrained: impl FnOnce() -> bool,
        now: Nanos,
    ) -> bool {
        let ci = class.index();
        in_c <= self.reserved_at(ci, limit)
            || self.may_borrow(ci, in_c, total - 1, limit, constrained, now)
    }

    /// The borrowing rule of the module doc: borrowing never takes an
    /// active class's unused reservation. `before` is the total in flight
    /// before the borrower.
    fn may_borrow(
        &self,
        ci: usize,
        in_c: usize,
        before: usize,
        limit: usize,
        constrained: impl FnOnce() -> bool,
        now: Nanos,
    ) -> bool {
        // While the bottleneck itself says it is saturated, lower classes
        // keep only their own reservations: batch is shed before
        // interactive loses anything.
        if ci > 0 && constrained() {
            return false;
        }
        // Priority for the shared part: while a higher class is wanting,
        // this one may borrow only if it leaves that class its headroom.
        if self.states[..ci]
            .iter()
            .any(|h| self.wanting(h, before, limit, now))
        {
            return false;
        }
        let mut need = in_c;
        for (oi, o) in self.states.iter().enumerate() {
            if oi == ci {
                continue;
            }
            let in_o = o.inflight.load(Ordering::SeqCst);
            need += if o.last_seen.within(self.window, now) {
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

    fn reserved_at(&self, class: usize, limit: usize) -> usize {
        limit * self.states[class].reserved_permille / 1000
    }

    /// Whether `c` is wanting now, with `inflight` in flight at `limit`: it
    /// was refused or queued within the idle window, and no more slots are
    /// free than its headroom (see `headroom.rs`), sized by the slots it
    /// holds on average.
    #[inline]
    fn wanting(&self, c: &ClassState, inflight: usize, limit: usize, now: Nanos) -> bool {
        if !c.last_wanting.within(self.window, now) {
            return false;
        }
        let free = limit.saturating_sub(inflight);
        let load = (c.load.load(Ordering::Relaxed) + 32) / 64;
        free <= headroom(load, inflight, limit)
    }

    /// `class` was refused or queued for lack of a slot: until it has gone
    /// a whole idle window without that, lower classes borrow beyond their
    /// reservations only while they leave it its headroom.
    pub(super) fn note_wanting(&self, class: ClassId, now: Nanos) {
        self.states[class.index()].last_wanting.set(now);
    }

    /// Counts a refusal of `class`.
    pub(super) fn count_refusal(&self, class: ClassId, reason: Reason) {
        self.states[class.index()].counters.rejections[reason.index()]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a finished request of `class`.
    #[inline]
    pub(super) fn count_outcome(&self, class: ClassId, outcome: Outcome) {
        self.states[class.index()].counters.outcomes[outcome.index()]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Per-class figures at limit `limit` with `inflight` in flight,
    /// highest priority first.
    pub(super) fn snapshot(&self, limit: usize, inflight: usize, now: Nanos) -> Vec<ClassSnapshot> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.states
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let wanting = self.wanting(c, inflight, limit, now);
                let inflight = c.inflight.load(Ordering::Acquire);
                let outcomes = c.counters.outcomes.each_ref().map(load);
                ClassSnapshot {
                    name: c.name.clone(),
                    reserved: self.reserved_at(i, limit),
                    inflight,
                    active: c.last_seen.within(self.window, now),
                    wanting,
                    // Derived rather than counted: one atomic less per
                    // admission.
                    admitted: outcomes.iter().sum::<u64>() + inflight as u64,
                    outcomes,
                    rejections: c.counters.rejections.each_ref().map(load),
                }
            })
            .collect()
    }
}
