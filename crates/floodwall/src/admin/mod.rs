//! The admin listener: the status page `/`, `/history.json`, `/metrics`,
//! `/healthz`, `/readyz`, `/status`, and `POST /reload`.
//!
//! It has its own address so that floodwall's own figures stay reachable
//! when the proxy port is saturated, and so that nothing on it is ever
//! exposed through the proxy. It binds loopback by default. It holds
//! handles on what it shows (the proxy's route table, the probes,
//! distributed mode, the draining flag) and renders their snapshots,
//! `/status` in [`status`], `/metrics` in [`metrics`], the page from
//! [`page`] and the per-second [`history`]. Who may do what is [`auth`]'s:
//! mutating endpoints need the admin token, reads a read token if one is
//! configured. A reload's results are counted in [`reload`].

pub mod auth;
pub mod history;
pub mod metrics;
pub mod page;
pub mod reload;
pub mod status;

use crate::distributed::Distributed;
use crate::probe::ProbeSet;
use crate::proxy::{Body, Proxy, RefusalCounters};
use crate::server::stats::Connections;
use auth::{Access, Auth};
use history::History;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use metrics::{to_prometheus_text, OPENMETRICS, PROMETHEUS_TEXT};
use reload::{ReloadError, ReloadFn, ReloadStats};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the admin endpoints show.
pub struct Admin {
    /// The proxy, whose route table (which a reload replaces) is read at
    /// every request.
    pub proxy: Arc<Proxy>,
    /// Refusals of requests that matched no route.
    pub unrouted: Arc<RefusalCounters>,
    /// The bottleneck probes.
    pub probes: Arc<ProbeSet>,
    /// Distributed mode (`[store]`), if configured.
    pub distributed: Option<Arc<Distributed>>,
    /// Set once shutdown has begun: `/readyz` turns 503 so load balancers
    /// stop sending new work while admitted requests drain.
    pub draining: Arc<AtomicBool>,
    /// Both listeners' connection counters.
    pub connections: Arc<Connections>,
    /// The tokens.
    pub auth: Arc<Auth>,
    /// The last five minutes, for the page and `/history.json`.
    pub history: Arc<History>,
    /// Reload results.
    pub reloads: Arc<ReloadStats>,
    /// Performs a reload (`POST /reload`).
    pub reload: Arc<ReloadFn>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("routes", &self.proxy.router.routes().len())
            .finish_non_exhaustive()
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
        let path = req.uri().path();
        if path == "/reload" {
            return self.post_reload(req);
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only (POST for /reload)\n".into(),
            );
        }
        // Health checks stay open: load balancers and orchestrators probe
        // them without credentials.
        if !matches!(path, "/healthz" | "/readyz") {
            if let Err(denied) = self.auth.check(req, Access::Read) {
                return reply(denied.status, "text/plain", denied.message.into());
            }
        }
        match path {
            "/" | "/index.html" => reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                page::PAGE.to_owned(),
            ),
            "/history.json" => reply(
                StatusCode::OK,
                "application/json",
                self.history.document().to_string(),
            ),
            "/metrics" => {
                let text = self.metrics();
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
                "not found: try /, /metrics, /healthz, /readyz, /status or /history.json\n".into(),
            ),
        }
    }

    /// `POST /reload`: re-reads the config file, with the admin token.
    fn post_reload<B>(&self, req: &Request<B>) -> Response<Body> {
        if req.method() != Method::POST {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "POST only\n".into(),
            );
        }
        if let Err(denied) = self.auth.check(req, Access::Write) {
            return reply(denied.status, "text/plain", denied.message.into());
        }
        let (status, body) = match (self.reload)() {
            Ok(changes) => (
                StatusCode::OK,
                serde_json::json!({ "ok": true, "changes": changes }),
            ),
            Err(e) => (
                match e {
                    ReloadError::NoFile => StatusCode::CONFLICT,
                    ReloadError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
                },
                serde_json::json!({ "ok": false, "error": e.to_string() }),
            ),
        };
        reply(status, "application/json", body.to_string() + "\n")
    }

    /// The `/status` document.
    pub fn status(&self) -> Value {
        let mut doc = status::document(
            &self.proxy.router.routes(),
            &self.probes,
            self.distributed.as_ref().map(|d| d.snapshot()).as_ref(),
            self.draining.load(Ordering::Acquire),
        );
        doc["reload"] = self.reloads.status();
        doc["admin"] = serde_json::json!({
            "reads_protected": self.auth.reads_protected(),
        });
        doc
    }

    /// Takes one point of the history now (once a second, from `app.rs`).
    pub fn sample_history(&self) {
        self.history
            .sample(&self.proxy.router.routes(), &self.unrouted);
    }

    /// The `/metrics` exposition, in OpenMetrics text.
    pub fn metrics(&self) -> String {
        let text = self.metrics_without_reloads();
        reload::append_metrics(&text, &self.reloads.metrics())
    }

    fn metrics_without_reloads(&self) -> String {
        metrics::render(&metrics::Sources {
            routes: &self.proxy.router.routes(),
            unrouted: &self.unrouted,
            probes: &self.probes.snapshot(),
            distributed: self.distributed.as_ref().map(|d| d.snapshot()).as_ref(),
            connections: Some(&self.connections.snapshot()),
            events: Some(&self.proxy.events),
        })
    }
}

/// The probes as `/status` and `/metrics` show them, driven by hand or by
/// a scripted probe on its task.
#[cfg(test)]
mod tests {
    use super::{metrics, status};
    use crate::config::{FailurePolicy, ProbeConfig, ProbeKind};
    use crate::probe::{Probe, ProbeError, ProbeSet, Reading};
    use crate::proxy::RefusalCounters;
    use floodwall_core::{FixedLimit, Limiter, LimiterConfig, ManualClock};
    use serde_json::Value;
    use std::future::Future;
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::Duration;

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn limiter(limit: usize) -> Arc<Limiter> {
        Limiter::new(
            LimiterConfig::default(),
            FixedLimit::new(limit),
            Arc::new(ManualClock::new()),
        )
        .unwrap()
    }

    fn config(name: &str, on_failure: FailurePolicy, min_limit: usize) -> ProbeConfig {
        ProbeConfig {
            name: Some(name.to_owned()),
            on_failure,
            min_limit,
            cooldown: Duration::ZERO,
            ..ProbeConfig::new(ProbeKind::Latency)
        }
    }

    fn hard(detail: &str) -> Reading {
        Reading {
            saturated: true,
            hard: true,
            detail: detail.to_owned(),
        }
    }

    fn probe_status(set: &ProbeSet) -> Value {
        status::probes(&set.snapshot())
    }

    fn probe_metrics(set: &ProbeSet) -> String {
        metrics::render(&metrics::Sources {
            routes: &[],
            unrouted: &RefusalCounters::new(1),
            probes: &set.snapshot(),
            distributed: None,
            connections: None,
            events: None,
        })
    }

    #[tokio::test]
    async fn each_route_is_capped_by_the_lowest_probe() {
        let (big, small) = (limiter(100), limiter(10));
        let set = ProbeSet::new(vec![
            ("big".into(), big.clone()),
            ("small".into(), small.clone()),
        ]);
        let pg = set.register(&config("pg", FailurePolicy::Ignore, 1));
        let mem = set.register(&config("mem", FailurePolicy::Ignore, 2));

        set.record(&pg, Ok(Reading::saturated("lock_waits=3 conns=5/20")));
        assert_eq!((big.limit(), small.limit()), (70, 7));
        assert_eq!(
            set.limited_by(&big).as_deref(),
            Some("pg: lock_waits=3 conns=5/20")
        );

        set.record(&mem, Ok(hard("rss=90%")));
        assert_eq!((big.limit(), small.limit()), (2, 2));
        assert_eq!(set.limited_by(&small).as_deref(), Some("mem: rss=90%"));
        // Still saturated: pg cuts from the effective limit, not its own.
        set.record(&pg, Ok(Reading::saturated("lock_waits=4 conns=5/20")));
        assert_eq!(big.limit(), 1);
        assert_eq!(big.algorithm_limit(), 100);

        for _ in 0..40 {
            set.record(&pg, Ok(Reading::healthy("lock_waits=0 conns=2/20")));
            set.record(&mem, Ok(Reading::healthy("rss=10%")));
        }
        assert_eq!((big.limit(), small.limit()), (100, 10));
        assert_eq!((big.constraint(), small.constraint()), (None, None));
        assert_eq!(set.limited_by(&big), None);
        assert_eq!(set.limited_by(&limiter(5)), None);
        let status = probe_status(&set);
        assert_eq!(status[0]["state"], "ok");
        assert_eq!(status[0]["constraint"]["big"], Value::Null);
        assert_eq!(status[1]["checks"], 41);
    }

    #[tokio::test]
    async fn failing_probes_follow_their_policy_and_are_counted() {
        let api = limiter(50);
        let set = ProbeSet::new(vec![("api".into(), api.clone())]);

        let ignore = set.register(&config("ignore", FailurePolicy::Ignore, 1));
        set.record(&ignore, Ok(Reading::saturated("x")));
        assert_eq!(api.limit(), 35);
        set.record(&ignore, Err(ProbeError::new("connection refused")));
        assert_eq!((api.limit(), api.constraint()), (50, None));
        let status = probe_status(&set);
        assert_eq!(status[0]["state"], "failing");
        assert_eq!(status[0]["last_error"], "connection refused");
        assert_eq!(status[0]["errors_total"], 1);
        assert_eq!(status[0]["detail"], "x", "the last reading stays visible");

        let hold = set.register(&config("hold", FailurePolicy::Hold, 1));
        set.record(&hold, Ok(Reading::saturated("y")));
        assert_eq!(api.limit(), 35);
        for _ in 0..3 {
            set.record(&hold, Err(ProbeError::new("timeout")));
        }
        assert_eq!(api.limit(), 35);

        let closed = set.register(&config("closed", FailurePolicy::Closed, 3));
        set.record(&closed, Err(ProbeError::new("timeout")));
        assert_eq!(api.limit(), 3);
        assert_eq!(
            set.limited_by(&api).as_deref(),
            Some("closed (failing, on_failure = closed): timeout")
        );

        let text = probe_metrics(&set);
        for line in [
            "floodwall_probe_errors_total{probe=\"ignore\"} 1",
            "floodwall_probe_errors_total{probe=\"hold\"} 3",
            "floodwall_bottleneck_saturated{probe=\"hold\"} 0",
            "floodwall_probe_constraint{probe=\"hold\",route=\"api\"} 35",
            "floodwall_probe_constraint{probe=\"closed\",route=\"api\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("probe=\"ignore\",route"), "{text}");
    }

    /// A probe whose next answer the test sets; `None` never answers.
    #[derive(Clone)]
    struct Scripted(Arc<Mutex<Option<Result<Reading, ProbeError>>>>);

    impl Scripted {
        fn set(&self, next: Option<Result<Reading, ProbeError>>) {
            *lock(&self.0) = next;
        }
    }

    impl Probe for Scripted {
        fn check(&mut self) -> impl Future<Output = Result<Reading, ProbeError>> + Send + '_ {
            let next = lock(&self.0).clone();
            async move {
                match next {
                    Some(r) => r,
                    None => std::future::pending().await,
                }
            }
        }
    }

    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn the_runner_times_out_checks_and_keeps_the_flag_file_in_step() {
        let api = limiter(20);
        let set = ProbeSet::new(vec![("api".into(), api.clone())]);
        let dir = std::env::temp_dir().join(format!("floodwall-runner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flag = dir.join("saturated.flag");
        let script = Scripted(Arc::new(Mutex::new(None)));
        let c = ProbeConfig {
            interval: Duration::from_millis(20),
            timeout: Some(Duration::from_millis(10)),
            flag_file: Some(flag.clone()),
            ..config("scripted", FailurePolicy::Closed, 2)
        };
        set.add(&c, script.clone());

        eventually("closed on timeouts", || api.limit() == 2 && flag.exists()).await;
        let status = probe_status(&set);
        assert_eq!(status[0]["last_error"], "no answer within timeout (10ms)");
        assert_eq!(status[0]["flag_file"]["raised"], true);

        script.set(Some(Ok(Reading::healthy("fine"))));
        eventually("recovered", || api.limit() == 20 && !flag.exists()).await;

        script.set(Some(Ok(Reading::saturated("full"))));
        eventually("flag raised", || flag.exists()).await;
        assert_eq!(std::fs::read_to_string(&flag).unwrap(), "scripted: full\n");
        set.stop().await;
        assert!(!flag.exists(), "stopping lowers the flag");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
