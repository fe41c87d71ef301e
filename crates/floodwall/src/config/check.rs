//! Checks that more than one section needs. A leaf: it knows keys and
//! values, not sections, so every section can use it and none of them has
//! to import another.

use std::time::Duration;

use super::error::ConfigError;

/// A name that becomes a metric label value, and appears in logs and
/// headers: non-empty, letters, digits, `_`, `.` and `-` only.
pub(super) fn label(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::invalid(key, "must not be empty"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(ConfigError::invalid(
            key,
            format!("{name:?} contains {c:?}; use only letters, digits, '_', '.' and '-'"),
        ));
    }
    Ok(())
}

/// One minute, for bounds.
pub(super) const MINUTE: Duration = Duration::from_secs(60);
/// One hour: the upper bound of most timeouts, windows and intervals. Far
/// above any sane setting, far below what overflows an `Instant`.
pub(super) const HOUR: Duration = Duration::from_secs(3600);
/// One day: the upper bound of the few keys that may legitimately be long
/// (an upstream's response timeout, a baseline's half-life).
pub(super) const DAY: Duration = Duration::from_secs(86_400);
/// The upper bound of every count of requests, connections or samples: a
/// million in flight or waiting is far beyond one process.
pub(super) const MAX_COUNT: usize = 1_000_000;

/// A duration in `min..=max`; a `min` of zero allows zero. The message
/// names the bounds and what was found.
pub(super) fn duration(
    key: &str,
    d: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    if d < min || d > max {
        let f = |d: Duration| humantime::format_duration(d).to_string();
        let range = if min.is_zero() {
            format!("at most {}", f(max))
        } else {
            format!("between {} and {}", f(min), f(max))
        };
        return Err(ConfigError::invalid(
            key,
            format!("must be {range} (got {})", f(d)),
        ));
    }
    Ok(())
}

/// A duration above 0 and at most `max`: a zero timeout or window would
/// refuse or expire everything at once.
pub(super) fn positive_at_most(key: &str, d: Duration, max: Duration) -> Result<(), ConfigError> {
    if d.is_zero() || d > max {
        return Err(ConfigError::invalid(
            key,
            format!(
                "must be greater than 0 and at most {} (got {})",
                humantime::format_duration(max),
                humantime::format_duration(d)
            ),
        ));
    }
    Ok(())
}

/// An integer in `min..=max`.
pub(super) fn count(key: &str, n: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if !(min..=max).contains(&n) {
        return Err(ConfigError::invalid(
            key,
            format!("must be between {min} and {max} (got {n})"),
        ));
    }
    Ok(())
}

/// A finite float in `min..=max` (NaN and infinities are refused, whatever
/// the bounds). Use [`factor_above`] when the lower bound is exclusive.
pub(super) fn float(key: &str, x: f64, min: f64, max: f64) -> Result<(), ConfigError> {
    if !(x.is_finite() && min <= x && x <= max) {
        return Err(ConfigError::invalid(
            key,
            format!("must be between {min:?} and {max:?} (got {x:?})"),
        ));
    }
    Ok(())
}

/// A finite float above `min` (exclusive) and at most `max`.
pub(super) fn factor_above(key: &str, x: f64, min: f64, max: f64) -> Result<(), ConfigError> {
    if !(x.is_finite() && min < x && x <= max) {
        return Err(ConfigError::invalid(
            key,
            format!("must be above {min:?} and at most {max:?} (got {x:?})"),
        ));
    }
    Ok(())
}

/// `scheme://user:secret@host…` → `scheme://***@host…`, so a URL can be
/// quoted in an error, a log line or `/status` without its password. A URL
/// without `://` but with an `@` loses everything before the `@`.
pub(crate) fn redact_url(url: &str) -> String {
    if url.contains(',') {
        // A cluster's node list: each node on its own.
        return url
            .split(',')
            .map(|u| redact_url(u.trim()))
            .collect::<Vec<_>>()
            .join(",");
    }
    let start = url.find("://").map_or(0, |s| s + 3);
    match url.rfind('@') {
        Some(at) if at >= start => format!("{}***{}", &url[..start], &url[at..]),
        _ => url.to_owned(),
    }
}
