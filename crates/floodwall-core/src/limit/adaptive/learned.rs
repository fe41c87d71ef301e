//! What an adaptive limit has learned, in a form a new process can start
//! from: a warm start.
//!
//! A restart forgets the limit and the baseline. Into steady traffic that
//! costs nothing any more (the cold start measures open, see
//! [`BaselineProbe`](super::BaselineProbe)), but into a spike the open
//! measurement finds the limit full, so the baseline is measured pinned at
//! the floor, and slow start then climbs back from there: about two
//! seconds of refusals the previous process had long since stopped making.
//! [`Learned`] is the part worth keeping: the limit, and the baseline
//! probe samples it was computed from. The gateway writes it to a state
//! file (`server.state_file`); the limit itself never does I/O.

use std::time::Duration;

/// An adaptive limit's learned state: see the module doc.
#[derive(Debug, Clone, PartialEq)]
pub struct Learned {
    /// The algorithm that learned it (`Limit::name`); a different
    /// algorithm does not take it.
    pub algorithm: String,
    /// The limit before rounding. While a baseline probe pins the floor,
    /// the limit it goes back to.
    pub limit: f64,
    /// The pooled baseline probe samples, oldest first (empty for a fixed
    /// baseline). Every one was measured unloaded, so restoring them
    /// cannot ratchet the baseline up.
    pub baseline: Vec<Duration>,
}
