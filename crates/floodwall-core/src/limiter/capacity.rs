//! The effective limit: what the algorithm says, capped from outside.
//!
//! Three terms make the limit admission reads:
//!
//! - the algorithm's own figure (at least 1);
//! - an outside constraint, set by bottleneck probes when the shared
//!   resource itself reports saturation;
//! - this replica's share of a global limit (distributed mode), which
//!   unlike the others may be 0, when other replicas hold all of it.
//!
//! The effective limit is `min(max(min(algorithm, constraint), 1), share)`,
//! kept in its own atomic and recomputed whenever a term changes, so an
//! admission reads one word. Lowering it never cuts admitted requests; the
//! gate drains down as they finish.

use std::sync::atomic::{AtomicUsize, Ordering};

/// "No cap" for the constraint and the share.
const NONE: usize = usize::MAX;

/// The terms of the effective limit and the limit itself, in atomics.
#[derive(Debug)]
pub(super) struct Capacity {
    /// The algorithm's latest limit.
    algorithm: AtomicUsize,
    /// An outside cap (bottleneck probes); `NONE` when none.
    constraint: AtomicUsize,
    /// This replica's share of a global limit; `NONE` when there is none.
    share: AtomicUsize,
    /// `min(max(min(algorithm, constraint), 1), share)`: what admission
    /// reads.
    limit: AtomicUsize,
}

impl Capacity {
    /// Capacity at the algorithm's starting limit, with no outside cap.
    pub(super) fn new(algorithm: usize) -> Self {
        let algorithm = algorithm.max(1);
        Self {
            algorithm: AtomicUsize::new(algorithm),
            constraint: AtomicUsize::new(NONE),
            share: AtomicUsize::new(NONE),
            limit: AtomicUsize::new(algorithm),
        }
    }

    /// The effective limit now.
    #[inline]
    pub(super) fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// The algorithm's own figure.
    pub(super) fn algorithm(&self) -> usize {
        self.algorithm.load(Ordering::Acquire)
    }

    /// Takes the algorithm's new figure (at least 1).
    pub(super) fn set_algorithm(&self, limit: usize) {
        // Called on every release, and the limit changes once a window at
        // most: skip the two stores, which would take the cache line every
        // admission reads away from the other cores. The other setters
        // refresh for themselves, so nothing is lost when this skips.
        let limit = limit.max(1);
        if self.algorithm.load(Ordering::Relaxed) != limit {
            self.algorithm.store(limit, Ordering::Release);
            self.refresh();
        }
    }

    /// The outside constraint, if one is set.
    pub(super) fn constraint(&self) -> Option<usize> {
        some(self.constraint.load(Ordering::Acquire))
    }

    /// Whether an outside constraint is set; read on the borrowing path,
    /// where a stale answer only refuses or admits one borrower more.
    #[inline]
    pub(super) fn is_constrained(&self) -> bool {
        self.constraint.load(Ordering::Relaxed) != NONE
    }

    /// Sets or lifts (`None`) the outside constraint.
    pub(super) fn set_constraint(&self, constraint: Option<usize>) {
        self.constraint
            .store(constraint.unwrap_or(NONE), Ordering::Release);
        self.refresh();
    }

    /// This replica's share, if one is set.
    pub(super) fn share(&self) -> Option<usize> {
        some(self.share.load(Ordering::Acquire))
    }

    /// Sets or lifts (`None`) this replica's share.
    pub(super) fn set_share(&self, share: Option<usize>) {
        self.share.store(share.unwrap_or(NONE), Ordering::Release);
        self.refresh();
    }

    fn refresh(&self) {
        let algo = self.algorithm.load(Ordering::Acquire);
        let cap = self.constraint.load(Ordering::Acquire);
        let share = self.share.load(Ordering::Acquire);
        self.limit
            .store(algo.min(cap).max(1).min(share), Ordering::Release);
    }
}

fn some(n: usize) -> Option<usize> {
    (n != NONE).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_the_smallest_term_at_least_one_unless_the_share_is_zero() {
        let c = Capacity::new(8);
        assert_eq!((c.limit(), c.algorithm()), (8, 8));
        c.set_constraint(Some(0));
        assert_eq!(c.limit(), 1, "a constraint never closes the gate");
        assert!(c.is_constrained());
        c.set_share(Some(0));
        assert_eq!(c.limit(), 0, "a share of 0 does");
        c.set_share(None);
        c.set_constraint(None);
        c.set_algorithm(0);
        assert_eq!((c.limit(), c.algorithm()), (1, 1));
        assert_eq!((c.constraint(), c.share()), (None, None));
    }
}
