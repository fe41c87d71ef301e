//! floodwall: an adaptive admission-control gateway.
//!
//! The crate is the I/O side of floodwall: the reverse proxy, the admin
//! server, metrics, config, the CLI and the demo. The admission algorithm and
//! its enforcement live in `floodwall-core`, which has no I/O at all.
//!
//! A request's journey is written out in [`proxy::Proxy::handle`]:
//! classify, admit, forward, record.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod metrics;
pub mod probe;
pub mod proxy;
pub mod respond;
pub mod server;
pub mod store;
pub mod telemetry;
