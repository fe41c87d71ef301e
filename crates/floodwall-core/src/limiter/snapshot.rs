//! A point-in-time view of a limiter, for `/status` and `/metrics`.

use crate::limit::Decision;
use std::time::Duration;

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
    /// window and the free slots are within its headroom: lower classes may
    /// not borrow now.
    pub wanting: bool,
    /// Requests admitted since start.
    pub admitted: u64,
    /// Finished requests by outcome, in [`Outcome::ALL`](crate::Outcome::ALL)
    /// order.
    pub outcomes: [u64; 4],
    /// Refusals by reason, in [`Reason::ALL`](super::Reason::ALL) order.
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
    /// Tenants holding at least one counted slot (entries in the tenant
    /// table).
    pub tenants_active: usize,
    /// Whether the tenant rule is being enforced right now.
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
