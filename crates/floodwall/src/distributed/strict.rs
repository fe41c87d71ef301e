//! Strict mode: one Redis call per admitted request (`acquire.lua`), a
//! slot given back when the response ends (`release.lua`), and a heartbeat
//! per route that reconciles Redis's count with this replica's.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::Instant;

use super::redis::StoreError;
use super::share;
use super::shared::{lock, GlobalLimit, RouteEntry, Shared};
use crate::config::{StoreFailure, StoreMode};

/// Why distributed mode refused a request its route's limiter admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Strict mode: Redis says the route's global limit is full.
    GlobalLimitExceeded,
    /// `on_store_failure = "closed"`: Redis is unreachable, so nothing is
    /// admitted.
    StoreUnavailable,
}

/// A strict-mode slot of a global limit; dropping it releases the slot in
/// Redis (asynchronously, never blocking the response).
#[derive(Debug)]
pub struct Slot {
    shared: Arc<Shared>,
    route: Arc<RouteEntry>,
    /// Whether Redis counted it (else it was admitted during an outage).
    in_redis: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.in_redis {
            self.route.held.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                let (shared, route) = (self.shared.clone(), self.route.clone());
                h.spawn(async move {
                    // A lost release is healed by the next heartbeat, which
                    // sets Redis's count to ours.
                    let _ = shared.backend.release(&route.keys, &shared.id).await;
                    route.held.fetch_sub(1, Ordering::AcqRel);
                });
            }
            Err(_) => {
                self.route.held.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl GlobalLimit {
    /// The admission step of distributed mode, after the route's limiter
    /// admitted the request. Lease mode answers at once (`Ok(None)`: the
    /// share already capped the limiter). Strict mode asks Redis
    /// (`acquire.lua`) unless Redis is known to be down, and returns a
    /// slot, given back when it drops: granted by Redis, or by the failure
    /// policy while Redis is unreachable (then counted by the next
    /// heartbeat, so Redis knows of it once it is back).
    pub async fn admit(&self) -> Result<Option<Slot>, Refused> {
        let shared = &self.shared;
        if shared.config.mode == StoreMode::Lease {
            return Ok(None);
        }
        let r = &self.route;
        let slot = |in_redis| Slot {
            shared: shared.clone(),
            route: r.clone(),
            in_redis,
        };
        let unavailable = || match shared.config.on_store_failure {
            StoreFailure::Closed => Err(Refused::StoreUnavailable),
            // `local`: this replica's part of the global limit, as in lease
            // mode, `max(1, global ÷ last known replica count)`, slots it
            // already holds included. Admitting up to the whole local
            // limit let three replicas hold up to three times the global
            // limit whenever Redis answered slower than `store.timeout`.
            //
            // The slot is also noted in Redis at once, unconditionally
            // (`acquire.lua` with no limit), on a task: when Redis is slow
            // rather than gone, the note runs about when the other
            // replicas' calls do, so they do not hand this slot out again
            // while this replica waits for its next heartbeat. The note
            // can only over-count (the slot is released locally, and the
            // heartbeat sets Redis's count back to ours), never under-count.
            StoreFailure::Local => {
                let replicas = lock(&r.state).known_replicas();
                let part = share::fallback_share(r.global, replicas);
                if r.held.fetch_add(1, Ordering::AcqRel) >= part {
                    r.held.fetch_sub(1, Ordering::AcqRel);
                    return Err(Refused::GlobalLimitExceeded);
                }
                let (s, route) = (shared.clone(), r.clone());
                tokio::spawn(async move {
                    let ttl = s.config.lease_ttl;
                    let _ = s.backend.acquire(&route.keys, &s.id, usize::MAX, ttl).await;
                });
                Ok(Some(slot(false)))
            }
            StoreFailure::Open => {
                r.held.fetch_add(1, Ordering::AcqRel);
                Ok(Some(slot(false)))
            }
        };
        if !shared.backend.up.load(Ordering::Acquire) {
            // The renew loop probes Redis; requests do not wait on a Redis
            // known to be failing.
            return unavailable();
        }
        r.held.fetch_add(1, Ordering::AcqRel);
        match shared
            .backend
            .acquire(&r.keys, &shared.id, r.global, shared.config.lease_ttl)
            .await
        {
            Ok(true) => Ok(Some(slot(true))),
            Ok(false) => {
                r.held.fetch_sub(1, Ordering::AcqRel);
                Err(Refused::GlobalLimitExceeded)
            }
            Err(e) => {
                r.held.fetch_sub(1, Ordering::AcqRel);
                shared.note(Err(e));
                unavailable()
            }
        }
    }
}

/// The heartbeat of `r`: renews this replica's lease and sets Redis's held
/// count to ours (see `heartbeat.lua`).
pub(super) async fn renew(shared: &Shared, r: &RouteEntry) -> Result<(), StoreError> {
    let held = r.held.load(Ordering::Acquire);
    let sent = Instant::now();
    let n = shared
        .backend
        .heartbeat(&r.keys, &shared.id, shared.config.lease_ttl, held)
        .await?;
    // Strict mode decides in Redis; the local limiter only needs the
    // global limit, which the route's own limit already is.
    r.limiter.set_share(None);
    let mut st = lock(&r.state);
    st.replicas = n.max(1);
    st.usage = held;
    st.lease_until = Some(sent + shared.config.lease_ttl);
    st.joined.get_or_insert(sent);
    Ok(())
}
