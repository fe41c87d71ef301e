//! Counters of the refusals the limiter does not count itself.
//!
//! The limiter counts its own rejections per class (no slot, tenant over its
//! share, queue full or timed out). Everything else floodwall answers itself
//! (an upstream that failed, a hostile tenant id, Redis saying no, a request
//! that matched no route) is counted here: one atomic per class and reason,
//! so counting a refusal on the hot path takes no lock and allocates nothing.

use super::respond::Refusal;
use std::sync::atomic::{AtomicU64, Ordering};

/// The reasons counted here, in one fixed order (the column of a row).
const COUNTED: [&str; 16] = [
    "upstream_unavailable",
    "upstream_timeout",
    "invalid_tenant_id",
    "no_route",
    "global_limit_exceeded",
    "store_unavailable",
    "missing_host",
    "duplicate_host",
    "invalid_host",
    "invalid_path",
    "body_timeout",
    "invalid_body",
    "upgrade_unsupported",
    "circuit_open",
    "bulkhead_full",
    "retry_budget_exhausted",
];

fn column(refusal: &Refusal) -> Option<usize> {
    match refusal {
        // The limiter counted it already.
        Refusal::Rejected(_) => None,
        Refusal::UpstreamUnavailable => Some(0),
        Refusal::UpstreamTimeout => Some(1),
        Refusal::InvalidTenantId => Some(2),
        Refusal::NoRoute => Some(3),
        Refusal::GlobalLimitExceeded => Some(4),
        Refusal::StoreUnavailable => Some(5),
        Refusal::MissingHost => Some(6),
        Refusal::DuplicateHost => Some(7),
        Refusal::InvalidHost => Some(8),
        Refusal::InvalidPath => Some(9),
        Refusal::BodyTimeout => Some(10),
        Refusal::InvalidBody => Some(11),
        Refusal::UpgradeUnsupported => Some(12),
        Refusal::CircuitOpen(_) => Some(13),
        Refusal::BulkheadFull(_) => Some(14),
        Refusal::RetryBudgetExhausted(_) => Some(15),
    }
}

/// Refusals by class (the row: a class's index, or 0 for the one row of
/// unrouted requests) and reason.
#[derive(Debug)]
pub struct RefusalCounters {
    rows: Box<[[AtomicU64; COUNTED.len()]]>,
}

impl RefusalCounters {
    /// Counters for `rows` classes, all zero.
    pub fn new(rows: usize) -> Self {
        Self {
            rows: (0..rows.max(1)).map(|_| Default::default()).collect(),
        }
    }

    /// Counts `refusal` against row `row`. A limiter rejection is not
    /// counted (the limiter did), nor is a row out of range.
    pub fn count(&self, row: usize, refusal: &Refusal) {
        if let (Some(c), Some(r)) = (column(refusal), self.rows.get(row)) {
            r[c].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every non-zero count as (row, reason, count), rows in order.
    pub fn counts(&self) -> impl Iterator<Item = (usize, &'static str, u64)> + '_ {
        self.rows.iter().enumerate().flat_map(|(row, r)| {
            COUNTED
                .iter()
                .zip(r)
                .map(move |(reason, n)| (row, *reason, n.load(Ordering::Relaxed)))
                .filter(|(_, _, n)| *n > 0)
        })
    }
}

/// The admission decisions shadow mode computes, whose would-be refusals
/// are counted: the gate's, the global limit's, the breaker's, the
/// bulkhead's and the retry budget's.
const SHADOWED: [&str; 9] = [
    "wip_limit_exceeded",
    "tenant_limit_exceeded",
    "queue_full",
    "queue_timeout",
    "global_limit_exceeded",
    "store_unavailable",
    "circuit_open",
    "bulkhead_full",
    "retry_budget_exhausted",
];

/// A shadow-mode route's would-be refusals by reason
/// (`floodwall_shadow_refusals_total`): one atomic each, so counting on
/// the hot path takes no lock.
#[derive(Debug, Default)]
pub struct ShadowCounters {
    counts: [AtomicU64; SHADOWED.len()],
}

impl ShadowCounters {
    /// Counts a would-be refusal; false for a reason shadow mode does not
    /// pass (a malformed request is refused in either mode).
    pub fn count(&self, refusal: &Refusal) -> bool {
        match SHADOWED.iter().position(|r| *r == refusal.reason()) {
            Some(i) => {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Every reason with its count, zeros included (so the family exists
    /// as soon as a route is in shadow mode).
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        SHADOWED
            .iter()
            .zip(&self.counts)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodwall_core::{Reason, Rejection};
    use std::time::Duration;

    #[test]
    fn counts_by_row_and_reason_and_leaves_rejections_to_the_limiter() {
        let c = RefusalCounters::new(2);
        c.count(1, &Refusal::UpstreamTimeout);
        c.count(1, &Refusal::UpstreamTimeout);
        c.count(0, &Refusal::StoreUnavailable);
        c.count(7, &Refusal::NoRoute);
        c.count(
            0,
            &Refusal::Rejected(Rejection {
                reason: Reason::QueueFull,
                retry_after: Duration::ZERO,
            }),
        );
        let all: Vec<_> = c.counts().collect();
        assert_eq!(
            all,
            vec![(0, "store_unavailable", 1), (1, "upstream_timeout", 2)]
        );
        let breaker = floodwall_core::Breaker::new(
            "u",
            floodwall_core::BreakerConfig::default(),
            std::sync::Arc::new(floodwall_core::ManualClock::new()),
        )
        .unwrap();
        for _ in 0..3 {
            breaker.try_call().unwrap().failure();
        }
        let bulkhead =
            floodwall_core::Bulkhead::new("u", floodwall_core::bulkhead::Capacity::Tickets(1))
                .unwrap();
        let _held = bulkhead.try_acquire().unwrap();
        let budget = floodwall_core::RetryBudget::new(
            floodwall_core::RetryBudgetConfig {
                min_per_s: 0,
                ..Default::default()
            },
            std::sync::Arc::new(floodwall_core::ManualClock::new()),
        )
        .unwrap();
        let every = [
            Refusal::UpstreamUnavailable,
            Refusal::UpstreamTimeout,
            Refusal::InvalidTenantId,
            Refusal::NoRoute,
            Refusal::GlobalLimitExceeded,
            Refusal::StoreUnavailable,
            Refusal::MissingHost,
            Refusal::DuplicateHost,
            Refusal::InvalidHost,
            Refusal::InvalidPath,
            Refusal::BodyTimeout,
            Refusal::InvalidBody,
            Refusal::UpgradeUnsupported,
            Refusal::CircuitOpen(breaker.try_call().unwrap_err()),
            Refusal::BulkheadFull(bulkhead.try_acquire().unwrap_err()),
            Refusal::RetryBudgetExhausted(budget.try_retry().unwrap_err()),
        ];
        for (i, refusal) in every.iter().enumerate() {
            assert_eq!(column(refusal), Some(i));
            assert_eq!(COUNTED[i], refusal.reason());
        }
    }
}
