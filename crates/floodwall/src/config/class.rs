use serde::Deserialize;

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
