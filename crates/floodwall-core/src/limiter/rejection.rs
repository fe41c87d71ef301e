//! Why the limiter said no, and when to come back.

use std::fmt;
use std::time::Duration;

/// An admission refusal reason. The I/O layer maps each one to a status and
/// headers in exactly one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The route is at its limit (and its queue, if any, was not used).
    WipLimitExceeded,
    /// The tenant holds its maximum share while others are refused.
    TenantLimitExceeded,
    /// The wait queue is at capacity.
    QueueFull,
    /// The request waited its full queue timeout.
    QueueTimeout,
}

impl Reason {
    /// All reasons, in metric order.
    pub const ALL: [Reason; 4] = [
        Reason::WipLimitExceeded,
        Reason::TenantLimitExceeded,
        Reason::QueueFull,
        Reason::QueueTimeout,
    ];

    /// The wire name: the `X-Floodwall-Reason` value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::WipLimitExceeded => "wip_limit_exceeded",
            Reason::TenantLimitExceeded => "tenant_limit_exceeded",
            Reason::QueueFull => "queue_full",
            Reason::QueueTimeout => "queue_timeout",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the reason and a suggested wait before retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub reason: Reason,
    /// How long the limiter suggests the client waits, derived from its
    /// state (see [`Limiter::retry_after`](super::Limiter::retry_after)),
    /// before any jitter.
    pub retry_after: Duration,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (retry after {} ms)",
            self.reason,
            self.retry_after.as_millis()
        )
    }
}

impl std::error::Error for Rejection {}
