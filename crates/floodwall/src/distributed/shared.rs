//! What distributed mode's parts share: the backend and config
//! ([`Shared`]), each route's state ([`RouteEntry`]) and the handle a route
//! owns on it ([`GlobalLimit`]). `lease.rs`, `strict.rs` and the renew loop
//! all work on these, and none of them on each other.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use floodwall_core::Limiter;
use tokio::time::Instant;

use super::redis::{Backend, RouteKeys, StoreError};
use crate::config::StoreConfig;

/// One route's part of the global limit: what its requests (strict mode)
/// and the renew loop share.
#[derive(Debug)]
pub(super) struct RouteEntry {
    pub(super) name: String,
    pub(super) limiter: Arc<Limiter>,
    pub(super) global: usize,
    pub(super) keys: RouteKeys,
    /// Strict mode: slots granted, being asked for, or admitted locally
    /// during an outage by this replica: the upper bound `heartbeat.lua`
    /// reconciles Redis to.
    pub(super) held: AtomicUsize,
    pub(super) state: Mutex<LeaseState>,
    /// The route's configured tenant quotas, each leased like the route.
    pub(super) tenants: Vec<TenantEntry>,
}

/// One configured tenant quota of a route: a global limit of its own
/// (`max`), whose share this replica holds as the tenant's cap in the
/// route's limiter ([`Limiter::set_tenant_quota`]).
#[derive(Debug)]
pub(super) struct TenantEntry {
    pub(super) tenant: String,
    pub(super) global: usize,
    pub(super) keys: RouteKeys,
    pub(super) state: Mutex<LeaseState>,
}

/// What the renew loop knows about one route.
#[derive(Debug, Default)]
pub(super) struct LeaseState {
    /// When the first renewal succeeded (the join ramp counts from it).
    pub(super) joined: Option<Instant>,
    /// The last grant, while its lease lasts.
    pub(super) grant: Option<usize>,
    /// Until when the last grant is ours: sent + lease_ttl.
    pub(super) lease_until: Option<Instant>,
    /// Live members at the last successful call (1 before any).
    pub(super) replicas: usize,
    /// The demand last published.
    pub(super) demand: usize,
    /// What Redis counts against this replica.
    pub(super) usage: usize,
    /// This replica's fair share at Redis's last fill (`lease.lua`).
    pub(super) fair: Option<usize>,
    /// Peak in flight since the last renewal.
    pub(super) peak: usize,
    /// Refusals for lack of room counted at the last renewal.
    pub(super) refused_seen: u64,
    /// The replica count known when Redis last stopped answering, kept
    /// until the resync after it is over (see `distributed/mod.rs`,
    /// "Resync").
    pub(super) before_failure: Option<Option<usize>>,
    /// While resyncing, the most a grant may set the share to.
    pub(super) resync_cap: Option<usize>,
}

impl LeaseState {
    /// The live member count, once a call has succeeded (`joined`); before
    /// that it is unknown, whatever `replicas` holds.
    pub(super) fn known_replicas(&self) -> Option<usize> {
        self.joined.map(|_| self.replicas.max(1))
    }
}

/// What the renew loop and every route's [`GlobalLimit`] share: the
/// config, this replica's id, the Redis backend and the last error.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) config: StoreConfig,
    pub(super) id: String,
    pub(super) backend: Backend,
    pub(super) last_error: Mutex<Option<String>>,
}

impl Shared {
    pub(super) fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// Records a call's result; true if it succeeded. A failure is logged
    /// once per distinct error while Redis stays down.
    pub(super) fn note(&self, result: Result<(), StoreError>) -> bool {
        match result {
            Ok(()) => true,
            Err(e) => {
                let msg = e.to_string();
                let mut last = lock(&self.last_error);
                if last.as_deref() != Some(&msg) || self.backend.up.load(Ordering::Acquire) {
                    tracing::warn!(error = %msg, "store call failed");
                }
                *last = Some(msg);
                false
            }
        }
    }
}

/// A route's handle on its part of the global limit. The route owns it;
/// the proxy asks it after the route's limiter admitted a request
/// ([`GlobalLimit::admit`]).
#[derive(Debug, Clone)]
pub struct GlobalLimit {
    pub(super) shared: Arc<Shared>,
    pub(super) route: Arc<RouteEntry>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `redis://user:secret@host` → `redis://***@host`, for `/status`. The
/// config's own helper, which also redacts the URL in its errors.
pub(super) use crate::config::redact_url as redact;
