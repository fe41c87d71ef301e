//! The connection counters of each listener: written by its accept loop
//! and its connections as things happen, read by `/metrics` at scrape
//! time. A leaf: it imports nothing of floodwall, so `admin` can render it
//! without importing the server that writes it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a connection was closed by a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// `server.header_read_timeout`: no complete request headers in time
    /// (counted from accept for the first request, from its first byte
    /// for a later one).
    HeaderRead,
    /// `server.keepalive_timeout`: no request for that long with nothing
    /// in flight.
    Keepalive,
    /// `server.send_timeout`: a response was in flight and the client
    /// took no byte of it for that long (a slow reader); the connection is
    /// closed.
    Send,
}

impl Timeout {
    /// The `timeout` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Timeout::HeaderRead => "header_read",
            Timeout::Keepalive => "keepalive",
            Timeout::Send => "send",
        }
    }
}

/// One listener's figures. Atomics only: the accept loop and every
/// connection task write them without a lock.
#[derive(Debug)]
pub struct ListenerStats {
    name: &'static str,
    max: usize,
    open: AtomicUsize,
    refused: AtomicU64,
    accept_errors: AtomicU64,
    header_timeouts: AtomicU64,
    keepalive_timeouts: AtomicU64,
    send_timeouts: AtomicU64,
}

impl ListenerStats {
    /// The figures of the listener called `name` (the `listener` label),
    /// which holds at most `max` connections at once.
    pub fn new(name: &'static str, max: usize) -> Arc<Self> {
        Arc::new(Self {
            name,
            max,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
            keepalive_timeouts: AtomicU64::new(0),
            send_timeouts: AtomicU64::new(0),
        })
    }

    /// The cap on open connections.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for one more connection, or `None` at the cap. Only the
    /// listener's accept loop calls it, so a load then an add cannot race
    /// past the cap; the place is given back when the [`Slot`] drops.
    pub fn try_open(self: &Arc<Self>) -> Option<Slot> {
        if self.open.load(Ordering::Acquire) >= self.max {
            return None;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        Some(Slot(self.clone()))
    }

    /// Counts a connection accepted and closed at once, at the cap.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed `accept(2)` (out of descriptors, and the like).
    pub fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed by `timeout`.
    pub fn timed_out(&self, timeout: Timeout) {
        let counter = match timeout {
            Timeout::HeaderRead => &self.header_timeouts,
            Timeout::Keepalive => &self.keepalive_timeouts,
            Timeout::Send => &self.send_timeouts,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The figures now.
    pub fn snapshot(&self) -> ListenerSnapshot {
        ListenerSnapshot {
            listener: self.name,
            max: self.max,
            open: self.open.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
            header_timeouts: self.header_timeouts.load(Ordering::Relaxed),
            keepalive_timeouts: self.keepalive_timeouts.load(Ordering::Relaxed),
            send_timeouts: self.send_timeouts.load(Ordering::Relaxed),
        }
    }
}

/// One open connection's place under its listener's cap: RAII, so a
/// connection task that ends in any way (closed, timed out, aborted at
/// the end of a drain) gives its place back.
#[derive(Debug)]
pub struct Slot(Arc<ListenerStats>);

impl Slot {
    /// The listener this place belongs to.
    pub fn stats(&self) -> &ListenerStats {
        &self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What [`ListenerStats::snapshot`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSnapshot {
    /// `proxy` or `admin`.
    pub listener: &'static str,
    /// The cap on open connections.
    pub max: usize,
    /// Connections open now.
    pub open: usize,
    /// Connections accepted and closed at once at the cap, since start.
    pub refused: u64,
    /// Failed `accept(2)` calls since start.
    pub accept_errors: u64,
    /// Connections closed by `server.header_read_timeout` since start.
    pub header_timeouts: u64,
    /// Connections closed by `server.keepalive_timeout` since start.
    pub keepalive_timeouts: u64,
    /// Connections closed by `server.send_timeout`.
    pub send_timeouts: u64,
}

/// Both listeners' figures and the descriptor limit they were budgeted
/// from: what `/metrics` renders.
#[derive(Debug)]
pub struct Connections {
    /// The soft `RLIMIT_NOFILE` in force after start-up raised it.
    pub fd_limit: u64,
    /// The proxy listener's figures.
    pub proxy: Arc<ListenerStats>,
    /// The admin listener's figures.
    pub admin: Arc<ListenerStats>,
}

/// What [`Connections::snapshot`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionsSnapshot {
    /// The soft `RLIMIT_NOFILE` in force.
    pub fd_limit: u64,
    /// Each listener's figures, the proxy's first.
    pub listeners: Vec<ListenerSnapshot>,
}

impl Connections {
    /// The figures now.
    pub fn snapshot(&self) -> ConnectionsSnapshot {
        ConnectionsSnapshot {
            fd_limit: self.fd_limit,
            listeners: vec![self.proxy.snapshot(), self.admin.snapshot()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_given_back_on_drop() {
        let stats = ListenerStats::new("proxy", 2);
        let a = stats.try_open().unwrap();
        let _b = stats.try_open().unwrap();
        assert!(stats.try_open().is_none());
        assert_eq!(stats.snapshot().open, 2);
        drop(a);
        assert!(stats.try_open().is_some(), "a dropped slot frees a place");
        assert_eq!(stats.snapshot().open, 1, "the temporary slot is gone too");
    }
}
