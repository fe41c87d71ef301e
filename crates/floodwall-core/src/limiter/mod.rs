//! Enforcement: permits, priority classes, tenant fairness and the wait
//! queue.
//!
//! `limiter.rs` composes the parts and holds the one admission decision;
//! each other file holds one part and knows nothing of the limiter:
//! `capacity.rs` (the effective limit), `classes.rs` (reservations and
//! borrowing), `tenants.rs` (tenant shares), `quotas.rs` (caps on named tenants), `headroom.rs` (the free slots
//! both keep for whoever they protect), `retry_after.rs` (the suggested
//! wait), `queue.rs` (the waiters), `permit.rs`, `rejection.rs`,
//! `snapshot.rs` and `config.rs`. `acquire.rs` holds the future that waits,
//! on top of the limiter.

mod acquire;
mod capacity;
mod classes;
mod config;
mod headroom;
#[allow(clippy::module_inception)]
mod limiter;
mod padded;
mod permit;
mod queue;
mod quotas;
mod rejection;
mod retry_after;
mod snapshot;
mod tenants;

pub use acquire::Acquire;
pub use classes::ClassId;
pub use config::{
    ClassSpec, LimiterConfig, LimiterConfigError, QueueOrder, QueueSpec, TenantSpec, MAX_CLASSES,
};
pub use limiter::{Limiter, Request};
pub use permit::Permit;
pub use quotas::QuotaUse;
pub use rejection::{Reason, Rejection};
pub use snapshot::{ClassSnapshot, Snapshot};
