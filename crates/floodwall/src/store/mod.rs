//! Distributed mode: one global WIP limit per route across many floodwall
//! replicas, shared through Redis.
//!
//! # Why leases
//!
//! Seed 000 counts in-flight requests with a Redis `INCR` + `EXPIRE` per
//! request and a `DECR` when it ends. That costs two round trips per
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
//! # The lease invariant
//!
//! Redis keeps, per route, each live replica's *usage*: the slots it may
//! hold. A renewal asks for a `want` (the replica's max-min fair share of
//! the members' demands, [`share::water_fill`]) and gets
//! `grant = min(want, global − Σ others' usage)`. Before sending, the
//! replica lowers its local share to `min(share, want)` and reports
//! `floor = max(that, in flight now)`; Redis records
//! `usage = max(grant, floor)`. Since a replica admits only below its share,
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
//! `max(1, global ÷ last known replica count)` ([`share::failure_share`]).
//! If every replica loses Redis together, the total is then at most
//! `replicas × max(1, ⌊global ÷ replicas⌋)`, i.e. at most `global` when
//! `global ≥ replicas`. If only some lose it, the others reclaim their
//! expired usage, so the total can exceed `global` by up to the cut-off
//! replicas' fallback shares until Redis returns: that is the documented
//! slack of the `local` policy. `open` lifts the share (only local limits
//! apply); `closed` sets it to 0.
//!
//! # Tenants
//!
//! No per-tenant key is ever written: the per-tenant cap
//! (`routes.tenant.max_share`) is a fraction of the local limit, which the
//! share caps, so a tenant's global footprint is at most about `max_share ×
//! global` and Redis memory does not depend on how many tenant ids clients
//! invent. Keys per route are 4, fields per key one per live replica.

mod redis;
pub mod share;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use floodwall_core::{Limiter, Reason};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::redis::{Ask, Backend, RouteKeys};
use crate::config::{Config, LimitConfig, StoreConfig, StoreFailure, StoreMode};
use crate::proxy::Router;
use crate::respond::Refusal;

pub use self::redis::StoreError;

/// The store's view of one route.
#[derive(Debug)]
struct RouteStore {
    name: String,
    limiter: Arc<Limiter>,
    global: usize,
    keys: RouteKeys,
    /// Strict mode: slots granted, being asked for, or admitted locally
    /// during an outage by this replica: the upper bound `heartbeat.lua`
    /// reconciles Redis to.
    held: AtomicUsize,
    state: Mutex<RouteState>,
}

/// What the renew loop knows about one route.
#[derive(Debug, Default)]
struct RouteState {
    /// When the first renewal succeeded (the join ramp counts from it).
    joined: Option<Instant>,
    /// The last grant, while its lease lasts.
    grant: Option<usize>,
    /// Until when the last grant is ours: sent + lease_ttl.
    lease_until: Option<Instant>,
    /// Live members at the last successful call (1 before any).
    replicas: usize,
    /// The demand last published.
    demand: usize,
    /// What Redis counts against this replica.
    usage: usize,
    /// Every member's demand at the last renewal.
    demands: Vec<(String, usize)>,
    /// Peak in flight since the last renewal.
    peak: usize,
    /// Refusals for lack of room counted at the last renewal.
    refused_seen: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

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

/// `redis://user:secret@host` → `redis://***@host`, for `/status`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// The outcome of [`Store::admit`] in the proxy's admission path.
#[derive(Debug)]
pub enum Admit {
    /// Lease mode: the local gate, capped by the share, decided alone.
    Local,
    /// Strict mode: a slot, given back when this drops. Granted by Redis,
    /// or by the failure policy while Redis is unreachable (then counted
    /// by the next heartbeat, so Redis knows of it once it is back).
    Slot(Slot),
    /// Refused by the store.
    Refused(Refusal),
}

/// A strict-mode slot of a global limit; dropping it releases the slot in
/// Redis (asynchronously, never blocking the response).
#[derive(Debug)]
pub struct Slot {
    store: Arc<Store>,
    route: usize,
    /// Whether Redis counted it (else it was admitted during an outage).
    in_redis: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.in_redis {
            self.store.routes[self.route]
                .held
                .fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let store = self.store.clone();
        let route = self.route;
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    let r = &store.routes[route];
                    // A lost release is healed by the next heartbeat, which
                    // sets Redis's count to ours.
                    let _ = store.backend.release(&r.keys, &store.id).await;
                    r.held.fetch_sub(1, Ordering::AcqRel);
                });
            }
            Err(_) => {
                store.routes[route].held.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// Distributed mode's shared state: the Redis backend, the routes, and the
/// renew task.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    id: String,
    backend: Backend,
    routes: Vec<RouteStore>,
    last_error: Mutex<Option<String>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

impl Store {
    /// Builds the store for `config.store` over `router`'s routes, or
    /// `None` without a `[store]` section. Connects lazily.
    pub fn new(config: &Config, router: &Router) -> anyhow::Result<Option<Arc<Store>>> {
        let Some(sc) = &config.store else {
            return Ok(None);
        };
        let backend = Backend::new(&sc.url, sc.timeout)
            .map_err(|e| anyhow::anyhow!("store.url {}: {e}", redact(&sc.url)))?;
        let routes = router
            .routes()
            .iter()
            .map(|r| {
                let rc = config
                    .routes
                    .iter()
                    .find(|c| c.name == r.name)
                    .expect("router routes come from the config");
                RouteStore {
                    name: r.name.clone(),
                    limiter: r.limiter.clone(),
                    global: global_limit(&rc.limit),
                    keys: RouteKeys::new(&sc.key_prefix, &r.name),
                    held: AtomicUsize::new(0),
                    state: Mutex::new(RouteState {
                        replicas: 1,
                        ..RouteState::default()
                    }),
                }
            })
            .collect();
        Ok(Some(Arc::new(Store {
            config: sc.clone(),
            id: sc.replica_id.clone().unwrap_or_else(default_replica_id),
            backend,
            routes,
            last_error: Mutex::new(None),
            stop: watch::channel(false).0,
            task: Mutex::new(None),
        })))
    }

    /// This replica's id in Redis.
    pub fn replica_id(&self) -> &str {
        &self.id
    }

    /// The first renewal of every route (so no request is admitted beyond a
    /// share this replica does not hold), then the renew loop on its own
    /// task. Call once, inside a tokio runtime, before serving.
    pub async fn start(self: &Arc<Self>) {
        let ok = self.renew_all().await;
        if !ok {
            tracing::warn!(error = ?self.last_error(), "store unreachable at start; serving under on_store_failure");
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
            if let Err(e) = self.backend.leave(&r.keys, &self.id).await {
                tracing::warn!(route = %r.name, error = %e, "could not leave the store; the lease will expire");
            }
        }
    }

    fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    fn note(&self, result: Result<(), StoreError>) -> bool {
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

    /// The renew loop: samples in-flight peaks, renews every
    /// `renew_interval` (with backoff while failing), and applies the
    /// failure policy while Redis is unreachable.
    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>, mut ok: bool) {
        let every = self.config.renew_interval;
        let sample = (every / 8).max(Duration::from_millis(5));
        let mut backoff = every;
        let mut next = Instant::now() + if ok { every } else { backoff };
        let mut tick = tokio::time::interval(sample);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            if now >= next {
                let was = ok;
                ok = self.renew_all().await;
                if ok {
                    if !was {
                        tracing::info!("store reachable again: resynced");
                    }
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
        for (i, _) in self.routes.iter().enumerate() {
            let r = match self.config.mode {
                StoreMode::Lease => self.renew_lease(i).await,
                StoreMode::Strict => self.renew_strict(i).await,
            };
            all &= self.note(r);
        }
        if all {
            *lock(&self.last_error) = None;
        } else {
            self.apply_failure(Instant::now());
        }
        all
    }

    /// Refusals for lack of room, over every class.
    fn refusals(limiter: &Limiter) -> (u64, usize, usize) {
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

    async fn renew_lease(&self, i: usize) -> Result<(), StoreError> {
        let r = &self.routes[i];
        let now = Instant::now();
        let (refusals, queued, algorithm_limit) = Self::refusals(&r.limiter);
        let ask = {
            let mut st = lock(&r.state);
            let refused = refusals > st.refused_seen || queued > 0;
            st.refused_seen = refusals;
            let since = st.joined.map_or(Duration::ZERO, |j| now - j);
            let cap = share::ramp_cap(r.global, since, self.config.join_ramp);
            let peak = st.peak.max(r.limiter.inflight());
            let demand = share::demand(peak, refused, algorithm_limit, r.global, cap);
            let mut demands: Vec<(String, usize)> = st
                .demands
                .iter()
                .filter(|(id, _)| *id != self.id)
                .cloned()
                .collect();
            demands.push((self.id.clone(), demand));
            demands.sort();
            let me = demands.iter().position(|(id, _)| *id == self.id).unwrap();
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
        let renewal = self
            .backend
            .renew(&r.keys, &self.id, r.global, self.config.lease_ttl, ask)
            .await?;
        r.limiter.set_share(Some(renewal.grant));
        let mut st = lock(&r.state);
        st.grant = Some(renewal.grant);
        st.lease_until = Some(sent + self.config.lease_ttl);
        st.replicas = renewal.demands.len().max(1);
        st.usage = renewal.usage;
        st.demands = renewal.demands;
        st.joined.get_or_insert(sent);
        st.peak = r.limiter.inflight();
        Ok(())
    }

    async fn renew_strict(&self, i: usize) -> Result<(), StoreError> {
        let r = &self.routes[i];
        let held = r.held.load(Ordering::Acquire);
        let sent = Instant::now();
        let n = self
            .backend
            .heartbeat(&r.keys, &self.id, self.config.lease_ttl, held)
            .await?;
        // Strict mode decides in Redis; the local gate only needs the
        // global limit, which the route's own limit already is.
        r.limiter.set_share(None);
        let mut st = lock(&r.state);
        st.replicas = n.max(1);
        st.usage = held;
        st.lease_until = Some(sent + self.config.lease_ttl);
        st.joined.get_or_insert(sent);
        Ok(())
    }

    /// Sets every route's share under the failure policy.
    fn apply_failure(&self, now: Instant) {
        for r in &self.routes {
            let st = lock(&r.state);
            let left = st
                .lease_until
                .map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
            let s = share::failure_share(
                self.config.on_store_failure,
                st.grant,
                left,
                r.global,
                st.replicas,
            );
            r.limiter.set_share(s);
        }
    }

    /// The admission step of distributed mode, after the local gate
    /// admitted the request. Lease mode answers at once; strict mode asks
    /// Redis (`acquire.lua`) unless Redis is known to be down.
    pub async fn admit(self: &Arc<Self>, route: &str) -> Admit {
        if self.config.mode == StoreMode::Lease {
            return Admit::Local;
        }
        let Some(i) = self.routes.iter().position(|r| r.name == route) else {
            return Admit::Local;
        };
        let r = &self.routes[i];
        let unavailable = || match self.config.on_store_failure {
            StoreFailure::Closed => Admit::Refused(Refusal::StoreUnavailable),
            StoreFailure::Local | StoreFailure::Open => {
                r.held.fetch_add(1, Ordering::AcqRel);
                Admit::Slot(Slot {
                    store: self.clone(),
                    route: i,
                    in_redis: false,
                })
            }
        };
        if !self.backend.up.load(Ordering::Acquire) {
            // The renew loop probes Redis; requests do not wait on a Redis
            // known to be failing.
            return unavailable();
        }
        r.held.fetch_add(1, Ordering::AcqRel);
        match self
            .backend
            .acquire(&r.keys, &self.id, r.global, self.config.lease_ttl)
            .await
        {
            Ok(true) => Admit::Slot(Slot {
                store: self.clone(),
                route: i,
                in_redis: true,
            }),
            Ok(false) => {
                r.held.fetch_sub(1, Ordering::AcqRel);
                Admit::Refused(Refusal::GlobalLimitExceeded)
            }
            Err(e) => {
                r.held.fetch_sub(1, Ordering::AcqRel);
                self.note(Err(e));
                unavailable()
            }
        }
    }

    fn state_name(&self) -> &'static str {
        if self.backend.up.load(Ordering::Acquire) {
            "up"
        } else if self.last_error().is_none() {
            "starting"
        } else {
            "down"
        }
    }

    /// The `store` object of `/status`.
    pub fn status(&self) -> Value {
        let now = Instant::now();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let st = lock(&r.state);
                json!({
                    "route": r.name,
                    "global_limit": r.global,
                    "replicas": st.replicas,
                    "share": r.limiter.share(),
                    "grant": st.grant,
                    "usage": st.usage,
                    "demand": st.demand,
                    "inflight": r.limiter.inflight(),
                    "lease_left_ms": st.lease_until.map(|u| u.saturating_duration_since(now).as_millis() as u64),
                })
            })
            .collect();
        json!({
            "url": redact(&self.config.url),
            "mode": self.config.mode.as_str(),
            "replica_id": self.id,
            "state": self.state_name(),
            "on_store_failure": self.config.on_store_failure.as_str(),
            "last_error": self.last_error(),
            "commands": self.backend.commands.load(Ordering::Relaxed),
            "errors": self.backend.errors.load(Ordering::Relaxed),
            "commands_per_admitted": self.commands_per_admitted(),
            "routes": routes,
        })
    }

    fn commands_per_admitted(&self) -> f64 {
        let admitted: u64 = self
            .routes
            .iter()
            .flat_map(|r| r.limiter.snapshot().classes)
            .map(|c| c.admitted)
            .sum();
        self.backend.commands.load(Ordering::Relaxed) as f64 / admitted.max(1) as f64
    }

    /// Registers the store's series (see `docs/metrics.md`).
    pub fn encode(&self, registry: &mut Registry) {
        let up = Gauge::<i64>::default();
        up.set(self.backend.up.load(Ordering::Acquire) as i64);
        let commands = Counter::<u64>::default();
        commands.inc_by(self.backend.commands.load(Ordering::Relaxed));
        let errors = Counter::<u64>::default();
        errors.inc_by(self.backend.errors.load(Ordering::Relaxed));
        let per = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        per.set(self.commands_per_admitted());
        let replicas = Family::<RouteLabels, Gauge>::default();
        let share = Family::<RouteLabels, Gauge>::default();
        let global = Family::<RouteLabels, Gauge>::default();
        for r in &self.routes {
            let l = RouteLabels {
                route: r.name.clone(),
            };
            replicas
                .get_or_create(&l)
                .set(lock(&r.state).replicas as i64);
            // An absent share (open policy, strict mode) is the global
            // limit: nothing below it caps this replica.
            share
                .get_or_create(&l)
                .set(r.limiter.share().unwrap_or(r.global) as i64);
            global.get_or_create(&l).set(r.global as i64);
        }
        registry.register(
            "floodwall_store_up",
            "1 while the last Redis call succeeded",
            up,
        );
        registry.register_with_unit(
            "floodwall_store_latency",
            "Redis call round-trip time, failures and timeouts included",
            Unit::Seconds,
            self.backend.latency.clone(),
        );
        registry.register(
            "floodwall_store_commands",
            "Redis commands sent (one per Lua script call)",
            commands,
        );
        registry.register(
            "floodwall_store_errors",
            "Redis calls that failed or timed out",
            errors,
        );
        registry.register(
            "floodwall_store_commands_per_admitted",
            "Redis commands sent per admitted request since start",
            per,
        );
        registry.register(
            "floodwall_store_replicas",
            "Live replicas sharing the route's global limit, as last seen",
            replicas,
        );
        registry.register(
            "floodwall_store_share",
            "This replica's share of the route's global limit now",
            share,
        );
        registry.register(
            "floodwall_store_global_limit",
            "The route's global limit, shared by every replica",
            global,
        );
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
