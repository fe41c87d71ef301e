//! One endpoint of an upstream: its in-flight count, smoothed latency and
//! passive-health (outlier ejection) state, all atomics, so a request
//! touches no lock to pick or release an endpoint.

use crate::clock::{duration_nanos, Nanos};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Passive health: when an endpoint is ejected and for how long (Envoy's
/// outlier detection, `consecutive_gateway_failure` with
/// `base_ejection_time` doubling per ejection up to `max_ejection_time`,
/// never more than `max_ejection_percent` of the endpoints out at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionConfig {
    /// Consecutive connect errors or timeouts that eject an endpoint.
    /// Envoy's default for gateway failures is 5; floodwall's is 3,
    /// because a connect error is certain (nothing listens there).
    pub consecutive_failures: u32,
    /// The first ejection's length (Envoy's `base_ejection_time`, 30 s
    /// there; 5 s here, so a restarted instance rejoins quickly).
    pub base: Duration,
    /// The longest ejection: each ejection in a row doubles it up to this.
    pub max: Duration,
    /// At most this share of the endpoints (percent, 0–100) is ejected at
    /// once, so a failure everywhere does not eject everything.
    pub max_percent: u8,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 3,
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
            max_percent: 50,
        }
    }
}

impl EjectionConfig {
    /// The length of ejection number `streak` in a row (0-based):
    /// `base × 2^streak`, at most `max`.
    pub fn length(&self, streak: u32) -> Duration {
        let factor = 1u32 << streak.min(20);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// How many of `n` endpoints may be out at once.
    pub fn max_ejected(&self, n: usize) -> usize {
        n * usize::from(self.max_percent.min(100)) / 100
    }
}

/// One endpoint: an address of type `A` (the I/O side's; the gateway uses
/// an HTTP authority), its name (a metric label), and its counters.
#[derive(Debug)]
pub struct Endpoint<A> {
    /// Where to send requests.
    pub addr: A,
    /// Its name: how membership and the ring know it.
    pub name: String,
    pub(super) id: u64,
    inflight: AtomicUsize,
    requests: AtomicU64,
    /// Smoothed latency of successful requests, nanoseconds (0: none yet).
    ewma: AtomicU64,
    /// Connect errors and timeouts in a row.
    failures: AtomicU32,
    /// Ejections in a row (the backoff exponent); reset by a success.
    streak: AtomicU32,
    /// Ejected until this time (nanoseconds on the balancer's clock); 0:
    /// never ejected.
    ejected_until: AtomicU64,
    ejections: AtomicU64,
}

/// The weight of a new latency sample in the smoothed latency (1/8, TCP's
/// SRTT gain, RFC 6298).
const EWMA_SHIFT: u32 = 3;

impl<A> Endpoint<A> {
    pub(super) fn new(name: String, addr: A, id: u64) -> Self {
        Self {
            addr,
            name,
            id,
            inflight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            ewma: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            streak: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
        }
    }

    /// Requests sent to it and not yet finished.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Requests sent to it since it joined.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Times it was ejected.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Its smoothed latency of successful requests (zero before the first).
    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.ewma.load(Ordering::Relaxed))
    }

    /// How long it stays ejected from `now` (`None`: not ejected).
    pub fn ejected_for(&self, now: Nanos) -> Option<Duration> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        (until > now.0).then(|| Duration::from_nanos(until - now.0))
    }

    pub(super) fn is_ejected(&self, now: Nanos) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now.0
    }

    /// Back in at once (the cap on ejections shrank with the membership).
    pub(super) fn readmit(&self) {
        self.ejected_until.store(0, Ordering::Relaxed);
    }

    pub(super) fn enter(&self) {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn leave(&self) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A request succeeded in `took`: the failure run and the ejection
    /// streak end, and the latency is smoothed in.
    pub(super) fn succeeded(&self, took: Duration) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.streak.load(Ordering::Relaxed) != 0 {
            self.streak.store(0, Ordering::Relaxed);
        }
        let sample = duration_nanos(took).max(1);
        let _ = self
            .ewma
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    sample
                } else {
                    let old = old as i128;
                    (old + ((sample as i128 - old) >> EWMA_SHIFT)).max(1) as u64
                })
            });
    }

    /// A connect error or timeout at `now`. Returns the ejection length if
    /// this failure ejects it; `may_eject` says whether the cap on ejected
    /// endpoints leaves room.
    pub(super) fn failed(
        &self,
        now: Nanos,
        config: &EjectionConfig,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        let run = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if run < config.consecutive_failures.max(1) || self.is_ejected(now) || !may_eject() {
            return None;
        }
        let streak = self.streak.fetch_add(1, Ordering::Relaxed);
        let length = config.length(streak);
        self.ejected_until
            .store(now.plus(length).0, Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        // Back from this ejection, one more failure ejects it again (for
        // twice as long): it has shown it fails, and a restarted instance
        // proves itself with its first success.
        self.failures.store(
            config.consecutive_failures.saturating_sub(1),
            Ordering::Relaxed,
        );
        Some(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_doubles_from_base_to_the_cap() {
        let c = EjectionConfig::default();
        let s: Vec<u64> = (0..6).map(|i| c.length(i).as_secs()).collect();
        assert_eq!(s, [5, 10, 20, 40, 60, 60]);
        assert_eq!(c.length(u32::MAX), Duration::from_secs(60));
        assert_eq!(c.max_ejected(4), 2);
        assert_eq!(c.max_ejected(3), 1);
        assert_eq!(c.max_ejected(1), 0);
    }

    #[test]
    fn three_failures_eject_and_one_more_after_rejoining_ejects_again() {
        let e = Endpoint::new("a".into(), (), 0);
        let c = EjectionConfig::default();
        let t = Nanos(1_000);
        assert_eq!(e.failed(t, &c, || true), None);
        assert_eq!(e.failed(t, &c, || true), None);
        assert_eq!(e.failed(t, &c, || true), Some(Duration::from_secs(5)));
        assert!(e.is_ejected(t));
        let back = t.plus(Duration::from_secs(5));
        assert!(!e.is_ejected(back));
        assert_eq!(e.failed(back, &c, || true), Some(Duration::from_secs(10)));
        let later = back.plus(Duration::from_secs(10));
        e.succeeded(Duration::from_millis(3));
        assert_eq!(
            e.failed(later, &c, || true),
            None,
            "a success resets the run"
        );
        assert_eq!(e.ejections(), 2);
        assert_eq!(e.latency(), Duration::from_millis(3));
    }

    #[test]
    fn the_cap_keeps_an_endpoint_in() {
        let e = Endpoint::new("a".into(), (), 0);
        let c = EjectionConfig {
            consecutive_failures: 1,
            ..EjectionConfig::default()
        };
        assert_eq!(e.failed(Nanos(1), &c, || false), None);
        assert!(!e.is_ejected(Nanos(1)));
    }
}
