//! Windowed sampling: every adaptive limit decides once per window, never
//! per request.
//!
//! A single request's latency is noise (a GC pause, a cold cache line, a
//! slow disk); a decision per request makes the limit jitter with it. So
//! samples are gathered into a window that closes when it holds at least
//! `min_samples` samples **and** has been open for at least `min_duration`
//! (Netflix concurrency-limits' `WindowedLimit`: 10 samples, 1 s). The
//! algorithm then sees one summary per window: counts by outcome, the
//! largest in-flight count at admission, and latency statistics.
//!
//! We take 100 samples, not 10 or 20, because of what the simulations
//! showed on a realistic latency distribution (log-normal, p99 ≈ 3 × p50):
//! the median of 20 such samples is off by ±14 % (one standard error), so
//! with a 15 % tolerance about one window in six looks overloaded by chance;
//! near the floor, where windows are small, AIMD then spent its first
//! minute cutting itself back to the floor. At 100 samples the error is
//! ±6 %. At the floor (3 in flight) of a 50 ms upstream that is a 1.7 s
//! window; at any real load the 1 s minimum duration decides.
//!
//! What goes in:
//!
//! - `Ignored` outcomes never: a client that went away says nothing about
//!   the upstream.
//! - `Error` and `Dropped` outcomes are counted (the failure rates) but kept
//!   out of the latency statistics: a fast 503 would drag the percentiles
//!   down and make an overloaded upstream look healthy (Netflix
//!   concurrency-limits issue #176), and a timeout's duration is the client's
//!   timeout, not the upstream's latency.
//! - Successes faster than `min_rtt` are counted but not timed: requests
//!   answered without touching the upstream (health checks, cached answers)
//!   would make it look idle (Netflix `minRttThreshold`).
//! - Samples admitted before the last decrease are skipped entirely
//!   ([`Window::restart`]): they queued under the old, larger limit, and
//!   reacting to them again would cut the limit twice for one overload (the
//!   same reason TCP cuts its window at most once per round trip).

use super::histogram::{AtomicRecorder, LatencyStats, Recorder};
use crate::clock::Nanos;
use crate::limit::{Outcome, Sample};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How samples are grouped into windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowConfig {
    /// A window closes only once it holds this many samples (not counting
    /// `Ignored`). Default 100: the fewest whose median is within ±6 % on
    /// a long-tailed upstream (see the module doc).
    pub min_samples: usize,
    /// …and has been open this long. Default 1 s (Netflix's window): long
    /// enough to span many round trips of a typical upstream, short enough
    /// to react within seconds.
    pub min_duration: Duration,
    /// Successes faster than this are not timed. Default 100 µs (Netflix's
    /// `minRttThreshold`): nothing that really reached an upstream over a
    /// network answers faster.
    pub min_rtt: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            min_samples: 100,
            min_duration: Duration::from_secs(1),
            min_rtt: Duration::from_micros(100),
        }
    }
}

/// Which latency statistic of a window an algorithm compares with its
/// baseline.
///
/// The baseline is always summarised with the same statistic as the window,
/// so that an unloaded window compares as exactly 1× its baseline whatever
/// the shape of the latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Statistic {
    /// The mean: what Little's law (and so Vegas' queue estimate) needs.
    Mean,
    /// The median: the default. Queueing delays every request about
    /// equally, so the median moves as much as any percentile, and it is
    /// the statistic a 200-sample baseline estimates best (±4 % on a
    /// long-tailed upstream).
    P50,
    /// The 90th percentile: fine on a tight latency distribution; on a
    /// long-tailed one a 200-sample baseline misses it by ±6–10 %.
    P90,
    /// The 99th percentile: what users complain about, but no probe of a
    /// few hundred requests can estimate it; only with a fixed baseline.
    P99,
}

impl Statistic {
    /// The name used in configuration and `/status`, e.g. `"p90"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Statistic::Mean => "mean",
            Statistic::P50 => "p50",
            Statistic::P90 => "p90",
            Statistic::P99 => "p99",
        }
    }

    pub(crate) fn of(self, s: &LatencyStats) -> Duration {
        match self {
            Statistic::Mean => s.mean,
            Statistic::P50 => s.p50,
            Statistic::P90 => s.p90,
            Statistic::P99 => s.p99,
        }
    }
}

/// One closed window, as an algorithm sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WindowSummary {
    /// Samples counted: successes, errors and drops.
    pub samples: u64,
    /// `Error` outcomes.
    pub errors: u64,
    /// `Dropped` outcomes.
    pub drops: u64,
    /// The largest in-flight count any sample saw at its admission.
    pub max_inflight: usize,
    /// Latency of the timed successes; `None` if there were none.
    pub latency: Option<LatencyStats>,
    /// From the window's first sample to its close: with `latency.count`,
    /// the rate the upstream completed requests at (zero for a window
    /// discarded by a restart).
    pub span: Duration,
}

impl WindowSummary {
    /// `(errors + drops) / samples`.
    pub(crate) fn failure_rate(&self) -> f64 {
        (self.errors + self.drops) as f64 / self.samples.max(1) as f64
    }

    /// `drops / samples`.
    pub(crate) fn drop_rate(&self) -> f64 {
        self.drops as f64 / self.samples.max(1) as f64
    }
}

/// `opened` before the first sample of a window after a restart.
const UNOPENED: u64 = u64::MAX;

/// Gathers samples into windows; see the module doc.
///
/// The open window is a set of atomics: [`Window::push`] adds a sample
/// without a lock, and says when the window is due to close; the caller
/// then takes the limit's lock and calls [`Window::close`], which checks
/// again and empties it. A sample pushed while another thread closes or
/// restarts the window has each of its parts (its count, its outcome, its
/// latency, its in-flight count) land in exactly one window: the one
/// closing or the next. None is lost or counted twice, except that a
/// restart discards the open window on purpose.
#[derive(Debug)]
pub(crate) struct Window {
    cfg: WindowConfig,
    /// When the open window opened (at its first sample after a restart,
    /// else when the last one closed); `UNOPENED` before that.
    opened: AtomicU64,
    /// Samples admitted before this are not counted (see `restart`).
    accept_from: AtomicU64,
    samples: AtomicU64,
    errors: AtomicU64,
    drops: AtomicU64,
    max_inflight: AtomicUsize,
    latency: AtomicRecorder,
    /// Where every sample went, for the concurrency test.
    #[cfg(test)]
    pub(crate) tally: Tally,
}

/// Counts of `[samples, errors, timed]` by where they went: skipped as
/// admitted before a restart, in a closed window, or discarded by a restart.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub skipped: [AtomicU64; 3],
    pub closed: [AtomicU64; 3],
    pub discarded: [AtomicU64; 3],
}

#[cfg(test)]
impl Tally {
    fn add(to: &[AtomicU64; 3], samples: u64, errors: u64, timed: u64) {
        for (c, n) in to.iter().zip([samples, errors, timed]) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn get(of: &[AtomicU64; 3]) -> [u64; 3] {
        of.each_ref().map(|c| c.load(Ordering::Relaxed))
    }
}

impl Window {
    pub(crate) fn new(cfg: WindowConfig) -> Self {
        Self {
            cfg,
            opened: AtomicU64::new(UNOPENED),
            accept_from: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            max_inflight: AtomicUsize::new(0),
            latency: AtomicRecorder::new(),
            #[cfg(test)]
            tally: Tally::default(),
        }
    }

    /// `[samples, errors, timed]` in the open window now.
    #[cfg(test)]
    pub(crate) fn open_counts(&self) -> [u64; 3] {
        [
            self.samples.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.latency.count(),
        ]
    }

    /// Whether `s` would be counted: not ignored, and admitted after the
    /// last restart.
    pub(crate) fn accepts(&self, s: &Sample) -> bool {
        s.outcome != Outcome::Ignored && s.start.0 >= self.accept_from.load(Ordering::Acquire)
    }

    /// Whether `s` would be timed: an accepted success no faster than
    /// `min_rtt`.
    pub(crate) fn times(&self, s: &Sample) -> bool {
        self.accepts(s) && s.outcome == Outcome::Success && s.rtt >= self.cfg.min_rtt
    }

    /// Adds a sample taken at `now`, without a lock. Returns whether the
    /// window is now due to close: then the caller takes the lock and
    /// calls [`Window::close`].
    pub(crate) fn push(&self, now: Nanos, s: &Sample) -> bool {
        if !self.accepts(s) {
            #[cfg(test)]
            if s.outcome != Outcome::Ignored {
                let timed = s.outcome == Outcome::Success && s.rtt >= self.cfg.min_rtt;
                let error = s.outcome == Outcome::Error;
                Tally::add(&self.tally.skipped, 1, error.into(), timed.into());
            }
            return false;
        }
        let opened = match self.opened.load(Ordering::Acquire) {
            UNOPENED => match self.opened.compare_exchange(
                UNOPENED,
                now.0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => now.0,
                Err(other) => other,
            },
            t => t,
        };
        let samples = self.samples.fetch_add(1, Ordering::AcqRel) + 1;
        match s.outcome {
            Outcome::Error => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Dropped => {
                self.drops.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Success if s.rtt >= self.cfg.min_rtt => self.latency.record(s.rtt),
            Outcome::Success | Outcome::Ignored => {}
        }
        if s.inflight > self.max_inflight.load(Ordering::Relaxed) {
            self.max_inflight.fetch_max(s.inflight, Ordering::Relaxed);
        }
        self.due(now, samples, opened)
    }

    fn due(&self, now: Nanos, samples: u64, opened: u64) -> bool {
        opened != UNOPENED
            && samples >= self.cfg.min_samples as u64
            && now.since(Nanos(opened)) >= self.cfg.min_duration
    }

    /// Closes the open window if it is due at `now` (another thread may
    /// have closed it since [`Window::push`] said so), and returns its
    /// summary. The next window opens at once. Call under the limit's
    /// lock: `scratch` is where the latencies are drained to.
    pub(crate) fn close(&self, now: Nanos, scratch: &mut Recorder) -> Option<WindowSummary> {
        let (samples, opened) = (
            self.samples.load(Ordering::Acquire),
            self.opened.load(Ordering::Acquire),
        );
        if !self.due(now, samples, opened) {
            return None;
        }
        self.opened.store(now.0, Ordering::Release);
        let summary = WindowSummary {
            span: now.since(Nanos(opened)),
            ..self.take(scratch)
        };
        #[cfg(test)]
        Tally::add(
            &self.tally.closed,
            summary.samples,
            summary.errors,
            summary.latency.map_or(0, |l| l.count),
        );
        Some(summary)
    }

    /// Discards the open window and accepts only samples admitted from
    /// `now` on: called after a decrease and after a probe.
    pub(crate) fn restart(&self, now: Nanos, scratch: &mut Recorder) {
        self.accept_from.store(now.0, Ordering::Release);
        self.opened.store(UNOPENED, Ordering::Release);
        let _gone = self.take(scratch);
        #[cfg(test)]
        Tally::add(
            &self.tally.discarded,
            _gone.samples,
            _gone.errors,
            _gone.latency.map_or(0, |l| l.count),
        );
    }

    /// Empties the open window and returns what it held.
    fn take(&self, scratch: &mut Recorder) -> WindowSummary {
        let samples = self.samples.swap(0, Ordering::AcqRel);
        let errors = self.errors.swap(0, Ordering::Relaxed);
        let drops = self.drops.swap(0, Ordering::Relaxed);
        let max_inflight = self.max_inflight.swap(0, Ordering::Relaxed);
        self.latency.drain_into(scratch);
        WindowSummary {
            samples,
            errors,
            drops,
            max_inflight,
            latency: scratch.stats(),
            span: Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Nanos {
        Nanos(ms * 1_000_000)
    }

    fn sample(start_ms: u64, rtt_ms: u64, outcome: Outcome) -> Sample {
        Sample {
            start: at(start_ms),
            rtt: Duration::from_millis(rtt_ms),
            inflight: 5,
            outcome,
        }
    }

    #[test]
    fn closes_on_samples_and_duration_and_filters() {
        let w = Window::new(WindowConfig {
            min_samples: 3,
            min_duration: Duration::from_millis(100),
            min_rtt: Duration::from_millis(1),
        });
        let mut scratch = Recorder::new();
        assert!(!w.push(at(0), &sample(0, 10, Outcome::Success)));
        assert!(!w.push(at(10), &sample(0, 10, Outcome::Ignored)));
        assert!(!w.push(at(20), &sample(0, 0, Outcome::Success)));
        // Three samples, but only 30 ms open.
        assert!(!w.push(at(30), &sample(0, 20, Outcome::Dropped)));
        assert!(w.close(at(30), &mut scratch).is_none(), "not due");
        assert!(w.push(at(100), &sample(0, 30, Outcome::Error)));
        let s = w.close(at(100), &mut scratch).unwrap();
        assert!(w.close(at(100), &mut scratch).is_none(), "closed once");
        assert_eq!(
            (s.samples, s.errors, s.drops),
            (4, 1, 1),
            "ignored is not counted"
        );
        assert_eq!(
            s.latency.unwrap().count,
            1,
            "only the 10 ms success is timed"
        );
        assert!((s.failure_rate() - 0.5).abs() < 1e-9);
        // After a restart at 200 ms, older admissions are skipped.
        w.restart(at(200), &mut scratch);
        assert!(!w.accepts(&sample(150, 60, Outcome::Success)));
        assert!(w.accepts(&sample(200, 60, Outcome::Success)));
    }
}
