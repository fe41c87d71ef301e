//! `[events]`: the decision log, one JSON line per decision (Semian's
//! `subscribe` events, written instead of handed to a callback).

use serde::Deserialize;
use std::path::PathBuf;

use super::error::ConfigError;

/// Where decisions are written, and how many (`[events]`). Off unless
/// `path` is set: a line per request is a cost nobody should pay unasked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// `"stdout"`, `"stderr"`, or a file, appended to (created if absent).
    pub path: Option<String>,
    /// The fraction of per-request events written, in (0, 1]. Breaker
    /// state changes are always written.
    pub sample: f64,
    /// Events held between the requests and the writer. When it is full
    /// events are dropped and counted (`floodwall_events_dropped_total`),
    /// never waited for.
    pub buffer: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            path: None,
            sample: 1.0,
            buffer: 8192,
        }
    }
}

/// Where an event line goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsSink {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A file, appended to.
    File(PathBuf),
}

impl EventsConfig {
    /// Where the lines go; `None` when the log is off.
    pub fn sink(&self) -> Option<EventsSink> {
        self.path.as_deref().map(|p| match p {
            "stdout" | "-" => EventsSink::Stdout,
            "stderr" => EventsSink::Stderr,
            file => EventsSink::File(PathBuf::from(file)),
        })
    }

    /// Checks `[events]`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.path.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err(ConfigError::invalid(
                "events.path",
                "empty: give \"stdout\", \"stderr\" or a file, or leave it out to write no events",
            ));
        }
        if !(self.sample > 0.0 && self.sample <= 1.0) {
            return Err(ConfigError::invalid(
                "events.sample",
                format!(
                    "must be a fraction above 0 and at most 1 (got {}); leave out [events].path to write none",
                    self.sample
                ),
            ));
        }
        if !(1..=1_000_000).contains(&self.buffer) {
            return Err(ConfigError::invalid(
                "events.buffer",
                format!("must be 1 to 1,000,000 events (got {})", self.buffer),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        let bad = |c: EventsConfig| c.validate().unwrap_err().to_string();
        let on = EventsConfig {
            path: Some("stdout".into()),
            ..EventsConfig::default()
        };
        assert!(on.validate().is_ok());
        assert_eq!(on.sink(), Some(EventsSink::Stdout));
        assert!(bad(EventsConfig {
            sample: 0.0,
            ..on.clone()
        })
        .contains("events.sample"));
        assert!(bad(EventsConfig {
            sample: f64::NAN,
            ..on.clone()
        })
        .contains("events.sample"));
        assert!(bad(EventsConfig {
            sample: 1.5,
            ..on.clone()
        })
        .contains("events.sample"));
        assert!(bad(EventsConfig {
            buffer: 0,
            ..on.clone()
        })
        .contains("events.buffer"));
        assert!(bad(EventsConfig {
            path: Some(" ".into()),
            ..on
        })
        .contains("events.path"));
        assert_eq!(EventsConfig::default().sink(), None);
    }
}
