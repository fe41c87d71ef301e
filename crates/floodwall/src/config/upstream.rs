//! `[[upstreams]]`: the backends floodwall forwards to.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::check;
use super::error::ConfigError;
use super::resilience::{BreakerKeys, BulkheadKeys};
use crate::tls::certs;

/// The most idle connections kept per upstream host: more than a host has
/// ephemeral ports to one upstream address.
const MAX_IDLE_PER_HOST: usize = 65_536;

/// A backend floodwall forwards admitted requests to (`[[upstreams]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The name routes refer to it by; also a metric label, so letters,
    /// digits, `_`, `.` and `-` only.
    pub name: String,
    /// Where the upstream listens: `http://host:port`, or `http://host` for
    /// port 80; `https://host:port` (port 443 by default) for TLS, verified
    /// against the system's roots or `ca_file`. No path: the request's own
    /// path is forwarded unchanged.
    #[serde(deserialize_with = "deserialize_uri")]
    pub url: http::Uri,
    /// How long to wait for a TCP connection. Keep it short: a backend that
    /// cannot accept a connection in time is down, not slow.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long to wait for the response headers once the request is sent.
    #[serde(default = "default_response_timeout", with = "humantime_serde")]
    pub response_timeout: Duration,
    /// How long an idle pooled connection is kept for reuse. Keep it below
    /// the upstream's own keep-alive timeout to avoid reusing a connection
    /// the upstream is closing.
    #[serde(default = "default_pool_idle_timeout", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// How many idle connections to keep per upstream host.
    #[serde(default = "default_pool_max_idle_per_host")]
    pub pool_max_idle_per_host: usize,
    /// `https://` only: a PEM file of the CA certificates the upstream's
    /// certificate must chain to, instead of the system's roots. For a
    /// private CA, without adding it to the whole host's trust store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `https://` only: the name sent in the TLS server name indication and
    /// that the upstream's certificate must be valid for, instead of the
    /// URL's host. For an upstream reached by IP address whose certificate
    /// names a host.
    #[serde(default)]
    pub sni: Option<String>,
    /// A circuit breaker on this upstream (`[upstreams.breaker]`), shared
    /// by every route that uses it. Absent: none (see `resilience.rs` for
    /// why that is the default).
    #[serde(default)]
    pub breaker: Option<BreakerKeys>,
    /// A cap on requests in flight to this upstream across every route
    /// that uses it (`[upstreams.bulkhead]`). Absent: none.
    #[serde(default)]
    pub bulkhead: Option<BulkheadKeys>,
}

impl UpstreamConfig {
    /// An upstream with the given name and URL and default timeouts and
    /// pool settings.
    pub fn new(name: impl Into<String>, url: http::Uri) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            url,
            connect_timeout: default_connect_timeout(),
            response_timeout: default_response_timeout(),
            pool_idle_timeout: default_pool_idle_timeout(),
            pool_max_idle_per_host: default_pool_max_idle_per_host(),
            ca_file: None,
            sni: None,
            breaker: None,
            bulkhead: None,
        }
    }

    /// The port floodwall connects to: the URL's, else 80 for `http://`
    /// and 443 for `https://`.
    pub fn port(&self) -> u16 {
        self.url
            .port_u16()
            .unwrap_or(if self.is_https() { 443 } else { 80 })
    }

    /// Whether floodwall speaks TLS to this upstream.
    pub fn is_https(&self) -> bool {
        self.url.scheme_str() == Some("https")
    }
}

/// Checks `[[upstreams]]` on its own: at least one, and each usable. Unique
/// names and what refers to an upstream are checked with the other
/// references ([`super::validate`]).
pub(super) fn validate(upstreams: &[UpstreamConfig]) -> Result<(), ConfigError> {
    if upstreams.is_empty() {
        return Err(ConfigError::invalid(
            "upstreams",
            "at least one [[upstreams]] entry is required",
        ));
    }
    for (i, up) in upstreams.iter().enumerate() {
        let key = |field: &str| format!("upstreams[{i}].{field}");
        check::label(&key("name"), &up.name)?;
        check_url(&up.url).map_err(|m| ConfigError::invalid(key("url"), m))?;
        check::positive_at_most(&key("connect_timeout"), up.connect_timeout, check::HOUR)?;
        check::positive_at_most(&key("response_timeout"), up.response_timeout, check::DAY)?;
        check::positive_at_most(&key("pool_idle_timeout"), up.pool_idle_timeout, check::DAY)?;
        check::count(
            &key("pool_max_idle_per_host"),
            up.pool_max_idle_per_host,
            0,
            MAX_IDLE_PER_HOST,
        )?;
        validate_tls(up, &key)?;
        if let Some(b) = &up.breaker {
            b.breaker_config(&key("breaker."))?;
        }
        if let Some(b) = &up.bulkhead {
            b.validate(&key("bulkhead."))?;
        }
    }
    Ok(())
}

/// `ca_file` and `sni` only make sense for `https://`; a CA file must load
/// as at least one CA certificate and a name must be a valid DNS name.
fn validate_tls(up: &UpstreamConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    let plain = |field: &str| {
        ConfigError::invalid(
            key(field),
            format!(
                "only applies to an https:// upstream (url is \"{}\")",
                up.url
            ),
        )
    };
    if let Some(path) = &up.ca_file {
        if !up.is_https() {
            return Err(plain("ca_file"));
        }
        certs::load_roots(path).map_err(|m| ConfigError::invalid(key("ca_file"), m))?;
    }
    if let Some(name) = &up.sni {
        if !up.is_https() {
            return Err(plain("sni"));
        }
        let is_dns_name = matches!(
            rustls::pki_types::ServerName::try_from(name.as_str()),
            Ok(rustls::pki_types::ServerName::DnsName(_))
        );
        if !is_dns_name {
            return Err(ConfigError::invalid(
                key("sni"),
                format!("must be a DNS name such as \"api.internal\" (got {name:?})"),
            ));
        }
    }
    Ok(())
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_response_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(90)
}

fn default_pool_max_idle_per_host() -> usize {
    256
}

/// Parses the URL ourselves because `http::Uri` has no serde support. Only
/// syntax is checked here; what floodwall can connect to is checked by
/// [`check_url`] during validation, so `--upstream` gets the same checks.
fn deserialize_uri<'de, D: Deserializer<'de>>(deserializer: D) -> Result<http::Uri, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse()
        .map_err(|e| serde::de::Error::custom(format!("invalid upstream url {text:?}: {e}")))
}

/// Checks that floodwall can forward to `url`: `http://` or `https://`
/// with a host, an optional non-zero port, and nothing else.
pub(super) fn check_url(url: &http::Uri) -> Result<(), String> {
    match url.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "scheme must be http:// or https://, not {other}:// (got \"{url}\")"
            ))
        }
        None => {
            return Err(format!(
                "must start with http:// or https:// (got \"{url}\")"
            ))
        }
    }
    let Some(authority) = url.authority() else {
        return Err(format!(
            "must name a host, as in http://host:port (got \"{url}\")"
        ));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "must not contain user credentials; floodwall would not send them (got \"{url}\")"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!(
            "must name a host, as in http://host:port (got \"{url}\")"
        ));
    }
    if authority.port_u16() == Some(0) {
        return Err(format!("port must not be 0 (got \"{url}\")"));
    }
    // A path here would be silently ignored: the proxy forwards the client's
    // own path. Refuse it rather than surprise.
    let path_and_query = url.path_and_query().map_or("", |pq| pq.as_str());
    if !matches!(path_and_query, "" | "/") {
        return Err(format!(
            "must not have a path or query, only http://host:port (got \"{url}\")"
        ));
    }
    Ok(())
}
