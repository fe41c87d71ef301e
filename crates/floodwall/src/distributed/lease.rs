//! Lease mode: one renewal per route every `renew_interval`, which sets the
//! route limiter's share. Requests never wait on Redis. A route's
//! configured tenant quotas are leased the same way, each its own global
//! limit, their shares set as the tenants' caps in the route's limiter.

use std::sync::Mutex;
use std::time::Duration;

use floodwall_core::{Limiter, Reason};
use tokio::time::Instant;

use super::redis::{Ask, RouteKeys, StoreError};
use super::share;
use super::shared::{lock, LeaseState, RouteEntry, Shared, TenantEntry};

/// What a renewal reads from, and writes to, the thing whose share it
/// leases: a route's limiter, or one tenant's quota in it.
trait Leased {
    fn global(&self) -> usize;
    fn keys(&self) -> &RouteKeys;
    fn state(&self) -> &Mutex<LeaseState>;
    /// Refusals for lack of room ever, whether requests are queued, the
    /// most it could use locally, and its peak in flight since the last
    /// renewal (which it may reset).
    fn pressure(&self) -> (u64, bool, usize, usize);
    /// In flight now.
    fn inflight(&self) -> usize;
    fn share(&self) -> Option<usize>;
    fn set_share(&self, share: usize);
}

struct RouteLease<'a>(&'a RouteEntry);

impl Leased for RouteLease<'_> {
    fn global(&self) -> usize {
        self.0.global
    }
    fn keys(&self) -> &RouteKeys {
        &self.0.keys
    }
    fn state(&self) -> &Mutex<LeaseState> {
        &self.0.state
    }
    /// Refusals for lack of room over every class (a tenant's own refusals
    /// are not room the route lacks), the queue and the algorithm's limit.
    fn pressure(&self) -> (u64, bool, usize, usize) {
        let limiter: &Limiter = &self.0.limiter;
        let s = limiter.snapshot();
        let n = s
            .classes
            .iter()
            .map(|c| {
                Reason::ALL
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| **r != Reason::TenantLimitExceeded)
                    .map(|(i, _)| c.rejections[i])
                    .sum::<u64>()
            })
            .sum();
        let peak = lock(&self.0.state).peak.max(limiter.inflight());
        (n, s.queue_depth > 0, s.algorithm_limit, peak)
    }
    fn inflight(&self) -> usize {
        self.0.limiter.inflight()
    }
    fn share(&self) -> Option<usize> {
        self.0.limiter.share()
    }
    fn set_share(&self, share: usize) {
        self.0.limiter.set_share(Some(share));
    }
}

struct TenantLease<'a>(&'a Limiter, &'a TenantEntry);

impl Leased for TenantLease<'_> {
    fn global(&self) -> usize {
        self.1.global
    }
    fn keys(&self) -> &RouteKeys {
        &self.1.keys
    }
    fn state(&self) -> &Mutex<LeaseState> {
        &self.1.state
    }
    /// The quota's own refusals and peak (kept by the limiter, which
    /// counts a capped tenant's slots exactly); it could use its whole
    /// global quota.
    fn pressure(&self) -> (u64, bool, usize, usize) {
        match self.0.observe_tenant_quota(&self.1.tenant) {
            Some(u) => (u.refused, false, self.1.global, u.peak),
            None => (0, false, self.1.global, 0),
        }
    }
    fn inflight(&self) -> usize {
        self.0
            .observe_tenant_quota(&self.1.tenant)
            .map_or(0, |u| u.held)
    }
    fn share(&self) -> Option<usize> {
        self.0.observe_tenant_quota(&self.1.tenant).map(|u| u.cap)
    }
    fn set_share(&self, share: usize) {
        self.0.set_tenant_quota(&self.1.tenant, Some(share));
    }
}

/// Renews this replica's lease on `r`.
pub(super) async fn renew(shared: &Shared, r: &RouteEntry) -> Result<(), StoreError> {
    renew_one(shared, &RouteLease(r)).await?;
    lock(&r.state).peak = r.limiter.inflight();
    Ok(())
}

/// Renews this replica's lease on each of `r`'s tenant quotas (both
/// modes: a quota is always leased).
pub(super) async fn renew_tenants(shared: &Shared, r: &RouteEntry) -> Result<(), StoreError> {
    for t in &r.tenants {
        renew_one(shared, &TenantLease(&r.limiter, t)).await?;
    }
    Ok(())
}

/// Renews this replica's lease on one leased limit: publishes its demand,
/// asks for its fair share and applies the grant (see the module doc of
/// `distributed` for why the share is lowered before asking).
async fn renew_one(shared: &Shared, l: &(dyn Leased + Sync)) -> Result<(), StoreError> {
    let now = Instant::now();
    let global = l.global();
    let (refusals, queued, algorithm_limit, peak) = l.pressure();
    let ask = {
        let mut st = lock(l.state());
        let refused = refusals > st.refused_seen || queued;
        st.refused_seen = refusals;
        let since = st.joined.map_or(Duration::ZERO, |j| now - j);
        let ramp = share::ramp_cap(global, since, shared.config.join_ramp);
        let demand = share::demand(peak, refused, algorithm_limit, global, ramp);
        // While resyncing, asked for no more than the cap, so Redis counts
        // what this replica may use, not a grant it cannot (which would
        // leave the others nothing until its next renewal).
        let cap = st.resync_cap.unwrap_or(global);
        // Lower before asking, so nothing is admitted above what Redis
        // will count for us while the call is in flight: to the fair share
        // of the last fill (Redis computes the shares, `lease.lua`).
        let lowered = l
            .share()
            .unwrap_or(global)
            .min(st.fair.unwrap_or(global))
            .min(cap);
        l.set_share(lowered);
        st.demand = demand;
        Ask {
            cap,
            floor: lowered.max(l.inflight()),
            demand,
        }
    };
    let sent = Instant::now();
    let renewal = shared
        .backend
        .renew(
            l.keys(),
            &shared.id,
            global,
            shared.config.lease_ttl,
            share::fill_interval(shared.config.renew_interval),
            ask,
        )
        .await?;
    // While resyncing, never above the cap (`distributed/mod.rs`,
    // "Resync"), before any request can be admitted under the grant (the
    // ask was capped; the cap may have been set while the call ran).
    let cap = lock(l.state()).resync_cap.unwrap_or(usize::MAX);
    l.set_share(renewal.grant.min(cap));
    let mut st = lock(l.state());
    st.grant = Some(renewal.grant);
    st.lease_until = Some(sent + shared.config.lease_ttl);
    st.replicas = renewal.members;
    st.usage = renewal.usage;
    st.fair = renewal.fair;
    st.joined.get_or_insert(sent);
    Ok(())
}
