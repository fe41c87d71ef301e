//! floodwall's benchmark kit and demo: a constrained, database-like backend,
//! an open-loop load generator, the demo that plays a spike against the
//! backend with and without floodwall in front, and the overload scenarios
//! of `floodwall-bench run` that put floodwall beside its peers.
//!
//! It lives apart from the gateway so that `floodwall` itself pulls in no
//! plotting, font, progress-bar or histogram crates.

#![forbid(unsafe_code)]

pub mod backend;
pub mod bench;
pub mod demo;
mod gateway;
pub mod loadgen;

pub use backend::{Backend, BackendConfig, BackendStats};
pub use demo::{run_demo, DemoOptions, DemoReport, Gate, RunReport};
pub use gateway::FloodwallGate;
pub use loadgen::{parse_schedule, LoadConfig, LoadResult, Phase, Schedule, SecondRow, Summary};
