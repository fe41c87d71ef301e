//! What the probes show of themselves: plain data, rendered by `/status`
//! and `/metrics`.

use std::path::PathBuf;
use std::time::Duration;

use super::state::Health;
use crate::config::{FailurePolicy, ProbeKind};

/// One probe at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSnapshot {
    /// The probe's name (a metric label).
    pub name: String,
    /// What it reads.
    pub kind: ProbeKind,
    /// How it stands after its last check.
    pub health: Health,
    /// The last successful reading.
    pub detail: String,
    /// The error of the last failed check, kept after recovery.
    pub last_error: Option<String>,
    /// What a failing check does to the limit.
    pub on_failure: FailurePolicy,
    /// Failed or timed-out checks since start.
    pub errors: u64,
    /// Checks finished since start.
    pub checks: u64,
    /// Time between checks.
    pub interval: Duration,
    /// The bound on one check.
    pub timeout: Duration,
    /// Its constraint on each route it constrains.
    pub constraints: Vec<RouteConstraint>,
    /// The flag file, if the probe keeps one.
    pub flag_file: Option<FlagFileSnapshot>,
}

/// A probe's constraint on one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConstraint {
    /// The route's name.
    pub route: String,
    /// The cap, or `None` while lifted.
    pub value: Option<usize>,
    /// Whether this cap is the route's effective limit now (below what the
    /// algorithm allows).
    pub limiting: bool,
}

/// A probe's flag file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagFileSnapshot {
    /// Where it is written.
    pub path: PathBuf,
    /// Whether it exists now.
    pub raised: bool,
}
