//! Simulated backend, open-loop load generator and the demo (owned by the sim helper).
