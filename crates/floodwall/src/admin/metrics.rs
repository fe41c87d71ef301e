//! Prometheus exposition, rendered from snapshots at scrape time.
//!
//! Limiter figures (in flight, limits, outcomes, limiter rejections) are
//! read from each limiter's snapshot, so the hot path pays nothing for them
//! and `/metrics` and `/status` can never disagree. Only the duration
//! histograms (one per route and class, created with the route in
//! `proxy::RouteSeries`, so a request clones a handle and formats no label) and
//! the atomic counters of the other refusals (on each route, and on the
//! proxy for unrouted requests) are written as they happen.
//! `docs/metrics.md` describes every series.
//!
//! ## Effective load
//!
//! `floodwall_effective_load{route}` is the demand on the gate as a share
//! of its limit, the signal an autoscaler needs (the "Adaptive
//! Concurrency Sharding" article scales on a load factor combining "queue
//! depth and concurrency utilization"):
//!
//! ```text
//! effective_load = (W + Q + R × d) / max(C, 1)
//! ```
//!
//! where `W` is the requests in flight, `Q` the requests queued, `R` the
//! refusals per second since the previous reading (every refusal of the
//! gate: no slot, tenant over its share, queue full or timed out, global
//! limit, store down), `d` the smoothed request duration and `C` the
//! route's effective limit. `R × d` is Little's law: the slots the refused
//! requests would have held had they been admitted. Utilization alone
//! (`W / C`) stops at 1 exactly when the autoscaler most needs to know how
//! far past saturation the demand is; with the refused term, 3× the
//! capacity reads about 3. Before any request has completed `d` is 0 and
//! the term is too (the gate is then full, so the gauge reads at least 1
//! anyway). A client that retries at once without honouring `Retry-After`
//! counts once per attempt: that is the load the gate really sees.
//!
//! The refusal rate needs two readings, so each route's `RouteSeries`
//! keeps the last one; a reading less than `proxy::series::LOAD_SPAN` (1 s) after the
//! previous reuses its rate, so two scrapers close together do not make it
//! noisy. The first scrape after start has no rate yet and reads `(W + Q) /
//! C`. Each replica exposes its own value (its own `C`: in distributed mode
//! its share); Prometheus adds the `instance`.

use crate::distributed::DistributedSnapshot;
use crate::probe::{Health, ProbeSnapshot};
use crate::proxy::{RefusalCounters, Route};
use crate::server::stats::{ConnectionsSnapshot, Timeout};
use floodwall_core::{Outcome, Reason};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// The content type of the OpenMetrics exposition, served to scrapers that
/// ask for it (Prometheus does).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the classic Prometheus text format, served to
/// everyone else (curl, `promtool check metrics`).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text into the classic Prometheus text format.
///
/// `prometheus-client` writes OpenMetrics, where a counter family is named
/// without `_total` and a `# EOF` ends the document. Classic parsers (and
/// `promtool check metrics`) then see `_total` samples with no HELP/TYPE.
/// The two formats differ only in those lines, so the rewrite is exact:
/// counter HELP/TYPE lines gain `_total`, `# UNIT` and `# EOF` go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        // A blank line is not valid in either format; never pass one on.
        if line.is_empty() || line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlgorithmLabels {
    route: String,
    algorithm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    route: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    route: String,
    class: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    route: String,
    class: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    route: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DnsLabels {
    upstream: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    upstream: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    upstream: String,
    from: String,
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    probe: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TimeoutLabels {
    listener: String,
    timeout: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConstraintLabels {
    probe: String,
    route: String,
}

/// The demand on a gate as a share of its limit (see the module doc):
/// `(inflight + queued + refused_per_second × rtt) / max(limit, 1)`.
pub fn effective_load(
    inflight: usize,
    queued: usize,
    refused_per_second: f64,
    rtt: Duration,
    limit: usize,
) -> f64 {
    let refused_slots = refused_per_second.max(0.0) * rtt.as_secs_f64();
    (inflight as f64 + queued as f64 + refused_slots) / limit.max(1) as f64
}

/// Every route's duration histograms as one family, encoded from the
/// handles the routes own (a `Family` would own its metrics).
#[derive(Debug)]
struct Durations(Vec<(ClassLabels, Histogram)>);

impl EncodeMetric for Durations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            h.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The refusals of the distributed layer that mean "no capacity", which
/// the effective load counts with the limiter's own.
const GATE_REFUSALS: [&str; 2] = ["global_limit_exceeded", "store_unavailable"];

/// What one exposition is rendered from.
#[derive(Debug)]
pub struct Sources<'a> {
    /// The routes, in match order.
    pub routes: &'a [Arc<Route>],
    /// Refusals of requests that matched no route.
    pub unrouted: &'a RefusalCounters,
    /// The probes now.
    pub probes: &'a [ProbeSnapshot],
    /// Distributed mode now, if configured.
    pub distributed: Option<&'a DistributedSnapshot>,
    /// Both listeners' connection counters now (absent in tests that
    /// render other families alone).
    pub connections: Option<&'a ConnectionsSnapshot>,
    /// The decision log's counters (absent in those tests too).
    pub events: Option<&'a crate::events::Events>,
}

/// Renders the exposition (OpenMetrics text).
pub fn render(sources: &Sources<'_>) -> String {
    let mut reg = Registry::default();
    register_routes(&mut reg, sources);
    register_resilience(&mut reg, sources.routes);
    register_endpoints(&mut reg, sources.routes);
    register_probes(&mut reg, sources.probes);
    if let Some(d) = sources.distributed {
        register_distributed(&mut reg, d);
    }
    if let Some(c) = sources.connections {
        register_connections(&mut reg, c);
    }
    if let Some(e) = sources.events {
        let dropped = Counter::<u64>::default();
        dropped.inc_by(e.dropped());
        let written = Counter::<u64>::default();
        written.inc_by(e.written());
        reg.register(
            "floodwall_events_dropped",
            "Decision-log events dropped because the writer was behind (its buffer full) or a write failed; requests never wait for the log",
            dropped,
        );
        reg.register(
            "floodwall_events_written",
            "Decision-log events written ([events]; 0 while it is off)",
            written,
        );
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)
        .expect("writing to a String cannot fail");
    out
}

fn register_routes(reg: &mut Registry, sources: &Sources<'_>) {
    let wip_current = Family::<ClassLabels, Gauge>::default();
    let wip_limit = Family::<ClassLabels, Gauge>::default();
    let wip_reserved = Family::<ClassLabels, Gauge>::default();
    let limit = Family::<RouteLabels, Gauge>::default();
    let algorithm = Family::<AlgorithmLabels, Gauge>::default();
    let queue_depth = Family::<RouteLabels, Gauge>::default();
    let tenants = Family::<RouteLabels, Gauge>::default();
    let requests = Family::<OutcomeLabels, Counter>::default();
    let rejections = Family::<ReasonLabels, Counter>::default();
    let limit_min = Family::<RouteLabels, Gauge>::default();
    let load = Family::<RouteLabels, Gauge<f64, AtomicU64>>::default();
    let mut durations = Vec::new();

    for route in sources.routes {
        let s = route.limiter.snapshot();
        let r = RouteLabels {
            route: route.name.clone(),
        };
        limit.get_or_create(&r).set(s.limit as i64);
        limit_min.get_or_create(&r).set(route.series.floor() as i64);
        let refused: u64 = s.classes.iter().flat_map(|c| c.rejections).sum::<u64>()
            + route
                .refusals
                .counts()
                .filter(|(_, reason, _)| GATE_REFUSALS.contains(reason))
                .map(|(_, _, n)| n)
                .sum::<u64>();
        let rate = route.series.refusal_rate(refused);
        load.get_or_create(&r).set(effective_load(
            s.inflight,
            s.queue_depth,
            rate,
            s.ewma_rtt,
            s.limit,
        ));
        algorithm
            .get_or_create(&AlgorithmLabels {
                route: route.name.clone(),
                algorithm: s.algorithm.to_owned(),
            })
            .set(s.algorithm_limit as i64);
        queue_depth.get_or_create(&r).set(s.queue_depth as i64);
        tenants.get_or_create(&r).set(s.tenants_active as i64);
        let held: usize = s
            .classes
            .iter()
            .filter(|c| c.active)
            .map(|c| c.reserved)
            .sum();
        for c in &s.classes {
            let l = ClassLabels {
                route: route.name.clone(),
                class: c.name.clone(),
            };
            let others_held = held - if c.active { c.reserved } else { 0 };
            wip_current.get_or_create(&l).set(c.inflight as i64);
            wip_limit
                .get_or_create(&l)
                .set(s.limit.saturating_sub(others_held) as i64);
            wip_reserved.get_or_create(&l).set(c.reserved as i64);
            if let Some(class) = route.limiter.class_id(&c.name) {
                durations.push((l.clone(), route.series.duration(class).clone()));
            }
            for o in Outcome::ALL {
                requests
                    .get_or_create(&OutcomeLabels {
                        route: l.route.clone(),
                        class: l.class.clone(),
                        outcome: o.as_str().to_owned(),
                    })
                    .inc_by(c.outcomes[o as usize]);
            }
            for (ri, reason) in Reason::ALL.iter().enumerate() {
                rejections
                    .get_or_create(&ReasonLabels {
                        route: l.route.clone(),
                        class: l.class.clone(),
                        reason: reason.as_str().to_owned(),
                    })
                    .inc_by(c.rejections[ri]);
            }
        }
        // The refusals the limiter does not count; a row is a class index.
        for (row, reason, n) in route.refusals.counts() {
            rejections
                .get_or_create(&ReasonLabels {
                    route: route.name.clone(),
                    class: s
                        .classes
                        .get(row)
                        .map(|c| c.name.clone())
                        .unwrap_or_default(),
                    reason: reason.to_owned(),
                })
                .inc_by(n);
        }
    }
    // Unrouted requests have neither route nor class.
    for (_, reason, n) in sources.unrouted.counts() {
        rejections
            .get_or_create(&ReasonLabels {
                route: String::new(),
                class: String::new(),
                reason: reason.to_owned(),
            })
            .inc_by(n);
    }

    reg.register(
        "floodwall_wip_current",
        "Requests holding a slot now (admitted, response not finished)",
        wip_current,
    );
    reg.register(
        "floodwall_wip_limit",
        "Slots this class may use now: the route limit minus other active classes' reservations",
        wip_limit,
    );
    reg.register(
        "floodwall_wip_reserved",
        "Slots reserved for this class at the current limit",
        wip_reserved,
    );
    reg.register(
        "floodwall_limit",
        "The route's effective limit: the algorithm's, capped by any probe constraint",
        limit,
    );
    reg.register(
        "floodwall_limit_algorithm",
        "The limit the route's algorithm (label) wants, before probe constraints",
        algorithm,
    );
    reg.register(
        "floodwall_queue_depth",
        "Requests waiting in the route's queue",
        queue_depth,
    );
    reg.register(
        "floodwall_tenants_active",
        "Tenants holding at least one slot",
        tenants,
    );
    reg.register(
        "floodwall_requests",
        "Admitted requests that finished, by outcome",
        requests,
    );
    reg.register(
        "floodwall_rejections",
        "Requests floodwall answered itself, by reason",
        rejections,
    );
    reg.register(
        "floodwall_limit_min",
        "The floor of the route's algorithm (min; a fixed limit's value)",
        limit_min,
    );
    reg.register(
        "floodwall_effective_load",
        "Demand on the gate as a share of its limit: (in flight + queued + refused/s x smoothed duration) / limit; above 1 while refusing",
        load,
    );
    reg.register_with_unit(
        "floodwall_request_duration",
        "Admitted requests from arrival until the upstream finished the response body, by route and class",
        Unit::Seconds,
        Durations(durations),
    );
}

/// Each upstream's endpoints (see `docs/metrics.md`), once per upstream
/// however many routes share it. A leaving endpoint still finishing is
/// listed until it is idle.
fn register_endpoints(reg: &mut Registry, routes: &[Arc<Route>]) {
    let inflight = Family::<EndpointLabels, Gauge>::default();
    let requests = Family::<EndpointLabels, Counter>::default();
    let ejected = Family::<EndpointLabels, Gauge>::default();
    let ejections = Family::<EndpointLabels, Counter>::default();
    let version = Family::<UpstreamLabels, Gauge>::default();
    let keys = Family::<UpstreamLabels, Gauge>::default();
    let resolutions = Family::<DnsLabels, Counter>::default();
    let mut seen: Vec<&Arc<crate::proxy::Upstream>> = Vec::new();
    for route in routes {
        let up = &route.upstream;
        if seen.iter().any(|u| Arc::ptr_eq(u, up)) {
            continue;
        }
        seen.push(up);
        let s = up.endpoints.balancer.snapshot();
        let l = UpstreamLabels {
            upstream: up.name.clone(),
        };
        version.get_or_create(&l).set(s.version as i64);
        keys.get_or_create(&l).set(s.keys_in_flight as i64);
        if let Some(d) = &up.endpoints.dns {
            let d = d.snapshot();
            for (result, n) in [("ok", d.ok), ("failed", d.failed)] {
                resolutions
                    .get_or_create(&DnsLabels {
                        upstream: up.name.clone(),
                        result,
                    })
                    .inc_by(n);
            }
        }
        for e in &s.endpoints {
            let l = EndpointLabels {
                upstream: up.name.clone(),
                endpoint: e.name.clone(),
            };
            inflight.get_or_create(&l).set(e.inflight as i64);
            requests.get_or_create(&l).inc_by(e.requests);
            ejected
                .get_or_create(&l)
                .set(e.ejected_for.is_some() as i64);
            ejections.get_or_create(&l).inc_by(e.ejections);
        }
    }
    reg.register(
        "floodwall_endpoint_inflight",
        "Requests in flight at the upstream's endpoint, from its choice until the upstream finished",
        inflight,
    );
    reg.register(
        "floodwall_endpoint_requests",
        "Requests sent to the endpoint since it joined the upstream",
        requests,
    );
    reg.register(
        "floodwall_endpoint_ejected",
        "1 while the endpoint is ejected by passive health (connect errors or timeouts), else 0",
        ejected,
    );
    reg.register(
        "floodwall_endpoint_ejections",
        "Times the endpoint was ejected by passive health",
        ejections,
    );
    reg.register(
        "floodwall_upstream_ring_version",
        "The upstream's membership version: 1 at start, one more per change (sent as X-Floodwall-Ring-Version with balance = hash)",
        version,
    );
    reg.register(
        "floodwall_upstream_dns_resolutions",
        "Resolutions of a dns upstream's name: ok (at least one address) or failed (an error, a timeout or no address: the membership was kept)",
        resolutions,
    );
    reg.register(
        "floodwall_upstream_keys_in_flight",
        "Distinct hash keys with a request in flight on the upstream (balance = hash; else 0)",
        keys,
    );
}

/// The breaker, bulkhead, retry budget and shadow series (see
/// `docs/metrics.md`). Upstream series once per upstream, however many
/// routes share it; each family only when something uses it.
fn register_resilience(reg: &mut Registry, routes: &[Arc<Route>]) {
    let state = Family::<UpstreamLabels, Gauge>::default();
    let transitions = Family::<TransitionLabels, Counter>::default();
    let inflight = Family::<UpstreamLabels, Gauge>::default();
    let tickets = Family::<UpstreamLabels, Gauge>::default();
    let remaining = Family::<RouteLabels, Gauge>::default();
    let shadow = Family::<ShadowLabels, Counter>::default();
    let (mut breakers, mut bulkheads, mut budgets, mut shadows) = (false, false, false, false);
    let mut seen: Vec<&Arc<crate::proxy::Upstream>> = Vec::new();
    for route in routes {
        if let Some(r) = &route.retry {
            budgets = true;
            remaining
                .get_or_create(&RouteLabels {
                    route: route.name.clone(),
                })
                .set(r.budget.remaining().min(i64::MAX as u64) as i64);
        }
        let counts: Vec<_> = route.shadow_refusals.counts().collect();
        if route.shadow || counts.iter().any(|(_, n)| *n > 0) {
            shadows = true;
            for (reason, n) in counts {
                shadow
                    .get_or_create(&ShadowLabels {
                        route: route.name.clone(),
                        reason: reason.to_owned(),
                    })
                    .inc_by(n);
            }
        }
        let up = &route.upstream;
        if seen.iter().any(|u| Arc::ptr_eq(u, up)) {
            continue;
        }
        seen.push(up);
        let l = UpstreamLabels {
            upstream: up.name.clone(),
        };
        if let Some(b) = &up.guards.breaker {
            breakers = true;
            let s = b.breaker.state();
            let value = floodwall_core::breaker::State::ALL
                .iter()
                .position(|x| *x == s)
                .unwrap_or(0);
            state.get_or_create(&l).set(value as i64);
            for (from, to, n) in b.transitions() {
                transitions
                    .get_or_create(&TransitionLabels {
                        upstream: up.name.clone(),
                        from: from.as_str().to_owned(),
                        to: to.as_str().to_owned(),
                    })
                    .inc_by(n);
            }
        }
        if let Some(b) = &up.guards.bulkhead {
            bulkheads = true;
            inflight.get_or_create(&l).set(b.in_use() as i64);
            tickets.get_or_create(&l).set(b.tickets() as i64);
        }
    }
    if breakers {
        reg.register(
            "floodwall_breaker_state",
            "The upstream's circuit breaker: 0 closed, 1 open, 2 half-open",
            state,
        );
        reg.register(
            "floodwall_breaker_transitions",
            "Circuit breaker state changes, by upstream and from/to state",
            transitions,
        );
    }
    if bulkheads {
        reg.register(
            "floodwall_bulkhead_inflight",
            "Requests holding a ticket of the upstream's bulkhead now, across every route to it",
            inflight,
        );
        reg.register(
            "floodwall_bulkhead_tickets",
            "The upstream's bulkhead size (tickets, or quota of the routes' limits)",
            tickets,
        );
    }
    if budgets {
        reg.register(
            "floodwall_retry_budget_remaining",
            "Retries the route's retry budget would admit now",
            remaining,
        );
    }
    if shadows {
        reg.register(
            "floodwall_shadow_refusals",
            "Requests shadow mode forwarded that enforcement would have refused, by reason",
            shadow,
        );
    }
}

/// Registers the probe series in `registry` with their values in `probes`:
///
/// - `floodwall_probe_constraint{probe, route}` (gauge): the probe's
///   constraint on the route. **Absent** while lifted rather than a
///   sentinel, so `min by (route)` over it is the composed cap.
/// - `floodwall_bottleneck_saturated{probe}` (gauge): 1 while the last
///   reading was saturated, else 0 (a failing probe is 0; see errors).
/// - `floodwall_probe_errors_total{probe}` (counter): failed or timed-out
///   checks since start.
///
/// With no probe configured it registers nothing, so a floodwall without
/// probes exposes no empty families.
pub fn register_probes(registry: &mut Registry, probes: &[ProbeSnapshot]) {
    if probes.is_empty() {
        return;
    }
    let constraint = Family::<ConstraintLabels, Gauge>::default();
    let saturated = Family::<ProbeLabels, Gauge>::default();
    let errors = Family::<ProbeLabels, Counter>::default();
    for p in probes {
        let labels = ProbeLabels {
            probe: p.name.clone(),
        };
        saturated
            .get_or_create(&labels)
            .set(matches!(p.health, Health::Saturated { .. }) as i64);
        errors.get_or_create(&labels).inc_by(p.errors);
        for c in &p.constraints {
            if let Some(v) = c.value {
                constraint
                    .get_or_create(&ConstraintLabels {
                        probe: p.name.clone(),
                        route: c.route.clone(),
                    })
                    .set(v as i64);
            }
        }
    }
    registry.register(
        "floodwall_probe_constraint",
        "The cap a bottleneck probe puts on a route's limit; absent while lifted",
        constraint,
    );
    registry.register(
        "floodwall_bottleneck_saturated",
        "1 while the probe's last reading found its bottleneck saturated",
        saturated,
    );
    registry.register(
        "floodwall_probe_errors",
        "Probe checks that failed or timed out",
        errors,
    );
}

/// The store series (see `docs/metrics.md`).
fn register_distributed(registry: &mut Registry, d: &DistributedSnapshot) {
    let up = Gauge::<i64>::default();
    up.set(d.up as i64);
    let commands = Counter::<u64>::default();
    commands.inc_by(d.commands);
    let errors = Counter::<u64>::default();
    errors.inc_by(d.errors);
    let switches = Counter::<u64>::default();
    switches.inc_by(d.switches);
    let per = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    per.set(d.commands_per_admitted);
    let replicas = Family::<RouteLabels, Gauge>::default();
    let share = Family::<RouteLabels, Gauge>::default();
    let global = Family::<RouteLabels, Gauge>::default();
    for r in &d.routes {
        let l = RouteLabels {
            route: r.route.clone(),
        };
        replicas.get_or_create(&l).set(r.replicas as i64);
        // An absent share (open policy, strict mode) is the global
        // limit: nothing below it caps this replica.
        share
            .get_or_create(&l)
            .set(r.share.unwrap_or(r.global_limit) as i64);
        global.get_or_create(&l).set(r.global_limit as i64);
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
        d.latency.clone(),
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
        "floodwall_store_switches",
        "Times the Redis primary behind Sentinel changed (a failover): every lease was re-registered and grants capped at the fallback share for one lease_ttl",
        switches,
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

/// The connection series of both listeners (see `docs/metrics.md`).
fn register_connections(registry: &mut Registry, c: &ConnectionsSnapshot) {
    let open = Family::<ListenerLabels, Gauge>::default();
    let max = Family::<ListenerLabels, Gauge>::default();
    let refused = Family::<ListenerLabels, Counter>::default();
    let errors = Family::<ListenerLabels, Counter>::default();
    let timed_out = Family::<TimeoutLabels, Counter>::default();
    for l in &c.listeners {
        let labels = ListenerLabels {
            listener: l.listener.to_owned(),
        };
        open.get_or_create(&labels).set(l.open as i64);
        max.get_or_create(&labels).set(l.max as i64);
        refused.get_or_create(&labels).inc_by(l.refused);
        errors.get_or_create(&labels).inc_by(l.accept_errors);
        for (timeout, n) in [
            (Timeout::HeaderRead, l.header_timeouts),
            (Timeout::Keepalive, l.keepalive_timeouts),
            (Timeout::Send, l.send_timeouts),
        ] {
            timed_out
                .get_or_create(&TimeoutLabels {
                    listener: l.listener.to_owned(),
                    timeout: timeout.as_str().to_owned(),
                })
                .inc_by(n);
        }
    }
    let fd_limit = Gauge::<i64>::default();
    fd_limit.set(i64::try_from(c.fd_limit).unwrap_or(i64::MAX));
    registry.register(
        "floodwall_connections_open",
        "Connections open now on the listener",
        open,
    );
    registry.register(
        "floodwall_connections_max",
        "The most connections the listener holds at once (server.max_connections, server.admin_max_connections)",
        max,
    );
    registry.register(
        "floodwall_connections_refused",
        "Connections accepted and reset at once because the listener was at its cap",
        refused,
    );
    registry.register(
        "floodwall_accept_errors",
        "accept(2) calls that failed (out of file descriptors and the like)",
        errors,
    );
    registry.register(
        "floodwall_connections_timed_out",
        "Connections floodwall closed because a client was too slow to send headers or idle too long",
        timed_out,
    );
    registry.register(
        "floodwall_fd_limit",
        "The soft open-files limit in force, after start-up raised it to the hard limit",
        fd_limit,
    );
}

#[cfg(test)]
mod tests {
    use super::effective_load;
    use std::time::Duration;

    #[test]
    fn effective_load_keeps_rising_past_saturation() {
        let d = Duration::from_millis(50);
        // Half full, nothing refused.
        assert_eq!(effective_load(5, 0, 0.0, d, 10), 0.5);
        // Full, queue of 5: 1.5.
        assert_eq!(effective_load(10, 5, 0.0, d, 10), 1.5);
        // Full and refusing 400/s of 50 ms requests: 20 more slots' worth
        // of demand, 3x the limit.
        assert!((effective_load(10, 0, 400.0, d, 10) - 3.0).abs() < 1e-9);
        // A limit of 0 (a share of nothing) is read as 1, never a division
        // by zero.
        assert_eq!(effective_load(0, 2, 0.0, d, 0), 2.0);
    }
}
