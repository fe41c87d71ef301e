//! Load balancing over an upstream's endpoints: which one a request goes
//! to, passive health (outlier ejection), and consistent-hash sharding with
//! ring versions and a graceful drain. Pure: no I/O, time injected; the
//! gateway's `proxy/endpoints.rs` hands it addresses and reports outcomes.
//!
//! - [`Balancer`] ([`balancer`](self)): the members, a version per
//!   membership change, and [`Balancer::choose`], which never waits and
//!   returns an RAII [`Pick`] that holds the endpoint's in-flight count
//!   (and the key's hold) until dropped.
//! - [`Policy`]: least in-flight (power of two choices, Envoy's
//!   `LEAST_REQUEST`), round robin, or hash.
//! - [`EjectionConfig`]: Envoy's outlier ejection, with backoff and
//!   `max_ejection_percent`.
//! - [`Ring`]: ketama (libketama's points, so other ketama clients agree).
//! - the in-flight key table: no key on two endpoints at once across a
//!   membership change, until `drain_timeout`; memory bounded by the
//!   requests in flight.

mod balancer;
mod endpoint;
mod keys;
mod ring;

pub use balancer::{
    BalanceConfig, BalanceSnapshot, Balancer, Change, EndpointSnapshot, Pick, Policy, SCAN_ALL,
};
pub use endpoint::{EjectionConfig, Endpoint};
pub use ring::{KeyHash, Ring, POINTS_PER_ENDPOINT};
