//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/status`.
//!
//! It has its own address so that the gate's own figures stay reachable
//! when the proxy port is saturated, and so that nothing on it is ever
//! exposed through the proxy.

use crate::metrics::{to_prometheus_text, Metrics, OPENMETRICS, PROMETHEUS_TEXT};
use crate::proxy::{Body, Router};
use floodwall_core::{Outcome, Reason};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the admin endpoints read.
#[derive(Debug)]
pub struct Admin {
    /// The proxy's routes and gates.
    pub router: Arc<crate::proxy::Proxy>,
    /// Set once shutdown has begun: `/readyz` turns 503 so load balancers
    /// stop sending new work while admitted requests drain.
    pub draining: Arc<AtomicBool>,
    /// The bottleneck probes, for `/status` (`ProbeSet::status`,
    /// `ProbeSet::limited_by`) and `/metrics` (`ProbeSet::encode`).
    pub probes: Arc<crate::probe::ProbeSet>,
}

/// One line saying what sets the limit now: an outside constraint (a
/// bottleneck probe), the algorithm's last decision, or a fixed value.
fn limited_by(s: &floodwall_core::Snapshot, probe: Option<String>) -> String {
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

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(bytes::Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

impl Admin {
    /// Serves one admin request.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        match req.uri().path() {
            "/metrics" => {
                let text = self.metrics().render(
                    self.routes(),
                    &self.probes,
                    self.router.store.as_deref(),
                );
                let wants_openmetrics = req
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("application/openmetrics-text"));
                if wants_openmetrics {
                    reply(StatusCode::OK, OPENMETRICS, text)
                } else {
                    reply(StatusCode::OK, PROMETHEUS_TEXT, to_prometheus_text(&text))
                }
            }
            "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" if self.draining.load(Ordering::Acquire) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "draining\n".into(),
            ),
            "/readyz" => reply(StatusCode::OK, "text/plain", "ready\n".into()),
            "/status" => reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&self.status()).expect("json") + "\n",
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /metrics, /healthz, /readyz or /status\n".into(),
            ),
        }
    }

    fn routes(&self) -> &Router {
        &self.router.router
    }

    fn metrics(&self) -> &Metrics {
        &self.router.metrics
    }

    /// The `/status` document: per route, the limit and why, in-flight per
    /// class, queue depth and refusals by reason.
    pub fn status(&self) -> Value {
        let routes: Vec<Value> = self
            .routes()
            .routes()
            .iter()
            .map(|route| {
                let s = route.limiter.snapshot();
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
                    "limited_by": limited_by(&s, self.probes.limited_by(&route.name)),
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
                })
            })
            .collect();
        json!({
            "draining": self.draining.load(Ordering::Acquire),
            "routes": routes,
            "probes": self.probes.status(),
            "store": self.router.store.as_ref().map(|s| s.status()),
        })
    }
}
