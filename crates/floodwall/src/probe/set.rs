//! The running probes: starting and stopping their tasks, and what they
//! show of themselves ([`ProbeSet::snapshot`], [`ProbeSet::limited_by`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use floodwall_core::Limiter;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::check::Probe;
use super::constraint::{Constraint, ConstraintParams};
use super::flag_file::FlagFile;
use super::runner;
use super::snapshot::{FlagFileSnapshot, ProbeSnapshot, RouteConstraint};
use super::state::{lock, ConstrainedRoute, Health, ProbeState, ProbeStatus, Shared};
use crate::config::ProbeConfig;

/// The running probes of one floodwall, and the handle to stop them.
/// Dropping the set stops its tasks too (their stop channel closes).
#[derive(Debug)]
pub struct ProbeSet {
    /// Replaced whole by [`ProbeSet::restart`] (a config reload); the
    /// tasks hold their own handle on the one they were started with.
    shared: Mutex<Arc<Shared>>,
    stop: Mutex<watch::Sender<bool>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// After a restart: turns true once the previous tasks have ended, so
    /// a new task never runs beside the old one it replaces.
    after: Mutex<Option<watch::Receiver<bool>>>,
}

impl ProbeSet {
    /// A set with no probes over the routes they constrain: each route's
    /// name and limiter, given when the gateway is wired together. Add
    /// probes with [`ProbeSet::add`].
    pub fn new(routes: Vec<(String, Arc<Limiter>)>) -> Self {
        Self {
            shared: Mutex::new(Self::shared_over(routes)),
            stop: Mutex::new(watch::channel(false).0),
            tasks: Mutex::new(Vec::new()),
            after: Mutex::new(None),
        }
    }

    fn shared_over(routes: Vec<(String, Arc<Limiter>)>) -> Arc<Shared> {
        Arc::new(Shared {
            routes: routes
                .into_iter()
                .map(|(name, limiter)| ConstrainedRoute { name, limiter })
                .collect(),
            probes: Mutex::new(Vec::new()),
            origin: tokio::time::Instant::now(),
        })
    }

    fn shared(&self) -> Arc<Shared> {
        lock(&self.shared).clone()
    }

    /// Stops every probe and starts `start` again over `routes`: what a
    /// config reload does when the probes or the routes they constrain
    /// changed. The new tasks start once the old ones have ended (and
    /// lowered their flag files), so an old and a new task never hold one
    /// flag file; each new probe's hysteresis starts over, and the
    /// constraints the old ones left on kept limiters stay until the new
    /// probe's first check. Returns at once; must be called inside a
    /// tokio runtime.
    pub(crate) fn restart(
        &self,
        start: impl FnOnce(&ProbeSet) -> anyhow::Result<()>,
        routes: Vec<(String, Arc<Limiter>)>,
    ) -> anyhow::Result<()> {
        lock(&self.stop).send_replace(true);
        let old = std::mem::take(&mut *lock(&self.tasks));
        let (ended, after) = watch::channel(false);
        tokio::spawn(async move {
            for task in old {
                let _ = task.await;
            }
            let _ = ended.send(true);
        });
        *lock(&self.after) = Some(after);
        *lock(&self.shared) = Self::shared_over(routes);
        *lock(&self.stop) = watch::channel(false).0;
        start(self)
    }

    /// Starts `probe` on its own task with the common settings of `config`
    /// (name, interval, timeout, backoff, min_limit, cooldown, on_failure,
    /// flag_file). Public so an embedder can run a probe of its own next to
    /// the built-in ones. Must be called inside a tokio runtime.
    pub fn add<P: Probe>(&self, config: &ProbeConfig, probe: P) {
        let state = self.register(config);
        let flag = config.flag_file.as_ref().map(FlagFile::new);
        let run = runner::run(
            probe,
            state,
            self.shared(),
            flag,
            lock(&self.stop).subscribe(),
        );
        let after = lock(&self.after).clone();
        let task = tokio::spawn(async move {
            if let Some(mut after) = after {
                let _ = after.wait_for(|ended| *ended).await;
            }
            run.await
        });
        lock(&self.tasks).push(task);
    }

    /// The state of a new probe, counted in the composition from now on.
    pub(crate) fn register(&self, config: &ProbeConfig) -> Arc<ProbeState> {
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
                constraints: vec![Constraint::new(params); self.shared().routes.len()],
                flag_raised: false,
                checks: 0,
            }),
        });
        lock(&self.shared().probes).push(state.clone());
        state
    }

    /// Records one check's result for a probe of [`ProbeSet::register`]
    /// as its task would, for tests that drive probes by hand.
    #[cfg(test)]
    pub(crate) fn record(
        &self,
        probe: &ProbeState,
        result: Result<super::check::Reading, super::check::ProbeError>,
    ) {
        self.shared().record(probe, result);
    }

    fn probes(&self) -> Vec<Arc<ProbeState>> {
        lock(&self.shared().probes).clone()
    }

    /// Whether no probe is configured.
    pub fn is_empty(&self) -> bool {
        lock(&self.shared().probes).is_empty()
    }

    /// Stops every probe task and waits for them: each lowers its flag
    /// file, so a stopped floodwall never leaves a web server in front
    /// answering 503. Constraints stay as they are; the limiters are going
    /// away too.
    pub async fn stop(&self) {
        lock(&self.stop).send_replace(true);
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Why the limit of the route admitted by `limiter` is below its
    /// algorithm's: `"postgres: lock_waits=3 conns=87/100"` for the probe
    /// (or probes, comma separated) whose constraint is the route's
    /// effective limit. `None` when no probe holds the limit down, or for a
    /// limiter the probes do not constrain. The route is found by its
    /// limiter itself, the handle the set was given, not by name.
    pub fn limited_by(&self, limiter: &Limiter) -> Option<String> {
        let shared = self.shared();
        let i = shared
            .routes
            .iter()
            .position(|r| std::ptr::eq(Arc::as_ptr(&r.limiter), limiter))?;
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

    /// Every probe now, in the order they were added: plain data that
    /// `/status` and `/metrics` render.
    pub fn snapshot(&self) -> Vec<ProbeSnapshot> {
        let shared = self.shared();
        self.probes()
            .iter()
            .map(|p| {
                let st = p.status();
                let constraints = st
                    .constraints
                    .iter()
                    .zip(&shared.routes)
                    .map(|(c, route)| RouteConstraint {
                        route: route.name.clone(),
                        value: c.value(),
                        limiting: c.value().is_some()
                            && c.value() == route.limiter.constraint()
                            && c.value() < Some(route.limiter.algorithm_limit()),
                    })
                    .collect();
                ProbeSnapshot {
                    name: p.name.clone(),
                    kind: p.kind,
                    health: st.health,
                    detail: st.detail.clone(),
                    last_error: st.last_error.clone(),
                    on_failure: p.on_failure,
                    errors: p.errors.load(Ordering::Relaxed),
                    checks: st.checks,
                    interval: p.interval,
                    timeout: p.timeout,
                    constraints,
                    flag_file: p.flag_file.as_ref().map(|path| FlagFileSnapshot {
                        path: path.clone(),
                        raised: st.flag_raised,
                    }),
                }
            })
            .collect()
    }
}
