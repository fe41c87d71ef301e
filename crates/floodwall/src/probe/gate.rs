//! The gate's own saturation, for a flag file (`kind = "gate"`).
//!
//! Where one nginx fronts several floodwalls, or sits in front of one that
//! already refuses, the web server can stop sending work the moment the
//! gate is full instead of relaying each refusal (the backlog_reporter
//! gem's idea, driven here by the gate rather than by the upstream's accept
//! queue). This probe reads every route's limiter once per interval and is
//! saturated while any route refused work since the last check (its limit
//! or its queue, not a tenant's cap: one tenant's flood is not the gate
//! being full), or holds `saturated_at` (default 1.0) of its limit in
//! flight. With hysteresis: once saturated it stays so until a check finds
//! no route refusing and every route at or below `recover_at` (default
//! 0.8 × `saturated_at`) of its limit.
//!
//! It never constrains the limit (see `state.rs`): it reads the gate, and
//! cutting the limit on a full gate would only feed back into itself.

use std::sync::Arc;

use floodwall_core::{Limiter, Reason};

use super::check::{Probe, ProbeError, Reading};
use crate::config::ProbeConfig;

#[derive(Debug)]
struct RouteGate {
    name: String,
    limiter: Arc<Limiter>,
    /// Gate refusals seen at the last check.
    refused: u64,
}

/// Reads every route's in-flight count and refusals; see the module doc.
#[derive(Debug)]
pub struct GateProbe {
    saturated_at: f64,
    recover_at: f64,
    routes: Vec<RouteGate>,
    saturated: bool,
}

/// Refusals of the gate itself: every reason but a tenant's cap.
fn gate_refusals(limiter: &Limiter) -> (u64, usize, usize) {
    let s = limiter.snapshot();
    let refused = s
        .classes
        .iter()
        .flat_map(|c| {
            Reason::ALL
                .iter()
                .zip(c.rejections)
                .filter(|(r, _)| **r != Reason::TenantLimitExceeded)
                .map(|(_, n)| n)
        })
        .sum();
    (refused, s.inflight, s.limit)
}

impl GateProbe {
    /// The probe of `config` over these routes (name and limiter).
    pub fn new(config: &ProbeConfig, routes: Vec<(String, Arc<Limiter>)>) -> Self {
        Self {
            saturated_at: config.gate_saturated_at(),
            recover_at: config.gate_recover_at(),
            routes: routes
                .into_iter()
                .map(|(name, limiter)| {
                    let (refused, _, _) = gate_refusals(&limiter);
                    RouteGate {
                        name,
                        limiter,
                        refused,
                    }
                })
                .collect(),
            saturated: false,
        }
    }

    /// One check.
    fn read(&mut self) -> Reading {
        let (mut full, mut calm) = (false, true);
        let mut worst: Option<(f64, String)> = None;
        for r in &mut self.routes {
            let (refused, inflight, limit) = gate_refusals(&r.limiter);
            let new = refused.saturating_sub(r.refused);
            r.refused = refused;
            let used = inflight as f64 / limit.max(1) as f64;
            full |= new > 0 || used >= self.saturated_at;
            calm &= new == 0 && used <= self.recover_at;
            let score = if new > 0 { 2.0 + used } else { used };
            if worst.as_ref().is_none_or(|(w, _)| score > *w) {
                worst = Some((
                    score,
                    format!(
                        "{}: inflight={inflight}/{limit} refused={new} since the last check",
                        r.name
                    ),
                ));
            }
        }
        self.saturated = if self.saturated { !calm } else { full };
        let detail = worst.map_or_else(|| "no routes".to_owned(), |(_, d)| d);
        if self.saturated {
            Reading::saturated(detail)
        } else {
            Reading::healthy(detail)
        }
    }
}

impl Probe for GateProbe {
    async fn check(&mut self) -> Result<Reading, ProbeError> {
        Ok(self.read())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProbeKind;
    use floodwall_core::{FixedLimit, LimiterConfig, ManualClock, Request};

    fn probe(limit: usize) -> (Arc<Limiter>, GateProbe) {
        let limiter = Limiter::new(
            LimiterConfig::default(),
            FixedLimit::new(limit),
            Arc::new(ManualClock::new()),
        )
        .unwrap();
        let mut config = ProbeConfig::new(ProbeKind::Gate);
        config.recover_at = Some(0.5);
        let p = GateProbe::new(&config, vec![("api".to_owned(), limiter.clone())]);
        (limiter, p)
    }

    fn req(l: &Limiter) -> Request<'_> {
        Request {
            class: l.class_id("interactive").unwrap(),
            tenant: None,
        }
    }

    #[test]
    fn full_or_refusing_raises_and_only_calm_lowers() {
        let (l, mut p) = probe(4);
        assert!(!p.read().saturated, "idle");
        let mut held: Vec<_> = (0..3).map(|_| l.try_acquire(&req(&l)).unwrap()).collect();
        assert!(!p.read().saturated, "3 of 4 in flight");
        held.push(l.try_acquire(&req(&l)).unwrap());
        let r = p.read();
        assert!(r.saturated, "4 of 4: {r:?}");
        assert!(r.detail.contains("inflight=4/4"), "{r:?}");
        // A refusal since the last check keeps it raised even below full.
        assert!(l.try_acquire(&req(&l)).is_err());
        held.pop();
        let r = p.read();
        assert!(r.saturated && r.detail.contains("refused=1"), "{r:?}");
        // 3 of 4, no refusal: above recover_at (0.5), still raised.
        assert!(p.read().saturated);
        held.pop();
        // 2 of 4 and calm: lowered.
        assert!(!p.read().saturated);
        // And a refusal alone raises it again.
        held.push(l.try_acquire(&req(&l)).unwrap());
        held.push(l.try_acquire(&req(&l)).unwrap());
        assert!(l.try_acquire(&req(&l)).is_err());
        held.pop();
        assert!(p.read().saturated);
        drop(held);
    }
}
