//! The running probes: each probe's state, composition into every route's
//! limiter, and what `/status` and `/metrics` show of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use floodwall_core::Limiter;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::constraint::{Constraint, ConstraintParams, Observation};
use super::{runner, FlagFile, Probe, ProbeError, Reading};
use crate::config::{FailurePolicy, ProbeConfig, ProbeKind};

/// How a probe stands, as `/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    /// No check has finished yet.
    Starting,
    /// The last check found room.
    Ok,
    /// The last check found the bottleneck saturated.
    Saturated {
        /// Throttled straight to min.
        hard: bool,
    },
    /// The last check failed.
    Failing,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Ok => "ok",
            Health::Saturated { .. } => "saturated",
            Health::Failing => "failing",
        }
    }
}

/// What one probe last saw and the constraint it holds on each route.
#[derive(Debug)]
pub(super) struct ProbeStatus {
    pub(super) health: Health,
    /// The last successful reading's detail.
    pub(super) detail: String,
    /// The error of the last failed check, kept after recovery for
    /// `/status`.
    pub(super) last_error: Option<String>,
    /// Per route, in router order.
    pub(super) constraints: Vec<Constraint>,
    /// Whether the flag file is raised (false without one).
    pub(super) flag_raised: bool,
    pub(super) checks: u64,
}

/// One probe, shared by its task and the readers of `/status` and
/// `/metrics`.
#[derive(Debug)]
pub(super) struct ProbeState {
    pub(super) name: String,
    pub(super) kind: ProbeKind,
    pub(super) on_failure: FailurePolicy,
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
    pub(super) flag_file: Option<std::path::PathBuf>,
    pub(super) errors: AtomicU64,
    pub(super) status: Mutex<ProbeStatus>,
}

impl ProbeState {
    pub(super) fn status(&self) -> MutexGuard<'_, ProbeStatus> {
        lock(&self.status)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A route's name and gate.
#[derive(Debug, Clone)]
pub(super) struct Gate {
    pub(super) name: String,
    pub(super) limiter: Arc<Limiter>,
}

/// What the probe tasks share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) routes: Vec<Gate>,
    /// Every probe. The lock also serialises recording and composition, so
    /// two probes finishing at once cannot leave a stale minimum behind.
    pub(super) probes: Mutex<Vec<Arc<ProbeState>>>,
    /// Time zero of the constraints' clock. tokio's clock, so tests can
    /// pause it.
    pub(super) origin: tokio::time::Instant,
}

impl Shared {
    /// Applies one check's result to `probe`'s constraints and recomposes
    /// every route's limit. Returns the new health and detail for the flag
    /// file.
    pub(super) fn record(
        &self,
        probe: &ProbeState,
        result: Result<Reading, ProbeError>,
    ) -> (Health, String) {
        let now = self.origin.elapsed();
        let probes = lock(&self.probes);
        let mut st = probe.status();
        let was = st.health;
        let obs = match &result {
            Ok(r) if r.saturated && r.hard => Observation::Hard,
            Ok(r) if r.saturated => Observation::Saturated,
            Ok(_) => Observation::Healthy,
            Err(_) => Observation::Failed,
        };
        st.checks += 1;
        match result {
            Ok(r) => {
                st.health = if r.saturated {
                    Health::Saturated { hard: r.hard }
                } else {
                    Health::Ok
                };
                st.detail = r.detail;
            }
            Err(e) => {
                probe.errors.fetch_add(1, Ordering::Relaxed);
                let message = e.to_string();
                if was == Health::Failing && st.last_error.as_deref() != Some(&message) {
                    tracing::debug!(probe = %probe.name, error = %message, "probe still failing");
                }
                st.health = Health::Failing;
                st.last_error = Some(message);
            }
        }
        for (c, gate) in st.constraints.iter_mut().zip(&self.routes) {
            c.step(
                now,
                obs,
                gate.limiter.limit(),
                gate.limiter.algorithm_limit(),
            );
        }
        log_transition(probe, was, &st);
        let out = (st.health, st.detail.clone());
        drop(st);
        compose(&self.routes, &probes);
        out
    }
}

/// Sets each route's constraint to the minimum over every probe's.
fn compose(routes: &[Gate], probes: &[Arc<ProbeState>]) {
    for (i, gate) in routes.iter().enumerate() {
        let min = probes
            .iter()
            .filter_map(|p| p.status().constraints[i].value())
            .min();
        gate.limiter.set_constraint(min);
    }
}

/// One log line per change of state, never one per interval.
fn log_transition(probe: &ProbeState, was: Health, st: &ProbeStatus) {
    let name = &probe.name;
    let constraint = |st: &ProbeStatus| {
        st.constraints
            .iter()
            .filter_map(Constraint::value)
            .min()
            .map_or_else(|| "none".to_owned(), |c| c.to_string())
    };
    match (was, st.health) {
        (a, b) if std::mem::discriminant(&a) == std::mem::discriminant(&b) => {}
        (_, Health::Failing) => {
            let effect = match probe.on_failure {
                FailurePolicy::Ignore => "its constraint is lifted (on_failure = ignore)",
                FailurePolicy::Hold => "its last constraint is held (on_failure = hold)",
                FailurePolicy::Closed => "the limit is held at min_limit (on_failure = closed)",
            };
            tracing::warn!(
                probe = %name,
                error = st.last_error.as_deref().unwrap_or(""),
                "probe failing: {effect}"
            );
        }
        (_, Health::Saturated { hard }) => tracing::info!(
            probe = %name,
            detail = %st.detail,
            hard,
            constraint = %constraint(st),
            "bottleneck saturated: limiting"
        ),
        (Health::Failing, _) => tracing::info!(
            probe = %name,
            detail = %st.detail,
            "probe recovered"
        ),
        (Health::Saturated { .. }, _) => tracing::info!(
            probe = %name,
            detail = %st.detail,
            "bottleneck has room again: the limit grows back"
        ),
        _ => {}
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    probe: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConstraintLabels {
    probe: String,
    route: String,
}

/// The running probes of one floodwall, and the handle to stop them.
/// Dropping the set stops its tasks too (their stop channel closes).
#[derive(Debug)]
pub struct ProbeSet {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl ProbeSet {
    /// A set with no probes over these routes (name and gate, in router
    /// order). Add probes with [`ProbeSet::add`].
    pub fn new(routes: Vec<(String, Arc<Limiter>)>) -> Self {
        Self {
            shared: Arc::new(Shared {
                routes: routes
                    .into_iter()
                    .map(|(name, limiter)| Gate { name, limiter })
                    .collect(),
                probes: Mutex::new(Vec::new()),
                origin: tokio::time::Instant::now(),
            }),
            stop: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Starts `probe` on its own task with the common settings of `config`
    /// (name, interval, timeout, backoff, min_limit, cooldown, on_failure,
    /// flag_file). Public so an embedder can run a probe of its own next to
    /// the built-in ones. Must be called inside a tokio runtime.
    pub fn add<P: Probe>(&self, config: &ProbeConfig, probe: P) {
        let state = self.register(config);
        let flag = config.flag_file.as_ref().map(FlagFile::new);
        let task = tokio::spawn(runner::run(
            probe,
            state,
            self.shared.clone(),
            flag,
            self.stop.subscribe(),
        ));
        lock(&self.tasks).push(task);
    }

    /// The state of a new probe, counted in the composition from now on.
    fn register(&self, config: &ProbeConfig) -> Arc<ProbeState> {
        let params = ConstraintParams {
            backoff: config.backoff,
            min: config.min_limit,
            cooldown: config.cooldown,
            on_failure: config.on_failure,
        };
        let state = Arc::new(ProbeState {
            name: config.name().to_owned(),
            kind: config.kind,
            on_failure: config.on_failure,
            interval: config.interval,
            timeout: config.timeout(),
            flag_file: config.flag_file.clone(),
            errors: AtomicU64::new(0),
            status: Mutex::new(ProbeStatus {
                health: Health::Starting,
                detail: String::new(),
                last_error: None,
                constraints: vec![Constraint::new(params); self.shared.routes.len()],
                flag_raised: false,
                checks: 0,
            }),
        });
        lock(&self.shared.probes).push(state.clone());
        state
    }

    fn probes(&self) -> Vec<Arc<ProbeState>> {
        lock(&self.shared.probes).clone()
    }

    /// Whether no probe is configured.
    pub fn is_empty(&self) -> bool {
        lock(&self.shared.probes).is_empty()
    }

    /// Stops every probe task and waits for them: each lowers its flag
    /// file, so a stopped floodwall never leaves a web server in front
    /// answering 503. Constraints stay as they are; the gates are going
    /// away too.
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Why `route`'s limit is below its algorithm's: `"postgres:
    /// lock_waits=3 conns=87/100"` for the probe (or probes, comma
    /// separated) whose constraint is the route's effective limit. `None`
    /// when no probe holds the limit down, or for an unknown route.
    pub fn limited_by(&self, route: &str) -> Option<String> {
        let i = self.shared.routes.iter().position(|g| g.name == route)?;
        let limiter = &self.shared.routes[i].limiter;
        let c = limiter.constraint()?;
        if c >= limiter.algorithm_limit() {
            return None;
        }
        let culprits: Vec<String> = self
            .probes()
            .iter()
            .filter_map(|p| {
                let st = p.status();
                (st.constraints[i].value() == Some(c)).then(|| match st.health {
                    Health::Failing => format!(
                        "{} (failing, on_failure = {}): {}",
                        p.name,
                        p.on_failure.as_str(),
                        st.last_error.as_deref().unwrap_or("")
                    ),
                    _ => format!("{}: {}", p.name, st.detail),
                })
            })
            .collect();
        (!culprits.is_empty()).then(|| culprits.join(", "))
    }

    /// The `/status` view: one object per probe with `name`, `kind`,
    /// `state` (`starting`, `ok`, `saturated` or `failing`), `hard`,
    /// `detail` (the last successful reading), `last_error`, `on_failure`,
    /// `errors_total`, `checks`, `constraint` (route → number, or null when
    /// lifted), `limiting` (the routes whose limit this probe sets now) and
    /// `flag_file` (`{path, raised}` or null).
    pub fn status(&self) -> Value {
        let probes = self.probes();
        let list: Vec<Value> = probes
            .iter()
            .map(|p| {
                let st = p.status();
                let mut constraint = Map::new();
                let mut limiting = Vec::new();
                for (c, gate) in st.constraints.iter().zip(&self.shared.routes) {
                    constraint.insert(gate.name.clone(), json!(c.value()));
                    if c.value().is_some()
                        && c.value() == gate.limiter.constraint()
                        && c.value() < Some(gate.limiter.algorithm_limit())
                    {
                        limiting.push(gate.name.clone());
                    }
                }
                json!({
                    "name": p.name,
                    "kind": p.kind.as_str(),
                    "state": st.health.as_str(),
                    "hard": matches!(st.health, Health::Saturated { hard: true }),
                    "detail": st.detail,
                    "last_error": st.last_error,
                    "on_failure": p.on_failure.as_str(),
                    "errors_total": p.errors.load(Ordering::Relaxed),
                    "checks": st.checks,
                    "interval_ms": p.interval.as_millis() as u64,
                    "timeout_ms": p.timeout.as_millis() as u64,
                    "constraint": constraint,
                    "limiting": limiting,
                    "flag_file": p.flag_file.as_ref().map(|f| json!({
                        "path": f.display().to_string(),
                        "raised": st.flag_raised,
                    })),
                })
            })
            .collect();
        Value::Array(list)
    }

    /// Registers the probe series in `registry` with their values now:
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
    pub fn encode(&self, registry: &mut Registry) {
        if self.is_empty() {
            return;
        }
        let constraint = Family::<ConstraintLabels, Gauge>::default();
        let saturated = Family::<ProbeLabels, Gauge>::default();
        let errors = Family::<ProbeLabels, Counter>::default();
        for p in self.probes() {
            let st = p.status();
            let labels = ProbeLabels {
                probe: p.name.clone(),
            };
            saturated
                .get_or_create(&labels)
                .set(matches!(st.health, Health::Saturated { .. }) as i64);
            errors
                .get_or_create(&labels)
                .inc_by(p.errors.load(Ordering::Relaxed));
            for (c, gate) in st.constraints.iter().zip(&self.shared.routes) {
                if let Some(v) = c.value() {
                    constraint
                        .get_or_create(&ConstraintLabels {
                            probe: p.name.clone(),
                            route: gate.name.clone(),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodwall_core::{FixedLimit, LimiterConfig, ManualClock};
    use std::future::Future;

    fn gate(limit: usize) -> Arc<Limiter> {
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

    fn metrics(set: &ProbeSet) -> String {
        let mut registry = Registry::default();
        set.encode(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[tokio::test]
    async fn each_route_is_capped_by_the_lowest_probe() {
        let (big, small) = (gate(100), gate(10));
        let set = ProbeSet::new(vec![
            ("big".into(), big.clone()),
            ("small".into(), small.clone()),
        ]);
        let pg = set.register(&config("pg", FailurePolicy::Ignore, 1));
        let mem = set.register(&config("mem", FailurePolicy::Ignore, 2));
        let shared = &set.shared;

        shared.record(&pg, Ok(Reading::saturated("lock_waits=3 conns=5/20")));
        assert_eq!((big.limit(), small.limit()), (70, 7));
        assert_eq!(
            set.limited_by("big").as_deref(),
            Some("pg: lock_waits=3 conns=5/20")
        );

        shared.record(&mem, Ok(hard("rss=90%")));
        assert_eq!((big.limit(), small.limit()), (2, 2));
        assert_eq!(set.limited_by("small").as_deref(), Some("mem: rss=90%"));
        // Still saturated: pg cuts from the effective limit, not its own.
        shared.record(&pg, Ok(Reading::saturated("lock_waits=4 conns=5/20")));
        assert_eq!(big.limit(), 1);
        assert_eq!(big.algorithm_limit(), 100);

        for _ in 0..40 {
            shared.record(&pg, Ok(Reading::healthy("lock_waits=0 conns=2/20")));
            shared.record(&mem, Ok(Reading::healthy("rss=10%")));
        }
        assert_eq!((big.limit(), small.limit()), (100, 10));
        assert_eq!((big.constraint(), small.constraint()), (None, None));
        assert_eq!(set.limited_by("big"), None);
        assert_eq!(set.limited_by("nope"), None);
        let status = set.status();
        assert_eq!(status[0]["state"], "ok");
        assert_eq!(status[0]["constraint"]["big"], Value::Null);
        assert_eq!(status[1]["checks"], 41);
    }

    #[tokio::test]
    async fn failing_probes_follow_their_policy_and_are_counted() {
        let api = gate(50);
        let set = ProbeSet::new(vec![("api".into(), api.clone())]);
        let shared = &set.shared;

        let ignore = set.register(&config("ignore", FailurePolicy::Ignore, 1));
        shared.record(&ignore, Ok(Reading::saturated("x")));
        assert_eq!(api.limit(), 35);
        shared.record(&ignore, Err(ProbeError::new("connection refused")));
        assert_eq!((api.limit(), api.constraint()), (50, None));
        let status = set.status();
        assert_eq!(status[0]["state"], "failing");
        assert_eq!(status[0]["last_error"], "connection refused");
        assert_eq!(status[0]["errors_total"], 1);
        assert_eq!(status[0]["detail"], "x", "the last reading stays visible");

        let hold = set.register(&config("hold", FailurePolicy::Hold, 1));
        shared.record(&hold, Ok(Reading::saturated("y")));
        assert_eq!(api.limit(), 35);
        for _ in 0..3 {
            shared.record(&hold, Err(ProbeError::new("timeout")));
        }
        assert_eq!(api.limit(), 35);

        let closed = set.register(&config("closed", FailurePolicy::Closed, 3));
        shared.record(&closed, Err(ProbeError::new("timeout")));
        assert_eq!(api.limit(), 3);
        assert_eq!(
            set.limited_by("api").as_deref(),
            Some("closed (failing, on_failure = closed): timeout")
        );

        let text = metrics(&set);
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
        let api = gate(20);
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
        let status = set.status();
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
