//! floodwall: an adaptive admission-control gateway.
//!
//! The crate is the I/O side of floodwall: the reverse proxy, the admin
//! server, metrics, config, the CLI and the demo. The admission algorithm and
//! its enforcement live in `floodwall-core`, which has no I/O at all.

pub mod config;
pub mod sim;
