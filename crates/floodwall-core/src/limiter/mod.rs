//! Enforcement: permits, priority classes, tenant caps and the wait queue.

mod config;
#[allow(clippy::module_inception)]
mod limiter;
mod permit;
mod queue;
mod rejection;
mod tenants;

pub use config::{
    ClassSpec, LimiterConfig, LimiterConfigError, QueueOrder, QueueSpec, TenantSpec, MAX_CLASSES,
};
pub use limiter::{ClassId, ClassSnapshot, Limiter, Request, Snapshot};
pub use permit::Permit;
pub use queue::Acquire;
pub use rejection::{Reason, Rejection};
