//! The `/status` document: per route, the limit and why, in-flight per
//! class, queue depth and refusals by reason, its upstream's endpoints
//! (ring version, each endpoint's in-flight and ejection), breaker and
//! bulkhead, its retry budget and shadow refusals; then the probes and
//! distributed mode. Rendered from snapshots; nothing here holds state.

use crate::distributed::DistributedSnapshot;
use crate::probe::{Health, ProbeSet, ProbeSnapshot};
use crate::proxy::Route;
use floodwall_core::{Outcome, Reason, Snapshot};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The whole document.
pub fn document(
    routes: &[Arc<Route>],
    probes: &ProbeSet,
    distributed: Option<&DistributedSnapshot>,
    draining: bool,
) -> Value {
    let routes: Vec<Value> = routes
        .iter()
        .map(|r| route(r, &r.limiter.snapshot(), probes.limited_by(&r.limiter)))
        .collect();
    json!({
        "draining": draining,
        "routes": routes,
        "probes": self::probes(&probes.snapshot()),
        "store": distributed.map(self::distributed),
    })
}

/// One line saying what sets the limit now: an outside constraint (a
/// bottleneck probe), the algorithm's last decision, or a fixed value.
fn limited_by(s: &Snapshot, probe: Option<String>) -> String {
    match (s.constraint, &s.decision) {
        (Some(c), _) if c < s.algorithm_limit => format!(
            "limited by {} to {c} (the {} algorithm allows {})",
            probe.unwrap_or_else(|| "a probe".into()),
            s.algorithm,
            s.algorithm_limit
        ),
        (_, Some(d)) => format!("{}: {}", s.algorithm, d.detail),
        (_, None) if s.algorithm == "fixed" => format!("fixed limit of {}", s.limit),
        (_, None) => format!("{}: starting at {}, no decision yet", s.algorithm, s.limit),
    }
}

/// One route, from its limiter's snapshot `s`; `probe` names the probes
/// holding its limit down, if any.
fn route(route: &Route, s: &Snapshot, probe: Option<String>) -> Value {
    let classes: Vec<Value> = s
        .classes
        .iter()
        .map(|c| {
            let outcomes: Map<String, Value> = Outcome::ALL
                .iter()
                .map(|o| (o.as_str().to_owned(), json!(c.outcomes[*o as usize])))
                .collect();
            let rejections: Map<String, Value> = Reason::ALL
                .iter()
                .enumerate()
                .map(|(i, r)| (r.as_str().to_owned(), json!(c.rejections[i])))
                .collect();
            json!({
                "name": c.name,
                "inflight": c.inflight,
                "reserved": c.reserved,
                "active": c.active,
                "admitted": c.admitted,
                "outcomes": outcomes,
                "rejections": rejections,
            })
        })
        .collect();
    json!({
        "name": route.name,
        "upstream": route.upstream.name,
        "algorithm": s.algorithm,
        "limit": s.limit,
        "algorithm_limit": s.algorithm_limit,
        "constraint": s.constraint,
        "limited_by": limited_by(s, probe),
        "last_decision": s.decision.as_ref().map(|d| json!({
            "cause": d.cause.as_str(),
            "from": d.from,
            "to": d.to,
            "detail": d.detail,
        })),
        "inflight": s.inflight,
        "queue_depth": s.queue_depth,
        "tenants_active": s.tenants_active,
        "tenant_caps_enforced": s.tenant_contended,
        "smoothed_duration_ms": s.ewma_rtt.as_secs_f64() * 1000.0,
        "classes": classes,
        "mode": if route.shadow { "shadow" } else { "enforce" },
        "shadow_refusals": route
            .shadow_refusals
            .counts()
            .filter(|(_, n)| *n > 0)
            .map(|(reason, n)| (reason.to_owned(), json!(n)))
            .collect::<Map<String, Value>>(),
        "retry_budget": route.retry.as_ref().map(|r| json!({
            "remaining": r.budget.remaining(),
        })),
        "breaker": route.upstream.guards.breaker.as_ref().map(|b| json!({
            "state": b.breaker.state().as_str(),
            "transitions": b
                .transitions()
                .map(|(from, to, n)| (format!("{from}->{to}"), json!(n)))
                .collect::<Map<String, Value>>(),
        })),
        "bulkhead": route.upstream.guards.bulkhead.as_ref().map(|b| json!({
            "in_use": b.in_use(),
            "tickets": b.tickets(),
        })),
        "endpoints": endpoints(&route.upstream.endpoints),
    })
}

/// A route's upstream's membership: the ring version, the keys in flight
/// (hash only) and each endpoint, members first, then any leaving
/// endpoint still finishing its requests; for a `dns` upstream, its
/// resolutions (`dns`: name, refresh, counts, last error, addresses).
fn endpoints(e: &crate::proxy::Endpoints) -> Value {
    let s = &e.balancer.snapshot();
    let list: Vec<Value> = s
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "endpoint": e.name,
                "inflight": e.inflight,
                "requests": e.requests,
                "ejected": e.ejected_for.is_some(),
                "ejected_for_ms": e.ejected_for.map(|d| d.as_millis() as u64),
                "ejections": e.ejections,
                "latency_ms": e.latency.as_secs_f64() * 1000.0,
                "leaving": e.leaving,
            })
        })
        .collect();
    json!({
        "ring_version": s.version,
        "keys_in_flight": s.keys_in_flight,
        "members": list,
        "dns": e.dns.as_ref().map(|d| {
            let d = d.snapshot();
            json!({
                "name": d.name,
                "refresh_ms": d.refresh_ms,
                "resolutions": d.ok,
                "failures": d.failed,
                "changes": d.changes,
                "last_error": d.last_error,
                "addresses": d.addresses,
            })
        }),
    })
}

/// The `probes` array: one object per probe with `name`, `kind`, `state`
/// (`starting`, `ok`, `saturated` or `failing`), `hard`, `detail` (the last
/// successful reading), `last_error`, `on_failure`, `errors_total`,
/// `checks`, `constraint` (route → number, or null when lifted), `limiting`
/// (the routes whose limit this probe sets now) and `flag_file` (`{path,
/// raised}` or null).
pub fn probes(probes: &[ProbeSnapshot]) -> Value {
    let list: Vec<Value> = probes
        .iter()
        .map(|p| {
            let constraint: Map<String, Value> = p
                .constraints
                .iter()
                .map(|c| (c.route.clone(), json!(c.value)))
                .collect();
            let limiting: Vec<&str> = p
                .constraints
                .iter()
                .filter(|c| c.limiting)
                .map(|c| c.route.as_str())
                .collect();
            json!({
                "name": p.name,
                "kind": p.kind.as_str(),
                "state": p.health.as_str(),
                "hard": matches!(p.health, Health::Saturated { hard: true }),
                "detail": p.detail,
                "last_error": p.last_error,
                "on_failure": p.on_failure.as_str(),
                "errors_total": p.errors,
                "checks": p.checks,
                "interval_ms": p.interval.as_millis() as u64,
                "timeout_ms": p.timeout.as_millis() as u64,
                "constraint": constraint,
                "limiting": limiting,
                "flag_file": p.flag_file.as_ref().map(|f| json!({
                    "path": f.path.display().to_string(),
                    "raised": f.raised,
                })),
            })
        })
        .collect();
    Value::Array(list)
}

/// The `store` object: the backend's state and each route's share.
pub fn distributed(d: &DistributedSnapshot) -> Value {
    let routes: Vec<Value> = d
        .routes
        .iter()
        .map(|r| {
            json!({
                "route": r.route,
                "global_limit": r.global_limit,
                "replicas": r.replicas,
                "share": r.share,
                "grant": r.grant,
                "usage": r.usage,
                "demand": r.demand,
                "inflight": r.inflight,
                "lease_left_ms": r.lease_left.map(|l| l.as_millis() as u64),
            })
        })
        .collect();
    json!({
        "url": d.url,
        "mode": d.mode.as_str(),
        "replica_id": d.replica_id,
        "state": d.state,
        "on_store_failure": d.on_store_failure.as_str(),
        "last_error": d.last_error,
        "commands": d.commands,
        "errors": d.errors,
        "switches": d.switches,
        "commands_per_admitted": d.commands_per_admitted,
        "routes": routes,
    })
}
