//! tokio's clock as a floodwall [`Clock`].

use floodwall_core::clock::duration_nanos;
use floodwall_core::{Clock, Nanos};

/// tokio's clock as a floodwall [`Clock`]: hand it to a
/// [`Limiter`](floodwall_core::Limiter) or a
/// [`Breaker`](floodwall_core::Breaker) and they follow
/// `tokio::time::pause()` / `advance()`, so a test of a breaker's
/// `error_timeout` or a limiter's retry estimate runs in virtual time.
///
/// In production prefer [`floodwall_core::MonotonicClock`] (cheaper to
/// read); both are monotonic.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is tokio's now. Outside a paused runtime this
    /// is the ordinary monotonic time.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Nanos {
        Nanos(duration_nanos(
            tokio::time::Instant::now().duration_since(self.origin),
        ))
    }
}
