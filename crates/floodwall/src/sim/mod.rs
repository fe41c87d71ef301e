//! Simulation kit: a constrained backend, an open-loop load generator, and the demo that pits them against each other with and without floodwall.

pub mod backend;
pub mod demo;
mod gate;
pub mod loadgen;

pub use backend::{Backend, BackendConfig, BackendStats};
pub use demo::{run_demo, DemoOptions, DemoReport, Gate, RunReport};
pub use gate::FloodwallGate;
pub use loadgen::{parse_schedule, LoadConfig, LoadResult, Phase, Schedule, SecondRow, Summary};
pub mod bench;
