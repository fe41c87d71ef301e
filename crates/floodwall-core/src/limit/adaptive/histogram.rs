//! A fixed-size latency recorder: log-linear histogram plus exact count,
//! sum, min and max.
//!
//! Windows need percentiles, and they are filled on every finished request.
//! Keeping raw samples would make memory and the close-of-window sort grow
//! with throughput (100 000 req/s is a 100 000-entry sort per second). A
//! log-linear histogram in the style of HdrHistogram costs O(1) per sample
//! and a fixed 9.5 KiB, whatever the rate: values below 64 ns are exact;
//! above, each power of two is split into 64 buckets, so a percentile is off
//! by at most 1/64 ≈ 1.6 % (the bucket midpoint is reported, so ±0.8 %).
//! Values are clamped at 2^42 ns ≈ 73 minutes.
//!
//! Two forms of the same histogram: [`AtomicRecorder`] is what the open
//! window is filled into from many threads at once, without a lock;
//! [`Recorder`] is the plain one a closed window is drained into, under the
//! limit's lock, to compute its percentiles. Both give the same statistics
//! for the same values.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
const MAX_BITS: u32 = 42;
const BUCKETS: usize = (MAX_BITS - SUB_BITS + 1) as usize * SUB;
const MAX_VALUE: u64 = (1 << MAX_BITS) - 1;

fn index(ns: u64) -> usize {
    let v = ns.min(MAX_VALUE);
    if v < SUB as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (v >> shift) as usize - SUB;
    (shift as usize + 1) * SUB + sub
}

/// The midpoint of bucket `i`.
fn value_at(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let shift = (i / SUB - 1) as u32;
    let low = ((SUB + i % SUB) as u64) << shift;
    low + ((1u64 << shift) >> 1)
}

/// Summary statistics of a set of request durations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LatencyStats {
    /// How many durations.
    pub count: u64,
    /// The exact mean.
    pub mean: Duration,
    /// The median.
    pub p50: Duration,
    /// The 90th percentile.
    pub p90: Duration,
    /// The 99th percentile.
    pub p99: Duration,
}

impl LatencyStats {
    /// The statistics of raw durations in nanoseconds (exact: nearest-rank
    /// quantiles), or `None` if there are none. For the baseline pool,
    /// which holds a few hundred values and is summarised once a minute.
    pub(crate) fn of_nanos(values: impl IntoIterator<Item = u64>) -> Option<Self> {
        let mut v: Vec<u64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let n = v.len();
        let at = |q: f64| {
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            Duration::from_nanos(v[rank - 1])
        };
        let sum: u128 = v.iter().map(|&x| u128::from(x)).sum();
        Some(Self {
            count: n as u64,
            mean: Duration::from_nanos((sum / n as u128) as u64),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
        })
    }
}

/// Records durations; see the module doc.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    buckets: Box<[u32]>,
    lo: usize,
    hi: usize,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self {
            buckets: vec![0; BUCKETS].into_boxed_slice(),
            lo: BUCKETS,
            hi: 0,
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn record(&mut self, d: Duration) {
        let ns = nanos(d);
        let i = index(ns);
        self.buckets[i] = self.buckets[i].saturating_add(1);
        self.lo = self.lo.min(i);
        self.hi = self.hi.max(i);
        self.count += 1;
        self.sum += u128::from(ns);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    /// Empties the recorder, touching only the buckets in use.
    fn clear(&mut self) {
        if self.lo <= self.hi {
            self.buckets[self.lo..=self.hi].fill(0);
        }
        self.lo = BUCKETS;
        self.hi = 0;
        self.count = 0;
        self.sum = 0;
        self.min = u64::MAX;
        self.max = 0;
    }

    /// The `q`-quantile (`0 < q ≤ 1`), by nearest rank, clamped to the
    /// exact min and max.
    fn quantile(&self, q: f64) -> u64 {
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for i in self.lo..=self.hi {
            seen += u64::from(self.buckets[i]);
            if seen >= rank {
                return value_at(i).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// The statistics so far, or `None` when empty.
    pub(crate) fn stats(&self) -> Option<LatencyStats> {
        if self.count == 0 {
            return None;
        }
        let ns = |v: u64| Duration::from_nanos(v);
        Some(LatencyStats {
            count: self.count,
            mean: ns((self.sum / u128::from(self.count)) as u64),
            p50: ns(self.quantile(0.50)),
            p90: ns(self.quantile(0.90)),
            p99: ns(self.quantile(0.99)),
        })
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The lock-free form of [`Recorder`], filled concurrently on the hot path
/// and drained into a [`Recorder`] when a window closes.
///
/// Each field is its own atomic, so a value recorded while another thread
/// drains may have its bucket counted in one drain and its sum, min or max
/// in the next: each part of it lands in exactly one drain, none is lost or
/// counted twice. The count is the sum of the drained buckets, so the
/// percentiles always agree with it. The sum is a `u64` of nanoseconds:
/// it would wrap only after 584 years of latency in one window.
#[derive(Debug)]
pub(crate) struct AtomicRecorder {
    buckets: Box<[AtomicU32]>,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl AtomicRecorder {
    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }

    /// How many values it holds now.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.buckets
            .iter()
            .map(|b| u64::from(b.load(Ordering::Relaxed)))
            .sum()
    }

    /// Records one duration: three atomic additions, and a compare with
    /// the min and max that rarely writes.
    pub(crate) fn record(&self, d: Duration) {
        let ns = nanos(d);
        self.buckets[index(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(ns, Ordering::Relaxed);
        if ns < self.min.load(Ordering::Relaxed) {
            self.min.fetch_min(ns, Ordering::Relaxed);
        }
        if ns > self.max.load(Ordering::Relaxed) {
            self.max.fetch_max(ns, Ordering::Relaxed);
        }
    }

    /// Empties this recorder into `into` (which is cleared first). Scans
    /// every bucket with a plain load and swaps only those in use: a few
    /// microseconds, once per window.
    pub(crate) fn drain_into(&self, into: &mut Recorder) {
        into.clear();
        for (i, b) in self.buckets.iter().enumerate() {
            if b.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let n = b.swap(0, Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            into.buckets[i] = n;
            into.lo = into.lo.min(i);
            into.hi = into.hi.max(i);
            into.count += u64::from(n);
        }
        into.sum = u128::from(self.sum.swap(0, Ordering::Relaxed));
        into.min = self.min.swap(u64::MAX, Ordering::Relaxed);
        into.max = self.max.swap(0, Ordering::Relaxed);
        if into.count > 0 && into.min > into.max {
            // A value recorded during the drain left its bucket here and
            // its min and max for the next one: bound by the buckets.
            into.min = value_at(into.lo);
            into.max = value_at(into.hi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_value_round_trip_within_precision() {
        for ns in [
            0u64,
            1,
            63,
            64,
            65,
            127,
            128,
            1_000,
            123_456,
            50_000_000,
            1 << 41,
        ] {
            let v = value_at(index(ns));
            let err = (v as f64 - ns as f64).abs() / (ns.max(1) as f64);
            assert!(err <= 1.0 / 64.0, "{ns} -> {v}");
        }
        assert!(index(u64::MAX) < BUCKETS);
        // Buckets are monotonic.
        let mut last = 0;
        for ns in (0..5_000_000u64).step_by(997) {
            let i = index(ns);
            assert!(i >= last);
            last = i;
        }
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut r = Recorder::new();
        for ms in 1..=100u64 {
            r.record(Duration::from_millis(ms));
        }
        let s = r.stats().unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.mean, Duration::from_micros(50_500));
        let near = |d: Duration, ms: f64| (d.as_secs_f64() * 1e3 - ms).abs() / ms < 0.01;
        assert!(near(s.p50, 50.0), "{:?}", s.p50);
        assert!(near(s.p90, 90.0), "{:?}", s.p90);
        assert!(near(s.p99, 99.0), "{:?}", s.p99);
        r.clear();
        assert!(r.stats().is_none());
        r.record(Duration::from_millis(7));
        assert_eq!(r.stats().unwrap().p99, Duration::from_millis(7));
    }

    #[test]
    fn the_atomic_recorder_gives_the_same_statistics() {
        let (a, mut plain, mut drained) = (AtomicRecorder::new(), Recorder::new(), Recorder::new());
        for us in [150u64, 9, 70_000, 3_100, 3_100, 48_000, 1, 220_000] {
            a.record(Duration::from_micros(us));
            plain.record(Duration::from_micros(us));
        }
        a.drain_into(&mut drained);
        assert_eq!(drained.stats(), plain.stats());
        a.drain_into(&mut drained);
        assert!(drained.stats().is_none(), "a drain empties it");
    }

    #[test]
    fn exact_stats_of_raw_values() {
        let s = LatencyStats::of_nanos((1..=100u64).rev().map(|ms| ms * 1_000_000)).unwrap();
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p90, Duration::from_millis(90));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.mean, Duration::from_micros(50_500));
        assert!(LatencyStats::of_nanos([]).is_none());
    }
}
