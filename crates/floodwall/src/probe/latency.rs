//! Upstream latency against a learned baseline (the Phoenix WIP-gate
//! article's `LatencyRatio > MaxLatencyMultiplier`).
//!
//! Each limiter already keeps a smoothed request duration (an EWMA with
//! weight 1/16, updated as permits are released); this probe reads it once
//! per interval and compares it with a per-route **baseline**, the latency
//! the upstream has when it is not overloaded:
//!
//! - the baseline follows a lower latency **at once** (it is a minimum);
//! - it follows a higher one **slowly**, closing half the gap every
//!   `baseline_half_life` (default 5 min), so a lasting change (a slower
//!   release, a bigger data set) becomes the new normal while an overload,
//!   which the constraint clears within seconds, does not.
//!
//! The route is saturated when `latency > multiplier × max(baseline, 1 ms)`;
//! the 1 ms floor keeps a sub-millisecond upstream from being throttled for
//! a jitter nobody would notice. The probe is saturated when any route is:
//! the routes share the bottleneck.
//!
//! A route with no request finished since the last check has no new
//! information. If it is idle its verdict is "healthy"; if requests are in
//! flight but none finishes (the upstream hangs), its last verdict stands,
//! because a stuck upstream must not read as a recovered one.

use std::sync::Arc;
use std::time::Duration;

use floodwall_core::{Limiter, Outcome};

use super::check::{Probe, ProbeError, Reading};
use crate::config::probe::{DEFAULT_BASELINE_HALF_LIFE, DEFAULT_LATENCY_MULTIPLIER};
use crate::config::ProbeConfig;

/// The smallest baseline a ratio is taken against.
pub const MIN_BASELINE: Duration = Duration::from_millis(1);

/// A slowly rising minimum of latency samples. Pure: time comes in as the
/// elapsed `dt` between samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    half_life: Duration,
    value: Option<Duration>,
}

impl Baseline {
    /// No baseline yet; the first sample becomes it.
    pub fn new(half_life: Duration) -> Self {
        Self {
            half_life,
            value: None,
        }
    }

    /// The baseline now.
    pub fn value(&self) -> Option<Duration> {
        self.value
    }

    /// Takes `sample`, seen `dt` after the previous one, and returns the
    /// new baseline.
    pub fn update(&mut self, sample: Duration, dt: Duration) -> Duration {
        let next = match self.value {
            None => sample,
            Some(b) if sample <= b => sample,
            Some(b) => {
                let k = 1.0 - 0.5f64.powf(dt.as_secs_f64() / self.half_life.as_secs_f64());
                b + (sample - b).mul_f64(k)
            }
        };
        self.value = Some(next);
        next
    }
}

#[derive(Debug)]
struct RouteLatency {
    name: String,
    limiter: Arc<Limiter>,
    baseline: Baseline,
    finished: u64,
    saturated: bool,
}

/// Compares each route's smoothed latency with its learned baseline.
#[derive(Debug)]
pub struct LatencyProbe {
    multiplier: f64,
    routes: Vec<RouteLatency>,
    last: Option<tokio::time::Instant>,
}

impl LatencyProbe {
    /// The probe of `config` over these routes (name and limiter).
    pub fn new(config: &ProbeConfig, routes: Vec<(String, Arc<Limiter>)>) -> Self {
        let half_life = config
            .baseline_half_life
            .unwrap_or(DEFAULT_BASELINE_HALF_LIFE);
        Self {
            multiplier: config.multiplier.unwrap_or(DEFAULT_LATENCY_MULTIPLIER),
            routes: routes
                .into_iter()
                .map(|(name, limiter)| RouteLatency {
                    name,
                    limiter,
                    baseline: Baseline::new(half_life),
                    finished: 0,
                    saturated: false,
                })
                .collect(),
            last: None,
        }
    }

    /// One check at `dt` after the previous one.
    fn read(&mut self, dt: Duration) -> Reading {
        let mut worst: Option<(f64, String)> = None;
        let mut saturated = false;
        for r in &mut self.routes {
            let s = r.limiter.snapshot();
            // The EWMA learns from these two outcomes only.
            let finished: u64 = s
                .classes
                .iter()
                .map(|c| {
                    c.outcomes[Outcome::Success as usize] + c.outcomes[Outcome::Error as usize]
                })
                .sum();
            let fresh = finished != r.finished;
            r.finished = finished;
            if !fresh {
                if s.inflight == 0 {
                    r.saturated = false;
                }
                saturated |= r.saturated;
                continue;
            }
            let rtt = s.ewma_rtt;
            let base = r.baseline.value().unwrap_or(rtt).max(MIN_BASELINE);
            let ratio = rtt.as_secs_f64() / base.as_secs_f64();
            r.saturated = ratio > self.multiplier;
            r.baseline.update(rtt, dt);
            saturated |= r.saturated;
            if worst.as_ref().is_none_or(|(w, _)| ratio > *w) {
                worst = Some((
                    ratio,
                    format!(
                        "{}: latency={:.1}ms baseline={:.1}ms ratio={ratio:.2} multiplier={}",
                        r.name,
                        rtt.as_secs_f64() * 1e3,
                        base.as_secs_f64() * 1e3,
                        self.multiplier
                    ),
                ));
            }
        }
        let detail = match worst {
            Some((_, d)) => d,
            None if saturated => "no request finished since the last check".to_owned(),
            None => "idle".to_owned(),
        };
        Reading {
            saturated,
            hard: false,
            detail,
        }
    }
}

impl Probe for LatencyProbe {
    async fn check(&mut self) -> Result<Reading, ProbeError> {
        let now = tokio::time::Instant::now();
        let dt = self.last.map_or(Duration::ZERO, |t| now - t);
        self.last = Some(now);
        Ok(self.read(dt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodwall_core::{FixedLimit, LimiterConfig, ManualClock, Request};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn baseline_follows_down_at_once_and_up_by_half_lives() {
        let mut b = Baseline::new(Duration::from_secs(60));
        assert_eq!(b.update(ms(40), Duration::ZERO), ms(40));
        assert_eq!(b.update(ms(10), Duration::from_secs(1)), ms(10));
        // One half-life at 30 ms: halfway from 10 to 30.
        let up = b.update(ms(30), Duration::from_secs(60));
        assert!((up.as_secs_f64() - 0.020).abs() < 1e-6, "{up:?}");
        // A 2 s overload at 100 ms barely moves it.
        let mut b = Baseline::new(Duration::from_secs(300));
        b.update(ms(10), Duration::ZERO);
        for _ in 0..2 {
            b.update(ms(100), Duration::from_secs(1));
        }
        assert!(b.value().unwrap() < ms(11), "{:?}", b.value());
    }

    /// A limiter whose requests take exactly what the test says.
    fn route_limiter() -> (Arc<ManualClock>, Arc<Limiter>) {
        let clock = Arc::new(ManualClock::new());
        let limiter = Limiter::new(
            LimiterConfig::default(),
            FixedLimit::new(100),
            clock.clone(),
        )
        .unwrap();
        (clock, limiter)
    }

    fn serve(clock: &ManualClock, limiter: &Arc<Limiter>, n: usize, took: Duration) {
        for _ in 0..n {
            let req = Request {
                class: limiter.class_id("interactive").unwrap(),
                tenant: None,
            };
            let mut permit = limiter.try_acquire(&req).unwrap();
            clock.advance(took);
            permit.record(Outcome::Success);
        }
    }

    #[test]
    fn saturated_when_latency_doubles_and_idle_is_healthy() {
        let (clock, limiter) = route_limiter();
        let mut p = LatencyProbe::new(
            &ProbeConfig::new(crate::config::ProbeKind::Latency),
            vec![("api".into(), limiter.clone())],
        );
        assert_eq!(p.read(Duration::ZERO).detail, "idle");
        serve(&clock, &limiter, 50, ms(10));
        assert!(!p.read(Duration::from_secs(1)).saturated);
        serve(&clock, &limiter, 100, ms(40));
        let r = p.read(Duration::from_secs(1));
        assert!(r.saturated, "{r:?}");
        assert!(r.detail.starts_with("api: latency="), "{}", r.detail);
        // Nothing finished, nothing in flight: idle, so healthy.
        assert!(!p.read(Duration::from_secs(1)).saturated);
        // Back to 10 ms.
        serve(&clock, &limiter, 100, ms(10));
        assert!(!p.read(Duration::from_secs(1)).saturated);
    }

    #[test]
    fn a_hung_upstream_keeps_its_verdict() {
        let (clock, limiter) = route_limiter();
        let mut p = LatencyProbe::new(
            &ProbeConfig::new(crate::config::ProbeKind::Latency),
            vec![("api".into(), limiter.clone())],
        );
        serve(&clock, &limiter, 50, ms(10));
        p.read(Duration::ZERO);
        serve(&clock, &limiter, 100, ms(50));
        assert!(p.read(Duration::from_secs(1)).saturated);
        let req = Request {
            class: limiter.class_id("interactive").unwrap(),
            tenant: None,
        };
        let _stuck = limiter.try_acquire(&req).unwrap();
        let r = p.read(Duration::from_secs(1));
        assert!(r.saturated, "{r:?}");
    }
}
