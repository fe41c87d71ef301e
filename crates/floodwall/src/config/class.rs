//! `[[classes]]`: priority classes and their reserved shares.

use serde::Deserialize;

use super::check;
use super::error::ConfigError;

/// Slack for float sums: 0.7 + 0.2 + 0.1 is 0.9999999999999999 and
/// 0.6 + 0.3 + 0.1 is 1.0000000000000002; both mean 1.0.
const SHARE_EPSILON: f64 = 1e-9;

/// A priority class (`[[classes]]`). Classes are listed highest priority
/// first; when a route's limit is tight, each class keeps its `reserved`
/// share so lower classes cannot crowd it out.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// The class name, as sent in the priority header and used as a metric
    /// label: letters, digits, `_`, `.` and `-`.
    pub name: String,
    /// The fraction of each route's limit guaranteed to this class, from 0.0
    /// to 1.0. The shares of all classes add up to at most 1.0; the rest is
    /// shared by everyone in priority order.
    #[serde(default)]
    pub reserved: f64,
}

/// The classes used when the file has no `[[classes]]`: interactive traffic
/// first with half the limit kept for it, then batch with no reservation:
/// batch gets what interactive leaves, and is shed first when interactive
/// alone fills the gate (a reserved tenth would come out of interactive's
/// goodput in exactly that case).
pub(super) fn default_classes() -> Vec<ClassConfig> {
    vec![
        ClassConfig {
            name: "interactive".to_owned(),
            reserved: 0.5,
        },
        ClassConfig {
            name: "batch".to_owned(),
            reserved: 0.0,
        },
    ]
}

/// Checks `[[classes]]` on its own: at least one class, each name usable as
/// a label, each share a fraction, and the shares together at most the
/// whole limit. Unique names and what refers to a class are checked with
/// the other references ([`super::validate`]).
pub(super) fn validate(classes: &[ClassConfig]) -> Result<(), ConfigError> {
    if classes.is_empty() {
        return Err(ConfigError::invalid(
            "classes",
            "at least one class is required (omit [[classes]] for the defaults)",
        ));
    }
    let mut total = 0.0;
    for (i, class) in classes.iter().enumerate() {
        check::label(&format!("classes[{i}].name"), &class.name)?;
        if !(0.0..=1.0).contains(&class.reserved) {
            return Err(ConfigError::invalid(
                format!("classes[{i}].reserved"),
                format!("must be between 0.0 and 1.0 (got {})", class.reserved),
            ));
        }
        total += class.reserved;
    }
    if total > 1.0 + SHARE_EPSILON {
        return Err(ConfigError::invalid(
            "classes",
            format!("reserved shares add up to {total:.2}, must be at most 1.0"),
        ));
    }
    Ok(())
}
