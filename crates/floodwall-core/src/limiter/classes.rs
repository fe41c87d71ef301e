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
//! Borrowing is also strict priority: while a higher class has been refused
//! or queued within the idle window, a lower class keeps to its own
//! reservation, so under overload batch gets what interactive leaves, not an
//! equal fight for it. And while an outside constraint is set (a bottleneck
//! probe reports saturation), classes below the first may not borrow at all,
//! so lower priorities are shed first.

use super::config::ClassSpec;
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

    /// Counts one request of `class` fewer in flight.
    #[inline]
    pub(super) fn leave(&self, class: ClassId) {
        self.states[class.index()]
            .inflight
            .fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether `class`, now `in_c` in flight counting the new request, may
    /// hold that many at limit `limit`: always within its reservation,
    /// beyond it only by the borrowing rule. `constrained` is asked only
    /// for a borrower below the first class.
    #[inline]
    pub(super) fn may_hold(
        &self,
        class: ClassId,
        in_c: usize,
        limit: usize,
        constrained: impl FnOnce() -> bool,
        now: Nanos,
    ) -> bool {
        let ci = class.index();
        in_c <= self.reserved_at(ci, limit) || self.may_borrow(ci, in_c, limit, constrained, now)
    }

    /// The borrowing rule of the module doc: borrowing never takes an
    /// active class's unused reservation.
    fn may_borrow(
        &self,
        ci: usize,
        in_c: usize,
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
        // Strict priority for the shared part: a higher class that wanted a
        // slot recently gets it before this one may borrow.
        if self.states[..ci]
            .iter()
            .any(|h| h.last_wanting.within(self.window, now))
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

    /// `class` was refused or queued for lack of a slot: lower classes stop
    /// borrowing beyond their reservations until it has gone a whole idle
    /// window without that, so shared capacity goes to the higher class.
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

    /// Per-class figures at limit `limit`, highest priority first.
    pub(super) fn snapshot(&self, limit: usize, now: Nanos) -> Vec<ClassSnapshot> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.states
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let inflight = c.inflight.load(Ordering::Acquire);
                let outcomes = c.counters.outcomes.each_ref().map(load);
                ClassSnapshot {
                    name: c.name.clone(),
                    reserved: self.reserved_at(i, limit),
                    inflight,
                    active: c.last_seen.within(self.window, now),
                    wanting: c.last_wanting.within(self.window, now),
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
