//! A deterministic, virtual-time simulation of a [`Limit`] enforced by the
//! real [`Limiter`] in front of a backend whose best concurrency is known.
//!
//! Behind the `simulate` cargo feature, off by default: it is for tests
//! (this crate's `tests/simulation.rs` turns it on through a
//! self-dev-dependency) and benchmark tooling, not for a gateway build.
//!
//! Netflix ships `BlockingAdaptiveExecutorSimulation` beside its limits for
//! the same reason: an adaptive algorithm is only as good as its behaviour
//! over minutes of traffic, and that can be asserted with numbers only if
//! the traffic is reproducible. So:
//!
//! - **Virtual time.** Events (arrivals, completions, timeouts, trace ticks,
//!   scenario changes) sit in a heap ordered by time; the loop pops the next
//!   one and sets a [`ManualClock`] to it. Nothing sleeps and nothing runs
//!   on another thread; five simulated minutes take well under a second.
//! - **The real enforcement path.** Every arrival calls
//!   [`Limiter::try_acquire`]; the [`Permit`] is held until the request
//!   ends, its outcome recorded, and dropped at that virtual instant, so the
//!   limit sees exactly the samples it would in the proxy.
//! - **Deterministic.** Randomness (arrival gaps, service-time jitter) comes
//!   from a seeded xorshift; the same [`Scenario`] gives the same [`Trace`].
//!
//! # The backend
//!
//! `W` workers, each serving one request at a time for the service time `S`
//! (times a uniform jitter of ±`jitter`). A request that finds every worker
//! busy waits in a FIFO queue. With `contention` above zero, a request that
//! starts while `q` others wait takes `S × (1 + contention × q / W)`: the
//! lock waits and cache misses that make an oversubscribed database slower
//! per query (the same model as the `floodwall` crate's demo backend). A
//! client `timeout` ends the request as `Dropped` when it expires, but the
//! backend still does the work later: abandoned work, as a database runs a
//! query whose client gave up. `shed_above` makes the backend answer an
//! `Error` at once (1 ms) when its queue is deeper than that, as a pool
//! answers "too many connections".
//!
//! # The best concurrency
//!
//! The backend completes at most `W / S` requests per second (`S` the mean
//! service time). It reaches that rate with `W` requests in flight; each
//! request beyond `W` only waits, adding `S / W` to everyone's latency
//! (and, with contention, lowering the rate). So the **best concurrency is `C* = W`**: the
//! smallest limit with full goodput, and the largest whose latency is the
//! bare service time. The tests measure how close each algorithm keeps
//! its limit to `C*` ([`Point::best`]). (At exactly `W` with open-loop
//! arrivals the workers idle for an arrival gap after each completion, so
//! goodput is about `1 / (1 + capacity / (W × offered))` of capacity —
//! 99 % at `W = 50` and twice the capacity offered; a limit a few above
//! `W` hides those gaps at a few percent of latency.)
//!
//! # The traffic
//!
//! Open-loop Poisson arrivals at `offered_rps`: clients keep coming whether
//! or not they are refused, as they do in front of a gateway. A refusal
//! costs nothing but is counted.
//!
//! By default every request is alike: one class, no tenant. A
//! [`Scenario::mix`] splits the arrivals into [`Group`]s by weight, each
//! with its own priority class and tenant ids (one tenant, a pool drawn
//! from uniformly, or a fresh id per request as a hostile client sends),
//! enforced by the limiter settings of [`Scenario::limiter`]; the trace
//! then also counts, per group, what was offered and what was served
//! ([`Trace::group`]), and how many entries the limiter's tenant table
//! held ([`Point::tenants`]).

use crate::clock::{duration_nanos, Clock, ManualClock, Nanos};
use crate::limit::rng::Rng;
use crate::limit::{Cause, Limit, Outcome};
use crate::limiter::{ClassId, ClassSpec, Limiter, LimiterConfig, Permit, Request};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// The simulated upstream; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backend {
    /// Requests served in parallel: the best concurrency.
    pub workers: usize,
    /// Service time of one request with no contention.
    pub service_time: Duration,
    /// Each service time is multiplied by a uniform factor in
    /// `[1 − jitter, 1 + jitter]`, so percentiles are not all equal.
    pub jitter: f64,
    /// Each service time is also multiplied by `exp(tail × N(0, 1))`, a
    /// log-normal factor with median 1: real latencies have a long right
    /// tail (0 = none; 0.5 makes p99 ≈ 3.2 × p50).
    pub tail: f64,
    /// Slowdown per queued request per worker (0 = none).
    pub contention: f64,
    /// The client gives up (outcome `Dropped`) after this long.
    pub timeout: Option<Duration>,
    /// With more than this many queued, new requests fail at once
    /// (outcome `Error`).
    pub shed_above: Option<usize>,
    /// Latency added to every request whatever the load: exponentially
    /// distributed with this mean. It is the scheduling, network and
    /// proxy noise that a real measurement carries, and at a sub-millisecond
    /// service time it is larger than the service time itself: the case
    /// where a relative threshold reads noise as queueing. Zero: none.
    pub noise: Duration,
}

impl Default for Backend {
    /// 50 workers × 50 ms = 1000 req/s, ±25 % jitter, no tail, no
    /// contention, no timeout, no shedding, no noise.
    fn default() -> Self {
        Self {
            workers: 50,
            service_time: Duration::from_millis(50),
            jitter: 0.25,
            tail: 0.0,
            contention: 0.0,
            timeout: None,
            shed_above: None,
            noise: Duration::ZERO,
        }
    }
}

impl Backend {
    /// The mean service time without contention: `S × exp(tail² / 2)`
    /// (the mean of the log-normal factor; the uniform jitter averages 1).
    pub fn mean_service_time(&self) -> Duration {
        self.service_time
            .mul_f64((self.tail * self.tail / 2.0).exp())
    }

    /// Requests per second the backend completes at best: `W` over the
    /// mean service time.
    pub fn capacity_rps(&self) -> f64 {
        self.workers as f64 / self.mean_service_time().as_secs_f64()
    }
}

/// A change to the scenario at a point in time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// The backend now has this many workers (running requests finish).
    Workers(usize),
    /// The backend's service time is now this.
    ServiceTime(Duration),
    /// Clients now arrive at this rate.
    OfferedRps(f64),
    /// The load-independent noise now has this mean (see
    /// [`Backend::noise`]): a neighbour taking the CPU, a GC pause.
    Noise(Duration),
    /// The group at this index of [`Scenario::mix`] now has this weight
    /// (0: it has stopped sending).
    Weight(usize, f64),
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The upstream at the start.
    pub backend: Backend,
    /// Arrivals per second at the start.
    pub offered_rps: f64,
    /// How long to simulate.
    pub duration: Duration,
    /// Changes, by time since the start.
    pub changes: Vec<(Duration, Change)>,
    /// Time between trace points.
    pub resolution: Duration,
    /// Seeds arrivals and jitter.
    pub seed: u64,
    /// Who the arrivals are: each arrival belongs to one group, drawn by
    /// weight. Empty: every request alike, of the first class and with no
    /// tenant.
    pub mix: Vec<Group>,
    /// The limiter's settings. `None`: one class (`"sim"`, nothing
    /// reserved) and every other setting at its default.
    pub limiter: Option<LimiterConfig>,
}

impl Default for Scenario {
    /// The default backend offered twice its capacity for 60 s, traced
    /// every 100 ms, every request alike.
    fn default() -> Self {
        let backend = Backend::default();
        Self {
            offered_rps: 2.0 * backend.capacity_rps(),
            backend,
            duration: Duration::from_secs(60),
            changes: Vec::new(),
            resolution: Duration::from_millis(100),
            seed: 1,
            mix: Vec::new(),
            limiter: None,
        }
    }
}

/// The tenant ids a [`Group`]'s requests carry.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Tenants {
    /// None: the request names no tenant.
    #[default]
    None,
    /// One of these, drawn uniformly for each request.
    Pool(Vec<String>),
    /// An id no request carried before: a client inventing ids to get
    /// past per-tenant accounting, or to fill the gateway's memory.
    Fresh,
}

/// One part of the traffic (see [`Scenario::mix`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Its name in the trace.
    pub name: String,
    /// Its share of the arrivals, relative to the other groups' weights.
    pub weight: f64,
    /// The priority class its requests ask for, by name. `None`: the
    /// first class.
    pub class: Option<String>,
    /// The tenant ids its requests carry.
    pub tenants: Tenants,
}

impl Group {
    /// A group of this weight, of the first class, with no tenant.
    pub fn new(name: impl Into<String>, weight: f64) -> Self {
        Self {
            name: name.into(),
            weight,
            class: None,
            tenants: Tenants::None,
        }
    }

    /// Its requests ask for `class`.
    pub fn class(mut self, class: impl Into<String>) -> Self {
        self.class = Some(class.into());
        self
    }

    /// Its requests all carry the tenant id `id`.
    pub fn tenant(self, id: impl Into<String>) -> Self {
        self.tenants(vec![id.into()])
    }

    /// Its requests carry one of `ids`, drawn uniformly.
    pub fn tenants(mut self, ids: Vec<String>) -> Self {
        self.tenants = Tenants::Pool(ids);
        self
    }

    /// Each of its requests carries an id never used before.
    pub fn fresh_tenants(mut self) -> Self {
        self.tenants = Tenants::Fresh;
        self
    }
}

/// The state of the simulation at one instant, with rates over the
/// interval since the previous point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Time since the start.
    pub t: Duration,
    /// The limit being enforced.
    pub limit: usize,
    /// Requests holding a permit.
    pub inflight: usize,
    /// Requests waiting for a worker, abandoned ones included.
    pub queued: usize,
    /// The best concurrency now: the backend's worker count.
    pub best: usize,
    /// Successes per second.
    pub goodput: f64,
    /// Refusals per second.
    pub rejected: f64,
    /// Errors and drops per second.
    pub failed: f64,
    /// Mean latency of the successes (zero if none).
    pub latency: Duration,
    /// The cause of the limit's last decision.
    pub cause: Option<Cause>,
    /// The baseline the limit's last decision used.
    pub baseline: Option<Duration>,
    /// The most entries the limiter's tenant table held at any event of
    /// the interval (see [`Limiter::tenants_tracked`]).
    pub tenants: usize,
}

impl Point {
    /// Whether a baseline probe had the limit pinned at this point.
    pub fn probing(&self) -> bool {
        self.cause == Some(Cause::Probing)
    }
}

/// Summary of the limit over a stretch of a trace, probe points excluded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitStats {
    /// Time-average (points are evenly spaced).
    pub mean: f64,
    /// Lowest.
    pub min: usize,
    /// Highest.
    pub max: usize,
    /// Mean of `limit / best`.
    pub mean_ratio: f64,
    /// How many points.
    pub points: usize,
}

/// What one [`Group`] offered and got over one trace interval, in
/// requests per second.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GroupPoint {
    /// Time since the start, as the matching [`Point`]'s.
    pub t: Duration,
    /// Arrivals per second.
    pub offered: f64,
    /// Successes per second.
    pub served: f64,
    /// Refusals per second, all reasons.
    pub rejected: f64,
    /// Refusals per second for the tenant's cap (`tenant_limit_exceeded`).
    pub tenant_rejected: f64,
}

/// One group's series, point for point with [`Trace::points`].
#[derive(Debug, Clone, PartialEq)]
pub struct GroupTrace {
    /// The group's name.
    pub name: String,
    /// One point per `resolution`.
    pub points: Vec<GroupPoint>,
}

impl GroupTrace {
    /// Mean offered and served rates over `(from, to]`.
    pub fn between(&self, from: Duration, to: Duration) -> Served {
        let (mut offered, mut served, mut n) = (0.0, 0.0, 0usize);
        for p in self.points.iter().filter(|p| p.t > from && p.t <= to) {
            offered += p.offered;
            served += p.served;
            n += 1;
        }
        let n = n.max(1) as f64;
        Served {
            offered: offered / n,
            served: served / n,
        }
    }
}

/// What a group offered and got over a stretch, in requests per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Served {
    /// Mean arrivals per second.
    pub offered: f64,
    /// Mean successes per second.
    pub served: f64,
}

impl Served {
    /// The fraction of the offered load that was served (1 when nothing
    /// was offered).
    pub fn ratio(&self) -> f64 {
        if self.offered > 0.0 {
            self.served / self.offered
        } else {
            1.0
        }
    }
}

/// The time series a simulation produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// One point per `resolution`.
    pub points: Vec<Point>,
    /// Per group of [`Scenario::mix`], in its order; empty without a mix.
    pub groups: Vec<GroupTrace>,
}

impl Trace {
    /// The series of the group named `name`.
    ///
    /// # Panics
    ///
    /// If the scenario had no such group.
    pub fn group(&self, name: &str) -> &GroupTrace {
        self.groups
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("no group {name:?} in the mix"))
    }

    /// The largest tenant table over the whole run.
    pub fn max_tenants(&self) -> usize {
        self.points.iter().map(|p| p.tenants).max().unwrap_or(0)
    }

    /// The points with `from < t ≤ to`.
    pub fn between(&self, from: Duration, to: Duration) -> impl Iterator<Item = &Point> {
        self.points.iter().filter(move |p| p.t > from && p.t <= to)
    }

    /// The limit over `(from, to]`, leaving out points where a baseline
    /// probe pinned it: those dips are scheduled, not instability.
    ///
    /// # Panics
    ///
    /// If no point is left.
    pub fn limit(&self, from: Duration, to: Duration) -> LimitStats {
        let pts: Vec<&Point> = self.between(from, to).filter(|p| !p.probing()).collect();
        assert!(!pts.is_empty(), "no trace points in {from:?}..{to:?}");
        let n = pts.len() as f64;
        LimitStats {
            mean: pts.iter().map(|p| p.limit as f64).sum::<f64>() / n,
            min: pts.iter().map(|p| p.limit).min().unwrap_or(0),
            max: pts.iter().map(|p| p.limit).max().unwrap_or(0),
            mean_ratio: pts
                .iter()
                .map(|p| p.limit as f64 / p.best.max(1) as f64)
                .sum::<f64>()
                / n,
            points: pts.len(),
        }
    }

    /// Mean goodput (successes per second) over `(from, to]`.
    pub fn goodput(&self, from: Duration, to: Duration) -> f64 {
        let (sum, n) = self
            .between(from, to)
            .fold((0.0, 0usize), |(s, n), p| (s + p.goodput, n + 1));
        sum / n.max(1) as f64
    }

    /// Mean success latency over `(from, to]`, weighted by goodput.
    pub fn latency(&self, from: Duration, to: Duration) -> Duration {
        let (sum, w) = self.between(from, to).fold((0.0, 0.0), |(s, w), p| {
            (s + p.latency.as_secs_f64() * p.goodput, w + p.goodput)
        });
        Duration::from_secs_f64(if w > 0.0 { sum / w } else { 0.0 })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrival,
    Finish { id: usize, gen: u64 },
    Timeout { id: usize, gen: u64 },
    Tick,
    Change(usize),
}

struct Job {
    gen: u64,
    group: usize,
    permit: Option<Permit>,
    admitted: u64,
    shed: bool,
    live: bool,
}

/// Counters between two trace points.
#[derive(Default)]
struct Interval {
    successes: u64,
    latency_ns: u128,
    failed: u64,
    rejected: u64,
    tenants: usize,
    /// Per group: offered, served, rejected, rejected for the tenant cap.
    groups: Vec<[u64; 4]>,
}

/// A [`Group`] resolved against the limiter.
struct Source {
    class: ClassId,
    tenants: Tenants,
    weight: f64,
    /// Cumulative weight up to and including this group, over the total.
    upto: f64,
}

/// Sets each source's cumulative share from the weights.
fn reweigh(sources: &mut [Source]) {
    let total: f64 = sources.iter().map(|s| s.weight).sum();
    let mut upto = 0.0;
    for s in sources {
        upto += s.weight;
        s.upto = if total > 0.0 { upto / total } else { 1.0 };
    }
}

struct Sim<'a> {
    scenario: &'a Scenario,
    rng: Rng,
    clock: Arc<ManualClock>,
    limiter: Arc<Limiter>,
    heap: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    jobs: Vec<Job>,
    free: Vec<usize>,
    queue: VecDeque<usize>,
    busy: usize,
    backend: Backend,
    offered: f64,
    interval: Interval,
    sources: Vec<Source>,
    /// Fresh tenant ids handed out so far.
    fresh: u64,
    id: String,
    groups: Vec<GroupTrace>,
}

impl Sim<'_> {
    fn at(&mut self, t: u64, e: Event) {
        self.seq += 1;
        self.heap.push(Reverse((t, self.seq, e)));
    }

    fn next_arrival(&mut self, now: u64) {
        if self.offered > 0.0 {
            let gap = -(1.0 - self.rng.unit()).ln() / self.offered;
            self.at(now + (gap * 1e9) as u64, Event::Arrival);
        }
    }

    /// Which group the next arrival belongs to, and its tenant id (in
    /// `self.id`). Draws from the generator only with a mix, so a scenario
    /// without one replays as it always did.
    fn pick(&mut self) -> (usize, Option<ClassId>, bool) {
        if self.sources.is_empty() {
            return (0, None, false);
        }
        let g = if self.sources.len() == 1 {
            0
        } else {
            let u = self.rng.unit();
            self.sources
                .iter()
                .position(|s| u < s.upto)
                .unwrap_or(self.sources.len() - 1)
        };
        let tenant = match &self.sources[g].tenants {
            Tenants::None => false,
            Tenants::Pool(ids) => {
                let k = if ids.len() > 1 {
                    ((self.rng.unit() * ids.len() as f64) as usize).min(ids.len() - 1)
                } else {
                    0
                };
                self.id.clear();
                self.id.push_str(&ids[k]);
                true
            }
            Tenants::Fresh => {
                self.fresh += 1;
                self.id = format!(
                    "fresh-{:016x}",
                    self.fresh.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                );
                true
            }
        };
        (g, Some(self.sources[g].class), tenant)
    }

    fn arrive(&mut self, now: u64, req: &Request<'_>) {
        self.next_arrival(now);
        let (group, class, tenant) = self.pick();
        let id = std::mem::take(&mut self.id);
        let mixed = Request {
            class: class.unwrap_or(req.class),
            tenant: tenant.then_some(id.as_str()),
        };
        let admitted = self.limiter.try_acquire(&mixed);
        self.id = id;
        self.note_tenants();
        if let Some(c) = self.interval.groups.get_mut(group) {
            c[0] += 1;
        }
        let permit = match admitted {
            Ok(p) => p,
            Err(r) => {
                self.interval.rejected += 1;
                if let Some(c) = self.interval.groups.get_mut(group) {
                    c[2] += 1;
                    if r.reason == crate::limiter::Reason::TenantLimitExceeded {
                        c[3] += 1;
                    }
                }
                return;
            }
        };
        let id = self.free.pop().unwrap_or_else(|| {
            self.jobs.push(Job {
                gen: 0,
                group: 0,
                permit: None,
                admitted: 0,
                shed: false,
                live: false,
            });
            self.jobs.len() - 1
        });
        let shed = self
            .backend
            .shed_above
            .is_some_and(|d| self.queue.len() > d);
        let job = &mut self.jobs[id];
        job.gen += 1;
        job.group = group;
        job.permit = Some(permit);
        job.admitted = now;
        job.shed = shed;
        job.live = true;
        let gen = job.gen;
        if let Some(t) = self.backend.timeout {
            self.at(now + duration_nanos(t), Event::Timeout { id, gen });
        }
        if shed {
            self.at(now + 1_000_000, Event::Finish { id, gen });
        } else if self.busy < self.backend.workers {
            self.start(now, id);
        } else {
            self.queue.push_back(id);
        }
    }

    fn start(&mut self, now: u64, id: usize) {
        self.busy += 1;
        let b = &self.backend;
        let slow = 1.0 + b.contention * self.queue.len() as f64 / b.workers.max(1) as f64;
        let jitter = 1.0 + b.jitter * (2.0 * self.rng.unit() - 1.0);
        let tail = if b.tail > 0.0 {
            // Box–Muller: a standard normal from two uniforms.
            let (u1, u2) = (1.0 - self.rng.unit(), self.rng.unit());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (b.tail * z).exp()
        } else {
            1.0
        };
        let noise = if b.noise.is_zero() {
            0.0
        } else {
            -(1.0 - self.rng.unit()).ln() * b.noise.as_secs_f64()
        };
        let service = b.service_time.as_secs_f64() * slow * jitter * tail + noise;
        let gen = self.jobs[id].gen;
        self.at(now + (service * 1e9) as u64, Event::Finish { id, gen });
    }

    fn end(&mut self, now: u64, id: usize, outcome: Outcome) {
        let job = &mut self.jobs[id];
        if let Some(mut p) = job.permit.take() {
            p.record(outcome);
            drop(p);
            if outcome == Outcome::Success {
                self.interval.successes += 1;
                self.interval.latency_ns += u128::from(now - job.admitted);
                if let Some(c) = self.interval.groups.get_mut(job.group) {
                    c[1] += 1;
                }
            } else {
                self.interval.failed += 1;
            }
            self.note_tenants();
        }
    }

    /// Keeps the interval's largest tenant table; only with a mix, since
    /// only a mix carries tenant ids.
    fn note_tenants(&mut self) {
        if !self.sources.is_empty() {
            let n = self.limiter.tenants_tracked();
            self.interval.tenants = self.interval.tenants.max(n);
        }
    }

    fn finish(&mut self, now: u64, id: usize, gen: u64) {
        if self.jobs[id].gen != gen || !self.jobs[id].live {
            return;
        }
        let shed = self.jobs[id].shed;
        self.end(
            now,
            id,
            if shed {
                Outcome::Error
            } else {
                Outcome::Success
            },
        );
        self.jobs[id].live = false;
        self.free.push(id);
        if !shed {
            self.busy -= 1;
            self.fill(now);
        }
    }

    fn fill(&mut self, now: u64) {
        while self.busy < self.backend.workers {
            let Some(next) = self.queue.pop_front() else {
                break;
            };
            self.start(now, next);
        }
    }

    fn timeout(&mut self, now: u64, id: usize, gen: u64) {
        if self.jobs[id].gen == gen && self.jobs[id].live {
            self.end(now, id, Outcome::Dropped);
        }
    }

    fn point(&mut self, now: u64, tap: &impl Limit) -> Point {
        let groups = vec![[0; 4]; self.sources.len()];
        let iv = std::mem::replace(
            &mut self.interval,
            Interval {
                groups,
                ..Interval::default()
            },
        );
        let secs = self.scenario.resolution.as_secs_f64();
        let decision = tap.explain();
        let t = Duration::from_nanos(now);
        for (g, c) in self.groups.iter_mut().zip(&iv.groups) {
            let rate = |n: u64| n as f64 / secs;
            g.points.push(GroupPoint {
                t,
                offered: rate(c[0]),
                served: rate(c[1]),
                rejected: rate(c[2]),
                tenant_rejected: rate(c[3]),
            });
        }
        Point {
            t: Duration::from_nanos(now),
            limit: self.limiter.limit(),
            inflight: self.limiter.inflight(),
            queued: self.queue.len(),
            best: self.backend.workers,
            goodput: iv.successes as f64 / secs,
            rejected: iv.rejected as f64 / secs,
            failed: iv.failed as f64 / secs,
            latency: Duration::from_nanos((iv.latency_ns / u128::from(iv.successes.max(1))) as u64),
            cause: decision.as_ref().map(|d| d.cause),
            baseline: decision.and_then(|d| d.baseline),
            tenants: iv.tenants,
        }
    }
}

/// Runs `scenario` with `limit` enforced by a real [`Limiter`] (by default
/// one class, no queue; see [`Scenario::limiter`]) on a [`ManualClock`],
/// and returns the trace.
///
/// # Panics
///
/// If [`Scenario::limiter`] is invalid or a group names a class it does
/// not have.
pub fn run<L: Limit>(scenario: &Scenario, limit: L) -> Trace {
    // The limiter owns one handle, the trace reads `explain` through the
    // other.
    let tap = Arc::new(limit);
    let clock = Arc::new(ManualClock::new());
    let config = scenario.limiter.clone().unwrap_or_else(|| LimiterConfig {
        classes: vec![ClassSpec::new("sim", 0.0)],
        ..LimiterConfig::default()
    });
    let first = config.classes.first().map(|c| c.name.clone());
    let limiter = Limiter::new(config, tap.clone(), clock.clone() as Arc<dyn Clock>)
        .expect("the scenario's limiter config is valid");
    let class_of = |name: Option<&str>| {
        let name = name.or(first.as_deref()).expect("at least one class");
        limiter
            .class_id(name)
            .unwrap_or_else(|| panic!("no class {name:?}"))
    };
    let req = Request {
        class: class_of(None),
        tenant: None,
    };
    let mut sources: Vec<Source> = scenario
        .mix
        .iter()
        .map(|g| Source {
            class: class_of(g.class.as_deref()),
            tenants: g.tenants.clone(),
            weight: g.weight.max(0.0),
            upto: 0.0,
        })
        .collect();
    reweigh(&mut sources);
    let groups = scenario
        .mix
        .iter()
        .map(|g| GroupTrace {
            name: g.name.clone(),
            points: Vec::new(),
        })
        .collect();
    let mut sim = Sim {
        scenario,
        rng: Rng::new(scenario.seed),
        clock,
        limiter,
        heap: BinaryHeap::new(),
        seq: 0,
        jobs: Vec::new(),
        free: Vec::new(),
        queue: VecDeque::new(),
        busy: 0,
        backend: scenario.backend,
        offered: scenario.offered_rps,
        interval: Interval {
            groups: vec![[0; 4]; sources.len()],
            ..Interval::default()
        },
        sources,
        fresh: 0,
        id: String::new(),
        groups,
    };
    let end = duration_nanos(scenario.duration);
    let step = duration_nanos(scenario.resolution).max(1);
    sim.next_arrival(0);
    sim.at(step, Event::Tick);
    for (i, (t, _)) in scenario.changes.iter().enumerate() {
        sim.at(duration_nanos(*t), Event::Change(i));
    }
    let mut points = Vec::with_capacity((end / step) as usize + 1);
    while let Some(Reverse((now, _, event))) = sim.heap.pop() {
        if now > end {
            break;
        }
        sim.clock.set(Nanos(now));
        match event {
            Event::Arrival => sim.arrive(now, &req),
            Event::Finish { id, gen } => sim.finish(now, id, gen),
            Event::Timeout { id, gen } => sim.timeout(now, id, gen),
            Event::Tick => {
                points.push(sim.point(now, &tap));
                sim.at(now + step, Event::Tick);
            }
            Event::Change(i) => {
                match scenario.changes[i].1 {
                    Change::Workers(w) => sim.backend.workers = w,
                    Change::ServiceTime(s) => sim.backend.service_time = s,
                    Change::OfferedRps(r) => sim.offered = r,
                    Change::Noise(n) => sim.backend.noise = n,
                    Change::Weight(g, w) => {
                        if let Some(s) = sim.sources.get_mut(g) {
                            s.weight = w.max(0.0);
                        }
                        reweigh(&mut sim.sources);
                    }
                }
                sim.fill(now);
            }
        }
    }
    // Permits still held are dropped with the jobs, as Ignored: the run is
    // over, nothing more is learned.
    Trace {
        points,
        groups: sim.groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FixedLimit;

    #[test]
    fn a_fixed_limit_at_the_best_concurrency_gets_full_goodput_at_service_time() {
        let s = Scenario {
            duration: Duration::from_secs(10),
            ..Scenario::default()
        };
        let t = run(&s, FixedLimit::new(50));
        let goodput = t.goodput(Duration::from_secs(2), s.duration);
        assert!(goodput > 0.97 * s.backend.capacity_rps(), "{goodput}");
        let lat = t.latency(Duration::from_secs(2), s.duration);
        assert!(lat < Duration::from_millis(52), "{lat:?}");
        assert_eq!(t.points.len(), 100);
    }

    #[test]
    fn twice_the_best_concurrency_doubles_latency_for_no_goodput() {
        let s = Scenario {
            duration: Duration::from_secs(10),
            ..Scenario::default()
        };
        let t = run(&s, FixedLimit::new(100));
        let goodput = t.goodput(Duration::from_secs(2), s.duration);
        assert!(goodput > 0.98 * s.backend.capacity_rps(), "{goodput}");
        let lat = t.latency(Duration::from_secs(2), s.duration);
        assert!(lat > Duration::from_millis(95), "{lat:?}");
    }

    #[test]
    fn the_same_seed_replays_the_same_trace() {
        let s = Scenario {
            duration: Duration::from_secs(3),
            ..Scenario::default()
        };
        assert_eq!(run(&s, FixedLimit::new(60)), run(&s, FixedLimit::new(60)));
    }
}
