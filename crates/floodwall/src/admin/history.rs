//! The last five minutes, one point a second: what the status page charts
//! and `GET /history.json` serves.
//!
//! A ring of [`CAPACITY`] points, filled by one task that samples every
//! second (`app.rs` starts it), from the same snapshots `/status` reads,
//! so the request path pays nothing for it. Each point holds every
//! route's limit, in-flight count and queue depth, refusals per second by
//! reason over all routes, and the p50 and p99 of the requests that
//! finished in that second, estimated from the duration histogram's
//! buckets (interpolated within the bucket, as Prometheus's
//! `histogram_quantile` does).

use crate::proxy::{RefusalCounters, Route};
use floodwall_core::Reason;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Points kept: five minutes at one a second.
pub const CAPACITY: usize = 300;

/// One route at one second.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoutePoint {
    /// The route's name.
    pub name: String,
    /// The effective limit.
    pub limit: usize,
    /// The algorithm's own figure, before probes and shares.
    pub algorithm_limit: usize,
    /// Requests in flight.
    pub inflight: usize,
    /// Requests waiting in the queue.
    pub queue: usize,
}

/// One second.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// Unix time, in milliseconds.
    pub t: u64,
    /// Every route, in match order.
    pub routes: Vec<RoutePoint>,
    /// Refusals per second over all routes, by reason (only reasons that
    /// occurred).
    pub refused: BTreeMap<&'static str, f64>,
    /// Requests finished per second (admitted ones).
    pub finished: f64,
    /// p50 and p99 of the requests finished in this second, in ms; `None`
    /// when none finished.
    pub p50_ms: Option<f64>,
    /// See `p50_ms`.
    pub p99_ms: Option<f64>,
}

/// Totals at the last sample, to take differences from.
#[derive(Debug, Default)]
struct Totals {
    t: u64,
    refused: HashMap<&'static str, u64>,
    buckets: Vec<(f64, u64)>,
}

/// The ring of points.
#[derive(Debug, Default)]
pub struct History {
    points: Mutex<VecDeque<Point>>,
    last: Mutex<Option<Totals>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one point now from `routes` (their duration histograms
    /// summed) and the unrouted refusals.
    pub fn sample(&self, routes: &[Arc<Route>], unrouted: &RefusalCounters) {
        let mut sum: Vec<(f64, u64)> = Vec::new();
        for h in routes.iter().flat_map(|r| r.series.durations()) {
            let b = buckets(h);
            if sum.is_empty() {
                sum = b;
            } else {
                for (acc, (_, n)) in sum.iter_mut().zip(b) {
                    acc.1 += n;
                }
            }
        }
        self.sample_at(now_ms(), routes, unrouted, sum);
    }

    fn sample_at(
        &self,
        t: u64,
        routes: &[Arc<Route>],
        unrouted: &RefusalCounters,
        buckets: Vec<(f64, u64)>,
    ) {
        let mut refused: HashMap<&'static str, u64> = HashMap::new();
        let mut points = Vec::with_capacity(routes.len());
        for r in routes {
            let s = r.limiter.snapshot();
            for c in &s.classes {
                for (i, reason) in Reason::ALL.iter().enumerate() {
                    *refused.entry(reason.as_str()).or_default() += c.rejections[i];
                }
            }
            for (_, reason, n) in r.refusals.counts() {
                *refused.entry(reason).or_default() += n;
            }
            points.push(RoutePoint {
                name: r.name.clone(),
                limit: s.limit,
                algorithm_limit: s.algorithm_limit,
                inflight: s.inflight,
                queue: s.queue_depth,
            });
        }
        for (_, reason, n) in unrouted.counts() {
            *refused.entry(reason).or_default() += n;
        }
        let mut last = lock(&self.last);
        let point = match last.as_ref() {
            // The first sample only sets the totals to count from. A
            // reload that removes a route lowers a total: clamp at 0.
            Some(prev) if t > prev.t => {
                let secs = (t - prev.t) as f64 / 1000.0;
                let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / secs;
                let refused_now = refused
                    .iter()
                    .map(|(k, n)| (*k, rate(*n, prev.refused.get(k).copied().unwrap_or(0))))
                    .filter(|(_, r)| *r > 0.0)
                    .collect();
                let delta: Vec<(f64, u64)> = buckets
                    .iter()
                    .zip(prev.buckets.iter().chain(std::iter::repeat(&(0.0, 0))))
                    .map(|((le, n), (_, before))| (*le, n.saturating_sub(*before)))
                    .collect();
                let count = delta.last().map_or(0, |b| b.1);
                Some(Point {
                    t,
                    routes: points,
                    refused: refused_now,
                    finished: count as f64 / secs,
                    p50_ms: quantile(&delta, 0.5).map(|s| s * 1000.0),
                    p99_ms: quantile(&delta, 0.99).map(|s| s * 1000.0),
                })
            }
            _ => None,
        };
        *last = Some(Totals {
            t,
            refused,
            buckets,
        });
        drop(last);
        if let Some(p) = point {
            let mut ring = lock(&self.points);
            if ring.len() == CAPACITY {
                ring.pop_front();
            }
            ring.push_back(p);
        }
    }

    /// Every point, oldest first.
    pub fn points(&self) -> Vec<Point> {
        lock(&self.points).iter().cloned().collect()
    }

    /// The `/history.json` document.
    pub fn document(&self) -> serde_json::Value {
        serde_json::json!({
            "interval_ms": 1000,
            "capacity": CAPACITY,
            "points": self.points(),
        })
    }
}

/// The cumulative buckets `(upper bound in s, count)` of `h`, read through
/// its text encoding (the one read access the histogram offers); the last
/// is `+Inf`.
fn buckets(h: &Histogram) -> Vec<(f64, u64)> {
    let mut reg = Registry::default();
    reg.register("d", "", h.clone());
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &reg).is_err() {
        return Vec::new();
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("d_bucket{le=\""))
        .filter_map(|l| {
            let (le, n) = l.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, n.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolated linearly within
/// the bucket it falls in; the top finite bound if it falls in `+Inf`.
fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(le, n) in buckets {
        if n as f64 >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let inside = (n - lower.1) as f64;
            let frac = if inside > 0.0 {
                (rank - lower.1 as f64) / inside
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * frac);
        }
        lower = (le, n);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let b = [(0.01, 50), (0.02, 100), (f64::INFINITY, 100)];
        assert!((quantile(&b, 0.5).unwrap() - 0.01).abs() < 1e-9);
        assert!((quantile(&b, 0.75).unwrap() - 0.015).abs() < 1e-9);
        assert_eq!(quantile(&[(0.01, 0), (f64::INFINITY, 0)], 0.5), None);
        assert_eq!(quantile(&[(0.01, 0), (f64::INFINITY, 4)], 0.5), Some(0.01));
    }

    #[test]
    fn the_ring_keeps_the_last_five_minutes_of_rates() {
        let h = Histogram::new([0.01, 0.1]);
        let unrouted = RefusalCounters::new(1);
        let history = History::new();
        history.sample_at(1_000, &[], &unrouted, buckets(&h));
        assert!(history.points().is_empty(), "the first sample is a base");
        for _ in 0..10 {
            h.observe(0.005);
        }
        unrouted.count(0, &crate::proxy::Refusal::NoRoute);
        unrouted.count(0, &crate::proxy::Refusal::NoRoute);
        history.sample_at(3_000, &[], &unrouted, buckets(&h));
        let p = &history.points()[0];
        assert_eq!(p.finished, 5.0);
        assert_eq!(p.refused.values().copied().collect::<Vec<_>>(), [1.0]);
        assert!(p.p50_ms.unwrap() <= 10.0);
        for i in 0..400 {
            history.sample_at(4_000 + i * 1000, &[], &unrouted, buckets(&h));
        }
        let points = history.points();
        assert_eq!(points.len(), CAPACITY);
        assert_eq!(points.last().unwrap().t, 4_000 + 399 * 1000);
        assert_eq!(points.last().unwrap().p50_ms, None, "nothing finished");
    }
}
