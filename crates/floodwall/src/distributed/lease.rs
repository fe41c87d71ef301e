//! Lease mode: one renewal per route every `renew_interval`, which sets the
//! route limiter's share. Requests never wait on Redis.

use std::time::Duration;

use floodwall_core::{Limiter, Reason};
use tokio::time::Instant;

use super::redis::{Ask, StoreError};
use super::share;
use super::shared::{lock, RouteEntry, Shared};

/// Refusals for lack of room over every class, the queue depth and the
/// algorithm's limit: what the demand is computed from.
fn pressure(limiter: &Limiter) -> (u64, usize, usize) {
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
    (n, s.queue_depth, s.algorithm_limit)
}

/// Renews this replica's lease on `r`: publishes its demand, asks for its
/// fair share and applies the grant (see the module doc of `distributed`
/// for why the share is lowered before asking).
pub(super) async fn renew(shared: &Shared, r: &RouteEntry) -> Result<(), StoreError> {
    let now = Instant::now();
    let (refusals, queued, algorithm_limit) = pressure(&r.limiter);
    let ask = {
        let mut st = lock(&r.state);
        let refused = refusals > st.refused_seen || queued > 0;
        st.refused_seen = refusals;
        let since = st.joined.map_or(Duration::ZERO, |j| now - j);
        let cap = share::ramp_cap(r.global, since, shared.config.join_ramp);
        let peak = st.peak.max(r.limiter.inflight());
        let demand = share::demand(peak, refused, algorithm_limit, r.global, cap);
        let mut demands: Vec<(String, usize)> = st
            .demands
            .iter()
            .filter(|(id, _)| *id != shared.id)
            .cloned()
            .collect();
        demands.push((shared.id.clone(), demand));
        demands.sort();
        let me = demands.iter().position(|(id, _)| *id == shared.id).unwrap();
        let values: Vec<usize> = demands.iter().map(|(_, d)| *d).collect();
        let want = share::water_fill(r.global, &values)[me];
        // Lower before asking, so nothing is admitted above what Redis
        // will count for us while the call is in flight.
        let lowered = r.limiter.share().unwrap_or(r.global).min(want);
        r.limiter.set_share(Some(lowered));
        st.demand = demand;
        Ask {
            want,
            floor: lowered.max(r.limiter.inflight()),
            demand,
        }
    };
    let sent = Instant::now();
    let renewal = shared
        .backend
        .renew(&r.keys, &shared.id, r.global, shared.config.lease_ttl, ask)
        .await?;
    r.limiter.set_share(Some(renewal.grant));
    let mut st = lock(&r.state);
    st.grant = Some(renewal.grant);
    st.lease_until = Some(sent + shared.config.lease_ttl);
    st.replicas = renewal.demands.len().max(1);
    st.usage = renewal.usage;
    st.demands = renewal.demands;
    st.joined.get_or_insert(sent);
    st.peak = r.limiter.inflight();
    Ok(())
}
