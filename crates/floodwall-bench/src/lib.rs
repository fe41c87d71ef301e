//! floodwall's benchmark kit and demo: a constrained, database-like backend,
//! an open-loop load generator, the demo that plays a spike against the
//! backend with and without floodwall in front, and the overload scenarios
//! of `floodwall-bench run` that put floodwall beside its peers.
//!
//! It lives apart from the gateway so that `floodwall` itself pulls in no
//! plotting, font, progress-bar or histogram crates. Everything it uses of
//! the `floodwall` library goes through one file, [`gateway`].

#![forbid(unsafe_code)]

pub mod backend;
pub mod bench;
pub mod demo;
pub mod gateway;
pub mod loadgen;
pub mod sim;
pub mod tune_check;
pub mod tune_plot;

/// One timed test at a time: the demo's and the load generator's tests
/// measure rates and latencies on two shared cores, and run beside each
/// other (cargo runs a binary's tests in parallel) they starve one another
/// and fail for the machine, not the code.
#[cfg(test)]
pub(crate) static TIMED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub use backend::{Backend, BackendConfig, BackendStats};
pub use demo::{run_demo, DemoOptions, DemoReport, RunReport};
pub use gateway::{Gateway, GatewayOptions};
pub use loadgen::{parse_schedule, LoadConfig, LoadResult, Phase, Schedule, SecondRow, Summary};
