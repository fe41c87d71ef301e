//! One listener's accept loop: a connection under the cap gets a
//! [`Slot`]; one past it is accepted and reset at once, so the kernel's
//! backlog never fills and its client learns at once rather than hanging;
//! a failed `accept(2)` is counted, logged at most once a second, and
//! backed off without spinning.

use super::stats::{ListenerStats, Slot};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

/// The first pause after a failed accept; doubled on each failure in a
/// row up to [`MAX_BACKOFF`], reset by a success.
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// The longest pause: out of descriptors, one attempt a second costs
/// nothing and still serves again within a second of a descriptor freeing.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The log limits of one listener, shared by every worker accepting on it
/// (each has its own `SO_REUSEPORT` socket): "at most one line a second"
/// holds for the listener, not once per worker.
#[derive(Debug)]
pub(super) struct AcceptLogs {
    errors: Mutex<RateLimited>,
    refusals: Mutex<RateLimited>,
}

impl AcceptLogs {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            errors: Mutex::new(RateLimited::new(Duration::from_secs(1))),
            refusals: Mutex::new(RateLimited::new(Duration::from_secs(1))),
        })
    }
}

/// `m`'s limiter at `now` (a poisoned lock is still a limiter).
fn admit(m: &Mutex<RateLimited>, now: Instant) -> Option<u64> {
    m.lock().unwrap_or_else(|p| p.into_inner()).admit(now)
}

/// A listener with its cap and its counters.
#[derive(Debug)]
pub(super) struct Acceptor {
    listener: TcpListener,
    stats: Arc<ListenerStats>,
    backoff: Duration,
    logs: Arc<AcceptLogs>,
}

impl Acceptor {
    pub(super) fn new(
        listener: TcpListener,
        stats: Arc<ListenerStats>,
        logs: Arc<AcceptLogs>,
    ) -> Self {
        Self {
            listener,
            stats,
            backoff: Duration::ZERO,
            logs,
        }
    }

    /// The next connection under the cap, with its place. Cancel-safe:
    /// every step it may be cancelled at leaves nothing half done.
    pub(super) async fn next(&mut self) -> (TcpStream, SocketAddr, Slot) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    self.backoff = Duration::ZERO;
                    if let Some(slot) = self.stats.try_open() {
                        let _ = stream.set_nodelay(true);
                        return (stream, peer, slot);
                    }
                    self.refuse(stream);
                }
                Err(e) => self.failed(e).await,
            }
        }
    }

    /// Closes a connection past the cap with a reset (`SO_LINGER` 0, as
    /// HAProxy's `option nolinger` and `tcp-request connection reject`
    /// do): its client gets `ECONNRESET` at once, and no `TIME_WAIT` is
    /// left behind for each refused connection.
    fn refuse(&mut self, stream: TcpStream) {
        let _ = stream.set_zero_linger();
        drop(stream);
        self.stats.refused();
        if let Some(more) = admit(&self.logs.refusals, Instant::now()) {
            tracing::warn!(
                listener = self.stats.snapshot().listener,
                max = self.stats.max(),
                suppressed = more,
                "connection refused: at the connection cap"
            );
        }
    }

    async fn failed(&mut self, e: std::io::Error) {
        self.stats.accept_error();
        if let Some(more) = admit(&self.logs.errors, Instant::now()) {
            tracing::warn!(
                listener = self.stats.snapshot().listener,
                error = %e,
                suppressed = more,
                "accept failed"
            );
        }
        // A connection that died in the backlog is its own problem: the
        // next one may be fine. Anything else (out of descriptors, out of
        // memory) lasts: wait, longer each time, instead of spinning.
        if matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::Interrupted
        ) {
            return;
        }
        self.backoff = (self.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
        tokio::time::sleep(self.backoff).await;
    }
}

/// At most one log line per `every`: [`RateLimited::admit`] says whether
/// to write one now and how many were suppressed since the last.
#[derive(Debug)]
struct RateLimited {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed)` if a line may be written at `now`, else `None`
    /// (and the event is counted as suppressed).
    fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count_of_the_rest() {
        let mut log = RateLimited::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(log.admit(t0), Some(0));
        for i in 1..=82 {
            assert_eq!(log.admit(t0 + Duration::from_millis(i * 12)), None);
        }
        assert_eq!(log.admit(t0 + Duration::from_secs(1)), Some(82));
        assert_eq!(log.admit(t0 + Duration::from_millis(1500)), None);
        assert_eq!(log.admit(t0 + Duration::from_secs(5)), Some(1));
    }
}
