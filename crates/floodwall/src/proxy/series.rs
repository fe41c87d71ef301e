//! What `/metrics` needs of one route beyond its limiter's snapshot, built
//! with the route (`Route::new`) so the request path looks nothing up and
//! formats no label: the duration histograms, the algorithm's floor, and
//! the effective-load meter's memory between scrapes. `admin/metrics.rs`
//! renders it; it lives here, below `admin`, because the route owns it.

use floodwall_core::ClassId;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest span the effective-load meter measures a refusal rate
/// over; a reading sooner than this after the previous reuses its rate.
pub const LOAD_SPAN: Duration = Duration::from_secs(1);

/// The refusal rate of one route between two readings of its cumulative
/// refusal count.
#[derive(Debug, Default)]
struct LoadMeter {
    last: Option<(Instant, u64)>,
    rate: f64,
}

impl LoadMeter {
    /// Folds the cumulative count `refused` read at `now` and returns the
    /// refusals per second over the last span of at least [`LOAD_SPAN`]
    /// (0 until there is one).
    fn refusal_rate(&mut self, now: Instant, refused: u64) -> f64 {
        match self.last {
            None => self.last = Some((now, refused)),
            Some((at, before)) => {
                let span = now.saturating_duration_since(at);
                if span >= LOAD_SPAN {
                    self.rate = refused.saturating_sub(before) as f64 / span.as_secs_f64();
                    self.last = Some((now, refused));
                }
            }
        }
        self.rate
    }
}

/// A fresh request-duration histogram: buckets from 0.5 ms doubling to
/// about 33 s (17 buckets), the range from a cache hit to a client timeout.
pub fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// What `/metrics` needs of one route beyond its limiter's snapshot, built
/// with the route so that nothing is looked up or formatted per request:
///
/// - its request-duration histograms, one per class in the limiter's class
///   order, so the label set of `floodwall_request_duration_seconds` is
///   bounded by routes × classes and recording one is a handle clone;
/// - the floor of its algorithm (`floodwall_limit_min`);
/// - the effective-load meter's last reading (`admin/metrics.rs` has the
///   formula).
#[derive(Debug)]
pub struct RouteSeries {
    durations: Box<[Histogram]>,
    floor: usize,
    meter: Mutex<LoadMeter>,
}

impl RouteSeries {
    /// The series of a route with `classes` classes whose algorithm never
    /// goes below `floor`.
    pub fn new(classes: usize, floor: usize) -> Self {
        Self {
            durations: (0..classes.max(1)).map(|_| duration_histogram()).collect(),
            floor,
            meter: Mutex::new(LoadMeter::default()),
        }
    }

    /// The duration histogram of the route's requests of `class`. A class
    /// of another limiter (out of range) falls back to the first, so
    /// recording can never panic.
    #[inline]
    pub fn duration(&self, class: ClassId) -> &Histogram {
        self.durations
            .get(class.index())
            .unwrap_or(&self.durations[0])
    }

    /// Every class's duration histogram, in class order (same buckets).
    pub fn durations(&self) -> &[Histogram] {
        &self.durations
    }

    /// The floor of the route's algorithm: an adaptive limit's `min`, a
    /// fixed limit's value.
    pub fn floor(&self) -> usize {
        self.floor
    }

    /// The route's gate refusals per second since the previous reading
    /// at least [`LOAD_SPAN`] ago, given their cumulative count now (0
    /// until there is one). Called at scrape time, never per request.
    pub fn refusal_rate(&self, refused: u64) -> f64 {
        self.meter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refusal_rate(Instant::now(), refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_rate_spans_at_least_a_second() {
        let mut m = LoadMeter::default();
        let t0 = Instant::now();
        assert_eq!(m.refusal_rate(t0, 100), 0.0, "no rate from one reading");
        // Too soon: the rate so far (none) is kept, the reading is not.
        assert_eq!(m.refusal_rate(t0 + Duration::from_millis(300), 130), 0.0);
        assert_eq!(m.refusal_rate(t0 + Duration::from_secs(2), 300), 100.0);
        assert_eq!(m.refusal_rate(t0 + Duration::from_millis(2500), 900), 100.0);
        assert_eq!(m.refusal_rate(t0 + Duration::from_secs(6), 300), 0.0);
    }
}
