//! What one check of a bottleneck is: the [`Probe`] trait, the
//! [`Reading`] it returns and its [`ProbeError`].

use std::future::Future;

/// One reading of a bottleneck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// Whether the bottleneck is past its threshold: back off.
    pub saturated: bool,
    /// Whether to throttle straight to `min_limit` rather than back off step
    /// by step: for a bottleneck that fails hard when overrun (memory).
    /// Only meaningful with `saturated`.
    pub hard: bool,
    /// What was read, for `/status` and logs, e.g. `"lock_waits=3
    /// conns=87/100"`.
    pub detail: String,
}

impl Reading {
    /// A reading with room left.
    pub fn healthy(detail: impl Into<String>) -> Self {
        Self {
            saturated: false,
            hard: false,
            detail: detail.into(),
        }
    }

    /// A saturated reading: back off.
    pub fn saturated(detail: impl Into<String>) -> Self {
        Self {
            saturated: true,
            hard: false,
            detail: detail.into(),
        }
    }
}

/// Why a check could not read its bottleneck. The message is shown to
/// operators as is, so it says what to do where it can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProbeError {
    message: String,
}

impl ProbeError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// A bottleneck probe: one check reads the bottleneck once.
///
/// `check` takes `&mut self` because each probe is owned by exactly one
/// task, which calls it once per interval: a probe keeps its connection or
/// its baseline in plain fields, without a lock. The runner bounds each call
/// with the probe's `timeout` by dropping the future, so a check must leave
/// the probe usable when dropped half way (the postgres probe then
/// reconnects).
pub trait Probe: Send + 'static {
    /// Reads the bottleneck once.
    fn check(&mut self) -> impl Future<Output = Result<Reading, ProbeError>> + Send + '_;
}
