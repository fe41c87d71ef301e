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

use super::histogram::{LatencyStats, Recorder};
use super::{Outcome, Sample};
use crate::clock::Nanos;
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

/// Gathers samples into windows; see the module doc.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    cfg: WindowConfig,
    opened: Option<Nanos>,
    accept_from: Nanos,
    samples: u64,
    errors: u64,
    drops: u64,
    max_inflight: usize,
    latency: Recorder,
}

impl Window {
    pub(crate) fn new(cfg: WindowConfig) -> Self {
        Self {
            cfg,
            opened: None,
            accept_from: Nanos(0),
            samples: 0,
            errors: 0,
            drops: 0,
            max_inflight: 0,
            latency: Recorder::new(),
        }
    }

    /// Whether `s` would be counted: not ignored, and admitted after the
    /// last restart.
    pub(crate) fn accepts(&self, s: &Sample) -> bool {
        s.outcome != Outcome::Ignored && s.start >= self.accept_from
    }

    /// Whether `s` would be timed: an accepted success no faster than
    /// `min_rtt`.
    pub(crate) fn times(&self, s: &Sample) -> bool {
        self.accepts(s) && s.outcome == Outcome::Success && s.rtt >= self.cfg.min_rtt
    }

    /// Adds a sample taken at `now`; returns the window's summary if this
    /// sample closed it. The next window opens at once.
    pub(crate) fn push(&mut self, now: Nanos, s: &Sample) -> Option<WindowSummary> {
        if !self.accepts(s) {
            return None;
        }
        let opened = *self.opened.get_or_insert(now);
        self.samples += 1;
        match s.outcome {
            Outcome::Error => self.errors += 1,
            Outcome::Dropped => self.drops += 1,
            Outcome::Success if s.rtt >= self.cfg.min_rtt => self.latency.record(s.rtt),
            Outcome::Success | Outcome::Ignored => {}
        }
        self.max_inflight = self.max_inflight.max(s.inflight);
        let full = self.samples >= self.cfg.min_samples as u64;
        if !(full && now.since(opened) >= self.cfg.min_duration) {
            return None;
        }
        let summary = WindowSummary {
            samples: self.samples,
            errors: self.errors,
            drops: self.drops,
            max_inflight: self.max_inflight,
            latency: self.latency.stats(),
        };
        self.clear(Some(now));
        Some(summary)
    }

    /// Discards the open window and accepts only samples admitted from
    /// `now` on: called after a decrease and after a probe.
    pub(crate) fn restart(&mut self, now: Nanos) {
        self.accept_from = now;
        self.clear(None);
    }

    fn clear(&mut self, opened: Option<Nanos>) {
        self.opened = opened;
        self.samples = 0;
        self.errors = 0;
        self.drops = 0;
        self.max_inflight = 0;
        self.latency.clear();
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
        let mut w = Window::new(WindowConfig {
            min_samples: 3,
            min_duration: Duration::from_millis(100),
            min_rtt: Duration::from_millis(1),
        });
        assert!(w.push(at(0), &sample(0, 10, Outcome::Success)).is_none());
        assert!(w.push(at(10), &sample(0, 10, Outcome::Ignored)).is_none());
        assert!(w.push(at(20), &sample(0, 0, Outcome::Success)).is_none());
        // Three samples, but only 30 ms open.
        assert!(w.push(at(30), &sample(0, 20, Outcome::Dropped)).is_none());
        let s = w.push(at(100), &sample(0, 30, Outcome::Error)).unwrap();
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
        w.restart(at(200));
        assert!(!w.accepts(&sample(150, 60, Outcome::Success)));
        assert!(w.accepts(&sample(200, 60, Outcome::Success)));
    }
}
