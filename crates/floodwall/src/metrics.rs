//! Prometheus exposition.
//!
//! Gate figures (in flight, limits, outcomes, gate refusals) are read from
//! each limiter's snapshot at scrape time, so the hot path pays nothing for
//! them and `/metrics` and `/status` can never disagree. Only the duration
//! histogram and the rare non-gate refusals are written as they happen.
//! `docs/metrics.md` describes every series.

use crate::proxy::Router;
use crate::respond::Refusal;
use floodwall_core::{ClassId, Outcome, Reason};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::Mutex;

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
        if line == "# EOF" || line.starts_with("# UNIT ") {
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

/// (route, class, reason) of a refusal the gate did not make; route and
/// class are empty when the request matched no route.
type RefusalKey = (String, Option<ClassId>, &'static str);

/// Metrics written on the request path.
#[derive(Debug)]
pub struct Metrics {
    /// Time from arrival to the end of the response body, for admitted
    /// requests.
    pub request_duration: Histogram,
    /// Refusals not made by the gate, by (route, class, reason); route and
    /// class are empty when the request matched no route.
    other_refusals: Mutex<HashMap<RefusalKey, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics. Duration buckets run from 0.5 ms to about 33 s.
    pub fn new() -> Self {
        Self {
            request_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 17)),
            other_refusals: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a refusal the gate did not make (upstream failures, bad
    /// tenant ids, unrouted requests).
    pub fn count_refusal(&self, at: Option<(&str, ClassId)>, refusal: &Refusal) {
        let key = match at {
            Some((route, class)) => (route.to_owned(), Some(class), refusal.reason()),
            None => (String::new(), None, refusal.reason()),
        };
        *self
            .other_refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Renders the exposition for `router`'s routes.
    pub fn render(
        &self,
        router: &Router,
        probes: &crate::probe::ProbeSet,
        store: Option<&crate::store::Store>,
    ) -> String {
        let wip_current = Family::<ClassLabels, Gauge>::default();
        let wip_limit = Family::<ClassLabels, Gauge>::default();
        let wip_reserved = Family::<ClassLabels, Gauge>::default();
        let limit = Family::<RouteLabels, Gauge>::default();
        let algorithm = Family::<AlgorithmLabels, Gauge>::default();
        let queue_depth = Family::<RouteLabels, Gauge>::default();
        let tenants = Family::<RouteLabels, Gauge>::default();
        let requests = Family::<OutcomeLabels, Counter>::default();
        let rejections = Family::<ReasonLabels, Counter>::default();

        let mut class_names: HashMap<(String, ClassId), String> = HashMap::new();
        for route in router.routes() {
            let s = route.limiter.snapshot();
            let r = RouteLabels {
                route: route.name.clone(),
            };
            limit.get_or_create(&r).set(s.limit as i64);
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
                let id = route.limiter.class_id(&c.name).expect("own class");
                class_names.insert((route.name.clone(), id), c.name.clone());
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
        }
        for ((route, class, reason), n) in self
            .other_refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let class = class
                .and_then(|c| class_names.get(&(route.clone(), c)).cloned())
                .unwrap_or_default();
            rejections
                .get_or_create(&ReasonLabels {
                    route: route.clone(),
                    class,
                    reason: (*reason).to_owned(),
                })
                .inc_by(*n);
        }

        let mut reg = Registry::default();
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
        reg.register_with_unit(
            "floodwall_request_duration",
            "Admitted requests from arrival to the end of the response body",
            Unit::Seconds,
            self.request_duration.clone(),
        );
        probes.encode(&mut reg);
        if let Some(store) = store {
            store.encode(&mut reg);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg)
            .expect("writing to a String cannot fail");
        out
    }
}
