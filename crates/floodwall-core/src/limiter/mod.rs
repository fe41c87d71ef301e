//! Enforcement: permits, priority classes, tenant caps and the wait queue.
//!
//! `limiter.rs` composes the parts: `capacity.rs` (the effective limit),
//! `classes.rs` (reservations and borrowing), `tenants.rs` (tenant caps),
//! `retry_after.rs` (the suggested wait), `queue.rs` (the waiters and the
//! `Acquire` future), `permit.rs`, `rejection.rs`, `snapshot.rs` and
//! `config.rs`.

mod capacity;
mod classes;
mod config;
#[allow(clippy::module_inception)]
mod limiter;
mod permit;
mod queue;
mod rejection;
mod retry_after;
mod snapshot;
mod tenants;

pub use classes::ClassId;
pub use config::{
    ClassSpec, LimiterConfig, LimiterConfigError, QueueOrder, QueueSpec, TenantSpec, MAX_CLASSES,
};
pub use limiter::{Limiter, Request};
pub use permit::Permit;
pub use queue::Acquire;
pub use rejection::{Reason, Rejection};
pub use snapshot::{ClassSnapshot, Snapshot};
