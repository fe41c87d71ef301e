//! What admin shows of config reloads, and the hook that performs one.
//!
//! The reload itself is the gateway's (`crate::reload`, which rebuilds
//! routes, upstreams and probes); admin only counts results, keeps the
//! last error for `/status` and the page, and calls the hook on `POST
//! /reload`. `floodwall_config_reloads_total` is rendered here, in its own
//! registry appended to `/metrics`, so the main metrics file need not know
//! about reloads.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a reload did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// There is no file to re-read (started with flags only). Not counted:
    /// nothing was tried.
    NoFile,
    /// The new config was refused and nothing changed; the message names
    /// the key, as `floodwall check` does.
    Refused(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::NoFile => {
                f.write_str("floodwall was started without --config: there is no file to re-read")
            }
            ReloadError::Refused(m) => write!(f, "{m} (the running config is unchanged)"),
        }
    }
}

/// Performs one reload: `Ok` with what changed, one line each.
pub type ReloadFn = dyn Fn() -> Result<Vec<String>, ReloadError> + Send + Sync;

/// Reload results, for `/status`, `/metrics` and the page.
#[derive(Debug, Default)]
pub struct ReloadStats {
    ok: AtomicU64,
    errors: AtomicU64,
    last: Mutex<Last>,
}

#[derive(Debug, Default, Clone)]
struct Last {
    /// Unix ms of the last attempt, its result and what it said.
    at_ms: Option<u64>,
    ok: Option<bool>,
    error: Option<String>,
    error_at_ms: Option<u64>,
    changes: Vec<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ReloadStats {
    /// Counts one attempt's result. `NoFile` is not an attempt.
    pub fn record(&self, result: &Result<Vec<String>, ReloadError>) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let at = now_ms();
        match result {
            Ok(changes) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                last.at_ms = Some(at);
                last.ok = Some(true);
                last.changes = changes.clone();
            }
            Err(ReloadError::Refused(m)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                last.at_ms = Some(at);
                last.ok = Some(false);
                last.error = Some(m.clone());
                last.error_at_ms = Some(at);
            }
            Err(ReloadError::NoFile) => {}
        }
    }

    /// The `reload` object of `/status`: counts, the last result, the last
    /// error (kept after a later success, with its time, so an operator
    /// can see what went wrong) and what the last good reload changed.
    pub fn status(&self) -> Value {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        json!({
            "ok_total": self.ok.load(Ordering::Relaxed),
            "error_total": self.errors.load(Ordering::Relaxed),
            "last_at_ms": last.at_ms,
            "last_ok": last.ok,
            "last_error": last.error,
            "last_error_at_ms": last.error_at_ms,
            "last_changes": last.changes,
        })
    }

    /// `floodwall_config_reloads_total{result}` and
    /// `floodwall_config_last_reload_successful`, in OpenMetrics text
    /// without the closing `# EOF`.
    pub fn metrics(&self) -> String {
        let mut reg = Registry::default();
        let family = Family::<ResultLabel, Counter>::default();
        for (result, n) in [
            ("ok", self.ok.load(Ordering::Relaxed)),
            ("error", self.errors.load(Ordering::Relaxed)),
        ] {
            family.get_or_create(&ResultLabel { result }).inc_by(n);
        }
        reg.register(
            "floodwall_config_reloads",
            "Config reloads (SIGHUP or POST /reload), by result; an error changed nothing",
            family,
        );
        let last_ok = Gauge::<i64>::default();
        let ok = self.last.lock().unwrap_or_else(|p| p.into_inner()).ok;
        last_ok.set(i64::from(ok != Some(false)));
        reg.register(
            "floodwall_config_last_reload_successful",
            "0 while the last reload attempt was refused, else 1",
            last_ok,
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg)
            .expect("writing to a String cannot fail");
        out.trim_end().trim_end_matches("# EOF").to_owned()
    }
}

/// `block` (OpenMetrics lines without `# EOF`) inserted before the closing
/// `# EOF` of `text`.
pub fn append_metrics(text: &str, block: &str) -> String {
    let body = text.trim_end().trim_end_matches("# EOF");
    format!("{body}{}\n# EOF\n", block.trim())
}

/// `text` with anything that looks like a secret replaced by `***`: the
/// user and password of every `scheme://user:pass@host` URL, and the value
/// of every libpq `password=` keyword. A refused reload's message quotes
/// the offending line of the file (TOML errors show it), which may be the
/// line holding the Redis URL or the PostgreSQL DSN; this runs over the
/// message before it is logged, counted or shown.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // URLs: from each "://" to the next '@' before any space, quote or '/'.
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '/' | '>'))
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    // libpq keyword/value DSNs.
    let mut scrubbed = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.to_ascii_lowercase().find("password") {
        let (head, tail) = rest.split_at(i + "password".len());
        scrubbed.push_str(head);
        let after_eq = tail.trim_start();
        if let Some(value) = after_eq.strip_prefix('=') {
            let value = value.trim_start();
            let (quoted, body) = match value.strip_prefix('\'') {
                Some(b) => (true, b),
                None => (false, value),
            };
            let end = if quoted {
                body.find('\'').map_or(body.len(), |e| e + 1)
            } else {
                body.find(|c: char| c.is_whitespace() || c == '"')
                    .unwrap_or(body.len())
            };
            scrubbed.push_str("=***");
            rest = &body[end..];
        } else {
            rest = tail;
        }
    }
    scrubbed.push_str(rest);
    scrubbed
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn secrets_are_scrubbed_from_messages() {
        assert_eq!(
            scrub("url = \"redis://:hunter2@127.0.0.1:6379/0\" bad"),
            "url = \"redis://***@127.0.0.1:6379/0\" bad"
        );
        assert_eq!(scrub("http://127.0.0.1:1/x"), "http://127.0.0.1:1/x");
        assert_eq!(
            scrub("dsn = \"host=h password=hunter2 user=u\""),
            "dsn = \"host=h password=*** user=u\""
        );
        assert_eq!(scrub("password = 'hun ter2' user=u"), "password=*** user=u");
        assert_eq!(scrub("no password here"), "no password here");
    }
}
