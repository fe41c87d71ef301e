//! The windows a breaker counts failures in.
//!
//! Two kinds, one per trip rule: the last `error_threshold` failure times
//! (Semian's count rule), and a sliding window of call outcomes over the
//! last N calls or the last T (resilience4j's rate rule). Both are bounded
//! in memory whatever the call rate: the count window holds at most
//! `error_threshold` stamps, the call window N booleans, the time window
//! [`BUCKETS`] buckets.

use crate::clock::{duration_nanos, Nanos};
use std::collections::VecDeque;
use std::time::Duration;

/// Semian's rule: the times of the most recent failures, at most
/// `threshold` of them.
#[derive(Debug)]
pub(super) struct Recent {
    threshold: usize,
    within: u64,
    at: VecDeque<Nanos>,
}

impl Recent {
    pub(super) fn new(threshold: u32, within: Duration) -> Self {
        Self {
            threshold: threshold as usize,
            within: duration_nanos(within),
            at: VecDeque::with_capacity(threshold as usize),
        }
    }

    /// Counts a failure at `now`; true when `threshold` failures now lie
    /// within the window.
    pub(super) fn failed(&mut self, now: Nanos) -> bool {
        if self.at.len() == self.threshold {
            self.at.pop_front();
        }
        self.at.push_back(now);
        self.expire(now);
        self.at.len() >= self.threshold
    }

    fn expire(&mut self, now: Nanos) {
        while self
            .at
            .front()
            .is_some_and(|t| now.0.saturating_sub(t.0) > self.within)
        {
            self.at.pop_front();
        }
    }

    /// Failures within the window of `now`.
    pub(super) fn count(&mut self, now: Nanos) -> usize {
        self.expire(now);
        self.at.len()
    }

    pub(super) fn clear(&mut self) {
        self.at.clear();
    }
}

/// How many buckets a time window is cut into: the window slides in steps
/// of a tenth of its length.
pub(super) const BUCKETS: u64 = 10;

/// resilience4j's rule: outcomes over the last N calls or the last T.
#[derive(Debug)]
pub(super) enum Calls {
    /// The last `n` outcomes, `true` for a failure.
    Count {
        n: usize,
        outcomes: VecDeque<bool>,
        failures: usize,
    },
    /// Per bucket of `width` ns: (bucket index, calls, failures).
    Time {
        width: u64,
        buckets: VecDeque<(u64, u32, u32)>,
    },
}

impl Calls {
    pub(super) fn last_calls(n: usize) -> Self {
        Calls::Count {
            n,
            outcomes: VecDeque::with_capacity(n),
            failures: 0,
        }
    }

    pub(super) fn last(t: Duration) -> Self {
        Calls::Time {
            width: (duration_nanos(t) / BUCKETS).max(1),
            buckets: VecDeque::with_capacity(BUCKETS as usize + 1),
        }
    }

    /// Records one call's outcome at `now`.
    pub(super) fn record(&mut self, now: Nanos, failed: bool) {
        match self {
            Calls::Count {
                n,
                outcomes,
                failures,
            } => {
                if outcomes.len() == *n && outcomes.pop_front() == Some(true) {
                    *failures -= 1;
                }
                outcomes.push_back(failed);
                *failures += usize::from(failed);
            }
            Calls::Time { width, buckets } => {
                let idx = now.0 / *width;
                match buckets.back_mut() {
                    Some(b) if b.0 == idx => {
                        b.1 += 1;
                        b.2 += u32::from(failed);
                    }
                    _ => buckets.push_back((idx, 1, u32::from(failed))),
                }
                Self::expire(*width, buckets, now);
            }
        }
    }

    fn expire(width: u64, buckets: &mut VecDeque<(u64, u32, u32)>, now: Nanos) {
        let idx = now.0 / width;
        while buckets.front().is_some_and(|b| idx - b.0 >= BUCKETS) {
            buckets.pop_front();
        }
    }

    /// (calls, failures) in the window at `now`.
    pub(super) fn totals(&mut self, now: Nanos) -> (u64, u64) {
        match self {
            Calls::Count {
                outcomes, failures, ..
            } => (outcomes.len() as u64, *failures as u64),
            Calls::Time { width, buckets } => {
                Self::expire(*width, buckets, now);
                buckets
                    .iter()
                    .fold((0, 0), |(c, f), b| (c + u64::from(b.1), f + u64::from(b.2)))
            }
        }
    }

    pub(super) fn clear(&mut self) {
        match self {
            Calls::Count {
                outcomes, failures, ..
            } => {
                outcomes.clear();
                *failures = 0;
            }
            Calls::Time { buckets, .. } => buckets.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn recent_counts_only_failures_within_the_window() {
        let mut r = Recent::new(3, Duration::from_millis(100));
        assert!(!r.failed(Nanos(0)));
        assert!(!r.failed(Nanos(50 * MS)));
        assert!(r.failed(Nanos(100 * MS)), "three within 100 ms");
        r.clear();
        assert!(!r.failed(Nanos(200 * MS)));
        assert!(!r.failed(Nanos(250 * MS)));
        assert!(!r.failed(Nanos(400 * MS)), "the first two expired");
        assert_eq!(r.count(Nanos(400 * MS)), 1);
    }

    #[test]
    fn a_call_window_keeps_the_last_n() {
        let mut c = Calls::last_calls(4);
        for f in [true, true, false, false] {
            c.record(Nanos(0), f);
        }
        assert_eq!(c.totals(Nanos(0)), (4, 2));
        c.record(Nanos(0), false);
        c.record(Nanos(0), false);
        assert_eq!(c.totals(Nanos(0)), (4, 0), "both failures slid out");
    }

    #[test]
    fn a_time_window_slides_by_buckets() {
        let mut c = Calls::last(Duration::from_secs(1));
        c.record(Nanos(0), true);
        c.record(Nanos(500 * MS), false);
        assert_eq!(c.totals(Nanos(999 * MS)), (2, 1));
        assert_eq!(c.totals(Nanos(1_000 * MS)), (1, 0), "the first bucket left");
        assert_eq!(c.totals(Nanos(1_600 * MS)), (0, 0));
    }
}
