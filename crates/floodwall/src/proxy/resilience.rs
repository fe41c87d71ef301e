//! What guards an upstream and a route beyond the route's limit: the
//! upstream's breaker and bulkhead (shared by every route that uses it,
//! because they live on the [`Upstream`](super::Upstream)), and the
//! route's retry budget. The algorithms are `floodwall-core`'s; this file
//! only builds them from the config and counts what metrics need.

use crate::config::{BreakerKeys, BulkheadKeys, RetryBudgetKeys, UpstreamConfig};
use crate::events::{Event, Events, Kind};
use floodwall_core::breaker::State;
use floodwall_core::bulkhead::Capacity;
use floodwall_core::{Breaker, Bulkhead, Clock, HttpFailures, RetryBudget};
use http::{HeaderMap, HeaderName};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An upstream's breaker, what counts as its failure, and its
/// transitions so far.
#[derive(Debug)]
pub struct UpstreamBreaker {
    /// The breaker.
    pub breaker: Arc<Breaker>,
    /// What counts as a failure.
    pub failures: HttpFailures,
    /// Transitions by (from, to), in [`State::ALL`] order, counted by the
    /// breaker's observer (`floodwall_breaker_transitions_total`).
    transitions: Arc<[[AtomicU64; 3]; 3]>,
}

fn state_index(s: State) -> usize {
    State::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

impl UpstreamBreaker {
    fn new(
        name: &str,
        keys: &BreakerKeys,
        clock: Arc<dyn Clock>,
        events: Arc<Events>,
        host: &str,
    ) -> anyhow::Result<Self> {
        let config = keys
            .breaker_config("breaker.")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let breaker = Breaker::new(name, config, clock).map_err(|e| anyhow::anyhow!("{e}"))?;
        let transitions: Arc<[[AtomicU64; 3]; 3]> = Arc::new(Default::default());
        let t = transitions.clone();
        let upstream = name.to_owned();
        let host = host.to_owned();
        breaker.on_transition(move |tr| {
            events.emit(false, |w| Event {
                from: Some(tr.from.as_str()),
                to: Some(tr.to.as_str()),
                ..Event::new(Kind::StateChange, &upstream, &host, w)
            });
            t[state_index(tr.from)][state_index(tr.to)].fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                upstream = %upstream,
                from = %tr.from,
                to = %tr.to,
                open_ms = tr.open_for.map(|d| d.as_millis() as u64),
                "circuit breaker changed state"
            );
        });
        Ok(Self {
            breaker,
            failures: keys.failures(),
            transitions,
        })
    }

    /// Every (from, to, count) that can happen, zeros included.
    pub fn transitions(&self) -> impl Iterator<Item = (State, State, u64)> + '_ {
        [
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed),
            (State::HalfOpen, State::Open),
        ]
        .into_iter()
        .map(|(f, t)| {
            let n = self.transitions[state_index(f)][state_index(t)].load(Ordering::Relaxed);
            (f, t, n)
        })
    }
}

/// An upstream's breaker and bulkhead, either absent.
#[derive(Debug, Default)]
pub struct Guards {
    /// `[upstreams.breaker]`.
    pub breaker: Option<UpstreamBreaker>,
    /// `[upstreams.bulkhead]`.
    pub bulkhead: Option<Arc<Bulkhead>>,
}

impl Guards {
    /// The guards `cfg` asks for. `quota_of` is what a bulkhead's `quota`
    /// is a fraction of: the summed limit ceilings of the routes that use
    /// this upstream.
    ///
    /// A breaker's state changes are logged, counted and written to
    /// `events` (always, whatever its sample) as `state_change` on `host`.
    pub fn new(
        cfg: &UpstreamConfig,
        clock: Arc<dyn Clock>,
        quota_of: usize,
        events: &Arc<Events>,
        host: &str,
    ) -> anyhow::Result<Self> {
        let breaker = cfg
            .breaker
            .as_ref()
            .map(|k| UpstreamBreaker::new(&cfg.name, k, clock, events.clone(), host))
            .transpose()?;
        let bulkhead = cfg
            .bulkhead
            .map(|k| bulkhead(&cfg.name, &k, quota_of))
            .transpose()?;
        Ok(Self { breaker, bulkhead })
    }
}

fn bulkhead(name: &str, keys: &BulkheadKeys, quota_of: usize) -> anyhow::Result<Arc<Bulkhead>> {
    let capacity = match (keys.tickets, keys.quota) {
        (Some(n), _) => Capacity::Tickets(n),
        (None, Some(quota)) => Capacity::Quota {
            quota,
            of: quota_of,
        },
        (None, None) => anyhow::bail!("bulkhead: tickets or quota (validated)"),
    };
    Bulkhead::new(name, capacity).map_err(|e| anyhow::anyhow!("bulkhead.{e}"))
}

/// A route's retry budget and the headers that mark a retry.
#[derive(Debug)]
pub struct RouteRetry {
    /// The budget.
    pub budget: RetryBudget,
    /// The keys it was built from, so a reload with the same keys keeps it.
    pub keys: RetryBudgetKeys,
    attempt: Option<HeaderName>,
    attempt_count: Option<HeaderName>,
}

impl RouteRetry {
    /// The budget of `keys` (validated), on `clock`.
    pub fn new(keys: &RetryBudgetKeys, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let config = keys
            .budget_config("retry_budget.")
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let name = |h: &str| {
            (!h.is_empty())
                .then(|| HeaderName::from_bytes(h.as_bytes()))
                .transpose()
        };
        Ok(Self {
            budget: RetryBudget::new(config, clock).map_err(|e| anyhow::anyhow!("{e}"))?,
            keys: keys.clone(),
            attempt: name(&keys.attempt_header)?,
            attempt_count: name(&keys.attempt_count_header)?,
        })
    }

    /// Whether `headers` mark a retry: the attempt header at 1 or more, or
    /// the attempt-count header above 1. A value that is not a number says
    /// nothing (a first attempt).
    pub fn is_retry(&self, headers: &HeaderMap) -> bool {
        let number = |h: &Option<HeaderName>| -> Option<u64> {
            headers.get(h.as_ref()?)?.to_str().ok()?.trim().parse().ok()
        };
        number(&self.attempt).is_some_and(|n| n >= 1)
            || number(&self.attempt_count).is_some_and(|n| n > 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodwall_core::ManualClock;

    #[test]
    fn retries_are_recognised_by_either_header() {
        let r = RouteRetry::new(&RetryBudgetKeys::default(), Arc::new(ManualClock::new())).unwrap();
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        assert!(!r.is_retry(&h(&[])));
        assert!(!r.is_retry(&h(&[("x-retry-attempt", "0")])));
        assert!(r.is_retry(&h(&[("x-retry-attempt", "1")])));
        assert!(!r.is_retry(&h(&[("x-retry-attempt", "soon")])));
        assert!(!r.is_retry(&h(&[("x-envoy-attempt-count", "1")])));
        assert!(r.is_retry(&h(&[("x-envoy-attempt-count", "2")])));
        let only_envoy = RouteRetry::new(
            &RetryBudgetKeys {
                attempt_header: String::new(),
                ..RetryBudgetKeys::default()
            },
            Arc::new(ManualClock::new()),
        )
        .unwrap();
        assert!(!only_envoy.is_retry(&h(&[("x-retry-attempt", "3")])));
    }
}
