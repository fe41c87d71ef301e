//! `floodwall-bench run`: overload scenarios, peers side by side, plots.
//!
//! Each scenario plays an open-loop schedule against every contender in turn
//! (direct, floodwall, and gates started outside such as HAProxy and nginx),
//! each on a fresh copy of the simulated backend, and reports goodput,
//! latency and refusals over the seconds that matter, as a table, JSON and
//! plots. `overhead` measures the proxy's own cost instead,
//! `fast-upstream` what a gate that should never bind costs in front of a
//! backend that answers at once, and `tls` (its own subcommand) what TLS
//! termination adds, beside nginx.

pub mod contender;
pub mod distributed;
pub mod fast_upstream;
pub mod overhead;
pub mod plot;
pub mod report;
pub mod run;
pub mod scenario;
pub mod tls;

pub use contender::{Contender, ContenderKind};
pub use run::{run_bench, BenchOptions, BenchReport, ContenderRun};
pub use scenario::{Scenario, ScenarioName};
