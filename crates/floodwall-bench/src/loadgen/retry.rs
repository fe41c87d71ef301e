//! What a refused user does next: the client retry policies.

use std::time::Duration;

use anyhow::ensure;
use http::{header, HeaderMap};
use serde::Serialize;

use crate::gateway::RETRY_AFTER_MS_HEADER;

/// How long a [`RetryPolicy::HonourRetryAfter`] client waits when a 503 or
/// 429 carries no retry hint at all, as HAProxy's and nginx's refusals
/// usually do. One second is what `Retry-After: 1` would have said, and the
/// usual first step of client back-off schemes.
pub const DEFAULT_RETRY_WAIT: Duration = Duration::from_secs(1);

/// What a user does when told 503 or 429 (by the gate or by the server).
/// Other answers, timeouts and connection errors are never retried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RetryPolicy {
    /// Take the answer. The default, and what the demo measures.
    #[default]
    None,
    /// Send again at once, up to `max_attempts` in all (the first attempt
    /// included): the naive client that turns overload into a retry storm.
    Immediate {
        /// Attempts per user, first one included; at least 1.
        max_attempts: u32,
    },
    /// Wait as told, then send again, up to `max_attempts` in all. The wait
    /// is `x-floodwall-retry-after-ms` if present, else `Retry-After` in
    /// whole seconds, else [`DEFAULT_RETRY_WAIT`]; never more than `cap`.
    HonourRetryAfter {
        /// Attempts per user, first one included; at least 1.
        max_attempts: u32,
        /// The longest the client will wait between attempts.
        #[serde(with = "humantime_serde")]
        cap: Duration,
    },
}

impl RetryPolicy {
    /// Attempts per user, first one included: 1 for [`RetryPolicy::None`].
    pub fn max_attempts(&self) -> u32 {
        match *self {
            RetryPolicy::None => 1,
            RetryPolicy::Immediate { max_attempts }
            | RetryPolicy::HonourRetryAfter { max_attempts, .. } => max_attempts,
        }
    }

    /// How long to wait before the next attempt, given the rejection's
    /// retry hint (see [`retry_hint`]).
    pub fn wait(&self, hint: Option<Duration>) -> Duration {
        match *self {
            RetryPolicy::None | RetryPolicy::Immediate { .. } => Duration::ZERO,
            RetryPolicy::HonourRetryAfter { cap, .. } => {
                hint.unwrap_or(DEFAULT_RETRY_WAIT).min(cap)
            }
        }
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.max_attempts() >= 1,
            "load retry max_attempts must be at least 1 (the first attempt counts)"
        );
        Ok(())
    }
}

/// The wait a response asks for: `x-floodwall-retry-after-ms` (floodwall's
/// precise form) if it parses, else an integer `Retry-After` in seconds.
/// `Retry-After` as an HTTP date is not understood and counts as no hint.
pub fn retry_hint(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    number(RETRY_AFTER_MS_HEADER)
        .map(Duration::from_millis)
        .or_else(|| number(header::RETRY_AFTER.as_str()).map(Duration::from_secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn retry_hints_prefer_floodwall_milliseconds_then_retry_after_then_the_default() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_hint(&headers), None);
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_hint(&headers), Some(Duration::from_secs(2)));
        headers.insert(RETRY_AFTER_MS_HEADER, HeaderValue::from_static("1250"));
        assert_eq!(retry_hint(&headers), Some(Duration::from_millis(1250)));
        let date = HeaderMap::from_iter([(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        )]);
        assert_eq!(retry_hint(&date), None);

        let honour = RetryPolicy::HonourRetryAfter {
            max_attempts: 3,
            cap: Duration::from_millis(500),
        };
        assert_eq!(
            honour.wait(None),
            Duration::from_millis(500),
            "default 1 s, capped"
        );
        assert_eq!(
            honour.wait(Some(Duration::from_millis(80))),
            Duration::from_millis(80)
        );
        assert_eq!(
            honour.wait(Some(Duration::from_secs(9))),
            Duration::from_millis(500)
        );
        assert_eq!(
            RetryPolicy::Immediate { max_attempts: 3 }.wait(Some(Duration::from_secs(9))),
            Duration::ZERO
        );
        assert_eq!(RetryPolicy::default(), RetryPolicy::None);
        assert_eq!(RetryPolicy::None.max_attempts(), 1);
        let json = serde_json::to_value(honour).unwrap();
        assert_eq!(json["kind"], "honour_retry_after");
        assert_eq!(json["cap"], "500ms");
    }
}
