//! Simulation kit: a constrained backend, an open-loop load generator, and the demo that pits them against each other with and without floodwall.

pub mod backend;
pub mod demo;
pub mod loadgen;
#[cfg(test)]
mod test_gate;

pub use backend::{Backend, BackendConfig, BackendStats};
pub use demo::{run_demo, DemoOptions, DemoReport, Gate, RunReport};
pub use loadgen::{parse_schedule, LoadConfig, LoadResult, Phase, Schedule, SecondRow, Summary};
