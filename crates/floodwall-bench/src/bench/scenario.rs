//! The named scenarios: what load, what happens to the backend, and which
//! seconds the headline figures measure.

use crate::backend::BackendConfig;
use crate::loadgen::{Group, Phase, RetryPolicy, Schedule};
use http::{HeaderName, HeaderValue};
use serde::Serialize;
use std::ops::Range;
use std::time::Duration;

/// The fixed limit of fast-upstream's "never binds" floodwall baseline:
/// 64 connections can never have more than 64 requests in flight.
pub const FAST_UPSTREAM_FIXED_LIMIT: usize = 1000;

/// A built-in scenario. Each takes 60 s or less.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioName {
    /// 0.5x capacity, then 3x for 20 s, then 0.5x.
    Spike,
    /// Steady 0.9x; the backend's service time doubles at 15 s.
    CapacityDrop,
    /// Steady 0.8x; the backend loses half its workers at 15 s (a batch job
    /// took half the database's connections).
    WorkersDrop,
    /// The spike with 30% interactive and 70% batch traffic.
    Priority,
    /// 2x capacity: one tenant sends 80%, twenty tenants share the rest.
    TenantFlood,
    /// The spike with clients that retry at once, and with clients that
    /// honour Retry-After.
    RetryStorm,
    /// Per-request cost: a fast backend, closed-loop maximum throughput and
    /// open-loop latency at 50% of it, direct against through floodwall.
    Overhead,
    /// Steady 0.8x from the first second, against gates started at that
    /// instant: what a fresh adaptive limit costs before it has learnt
    /// anything.
    ColdStart,
    /// 3x capacity from the first second, against gates started at that
    /// instant: a restart into a spike. `floodwall-default-warm` starts
    /// from the state file (`server.state_file`) a floodwall wrote after
    /// 15 s at 0.8x in front of the same backend.
    RestartSpike,
    /// A backend that answers at once, loaded closed loop (64 connections):
    /// whether an adaptive limit refuses or slows down an upstream that
    /// needs no protection.
    FastUpstream,
}

impl ScenarioName {
    /// The CLI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioName::Spike => "spike",
            ScenarioName::CapacityDrop => "capacity-drop",
            ScenarioName::WorkersDrop => "workers-drop",
            ScenarioName::Priority => "priority",
            ScenarioName::TenantFlood => "tenant-flood",
            ScenarioName::RetryStorm => "retry-storm",
            ScenarioName::Overhead => "overhead",
            ScenarioName::ColdStart => "cold-start",
            ScenarioName::RestartSpike => "restart-spike",
            ScenarioName::FastUpstream => "fast-upstream",
        }
    }

    /// Whether the scenario measures the first seconds of gates started
    /// at its first instant (its window is those seconds, whatever the
    /// scale, and its report has a per-second table of them).
    pub fn from_start(self) -> bool {
        matches!(self, ScenarioName::ColdStart | ScenarioName::RestartSpike)
    }

    /// Whether the scenario has its own runner (a backend that answers at
    /// once, closed-loop load) instead of [`run_bench`](super::run_bench).
    pub fn own_runner(self) -> bool {
        matches!(self, ScenarioName::Overhead | ScenarioName::FastUpstream)
    }

    /// The fixed limit of the `floodwall-fixed-N` contender when `--limit`
    /// is not given: the best static value for the built-in backend's 8
    /// workers (BENCHMARKS.md), or, in front of a backend that answers at
    /// once, a limit far above what 64 connections can reach, so the fixed
    /// contender is the "a gate that never binds" baseline.
    pub fn default_fixed_limit(self) -> usize {
        match self {
            ScenarioName::FastUpstream => FAST_UPSTREAM_FIXED_LIMIT,
            _ => 10,
        }
    }
}

/// How many seconds from the start the cold-start figures cover, whatever
/// the scale: the goal is about the first seconds of a fresh gate's life,
/// which a shorter run does not shorten.
pub const COLD_START_SECONDS: usize = 10;

/// Something done to the backend partway through a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Event {
    /// Service time becomes this (a slower database).
    ServiceTime(#[serde(with = "humantime_serde")] Duration),
    /// The worker count becomes this (connections taken by someone else).
    Workers(usize),
}

/// A client retry behaviour to run the scenario with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientKind {
    /// Shown next to the target name; empty for plain clients.
    pub label: String,
    /// What the clients do on 503/429.
    pub retry: RetryPolicy,
}

/// A fully built scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Which one.
    pub name: ScenarioName,
    /// One line for the report.
    pub summary: String,
    /// The simulated backend (ignored with `--target`).
    pub backend: BackendConfig,
    /// Capacity at the start, in req/s: the unit of every rate below.
    pub capacity: f64,
    /// The arrivals.
    pub schedule: Schedule,
    /// Backend changes, at offsets from the start.
    pub events: Vec<(Duration, Event)>,
    /// Traffic groups (priority classes, tenants); empty for uniform.
    #[serde(skip)]
    pub mix: Vec<Group>,
    /// One run per client kind and target.
    pub clients: Vec<ClientKind>,
    /// The seconds the headline figures measure.
    pub window: Range<usize>,
    /// The backend's capacity during the window (after a drop).
    pub window_capacity: f64,
    /// Seconds after the window, for recovery, if any.
    pub after: Option<Range<usize>>,
    /// A 2xx within this counts as goodput.
    #[serde(with = "humantime_serde")]
    pub slo: Duration,
    /// How long a simulated user waits, retries included.
    #[serde(with = "humantime_serde")]
    pub client_timeout: Duration,
}

pub(crate) fn phases(capacity: f64, parts: &[(u64, f64)]) -> Schedule {
    Schedule {
        phases: parts
            .iter()
            .map(|&(secs, load)| Phase {
                duration: Duration::from_secs(secs),
                rate_rps: capacity * load,
            })
            .collect(),
    }
}

fn plain() -> Vec<ClientKind> {
    vec![ClientKind {
        label: String::new(),
        retry: RetryPolicy::None,
    }]
}

/// The header the bench's priority mix sets.
pub const PRIORITY_HEADER: &str = "x-priority";
/// The header the bench's tenant mix sets.
pub const TENANT_HEADER: &str = "x-tenant-id";

impl Scenario {
    /// Builds `name` around `backend`; `capacity` overrides the backend's
    /// own figure (for `--target`, where floodwall cannot know it).
    pub fn build(name: ScenarioName, backend: BackendConfig, capacity: Option<f64>) -> Scenario {
        let c = capacity.unwrap_or_else(|| backend.capacity_rps());
        let base = Scenario {
            name,
            summary: String::new(),
            backend,
            capacity: c,
            schedule: phases(c, &[(10, 0.5), (20, 3.0), (10, 0.5)]),
            events: Vec::new(),
            mix: Vec::new(),
            clients: plain(),
            window: 10..30,
            window_capacity: c,
            after: Some(30..40),
            slo: Duration::from_millis(250),
            client_timeout: Duration::from_secs(1),
        };
        let prio = HeaderName::from_static(PRIORITY_HEADER);
        let tenant = HeaderName::from_static(TENANT_HEADER);
        match name {
            ScenarioName::Spike | ScenarioName::Overhead | ScenarioName::FastUpstream => Scenario {
                summary: format!("10 s at 0.5x, 20 s at 3x, 10 s at 0.5x of {c:.0} req/s"),
                ..base
            },
            ScenarioName::ColdStart => Scenario {
                summary: format!(
                    "30 s at 0.8x of {c:.0} req/s from the first second, each gate started at that instant"
                ),
                schedule: phases(c, &[(30, 0.8)]),
                window: 0..COLD_START_SECONDS,
                after: Some(COLD_START_SECONDS..30),
                ..base
            },
            ScenarioName::RestartSpike => Scenario {
                summary: format!(
                    "3x of {c:.0} req/s from each gate's first second (the warm one from a state file)"
                ),
                schedule: phases(c, &[(20, 3.0)]),
                window: 0..COLD_START_SECONDS,
                after: Some(COLD_START_SECONDS..20),
                ..base
            },
            ScenarioName::CapacityDrop => Scenario {
                summary: format!(
                    "40 s at 0.9x of {c:.0} req/s; service time doubles at 15 s (capacity halves)"
                ),
                schedule: phases(c, &[(40, 0.9)]),
                events: vec![(
                    Duration::from_secs(15),
                    Event::ServiceTime(backend.service_time * 2),
                )],
                window: 20..40,
                window_capacity: c / 2.0,
                after: None,
                ..base
            },
            ScenarioName::WorkersDrop => Scenario {
                summary: format!(
                    "40 s at 0.8x of {c:.0} req/s; the backend loses half its workers at 15 s (contention 0.3)"
                ),
                // The batch job that took the connections also competes for
                // the database's CPU and locks: requests queued past the
                // workers slow service down markedly, which is what makes
                // a limit tuned for the old worker count hurt.
                backend: BackendConfig {
                    contention: backend.contention.max(0.3),
                    ..backend
                },
                schedule: phases(c, &[(40, 0.8)]),
                events: vec![(
                    Duration::from_secs(15),
                    Event::Workers((backend.workers / 2).max(1)),
                )],
                window: 20..40,
                window_capacity: c / 2.0,
                after: None,
                ..base
            },
            ScenarioName::Priority => Scenario {
                summary: format!(
                    "the spike (0.5x, 3x, 0.5x of {c:.0} req/s) with 30% interactive, 70% batch"
                ),
                mix: vec![
                    Group::new("interactive", 0.3).header(prio.clone(), HeaderValue::from_static("interactive")),
                    Group::new("batch", 0.7).header(prio, HeaderValue::from_static("batch")),
                ],
                ..base
            },
            ScenarioName::TenantFlood => {
                let others: Vec<HeaderValue> = (1..=20)
                    .map(|i| HeaderValue::try_from(format!("tenant-{i:02}")).expect("ascii"))
                    .collect();
                Scenario {
                    summary: format!(
                        "30 s at 2x of {c:.0} req/s: tenant \"hot\" sends 80%, twenty tenants share 20%"
                    ),
                    schedule: phases(c, &[(30, 2.0)]),
                    mix: vec![
                        Group::new("hot", 0.8).header(tenant.clone(), HeaderValue::from_static("hot")),
                        Group::new("others", 0.2).tenants(tenant, others),
                    ],
                    window: 5..30,
                    after: None,
                    ..base
                }
            }
            ScenarioName::RetryStorm => Scenario {
                summary: format!(
                    "the spike (0.5x, 3x, 0.5x of {c:.0} req/s) with clients retrying 503/429 up to 4 times, at once or as told"
                ),
                clients: vec![
                    ClientKind {
                        label: "retry at once".into(),
                        retry: RetryPolicy::Immediate { max_attempts: 5 },
                    },
                    ClientKind {
                        label: "honour Retry-After".into(),
                        retry: RetryPolicy::HonourRetryAfter {
                            max_attempts: 5,
                            cap: Duration::from_secs(10),
                        },
                    },
                ],
                slo: Duration::from_secs(2),
                client_timeout: Duration::from_secs(10),
                ..base
            },
        }
    }

    /// Shrinks every duration by `scale` (for quick runs and tests); the
    /// windows shrink with it.
    pub fn scaled(mut self, scale: f64) -> Scenario {
        if (scale - 1.0).abs() < f64::EPSILON {
            return self;
        }
        let s = |d: Duration| d.mul_f64(scale);
        let secs = |x: usize| ((x as f64) * scale).round() as usize;
        for p in &mut self.schedule.phases {
            p.duration = s(p.duration).max(Duration::from_secs(1));
        }
        for (at, _) in &mut self.events {
            *at = s(*at);
        }
        self.window =
            secs(self.window.start)..secs(self.window.end).max(secs(self.window.start) + 1);
        self.after = self
            .after
            .map(|a| secs(a.start)..secs(a.end).max(secs(a.start) + 1));
        if self.name.from_start() {
            // Seconds since the gate started, not a share of the run.
            let seconds = self.schedule.seconds();
            let end = COLD_START_SECONDS.min(seconds);
            self.window = 0..end;
            self.after = (end < seconds).then_some(end..seconds);
        }
        self
    }
}
