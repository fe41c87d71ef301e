//! The balancer: an upstream's members, and which one a request goes to.

use super::endpoint::{EjectionConfig, Endpoint};
use super::keys::KeyTable;
use super::ring::{KeyHash, Ring};
use crate::clock::{Clock, Nanos};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How a request's endpoint is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// The endpoint with the fewest requests in flight (ties: the lower
    /// smoothed latency): of all of them up to [`SCAN_ALL`] endpoints, as
    /// nginx's `least_conn` does; above that, of two at random
    /// (Mitzenmacher, "The Power of Two Choices in Randomized Load
    /// Balancing", 2001; Envoy's `LEAST_REQUEST` with `choice_count` 2),
    /// so the cost does not grow with the count. A slow endpoint holds its
    /// requests longer, so it is chosen less.
    #[default]
    LeastInflight,
    /// Each endpoint in turn.
    RoundRobin,
    /// By key, on a ketama ring ([`Ring`]), with a graceful drain when the
    /// owner of a key changes. A request without a key falls back to
    /// least in-flight.
    Hash,
}

/// A balancer's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceConfig {
    /// How an endpoint is chosen.
    pub policy: Policy,
    /// Passive health.
    pub ejection: EjectionConfig,
    /// How long a key keeps going to the endpoint that has it in flight
    /// after its owner changed, and how long a leaving endpoint may finish
    /// its work.
    pub drain_timeout: Duration,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            ejection: EjectionConfig::default(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Up to this many usable endpoints, the choice scans them all for the
/// least loaded (what nginx's `least_conn` and HAProxy's `leastconn` do):
/// a scan of a few atomics costs less than the imbalance two random
/// choices leave at small counts, where one endpoint a request short of
/// its work is a large share of the upstream. Above it, power of two
/// choices (Envoy's `least_request`), whose cost does not grow with the
/// count.
pub const SCAN_ALL: usize = 8;

/// One membership: a version, the members in order, their ring, and the
/// endpoints that left and may still be finishing.
#[derive(Debug)]
struct Members<A> {
    version: u64,
    endpoints: Vec<Arc<Endpoint<A>>>,
    ring: Option<Ring>,
    leaving: Vec<(Arc<Endpoint<A>>, Nanos)>,
}

/// What [`Balancer::set_members`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The new membership (and ring) version.
    pub version: u64,
    /// Names that joined.
    pub added: Vec<String>,
    /// Names that left (they finish what they hold, up to the drain).
    pub removed: Vec<String>,
}

/// An upstream's endpoints and the choice among them. Selection never
/// waits: it runs after the route's gate admitted the request, so the
/// refusal under a spike stays at the gate.
pub struct Balancer<A> {
    config: BalanceConfig,
    members: RwLock<Arc<Members<A>>>,
    keys: KeyTable,
    turn: AtomicUsize,
    rng: AtomicU64,
    next_id: AtomicU64,
    clock: Arc<dyn Clock>,
}

/// A chosen endpoint, held for as long as the request is in flight there:
/// dropping it gives back the endpoint's in-flight count and the key's
/// hold (RAII, like a permit).
#[derive(Debug)]
pub struct Pick<A> {
    balancer: Arc<Balancer<A>>,
    endpoint: Arc<Endpoint<A>>,
    key: Option<u64>,
    version: u64,
    started: Nanos,
}

impl<A> Pick<A> {
    /// The endpoint.
    pub fn endpoint(&self) -> &Arc<Endpoint<A>> {
        &self.endpoint
    }

    /// The membership version this choice was made on (the ring version).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The endpoint answered: its failure run ends and the time to the
    /// answer is smoothed into its latency.
    pub fn success(&self) {
        let took = self.balancer.clock.now().since(self.started);
        self.endpoint.succeeded(took);
    }

    /// A connect error or a timeout. Returns the ejection's length if this
    /// one ejected the endpoint.
    pub fn failure(&self) -> Option<Duration> {
        let b = &self.balancer;
        let now = b.clock.now();
        self.endpoint.failed(now, &b.config.ejection, || {
            let m = b.current();
            let out = m.endpoints.iter().filter(|e| e.is_ejected(now)).count();
            out < b.config.ejection.max_ejected(m.endpoints.len())
        })
    }
}

impl<A> Drop for Pick<A> {
    fn drop(&mut self) {
        self.endpoint.leave();
        if let Some(k) = self.key {
            self.balancer.keys.release(k, self.endpoint.id);
        }
    }
}

/// One endpoint as [`Balancer::snapshot`] sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSnapshot {
    /// Its name.
    pub name: String,
    /// Requests in flight there.
    pub inflight: usize,
    /// Requests sent there since it joined.
    pub requests: u64,
    /// Ejected for this much longer (`None`: in).
    pub ejected_for: Option<Duration>,
    /// Times ejected.
    pub ejections: u64,
    /// Smoothed latency of its successes.
    pub latency: Duration,
    /// It left the membership and is finishing its requests.
    pub leaving: bool,
}

/// A balancer's state for `/status` and `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceSnapshot {
    /// The membership (ring) version: 1 at start, one more per change.
    pub version: u64,
    /// Members, then leaving endpoints still finishing.
    pub endpoints: Vec<EndpointSnapshot>,
    /// Distinct keys in flight (hash only; else 0).
    pub keys_in_flight: usize,
}

impl<A: std::fmt::Debug> std::fmt::Debug for Balancer<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("config", &self.config)
            .field("members", &self.current())
            .finish_non_exhaustive()
    }
}

impl<A> Balancer<A> {
    /// A balancer over `members` (name, address), version 1. `seed` fixes
    /// the random choices (the gateway passes something per process).
    pub fn new(
        config: BalanceConfig,
        members: Vec<(String, A)>,
        clock: Arc<dyn Clock>,
        seed: u64,
    ) -> Arc<Self> {
        let next_id = AtomicU64::new(0);
        let endpoints: Vec<_> = members
            .into_iter()
            .map(|(n, a)| Arc::new(Endpoint::new(n, a, next_id.fetch_add(1, Ordering::Relaxed))))
            .collect();
        let ring = ring_of(&config, &endpoints);
        Arc::new(Self {
            config,
            members: RwLock::new(Arc::new(Members {
                version: 1,
                endpoints,
                ring,
                leaving: Vec::new(),
            })),
            keys: KeyTable::default(),
            turn: AtomicUsize::new(0),
            rng: AtomicU64::new(seed),
            next_id,
            clock,
        })
    }

    /// Its settings.
    pub fn config(&self) -> &BalanceConfig {
        &self.config
    }

    fn current(&self) -> Arc<Members<A>> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The membership version.
    pub fn version(&self) -> u64 {
        self.current().version
    }

    /// splitmix64 over an atomic counter: lock-free, deterministic per seed.
    fn random(&self) -> u64 {
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Chooses an endpoint for a request with `key` (hash only; ignored by
    /// the other policies) and counts the request on it. `None` only with
    /// no members. Never waits. Ejected endpoints are skipped while any
    /// member is in; with every member ejected, all are candidates (a
    /// failed request is no worse than a refused one).
    pub fn choose(self: &Arc<Self>, key: Option<&[u8]>) -> Option<Pick<A>> {
        let m = self.current();
        let now = self.clock.now();
        let n = m.endpoints.len();
        if n == 0 {
            return None;
        }
        let usable = |i: usize| !m.endpoints[i].is_ejected(now);
        let any_in = (0..n).any(usable);
        let usable = |i: usize| !any_in || usable(i);
        let (endpoint, key) = match (self.config.policy, key, &m.ring) {
            (Policy::Hash, Some(key), Some(ring)) => {
                let h = KeyHash::of(key);
                let owner = ring.owner(h.point, usable).unwrap_or(0);
                let drain = self.config.drain_timeout;
                let alive = |id: u64| {
                    m.endpoints.iter().any(|e| e.id == id)
                        || m.leaving
                            .iter()
                            .any(|(e, left)| e.id == id && now.since(*left) < drain)
                };
                let id = self
                    .keys
                    .hold(h.id, m.endpoints[owner].id, now, drain, alive);
                let e = m
                    .endpoints
                    .iter()
                    .chain(m.leaving.iter().map(|(e, _)| e))
                    .find(|e| e.id == id)
                    .unwrap_or(&m.endpoints[owner])
                    .clone();
                (e, Some(h.id))
            }
            (Policy::RoundRobin, _, _) => {
                let start = self.turn.fetch_add(1, Ordering::Relaxed);
                let i = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|i| usable(*i))
                    .unwrap_or(start % n);
                (m.endpoints[i].clone(), None)
            }
            _ => (
                m.endpoints[self.two_choices(&m.endpoints, usable)].clone(),
                None,
            ),
        };
        endpoint.enter();
        Some(Pick {
            balancer: self.clone(),
            endpoint,
            key,
            version: m.version,
            started: now,
        })
    }

    /// The cheapest of the usable endpoints: of all of them when there
    /// are [`SCAN_ALL`] or fewer, else of two at random (power of two
    /// choices), by in flight, then latency.
    fn two_choices(&self, endpoints: &[Arc<Endpoint<A>>], usable: impl Fn(usize) -> bool) -> usize {
        let candidates: Vec<usize> = (0..endpoints.len()).filter(|i| usable(*i)).collect();
        let cost = |i: usize| (endpoints[i].inflight(), endpoints[i].latency());
        match candidates.len() {
            0 => 0,
            1 => candidates[0],
            c if c <= SCAN_ALL => {
                // From a random start, so ties spread over the cheapest.
                let start = (self.random() % c as u64) as usize;
                (0..c)
                    .map(|k| candidates[(start + k) % c])
                    .min_by_key(|i| cost(*i))
                    .unwrap_or(candidates[0])
            }
            c => {
                let r = self.random();
                let a = (r % c as u64) as usize;
                let mut b = ((r >> 32) % (c as u64 - 1)) as usize;
                if b >= a {
                    b += 1;
                }
                let (a, b) = (candidates[a], candidates[b]);
                if cost(b) < cost(a) {
                    b
                } else {
                    a
                }
            }
        }
    }

    /// Replaces the members with `members` (name, address), in that order.
    /// An endpoint whose name stays keeps its counters and health; a new
    /// name starts fresh; a removed one takes no new requests and finishes
    /// what it holds, up to `drain_timeout`. If fewer members leave more
    /// ejected than `max_ejection_percent` allows, the soonest due back are
    /// readmitted. Returns the change, or `None`
    /// if the names are the same as now (nothing changes, the version
    /// stays).
    pub fn set_members(&self, members: Vec<(String, A)>) -> Option<Change> {
        let now = self.clock.now();
        let mut slot = self.members.write().unwrap_or_else(|p| p.into_inner());
        let old = slot.clone();
        let same = old.endpoints.len() == members.len()
            && old
                .endpoints
                .iter()
                .zip(&members)
                .all(|(e, (n, _))| e.name == *n);
        if same {
            return None;
        }
        let mut added = Vec::new();
        let endpoints: Vec<Arc<Endpoint<A>>> = members
            .into_iter()
            .map(|(name, addr)| {
                let kept = old
                    .endpoints
                    .iter()
                    .chain(old.leaving.iter().map(|(e, _)| e))
                    .find(|e| e.name == name);
                match kept {
                    Some(e) => e.clone(),
                    None => {
                        added.push(name.clone());
                        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                        Arc::new(Endpoint::new(name, addr, id))
                    }
                }
            })
            .collect();
        let mut removed = Vec::new();
        let mut leaving: Vec<(Arc<Endpoint<A>>, Nanos)> = old
            .leaving
            .iter()
            .filter(|(e, left)| {
                e.inflight() > 0
                    && now.since(*left) < self.config.drain_timeout
                    && !endpoints.iter().any(|m| m.id == e.id)
            })
            .cloned()
            .collect();
        for e in &old.endpoints {
            if !endpoints.iter().any(|m| m.id == e.id) {
                removed.push(e.name.clone());
                leaving.push((e.clone(), now));
            }
        }
        // A smaller membership lowers the cap on ejections: the endpoints
        // due back soonest are readmitted first.
        let mut out: Vec<_> = endpoints
            .iter()
            .filter_map(|e| e.ejected_for(now).map(|left| (left, e)))
            .collect();
        let cap = self.config.ejection.max_ejected(endpoints.len());
        if out.len() > cap {
            out.sort_by_key(|(left, _)| *left);
            for (_, e) in &out[..out.len() - cap] {
                e.readmit();
            }
        }
        let version = old.version + 1;
        let ring = ring_of(&self.config, &endpoints);
        *slot = Arc::new(Members {
            version,
            endpoints,
            ring,
            leaving,
        });
        Some(Change {
            version,
            added,
            removed,
        })
    }

    /// The members, each with its counters, then the leaving endpoints
    /// still finishing.
    pub fn snapshot(&self) -> BalanceSnapshot {
        let m = self.current();
        let now = self.clock.now();
        let one = |e: &Endpoint<A>, leaving| EndpointSnapshot {
            name: e.name.clone(),
            inflight: e.inflight(),
            requests: e.requests(),
            ejected_for: e.ejected_for(now),
            ejections: e.ejections(),
            latency: e.latency(),
            leaving,
        };
        let mut endpoints: Vec<_> = m.endpoints.iter().map(|e| one(e, false)).collect();
        endpoints.extend(
            m.leaving
                .iter()
                .filter(|(e, left)| {
                    e.inflight() > 0 && now.since(*left) < self.config.drain_timeout
                })
                .map(|(e, _)| one(e, true)),
        );
        BalanceSnapshot {
            version: m.version,
            endpoints,
            keys_in_flight: self.keys.len(),
        }
    }
}

fn ring_of<A>(config: &BalanceConfig, endpoints: &[Arc<Endpoint<A>>]) -> Option<Ring> {
    (config.policy == Policy::Hash).then(|| {
        let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
        Ring::new(&names)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn balancer(policy: Policy, n: usize) -> (Arc<Balancer<usize>>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        let config = BalanceConfig {
            policy,
            ..BalanceConfig::default()
        };
        let members = (0..n).map(|i| (format!("e{i}"), i)).collect();
        (Balancer::new(config, members, clock.clone(), 7), clock)
    }

    #[test]
    fn least_inflight_prefers_the_idle_endpoint() {
        let (b, _) = balancer(Policy::LeastInflight, 2);
        let held = b.choose(None).unwrap();
        let busy = held.endpoint().addr;
        for _ in 0..50 {
            let p = b.choose(None).unwrap();
            assert_ne!(p.endpoint().addr, busy);
        }
        drop(held);
        assert!(b.snapshot().endpoints.iter().all(|e| e.inflight == 0));
    }

    #[test]
    fn round_robin_takes_turns_and_skips_the_ejected() {
        let (b, _) = balancer(Policy::RoundRobin, 3);
        let order: Vec<usize> = (0..6)
            .map(|_| b.choose(None).unwrap().endpoint().addr)
            .collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
        let p = loop {
            let p = b.choose(None).unwrap();
            if p.endpoint().addr == 1 {
                break p;
            }
        };
        assert!(p.failure().is_none());
        assert!(p.failure().is_none());
        assert_eq!(p.failure(), Some(Duration::from_secs(5)));
        for _ in 0..10 {
            assert_ne!(b.choose(None).unwrap().endpoint().addr, 1);
        }
    }

    #[test]
    fn never_more_than_max_ejection_percent_out() {
        let (b, clock) = balancer(Policy::RoundRobin, 4);
        for _ in 0..200 {
            let p = b.choose(None).unwrap();
            p.failure();
        }
        let s = b.snapshot();
        let out = s
            .endpoints
            .iter()
            .filter(|e| e.ejected_for.is_some())
            .count();
        assert_eq!(out, 2, "{s:?}");
        clock.advance(Duration::from_secs(5));
        assert_eq!(
            b.snapshot()
                .endpoints
                .iter()
                .filter(|e| e.ejected_for.is_some())
                .count(),
            0,
            "they rejoin after the base ejection"
        );
    }

    #[test]
    fn membership_changes_bump_the_version_once_and_keep_counters() {
        let (b, _) = balancer(Policy::Hash, 4);
        let held = b.choose(Some(b"k")).unwrap();
        let holder = held.endpoint().name.clone();
        assert_eq!(b.version(), 1);
        let members: Vec<_> = (0..5).map(|i| (format!("e{i}"), i)).collect();
        let change = b.set_members(members.clone()).unwrap();
        assert_eq!(change.version, 2);
        assert_eq!(change.added, ["e4"]);
        assert!(b.set_members(members).is_none(), "same names: no change");
        assert_eq!(b.version(), 2);
        let s = b.snapshot();
        let e = s.endpoints.iter().find(|e| e.name == holder).unwrap();
        assert_eq!(e.inflight, 1, "kept across the change");
        assert_eq!(s.keys_in_flight, 1);
        drop(held);
        assert_eq!(b.snapshot().keys_in_flight, 0);
    }

    #[test]
    fn a_key_in_flight_on_a_leaving_endpoint_stays_there_until_it_drains() {
        let (b, clock) = balancer(Policy::Hash, 2);
        // Find a key owned by e1, hold it, then remove e1.
        let key = (0..)
            .map(|i| format!("key{i}"))
            .find(|k| b.choose(Some(k.as_bytes())).unwrap().endpoint().addr == 1)
            .unwrap();
        let held = b.choose(Some(key.as_bytes())).unwrap();
        b.set_members(vec![("e0".into(), 0)]).unwrap();
        let again = b.choose(Some(key.as_bytes())).unwrap();
        assert_eq!(again.endpoint().addr, 1, "still in flight on e1");
        assert!(b.snapshot().endpoints.iter().any(|e| e.leaving));
        drop(again);
        drop(held);
        assert_eq!(b.choose(Some(key.as_bytes())).unwrap().endpoint().addr, 0);
        // And with a request held past drain_timeout, the key moves.
        let held = b.choose(Some(key.as_bytes())).unwrap();
        b.set_members(vec![("e2".into(), 2)]).unwrap();
        assert_eq!(b.choose(Some(key.as_bytes())).unwrap().endpoint().addr, 0);
        clock.advance(Duration::from_secs(31));
        assert_eq!(b.choose(Some(key.as_bytes())).unwrap().endpoint().addr, 2);
        drop(held);
    }

    #[test]
    fn a_million_distinct_keys_leave_nothing_behind() {
        let (b, _) = balancer(Policy::Hash, 4);
        let mut window = std::collections::VecDeque::new();
        let mut peak = 0;
        for i in 0..1_000_000u32 {
            window.push_back(b.choose(Some(&i.to_le_bytes())).unwrap());
            if window.len() > 64 {
                window.pop_front();
            }
            peak = peak.max(b.snapshot_keys());
        }
        assert!(peak <= 65, "peak {peak}");
        drop(window);
        assert_eq!(b.snapshot().keys_in_flight, 0);
    }

    impl<A> Balancer<A> {
        fn snapshot_keys(&self) -> usize {
            self.keys.len()
        }
    }
}
