//! The state every probe task shares with the probe set: each probe's
//! last reading and constraints, the routes they constrain, and the
//! composition of constraints into each route's limiter.
//!
//! A leaf: the runner (`runner.rs`) records into it, the set (`set.rs`)
//! creates and reads it, and neither knows the other through it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use floodwall_core::Limiter;

use super::check::{ProbeError, Reading};
use super::constraint::{Constraint, Observation};
use crate::config::{FailurePolicy, ProbeKind};

/// How a probe stands, as `/status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
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
    /// The name `/status` shows.
    pub fn as_str(self) -> &'static str {
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
pub(crate) struct ProbeState {
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

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A route whose limit the probes constrain: its name (for `/status`,
/// `/metrics` and logs) and its limiter, given at wiring time.
#[derive(Debug, Clone)]
pub(super) struct ConstrainedRoute {
    pub(super) name: String,
    pub(super) limiter: Arc<Limiter>,
}

/// What the probe tasks share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) routes: Vec<ConstrainedRoute>,
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
        // A gate probe reads the gate itself: it drives its flag file and
        // never constrains, or a full gate would cut its own limit.
        if probe.kind != ProbeKind::Gate {
            for (c, route) in st.constraints.iter_mut().zip(&self.routes) {
                c.step(
                    now,
                    obs,
                    route.limiter.limit(),
                    route.limiter.algorithm_limit(),
                );
            }
        }
        log_transition(probe, was, &st);
        let out = (st.health, st.detail.clone());
        drop(st);
        compose(&self.routes, &probes);
        out
    }
}

/// Sets each route's constraint to the minimum over every probe's.
fn compose(routes: &[ConstrainedRoute], probes: &[Arc<ProbeState>]) {
    for (i, route) in routes.iter().enumerate() {
        let min = probes
            .iter()
            .filter_map(|p| p.status().constraints[i].value())
            .min();
        route.limiter.set_constraint(min);
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
