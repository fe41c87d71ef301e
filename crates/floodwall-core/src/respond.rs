//! THE refusal map: what a client is told when floodwall says no.
//!
//! Every refusal, whether the gateway's proxy makes it or a service using
//! `floodwall-tower` does, is one [`Answer`]: a status, a reason and,
//! where coming back later can work, a suggested wait. This file decides
//! both halves, so the proxy and the library answer byte for byte alike:
//!
//! 1. **Which status and wait** each refusal the engine's own parts can
//!    produce gets: [`Answer::from`] a limiter [`Rejection`], an open
//!    [`CircuitOpen`] breaker, a full [`BulkheadFull`] bulkhead, a retry
//!    over its [`RetryBudgetExhausted`] budget, a hostile
//!    tenant id ([`Answer::invalid_tenant_id`]). The proxy adds statuses
//!    for the reasons only it has (a dead upstream, a bad host) through
//!    [`Answer::new`].
//! 2. **What the response looks like**, for any answer: the status,
//!    `Content-Type: application/json`, `X-Floodwall-Reason`,
//!    `Retry-After` in whole seconds (at least 1) and
//!    `X-Floodwall-Retry-After-Ms`, both jittered, and the body
//!    `{"error":"<status words>","reason":"<reason>"}` with a newline.
//!
//! Read [`Answer::from`] and [`Answer::response`] top to bottom to know
//! everything a refused client can see.
//!
//! The jitter spreads clients refused together so that they do not come
//! back together (the "Retry Storm Paradox" of the Phoenix WIP-gate
//! article). This crate has no random source, so the caller passes the
//! uniform draw: the mapping stays a pure function, and a test can
//! reproduce a response exactly.

use crate::breaker::CircuitOpen;
use crate::bulkhead::BulkheadFull;
use crate::limiter::{Reason, Rejection};
use crate::retry_budget::RetryBudgetExhausted;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use std::time::Duration;

/// The header naming the reason on every response floodwall makes.
pub const REASON_HEADER: &str = "x-floodwall-reason";

/// The jittered retry delay in milliseconds, for clients that can use more
/// precision than `Retry-After`'s whole seconds.
pub const RETRY_AFTER_MS_HEADER: &str = "x-floodwall-retry-after-ms";

/// What one refused request is told: its status, its reason (the
/// `X-Floodwall-Reason` value and metric label) and, where retrying later
/// can help, the suggested wait before jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: StatusCode,
    /// The reason's wire name, e.g. `"wip_limit_exceeded"`.
    pub reason: &'static str,
    /// The suggested wait before jitter; `None` where retrying cannot help
    /// (the request itself is wrong) or nothing is known about when.
    pub retry_after: Option<Duration>,
}

/// The status of a limiter refusal: 429 when the client itself is over its
/// share (it, not the service, should slow down), 503 when the service is
/// full.
pub fn status_of(reason: Reason) -> StatusCode {
    match reason {
        Reason::TenantLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
        Reason::WipLimitExceeded | Reason::QueueFull | Reason::QueueTimeout => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

impl From<&Rejection> for Answer {
    /// A limiter refusal, with the limiter's own retry estimate.
    fn from(r: &Rejection) -> Self {
        Answer::new(status_of(r.reason), r.reason.as_str(), Some(r.retry_after))
    }
}

impl From<&CircuitOpen> for Answer {
    /// An open breaker: 503, and come back when it may let a trial through.
    fn from(open: &CircuitOpen) -> Self {
        Answer::new(
            StatusCode::SERVICE_UNAVAILABLE,
            CircuitOpen::REASON,
            Some(open.retry_after()),
        )
    }
}

impl From<&BulkheadFull> for Answer {
    /// A full bulkhead: 503, and come back in about a second. A bulkhead
    /// keeps no durations, so it cannot say when a ticket comes back; but
    /// tickets return as calls finish, typically well within a second,
    /// and every 503 carries a wait so that clients that honour
    /// `Retry-After` pause rather than hammer.
    fn from(_: &BulkheadFull) -> Self {
        Answer::new(
            StatusCode::SERVICE_UNAVAILABLE,
            BulkheadFull::REASON,
            Some(Duration::from_secs(1)),
        )
    }
}

impl From<&RetryBudgetExhausted> for Answer {
    /// A retry over the route's retry budget: 503, and come back when the
    /// window has room for one.
    fn from(e: &RetryBudgetExhausted) -> Self {
        Answer::new(
            StatusCode::SERVICE_UNAVAILABLE,
            RetryBudgetExhausted::REASON,
            Some(e.retry_after()),
        )
    }
}

impl Answer {
    /// An answer for a reason outside this crate (the proxy's own: a dead
    /// upstream, a malformed request).
    pub const fn new(
        status: StatusCode,
        reason: &'static str,
        retry_after: Option<Duration>,
    ) -> Self {
        Self {
            status,
            reason,
            retry_after,
        }
    }

    /// A tenant id too long or outside visible ASCII: 400, refused whole
    /// rather than cut, so that it can never be made to collide with
    /// another tenant's id.
    pub const fn invalid_tenant_id() -> Self {
        Answer::new(StatusCode::BAD_REQUEST, "invalid_tenant_id", None)
    }

    /// The body: `{"error":"service_unavailable","reason":"..."}` and a
    /// newline. `error` is the status's canonical words in snake case.
    pub fn body(&self) -> Bytes {
        let error = self
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace(' ', "_");
        Bytes::from(format!(
            "{{\"error\":\"{error}\",\"reason\":\"{}\"}}\n",
            self.reason
        ))
    }

    /// The headers, with the wait jittered by `draw`, a uniform number in
    /// `[0, 1)` (see [`jitter`]).
    pub fn headers(&self, draw: f64) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(4);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(REASON_HEADER, HeaderValue::from_static(self.reason));
        if let Some(d) = self.retry_after {
            let d = jitter(d, draw);
            let secs = d.as_secs_f64().ceil().max(1.0) as u64;
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            h.insert(
                RETRY_AFTER_MS_HEADER,
                HeaderValue::from(d.as_millis() as u64),
            );
        }
        h
    }

    /// The whole response, its body built by `body` from the JSON bytes
    /// (so each caller keeps its own body type), the wait jittered by
    /// `draw` in `[0, 1)`.
    pub fn response<B>(&self, draw: f64, body: impl FnOnce(Bytes) -> B) -> Response<B> {
        let mut resp = Response::new(body(self.body()));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers(draw);
        resp
    }
}

/// Spreads `d` uniformly over `[0.5 d, 1.5 d]` by `draw`, a uniform number
/// in `[0, 1)` (clamped into it), so that clients refused together do not
/// come back together.
pub fn jitter(d: Duration, draw: f64) -> Duration {
    let draw = if draw.is_finite() {
        draw.clamp(0.0, 1.0)
    } else {
        0.5
    };
    d.mul_f64(0.5 + draw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_reasons_map_to_their_status() {
        let cases = [
            (Reason::WipLimitExceeded, 503),
            (Reason::TenantLimitExceeded, 429),
            (Reason::QueueFull, 503),
            (Reason::QueueTimeout, 503),
        ];
        for (reason, status) in cases {
            let a = Answer::from(&Rejection {
                reason,
                retry_after: Duration::from_secs(2),
            });
            assert_eq!(a.status.as_u16(), status, "{reason}");
            assert_eq!(a.reason, reason.as_str());
            assert_eq!(a.retry_after, Some(Duration::from_secs(2)));
        }
    }

    #[test]
    fn the_response_has_every_header_and_the_json_body() {
        let a = Answer::from(&Rejection {
            reason: Reason::WipLimitExceeded,
            retry_after: Duration::from_millis(1200),
        });
        // draw 0.5: no jitter at all, 1.2 s rounds up to 2.
        let resp = a.response(0.5, |b| b);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
        assert_eq!(h[REASON_HEADER], "wip_limit_exceeded");
        assert_eq!(h[header::RETRY_AFTER], "2");
        assert_eq!(h[RETRY_AFTER_MS_HEADER], "1200");
        assert_eq!(
            resp.body().as_ref(),
            b"{\"error\":\"service_unavailable\",\"reason\":\"wip_limit_exceeded\"}\n"
        );
    }

    #[test]
    fn retry_after_is_at_least_one_second_and_absent_without_a_wait() {
        let short = Answer::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "x",
            Some(Duration::from_millis(10)),
        );
        assert_eq!(short.headers(0.0)[header::RETRY_AFTER], "1");
        assert_eq!(short.headers(0.0)[RETRY_AFTER_MS_HEADER], "5");
        let none = Answer::invalid_tenant_id();
        assert!(!none.headers(0.3).contains_key(header::RETRY_AFTER));
        assert_eq!(none.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            none.body().as_ref(),
            b"{\"error\":\"bad_request\",\"reason\":\"invalid_tenant_id\"}\n"
        );
    }

    #[test]
    fn jitter_spans_half_to_one_and_a_half_and_ignores_bad_draws() {
        let d = Duration::from_secs(10);
        assert_eq!(jitter(d, 0.0), Duration::from_secs(5));
        assert_eq!(jitter(d, 1.0), Duration::from_secs(15));
        assert_eq!(jitter(d, 7.0), Duration::from_secs(15));
        assert_eq!(jitter(d, f64::NAN), d);
    }
}
