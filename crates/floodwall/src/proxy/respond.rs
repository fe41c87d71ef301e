//! Every response floodwall makes itself.
//!
//! The proxy's refusals are a superset of the engine's: [`Refusal`] adds
//! the reasons only a proxy has (a dead upstream, a bad host, Redis
//! saying no) to the limiter's. Their statuses are decided here, in
//! [`Refusal::status`]; everything else, the status of the engine's own
//! reasons and the shape of every refusal response (headers, jittered
//! `Retry-After`, JSON body), is `floodwall_core::respond`, the one map the
//! proxy and `floodwall-tower` share, so both answer byte for byte alike.
//! `docs/metrics.md` lists the same table.

use super::body::Body;
use super::canonical::Malformed;
use super::upload::Fault;
use crate::distributed;
use floodwall_core::respond::{self as shared, Answer};
use floodwall_core::{BulkheadFull, CircuitOpen, Rejection, RetryBudgetExhausted};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use std::time::Duration;

/// Why floodwall answered a request itself instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The route's limiter refused admission (no slot, tenant over its
    /// share, queue full or timed out).
    Rejected(Rejection),
    /// The upstream refused the connection, reset it, or is unreachable.
    UpstreamUnavailable,
    /// The upstream did not answer within the route's response timeout.
    UpstreamTimeout,
    /// The tenant header is too long or has characters outside visible
    /// ASCII; refused rather than truncated so two tenants never merge.
    InvalidTenantId,
    /// No route matches the request's host and path.
    NoRoute,
    /// HTTP/1.1 without a `Host` header (RFC 9112 §3.2).
    MissingHost,
    /// More than one `Host` header line (RFC 9112 §3.2).
    DuplicateHost,
    /// The host (the URI's authority, else `Host`) has userinfo, an empty
    /// label, a bad port or a byte outside the allowed set.
    InvalidHost,
    /// The path does not start with `/` or has a broken percent-encoding,
    /// so it has no normalised form to route on.
    InvalidPath,
    /// The request body arrived slower than `server.body_timeout` and
    /// `server.body_min_rate` allow. The client's fault: 408, and nothing
    /// is recorded against the upstream.
    BodyTimeout,
    /// The request body's framing is invalid (a broken chunked encoding)
    /// or it was cut short. The client's fault, never a 502.
    InvalidBody,
    /// The request asks to switch protocols (`Upgrade`, e.g. WebSocket),
    /// which floodwall does not proxy: refused rather than forwarded as a
    /// plain request that would silently lose the upgrade.
    UpgradeUnsupported,
    /// Distributed strict mode: Redis says the route's global limit is
    /// full.
    GlobalLimitExceeded,
    /// Distributed mode with `on_store_failure = "closed"`: Redis is
    /// unreachable, so nothing is admitted.
    StoreUnavailable,
    /// The upstream's breaker is open (or half-open with its trials in
    /// flight): refused without touching the upstream, and without
    /// touching the route's limit either.
    CircuitOpen(CircuitOpen),
    /// The upstream's bulkhead has no ticket left: the routes that share
    /// the upstream hold them all.
    BulkheadFull(BulkheadFull),
    /// A retry (by its attempt header) over the route's retry budget.
    RetryBudgetExhausted(RetryBudgetExhausted),
}

impl From<Malformed> for Refusal {
    fn from(malformed: Malformed) -> Self {
        match malformed {
            Malformed::MissingHost => Refusal::MissingHost,
            Malformed::DuplicateHost => Refusal::DuplicateHost,
            Malformed::InvalidHost => Refusal::InvalidHost,
            Malformed::InvalidPath => Refusal::InvalidPath,
        }
    }
}

impl From<Fault> for Refusal {
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::TooSlow => Refusal::BodyTimeout,
            Fault::Malformed => Refusal::InvalidBody,
        }
    }
}

impl From<distributed::Refused> for Refusal {
    fn from(refused: distributed::Refused) -> Self {
        match refused {
            distributed::Refused::GlobalLimitExceeded => Refusal::GlobalLimitExceeded,
            distributed::Refused::StoreUnavailable => Refusal::StoreUnavailable,
        }
    }
}

pub use floodwall_core::respond::{REASON_HEADER, RETRY_AFTER_MS_HEADER};

impl Refusal {
    /// The wire name of the reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Rejected(r) => r.reason.as_str(),
            Refusal::UpstreamUnavailable => "upstream_unavailable",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::InvalidTenantId => Answer::invalid_tenant_id().reason,
            Refusal::NoRoute => "no_route",
            Refusal::MissingHost => "missing_host",
            Refusal::DuplicateHost => "duplicate_host",
            Refusal::InvalidHost => "invalid_host",
            Refusal::InvalidPath => "invalid_path",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::InvalidBody => "invalid_body",
            Refusal::UpgradeUnsupported => "upgrade_unsupported",
            Refusal::GlobalLimitExceeded => "global_limit_exceeded",
            Refusal::StoreUnavailable => "store_unavailable",
            Refusal::CircuitOpen(_) => CircuitOpen::REASON,
            Refusal::BulkheadFull(_) => BulkheadFull::REASON,
            Refusal::RetryBudgetExhausted(_) => RetryBudgetExhausted::REASON,
        }
    }

    /// The status code: 429 when the client itself is over its share, 503
    /// when the service is overloaded, 502/504 for upstream failures, 4xx
    /// for requests that can never succeed as sent (408 for a client too
    /// slow to send one), 501 for what floodwall does not do.
    pub fn status(&self) -> StatusCode {
        match self {
            // The engine's reasons: the shared map decides.
            Refusal::Rejected(r) => shared::status_of(r.reason),
            Refusal::InvalidTenantId => Answer::invalid_tenant_id().status,
            Refusal::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::MissingHost
            | Refusal::DuplicateHost
            | Refusal::InvalidHost
            | Refusal::InvalidPath
            | Refusal::InvalidBody => StatusCode::BAD_REQUEST,
            Refusal::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::UpgradeUnsupported => StatusCode::NOT_IMPLEMENTED,
            Refusal::NoRoute => StatusCode::NOT_FOUND,
            Refusal::GlobalLimitExceeded | Refusal::StoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::CircuitOpen(o) => Answer::from(o).status,
            Refusal::BulkheadFull(f) => Answer::from(f).status,
            Refusal::RetryBudgetExhausted(e) => Answer::from(e).status,
        }
    }

    /// Whether this says the route or upstream is full (the gate, its
    /// queue, the bulkhead, the global limit), as opposed to this client
    /// or tenant being over its share or the request being at fault: what
    /// makes a retry budget's retries yield to first attempts.
    pub fn is_capacity(&self) -> bool {
        match self {
            Refusal::Rejected(r) => r.reason != floodwall_core::Reason::TenantLimitExceeded,
            Refusal::BulkheadFull(_) | Refusal::GlobalLimitExceeded => true,
            _ => false,
        }
    }

    /// What the decision log (`events.rs`) calls this refusal: `busy` for
    /// any lack of room (the route's, a tenant's, the upstream's bulkhead,
    /// the global limit, a retry budget), `circuit_open`, else `refused`
    /// (the client's fault, or nowhere to send it).
    pub fn event(&self) -> crate::events::Kind {
        use crate::events::Kind;
        match self {
            Refusal::CircuitOpen(_) => Kind::CircuitOpen,
            Refusal::Rejected(_)
            | Refusal::BulkheadFull(_)
            | Refusal::GlobalLimitExceeded
            | Refusal::RetryBudgetExhausted(_) => Kind::Busy,
            _ => Kind::Refused,
        }
    }

    /// The suggested wait, for refusals where retrying later can work.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::Rejected(r) => Some(r.retry_after),
            // Other replicas' requests free the global limit; a slot is
            // likely within a second.
            Refusal::GlobalLimitExceeded | Refusal::StoreUnavailable => {
                Some(Duration::from_secs(1))
            }
            // The time left open, or until the window has room: the
            // shared map's.
            Refusal::CircuitOpen(o) => Answer::from(o).retry_after,
            Refusal::BulkheadFull(f) => Answer::from(f).retry_after,
            Refusal::RetryBudgetExhausted(e) => Answer::from(e).retry_after,
            _ => None,
        }
    }
}

/// Spreads `d` uniformly over `[0.5 d, 1.5 d]`, so that clients refused
/// together do not come back together (the "Retry Storm Paradox" of the
/// Phoenix WIP-gate article): the shared [`shared::jitter`] with a fresh
/// draw.
pub fn jitter(d: Duration) -> Duration {
    shared::jitter(d, fastrand::f64())
}

/// The response for `refusal`: status, `X-Floodwall-Reason`, `Retry-After`
/// (whole seconds, at least 1, jittered) where retrying can help, and a JSON
/// body `{"error": ..., "reason": ...}`, all from the shared map.
pub fn respond(refusal: &Refusal) -> Response<Body> {
    Answer::new(refusal.status(), refusal.reason(), refusal.retry_after()).response(
        fastrand::f64(),
        |bytes| {
            http_body_util::Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodwall_core::Reason;
    use http::header;

    fn rejected(reason: Reason) -> Refusal {
        Refusal::Rejected(Rejection {
            reason,
            retry_after: Duration::from_secs(2),
        })
    }

    /// A real breaker's refusal, open for 2 s.
    fn open() -> floodwall_core::CircuitOpen {
        let b = floodwall_core::Breaker::new(
            "u",
            floodwall_core::BreakerConfig {
                error_timeout: Duration::from_secs(2),
                ..Default::default()
            },
            std::sync::Arc::new(floodwall_core::ManualClock::new()),
        )
        .unwrap();
        for _ in 0..3 {
            b.try_call().unwrap().failure();
        }
        b.try_call().unwrap_err()
    }

    fn full() -> BulkheadFull {
        let b = floodwall_core::Bulkhead::new("u", floodwall_core::bulkhead::Capacity::Tickets(1))
            .unwrap();
        let _held = b.try_acquire().unwrap();
        b.try_acquire().unwrap_err()
    }

    /// A real budget's refusal: no reserve, 2 s of window to wait.
    fn exhausted() -> RetryBudgetExhausted {
        floodwall_core::RetryBudget::new(
            floodwall_core::RetryBudgetConfig {
                min_per_s: 0,
                ttl: Duration::from_secs(2),
                ratio: 0.2,
                yield_window: Duration::ZERO,
            },
            std::sync::Arc::new(floodwall_core::ManualClock::new()),
        )
        .unwrap()
        .try_retry()
        .unwrap_err()
    }

    #[test]
    fn every_reason_maps_to_its_status_and_headers() {
        let cases = [
            // In the order `docs/metrics.md` lists the reasons.
            (
                rejected(Reason::WipLimitExceeded),
                "wip_limit_exceeded",
                503,
                true,
            ),
            (
                rejected(Reason::TenantLimitExceeded),
                "tenant_limit_exceeded",
                429,
                true,
            ),
            (rejected(Reason::QueueFull), "queue_full", 503, true),
            (rejected(Reason::QueueTimeout), "queue_timeout", 503, true),
            (
                Refusal::UpstreamUnavailable,
                "upstream_unavailable",
                502,
                false,
            ),
            (Refusal::UpstreamTimeout, "upstream_timeout", 504, false),
            (Refusal::InvalidTenantId, "invalid_tenant_id", 400, false),
            (Refusal::NoRoute, "no_route", 404, false),
            (Refusal::MissingHost, "missing_host", 400, false),
            (Refusal::DuplicateHost, "duplicate_host", 400, false),
            (Refusal::InvalidHost, "invalid_host", 400, false),
            (Refusal::InvalidPath, "invalid_path", 400, false),
            (Refusal::BodyTimeout, "body_timeout", 408, false),
            (Refusal::InvalidBody, "invalid_body", 400, false),
            (
                Refusal::UpgradeUnsupported,
                "upgrade_unsupported",
                501,
                false,
            ),
            (
                Refusal::GlobalLimitExceeded,
                "global_limit_exceeded",
                503,
                true,
            ),
            (Refusal::StoreUnavailable, "store_unavailable", 503, true),
            (
                Refusal::RetryBudgetExhausted(exhausted()),
                "retry_budget_exhausted",
                503,
                true,
            ),
            (Refusal::CircuitOpen(open()), "circuit_open", 503, true),
            (Refusal::BulkheadFull(full()), "bulkhead_full", 503, true),
        ];
        for (refusal, reason, status, retry) in &cases {
            assert_eq!(refusal.reason(), *reason);
            let resp = respond(refusal);
            assert_eq!(resp.status().as_u16(), *status, "{}", refusal.reason());
            assert_eq!(resp.headers()[REASON_HEADER], refusal.reason());
            assert_eq!(resp.headers().contains_key(header::RETRY_AFTER), *retry);
            if *retry {
                let secs: u64 = resp.headers()[header::RETRY_AFTER]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=3).contains(&secs), "1-2 s jittered: {secs}");
            }
        }
    }

    #[test]
    fn jitter_spreads_within_half_to_one_and_a_half() {
        let d = Duration::from_secs(10);
        let xs: Vec<Duration> = (0..1000).map(|_| jitter(d)).collect();
        assert!(xs.iter().all(|x| *x >= d / 2 && *x <= d * 3 / 2));
        let distinct: std::collections::HashSet<_> = xs.iter().map(|x| x.as_millis()).collect();
        assert!(distinct.len() > 100, "not in lockstep");
    }
}
