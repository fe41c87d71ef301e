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

/// A duration that must not be zero: a zero timeout or window would refuse
/// or expire everything at once.
pub(super) fn positive(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(())
}
