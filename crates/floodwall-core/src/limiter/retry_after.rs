//! The suggested wait before a refused client retries.
//!
//! `max(rtt, 1 s) × (1 + refused/s ÷ capacity/s)`, capped at
//! `retry_after_max`, where capacity is `limit ÷ rtt` (Little's law) and rtt
//! is the smoothed request duration. A client told this spreads its retry
//! over the time the gate needs to absorb the excess, instead of coming back
//! into the same full gate: the "Retry Storm Paradox" of the Phoenix
//! WIP-gate article, where a fixed short Retry-After brings every refused
//! client back at once. The I/O layer adds jitter.

use crate::clock::{duration_nanos, Nanos};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The inputs of the estimate: the smoothed rtt and the refusal rate.
#[derive(Debug)]
pub(super) struct RetryAfter {
    /// The smoothed request duration in nanoseconds; 0 until a sample.
    ewma_rtt: AtomicU64,
    refusals: RefusalRate,
    max: Duration,
}

impl RetryAfter {
    /// An estimate that never suggests more than `max`.
    pub(super) fn new(max: Duration) -> Self {
        Self {
            ewma_rtt: AtomicU64::new(0),
            refusals: RefusalRate::default(),
            max,
        }
    }

    /// Folds one request duration into the smoothed rtt (weight 1/16).
    #[inline]
    pub(super) fn record_rtt(&self, rtt: Duration) {
        // A racy read-modify-write: a lost update only delays the
        // estimate, and it keeps the hot path free of CAS loops.
        let old = self.ewma_rtt.load(Ordering::Relaxed);
        let x = duration_nanos(rtt);
        let new = if old == 0 { x } else { old - old / 16 + x / 16 };
        self.ewma_rtt.store(new.max(1), Ordering::Relaxed);
    }

    /// Counts one refusal at `now`.
    pub(super) fn record_refusal(&self, now: Nanos) {
        self.refusals.record(now);
    }

    /// The smoothed request duration (zero before the first sample).
    pub(super) fn rtt(&self) -> Duration {
        Duration::from_nanos(self.ewma_rtt.load(Ordering::Relaxed))
    }

    /// The suggestion at `now` for a gate of `limit` slots (see the module
    /// doc).
    pub(super) fn suggest(&self, limit: usize, now: Nanos) -> Duration {
        let rtt = match self.ewma_rtt.load(Ordering::Relaxed) {
            0 => Duration::from_millis(100),
            n => Duration::from_nanos(n),
        };
        let capacity = limit as f64 / rtt.as_secs_f64().max(1e-6);
        let refused = self.refusals.per_second(now) as f64;
        let spread = 1.0 + refused / capacity.max(1.0);
        rtt.max(Duration::from_secs(1))
            .mul_f64(spread.min(1e6))
            .min(self.max)
    }
}

/// Counts refusals per second, for the retry-after estimate.
#[derive(Debug, Default)]
struct RefusalRate {
    second: AtomicU64,
    current: AtomicU64,
    previous: AtomicU64,
}

impl RefusalRate {
    fn record(&self, now: Nanos) {
        let s = now.0 / 1_000_000_000;
        let old = self.second.load(Ordering::Relaxed);
        if old != s
            && self
                .second
                .compare_exchange(old, s, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let last = self.current.swap(0, Ordering::AcqRel);
            self.previous
                .store(if s == old + 1 { last } else { 0 }, Ordering::Release);
        }
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals in the last full second, or in the current one if larger.
    fn per_second(&self, now: Nanos) -> u64 {
        let s = now.0 / 1_000_000_000;
        let at = self.second.load(Ordering::Acquire);
        let cur = self.current.load(Ordering::Relaxed);
        if at == s {
            cur.max(self.previous.load(Ordering::Relaxed))
        } else if at + 1 == s {
            cur
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suggestion_is_at_least_a_second_and_grows_with_refusals() {
        let r = RetryAfter::new(Duration::from_secs(30));
        let now = Nanos(10_000_000_000);
        assert_eq!(r.suggest(10, now), Duration::from_secs(1));
        r.record_rtt(Duration::from_millis(100)); // capacity 100/s
        for _ in 0..100 {
            r.record_refusal(now);
        }
        assert_eq!(r.suggest(10, now), Duration::from_secs(2));
        assert_eq!(r.rtt(), Duration::from_millis(100));
        for _ in 0..10_000 {
            r.record_refusal(now);
        }
        assert_eq!(r.suggest(10, now), Duration::from_secs(30), "capped");
    }
}
