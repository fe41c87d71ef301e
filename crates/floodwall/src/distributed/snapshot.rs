//! What distributed mode shows of itself: plain data for `/status` and
//! `/metrics`, which render it.

use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;

use crate::config::{StoreFailure, StoreMode};

/// Distributed mode at one instant.
#[derive(Debug, Clone)]
pub struct DistributedSnapshot {
    /// The Redis URL, password redacted.
    pub url: String,
    /// Lease or strict.
    pub mode: StoreMode,
    /// This replica's id in Redis.
    pub replica_id: String,
    /// `up` after a successful call, `down` after a failed one, `starting`
    /// before either.
    pub state: &'static str,
    /// Whether the last Redis call succeeded.
    pub up: bool,
    /// The policy while Redis is unreachable.
    pub on_store_failure: StoreFailure,
    /// The last call's error, cleared by a round of successful renewals.
    pub last_error: Option<String>,
    /// Redis commands sent (one per script call).
    pub commands: u64,
    /// Calls that failed or timed out.
    pub errors: u64,
    /// Times the primary behind Sentinel changed.
    pub switches: u64,
    /// Commands per admitted request since start, over every route.
    pub commands_per_admitted: f64,
    /// The live round-trip histogram (a handle: histograms cannot be read
    /// back, only encoded).
    pub latency: Histogram,
    /// Per route, in the order routes joined.
    pub routes: Vec<RouteSnapshot>,
}

/// One route's part of the global limit.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSnapshot {
    /// The route name.
    pub route: String,
    /// The route's global limit, shared by every replica.
    pub global_limit: usize,
    /// Live replicas at the last successful call.
    pub replicas: usize,
    /// The share the route's limiter is capped at now (`None`: no cap).
    pub share: Option<usize>,
    /// The last grant (lease mode).
    pub grant: Option<usize>,
    /// What Redis counts against this replica.
    pub usage: usize,
    /// The demand last published.
    pub demand: usize,
    /// Requests in flight on the route now.
    pub inflight: usize,
    /// How long the last lease is still ours.
    pub lease_left: Option<Duration>,
}
