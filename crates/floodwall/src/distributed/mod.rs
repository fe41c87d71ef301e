//! Distributed mode: one global WIP limit per route across many floodwall
//! replicas, shared through Redis.
//!
//! # Why leases
//!
//! The Phoenix WIP-gate article counts in-flight requests with a Redis
//! `INCR` + `EXPIRE` per request and a `DECR` when it ends. That costs two round trips per
//! request, leaks forever when a replica crashes between the two (every
//! `INCR` refreshes the `EXPIRE`), and rejects everything when Redis is
//! down. Here, in the default **lease** mode, each replica holds a *share*
//! of the global limit, renewed every `renew_interval` by one Lua call
//! (`lease.lua`); requests are admitted by the local [`Limiter`] capped at
//! that share ([`Limiter::set_share`]), with no Redis round trip (Google
//! Doorman's leases, Gubernator's batching). **Strict** mode keeps one
//! atomic call per request (`acquire.lua`, `release.lua`) for small limits
//! where exactness matters more than latency.
//!
//! # Layout
//!
//! [`Distributed`] holds the Redis backend (`redis.rs`) and the
//! renew loop. Each route owns a [`GlobalLimit`], its handle on its part of
//! the global limit, built when the route is built: the lease renewal
//! (`lease.rs`) and strict mode's per-request slots (`strict.rs`) reach the
//! route's state through it, never by the route's name. The arithmetic of
//! shares is in [`share`], the scripts in `lua/`. A refusal is this
//! module's own [`Refused`]; the proxy maps it to its response.
//!
//! # The lease invariant
//!
//! Redis keeps, per route, each live replica's *usage*: the slots it may
//! hold. A renewal publishes the replica's demand and gets
//! `grant = min(fair, cap, global − Σ others' usage)`, where `fair` is its
//! max-min fair share of the members' demands as Redis last computed it
//! (`lease.lua`'s fill, at most once per [`share::fill_interval`], with
//! [`share::water_fill`]'s arithmetic) and `cap` the global limit or the
//! resync cap. Before sending, the replica lowers its local share to
//! `min(share, fair it last got, cap)` and reports
//! `floor = max(that, in flight now)`; Redis records
//! `usage = max(grant, floor)`. Σ others' usage is a running total kept by
//! the scripts (and recomputed at each fill), so a call costs the same at
//! 10 members as at 1,000. Since a replica admits only below its share,
//! its in flight never exceeds `max(grant, in flight at its last renewal)`
//! ≤ its usage, and `floor` never exceeds its previous usage, so
//! **Σ in flight ≤ Σ usage ≤ global** at all times while Redis is reachable.
//! The lease slack in lease mode is therefore 0 while Redis is up; it is
//! only non-zero under failure (below).
//!
//! # Crash bound
//!
//! A member's lease expires `lease_ttl` after its last renewal (Redis
//! `TIME`). Nothing refreshes a dead replica's lease: the next renewal by
//! anyone purges it with its usage. Its slots are therefore free again
//! within `lease_ttl + renew_interval`, and the survivors' shares have grown
//! into them within `lease_ttl + 2 × renew_interval` (one renewal to see the
//! new membership, one to be granted). A replica that stops gracefully
//! leaves at once (`leave.lua`).
//!
//! # When Redis fails
//!
//! Every call has a deadline (`store.timeout`); the connection manager
//! reconnects, and the renew loop retries with backoff (doubling from
//! `renew_interval`, at most 1 s), resyncing at the first success. Under
//! `on_store_failure = "local"` a replica keeps its last grant until its
//! lease would have expired in Redis (measured from when the renewal was
//! *sent*, so never later than Redis's own expiry), then uses
//! `max(1, global ÷ last known replica count)` ([`share::failure_share`]),
//! or 1 if it has never had an answer (it holds no lease the others count).
//! If every replica loses Redis together, the total is then at most
//! `replicas × max(1, ⌊global ÷ replicas⌋)`, i.e. at most `global` when
//! `global ≥ replicas`. If only some lose it, the others reclaim their
//! expired usage, so the total can exceed `global` by up to the cut-off
//! replicas' fallback shares until Redis returns: that is the documented
//! slack of the `local` policy. `open` lifts the share (only local limits
//! apply); `closed` sets it to 0.
//!
//! # Resync
//!
//! When Redis answers again after a failure, the leases held before may be
//! gone: Redis restarted empty, a promoted replica lacks the old primary's
//! last writes, or they simply expired. The first replica back then sees
//! no one else's usage or demand, and would be granted the whole global
//! limit while the others still serve their fallback shares. So from the
//! failure until `max(lease_ttl, 1 s) + renew_interval` after the first
//! success (every live replica retries at most 1 s apart, so by then all
//! have renewed), a replica asks for and uses at most
//! `fallback_share(global, replicas known before the failure)`. The total
//! then stays within the global limit through the resync.
//!
//! # Failover
//!
//! With `redis+sentinel://` the backend asks the Sentinels where the
//! primary is after any failed call (`redis.rs`). A different primary is a
//! switch: a replica must not assume the leases it held still exist, so it
//! renews every lease at once instead of at the next interval, and the
//! resync above applies (a switch always follows failed calls).
//!
//! Strict mode under `local` caps the same way per request: a replica
//! whose call fails or is late admits only while it holds fewer than
//! `max(1, global ÷ last known replica count)` slots in all (see
//! `strict.rs`), so no answer from Redis never means the whole global
//! limit; docs/config.md states the resulting bounds.
//!
//! # Tenants
//!
//! A tenant listed in `routes.tenant.quotas` has a global limit of its own,
//! leased exactly like the route's (`lease.rs`, three keys in the route's
//! slot), its share set as the tenant's hard cap in the route's limiter
//! ([`Limiter::set_tenant_quota`]). For every other tenant no key is ever
//! written: the per-tenant cap
//! (`routes.tenant.max_share`) is a fraction of the local limit, which the
//! share caps, so a tenant's global footprint is at most about `max_share ×
//! global` and Redis memory does not depend on how many tenant ids clients
//! invent. Keys per route are 4 (+ 3 per configured quota), fields per key
//! one per live replica.

mod lease;
mod redis;
pub mod share;
mod shared;
mod snapshot;
mod strict;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodwall_core::Limiter;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::redis::{Backend, RouteKeys};
use self::shared::{lock, redact, LeaseState, RouteEntry, Shared, TenantEntry};
use crate::config::{LimitConfig, RouteConfig, StoreConfig, StoreMode};

pub use self::redis::StoreError;
pub use shared::GlobalLimit;
pub use snapshot::{DistributedSnapshot, RouteSnapshot};
pub use strict::{Refused, Slot};

/// The global limit a route's config stands for: a fixed limit's value, an
/// adaptive algorithm's `max`.
fn global_limit(limit: &LimitConfig) -> usize {
    limit.ceiling()
}

fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "floodwall".into());
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(32)
        .collect();
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

/// Distributed mode: the Redis backend, every route's part of the global
/// limit, and the renew task.
#[derive(Debug)]
pub struct Distributed {
    shared: Arc<Shared>,
    routes: Vec<Arc<RouteEntry>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Distributed {
    /// Distributed mode for `config` (the `[store]` section), with no
    /// route yet. Connects lazily: a floodwall whose Redis is down at start
    /// still starts, under its failure policy.
    pub fn new(config: &StoreConfig) -> anyhow::Result<Self> {
        let backend = Backend::new(config)
            .map_err(|e| anyhow::anyhow!("store.url {}: {e}", redact(&config.url)))?;
        Ok(Self {
            shared: Arc::new(Shared {
                config: config.clone(),
                id: config.replica_id.clone().unwrap_or_else(default_replica_id),
                backend,
                last_error: Mutex::new(None),
            }),
            routes: Vec::new(),
            stop: watch::channel(false).0,
            task: Mutex::new(None),
        })
    }

    /// Adds `route`, admitted by `limiter`, to the global limits this
    /// replica shares, and returns the handle the route keeps. Call for
    /// every route before [`Distributed::start`].
    pub fn join(&mut self, route: &RouteConfig, limiter: Arc<Limiter>) -> GlobalLimit {
        let entry = Arc::new(RouteEntry {
            name: route.name.clone(),
            limiter,
            global: global_limit(&route.limit),
            keys: RouteKeys::new(&self.shared.config.key_prefix, &route.name),
            held: AtomicUsize::new(0),
            state: Mutex::new(LeaseState {
                replicas: 1,
                ..LeaseState::default()
            }),
            tenants: route
                .tenant
                .quotas
                .iter()
                .map(|q| TenantEntry {
                    tenant: q.tenant.clone(),
                    global: q.max,
                    keys: RouteKeys::for_tenant(
                        &self.shared.config.key_prefix,
                        &route.name,
                        &q.tenant,
                    ),
                    state: Mutex::new(LeaseState {
                        replicas: 1,
                        ..LeaseState::default()
                    }),
                })
                .collect(),
        });
        self.routes.push(entry.clone());
        GlobalLimit {
            shared: self.shared.clone(),
            route: entry,
        }
    }

    /// The first renewal of every route (so no request is admitted beyond a
    /// share this replica does not hold), then the renew loop on its own
    /// task. Call once, inside a tokio runtime, before serving.
    pub async fn start(self: &Arc<Self>) {
        let ok = self.renew_all().await;
        if !ok {
            tracing::warn!(error = ?self.shared.last_error(), "store unreachable at start; serving under on_store_failure");
        }
        let me = self.clone();
        let stop = self.stop.subscribe();
        *lock(&self.task) = Some(tokio::spawn(async move { me.run(stop, ok).await }));
    }

    /// Stops the renew loop and removes this replica from every route, so
    /// its share returns to the others at once.
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let task = lock(&self.task).take();
        if let Some(t) = task {
            let _ = t.await;
        }
        for r in &self.routes {
            let keys = std::iter::once(&r.keys).chain(r.tenants.iter().map(|t| &t.keys));
            for k in keys {
                if let Err(e) = self.shared.backend.leave(k, &self.shared.id).await {
                    tracing::warn!(route = %r.name, error = %e, "could not leave the store; the lease will expire");
                }
            }
        }
    }

    /// The renew loop: samples in-flight peaks, renews every
    /// `renew_interval` (with backoff while failing), and applies the
    /// failure policy while Redis is unreachable.
    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>, mut ok: bool) {
        let every = self.shared.config.renew_interval;
        let sample = (every / 8).max(Duration::from_millis(5));
        let mut backoff = every;
        let mut next = Instant::now() + if ok { every } else { backoff };
        let mut tick = tokio::time::interval(sample);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut switches = self.shared.backend.switches();
        // Until when grants are capped after a resync (see "Resync").
        let mut resync_until: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            for r in &self.routes {
                let mut st = lock(&r.state);
                st.peak = st.peak.max(r.limiter.inflight());
            }
            let now = Instant::now();
            // A new primary (Sentinel failover): the leases written to the
            // old one may be lost with its unreplicated writes, so
            // re-register at once instead of at the next interval.
            let seen = self.shared.backend.switches();
            if seen != switches {
                switches = seen;
                next = now;
            }
            if now >= next {
                let was = ok;
                ok = self.renew_all().await;
                if ok && !was {
                    tracing::info!("store reachable again: resyncing");
                    resync_until = Some(Instant::now() + self.resync_window());
                }
                match resync_until {
                    Some(u) if ok && Instant::now() < u => self.cap_while_resyncing(),
                    Some(_) if ok => {
                        resync_until = None;
                        self.end_resync();
                    }
                    _ => {}
                }
                if ok {
                    backoff = every;
                    next = Instant::now() + every;
                } else {
                    next = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(1)).max(every);
                }
            }
            if !ok {
                self.apply_failure(Instant::now());
            }
        }
    }

    /// Renews every route once. True if every call succeeded.
    async fn renew_all(&self) -> bool {
        let mut all = true;
        for r in &self.routes {
            let result = match self.shared.config.mode {
                StoreMode::Lease => lease::renew(&self.shared, r).await,
                StoreMode::Strict => strict::renew(&self.shared, r).await,
            };
            let result = match result {
                Ok(()) => lease::renew_tenants(&self.shared, r).await,
                e => e,
            };
            all &= self.shared.note(result);
        }
        if all {
            *lock(&self.shared.last_error) = None;
        } else {
            self.apply_failure(Instant::now());
        }
        all
    }

    /// How long a resync caps grants: until every live replica has renewed
    /// since Redis answered again. A failing replica retries at most 1 s
    /// apart, and one whose lease expired meanwhile is gone anyway.
    fn resync_window(&self) -> Duration {
        let c = &self.shared.config;
        c.lease_ttl.max(Duration::from_secs(1)) + c.renew_interval
    }

    /// While resyncing: each route's share (and tenant quota) at most the
    /// fallback share of the replica count known before the failure,
    /// whatever Redis grants (`lease.rs` applies the cap before it sets a
    /// share). The leases held before may be gone (a restarted Redis, a
    /// promoted replica without the last writes, or just expired): the
    /// first replica back then sees no one else's usage or demand and was
    /// granted the whole global limit (19 in flight for a global limit of
    /// 12 through a Sentinel failover, `tests/store.rs`).
    fn cap_while_resyncing(&self) {
        let cap = |st: &Mutex<LeaseState>, global: usize| {
            let mut st = lock(st);
            let before = st.before_failure.flatten();
            let part = share::fallback_share(global, before.max(st.known_replicas()));
            st.resync_cap = Some(part);
            part
        };
        for r in &self.routes {
            let part = cap(&r.state, r.global);
            if let Some(s) = r.limiter.share() {
                r.limiter.set_share(Some(s.min(part)));
            }
            for t in &r.tenants {
                let part = cap(&t.state, t.global);
                if let Some(u) = r.limiter.observe_tenant_quota(&t.tenant) {
                    r.limiter.set_tenant_quota(&t.tenant, Some(u.cap.min(part)));
                }
            }
        }
    }

    /// The resync is over: the next failure records its own count.
    fn end_resync(&self) {
        for r in &self.routes {
            let states = std::iter::once(&r.state).chain(r.tenants.iter().map(|t| &t.state));
            for st in states {
                let mut st = lock(st);
                st.before_failure = None;
                st.resync_cap = None;
            }
        }
    }

    /// Sets every route's share, and every tenant quota's cap, under the
    /// failure policy.
    fn apply_failure(&self, now: Instant) {
        for r in &self.routes {
            // The first grant after Redis answers again is capped already
            // (see "Resync").
            let states = std::iter::once((&r.state, r.global))
                .chain(r.tenants.iter().map(|t| (&t.state, t.global)));
            for (st, global) in states {
                let mut st = lock(st);
                if st.before_failure.is_none() {
                    let known = st.known_replicas();
                    st.before_failure = Some(known);
                    st.resync_cap = Some(share::fallback_share(global, known));
                }
            }
            r.limiter
                .set_share(self.failure_share(&r.state, r.global, now));
            for t in &r.tenants {
                let cap = self.failure_share(&t.state, t.global, now);
                r.limiter.set_tenant_quota(&t.tenant, cap);
            }
        }
    }

    /// [`share::failure_share`] for one leased limit of `global` slots.
    fn failure_share(
        &self,
        state: &Mutex<LeaseState>,
        global: usize,
        now: Instant,
    ) -> Option<usize> {
        let st = lock(state);
        let left = st
            .lease_until
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
        share::failure_share(
            self.shared.config.on_store_failure,
            st.grant,
            left,
            global,
            st.known_replicas(),
        )
    }
}

impl Distributed {
    /// Distributed mode now, for `/status` and `/metrics`.
    pub fn snapshot(&self) -> DistributedSnapshot {
        let now = Instant::now();
        let shared = &self.shared;
        let backend = &shared.backend;
        let up = backend.up.load(Ordering::Acquire);
        let last_error = shared.last_error();
        let state = if up {
            "up"
        } else if last_error.is_none() {
            "starting"
        } else {
            "down"
        };
        let commands = backend.commands.load(Ordering::Relaxed);
        let admitted: u64 = self
            .routes
            .iter()
            .flat_map(|r| r.limiter.snapshot().classes)
            .map(|c| c.admitted)
            .sum();
        let routes = self
            .routes
            .iter()
            .map(|r| {
                let st = lock(&r.state);
                RouteSnapshot {
                    route: r.name.clone(),
                    global_limit: r.global,
                    replicas: st.replicas,
                    share: r.limiter.share(),
                    grant: st.grant,
                    usage: st.usage,
                    demand: st.demand,
                    inflight: r.limiter.inflight(),
                    lease_left: st.lease_until.map(|u| u.saturating_duration_since(now)),
                }
            })
            .collect();
        DistributedSnapshot {
            url: redact(&shared.config.url),
            mode: shared.config.mode,
            replica_id: shared.id.clone(),
            state,
            up,
            on_store_failure: shared.config.on_store_failure,
            last_error,
            commands,
            errors: backend.errors.load(Ordering::Relaxed),
            switches: backend.switches(),
            commands_per_admitted: commands as f64 / admitted.max(1) as f64,
            latency: backend.latency.clone(),
            routes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdaptiveConfig;

    #[test]
    fn passwords_never_reach_status() {
        assert_eq!(redact("redis://u:secret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn the_global_limit_is_the_fixed_value_or_the_adaptive_max() {
        assert_eq!(global_limit(&LimitConfig::Fixed { value: 12 }), 12);
        let a = AdaptiveConfig::default();
        assert_eq!(global_limit(&LimitConfig::Aimd(a.clone())), a.max);
    }

    #[test]
    fn keys_share_the_route_hash_tag() {
        let k = RouteKeys::new("floodwall", "api");
        for key in [&k.members, &k.usage, &k.demand, &k.held] {
            assert!(key.starts_with("floodwall:{api}:"), "{key}");
        }
    }

    #[test]
    fn replica_ids_are_label_safe_and_distinct() {
        let (a, b) = (default_replica_id(), default_replica_id());
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)));
        assert!(a.len() <= 64);
        // Same host and pid; the random suffix tells them apart (1 in 65536
        // chance of a false failure is too much: compare prefixes only).
        assert_eq!(a.rsplit_once('-').unwrap().0, b.rsplit_once('-').unwrap().0);
    }
}
