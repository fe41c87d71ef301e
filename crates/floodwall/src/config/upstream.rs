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

/// How an upstream's endpoint is chosen (`balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Power of two choices over requests in flight (Envoy's
    /// `least_request`).
    #[default]
    LeastInflight,
    /// Each endpoint in turn.
    RoundRobin,
    /// By the key `hash_on` names, on a ketama ring, with a graceful drain.
    Hash,
}

/// What a request's key is, for `balance = "hash"` (`hash_on`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A request header's value (`header:NAME`).
    Header(http::HeaderName),
    /// The request's path, without the query (`path`).
    Path,
    /// A cookie's value (`cookie:NAME`).
    Cookie(String),
}

impl HashOn {
    /// Parses `header:NAME`, `path` or `cookie:NAME`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("must be \"header:NAME\", \"path\" or \"cookie:NAME\" (got {text:?})");
        match text.split_once(':') {
            None if text == "path" => Ok(Self::Path),
            Some(("header", name)) => http::HeaderName::from_bytes(name.trim().as_bytes())
                .map(Self::Header)
                .map_err(|_| bad()),
            Some(("cookie", name))
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)) =>
            {
                Ok(Self::Cookie(name.to_owned()))
            }
            _ => Err(bad()),
        }
    }
}

/// A backend floodwall forwards admitted requests to (`[[upstreams]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The name routes refer to it by; also a metric label, so letters,
    /// digits, `_`, `.` and `-` only.
    pub name: String,
    /// Where the upstream listens, for an upstream of one endpoint:
    /// `http://host:port`, or `http://host` for port 80; `https://host:port`
    /// (port 443 by default) for TLS, verified against the system's roots
    /// or `ca_file`. No path: the request's own path is forwarded
    /// unchanged. Exactly one of `url` and `endpoints`.
    #[serde(default, deserialize_with = "deserialize_opt_uri")]
    pub url: Option<http::Uri>,
    /// The upstream's instances, each a URL as `url` is, all of one
    /// scheme: requests are spread over them by `balance`. Exactly one of
    /// `url` and `endpoints`.
    #[serde(default, deserialize_with = "deserialize_uris")]
    pub endpoints: Vec<http::Uri>,
    /// The upstream's instances as the addresses a DNS name resolves to
    /// (`"api.internal:8080"`, or `"https://api.internal:8443"` for TLS,
    /// verified against the name): a Kubernetes headless service, a
    /// Consul name. Re-resolved every `dns_refresh` through the system's
    /// resolver; a change of the answer is a membership change (logged,
    /// counted, on `/status`, drained as a reload's is). A failed or empty
    /// answer keeps the last membership. Exactly one of `url`,
    /// `endpoints` and `dns`.
    #[serde(default)]
    pub dns: Option<String>,
    /// How often `dns` is resolved again.
    #[serde(default = "default_dns_refresh", with = "humantime_serde")]
    pub dns_refresh: Duration,
    /// How a request's endpoint is chosen (`endpoints` only matters with
    /// more than one).
    #[serde(default)]
    pub balance: Balance,
    /// `balance = "hash"` only, and required there: what a request's key
    /// is: `"header:NAME"`, `"path"` or `"cookie:NAME"`.
    #[serde(default)]
    pub hash_on: Option<String>,
    /// Connect errors or timeouts in a row that eject an endpoint
    /// (Envoy's `consecutive_gateway_failure`).
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// The first ejection's length; each ejection in a row doubles it.
    #[serde(default = "default_base_ejection_time", with = "humantime_serde")]
    pub base_ejection_time: Duration,
    /// The longest an ejection lasts.
    #[serde(default = "default_max_ejection_time", with = "humantime_serde")]
    pub max_ejection_time: Duration,
    /// At most this percent of the endpoints is ejected at once.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u8,
    /// After a membership change, how long a key keeps going to the
    /// endpoint that has it in flight, and how long a removed endpoint may
    /// finish its requests.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
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
    /// How many connections to one endpoint each proxy worker opens at
    /// once. A request that finds no idle connection while this many are
    /// being opened waits for the first to come free (one given back or
    /// one opened), up to `connect_timeout`: so a burst of requests into
    /// an empty pool does not open a connection each (see `proxy/pool.rs`).
    #[serde(default = "default_pool_max_connecting")]
    pub pool_max_connecting: usize,
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
            url: Some(url),
            endpoints: Vec::new(),
            dns: None,
            dns_refresh: default_dns_refresh(),
            balance: Balance::default(),
            hash_on: None,
            consecutive_failures: default_consecutive_failures(),
            base_ejection_time: default_base_ejection_time(),
            max_ejection_time: default_max_ejection_time(),
            max_ejection_percent: default_max_ejection_percent(),
            drain_timeout: default_drain_timeout(),
            connect_timeout: default_connect_timeout(),
            response_timeout: default_response_timeout(),
            pool_idle_timeout: default_pool_idle_timeout(),
            pool_max_idle_per_host: default_pool_max_idle_per_host(),
            pool_max_connecting: default_pool_max_connecting(),
            ca_file: None,
            sni: None,
            breaker: None,
            bulkhead: None,
        }
    }

    /// Its endpoints' URLs as configured: `url` alone, or `endpoints`;
    /// none for `dns`, whose members come from the resolver.
    pub fn urls(&self) -> Vec<&http::Uri> {
        match &self.url {
            Some(u) => vec![u],
            None => self.endpoints.iter().collect(),
        }
    }

    /// The first endpoint's URL, or for `dns` the name's (validated: there
    /// is one): its scheme and port are every endpoint's.
    pub fn first_url(&self) -> Option<http::Uri> {
        self.url
            .clone()
            .or_else(|| self.endpoints.first().cloned())
            .or_else(|| self.dns_url().and_then(Result::ok))
    }

    /// `dns` as a URL: `http://` unless it names a scheme.
    pub fn dns_url(&self) -> Option<Result<http::Uri, String>> {
        let text = self.dns.as_deref()?.trim();
        let full = if text.contains("://") {
            text.to_owned()
        } else {
            format!("http://{text}")
        };
        Some(full.parse::<http::Uri>().map_err(|e| {
            format!("must be \"host:port\" or \"https://host:port\" ({e}; got {text:?})")
        }))
    }

    /// The name and port `dns` resolves, if this upstream has one.
    pub fn dns_target(&self) -> Option<(String, u16)> {
        let url = self.dns_url()?.ok()?;
        let host = url.host()?.to_owned();
        Some((host, self.port()))
    }

    /// The name an `https://` upstream's certificate is checked against,
    /// when not the endpoint's own address: `sni`, else a `dns` name (the
    /// endpoints are its addresses, the certificate names the service).
    pub fn tls_name(&self) -> Option<String> {
        self.sni
            .clone()
            .or_else(|| self.dns_target().map(|(host, _)| host))
    }

    /// The port floodwall connects to: the (first) URL's, else 80 for
    /// `http://` and 443 for `https://`.
    pub fn port(&self) -> u16 {
        self.first_url()
            .and_then(|u| u.port_u16())
            .unwrap_or(if self.is_https() { 443 } else { 80 })
    }

    /// Whether floodwall speaks TLS to this upstream (all its endpoints
    /// share one scheme).
    pub fn is_https(&self) -> bool {
        self.first_url().as_ref().and_then(|u| u.scheme_str()) == Some("https")
    }

    /// The key `hash_on` names (validated for `balance = "hash"`).
    pub fn hash_key(&self) -> Option<HashOn> {
        self.hash_on.as_deref().and_then(|t| HashOn::parse(t).ok())
    }

    /// This config with another membership: what a reload can change in
    /// place (see `reload.rs`). A `dns` upstream's membership is the
    /// resolver's, so a change of `dns` makes a new upstream.
    pub fn with_urls_of(&self, other: &UpstreamConfig) -> UpstreamConfig {
        if self.dns.is_some() || other.dns.is_some() {
            return self.clone();
        }
        UpstreamConfig {
            url: other.url.clone(),
            endpoints: other.endpoints.clone(),
            ..self.clone()
        }
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
        validate_endpoints(up, &key)?;
        check::positive_at_most(&key("connect_timeout"), up.connect_timeout, check::HOUR)?;
        check::positive_at_most(&key("response_timeout"), up.response_timeout, check::DAY)?;
        check::positive_at_most(&key("pool_idle_timeout"), up.pool_idle_timeout, check::DAY)?;
        check::count(
            &key("pool_max_idle_per_host"),
            up.pool_max_idle_per_host,
            0,
            MAX_IDLE_PER_HOST,
        )?;
        check::count(
            &key("pool_max_connecting"),
            up.pool_max_connecting,
            1,
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

/// The most endpoints one upstream may list.
const MAX_ENDPOINTS: usize = 1024;

/// Exactly one of `url` and `endpoints`, every URL usable, one scheme, no
/// repeats; the balancing keys in range and `hash_on` iff `hash`.
fn validate_endpoints(
    up: &UpstreamConfig,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    let given = [up.url.is_some(), !up.endpoints.is_empty(), up.dns.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ConfigError::invalid(
            key(if up.dns.is_some() { "dns" } else { "endpoints" }),
            "set one of url (one endpoint), endpoints (several) or dns (a name's addresses)",
        ));
    }
    if let Some(dns) = up.dns_url() {
        let url = dns.map_err(|m| ConfigError::invalid(key("dns"), m))?;
        check_url(&url).map_err(|m| ConfigError::invalid(key("dns"), m))?;
        check::duration(
            &key("dns_refresh"),
            up.dns_refresh,
            Duration::from_millis(100),
            check::HOUR,
        )?;
    }
    match (&up.url, up.endpoints.is_empty()) {
        (None, true) if up.dns.is_some() => {}
        (Some(url), true) => {
            check_url(url).map_err(|m| ConfigError::invalid(key("url"), m))?;
        }
        (Some(_), false) => {
            return Err(ConfigError::invalid(
                key("endpoints"),
                "set either url (one endpoint) or endpoints (several), not both",
            ))
        }
        (None, true) => return Err(ConfigError::invalid(
            key("url"),
            "missing: set url = \"http://host:port\", endpoints = [\"http://host:port\", ...] or dns = \"host:port\"",
        )),
        (None, false) => {
            if up.endpoints.len() > MAX_ENDPOINTS {
                return Err(ConfigError::invalid(
                    key("endpoints"),
                    format!(
                        "at most {MAX_ENDPOINTS} endpoints (got {})",
                        up.endpoints.len()
                    ),
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for (j, url) in up.endpoints.iter().enumerate() {
                let at = key(&format!("endpoints[{j}]"));
                check_url(url).map_err(|m| ConfigError::invalid(&at, m))?;
                if url.scheme_str() != up.endpoints[0].scheme_str() {
                    return Err(ConfigError::invalid(
                        at,
                        format!(
                            "every endpoint must use one scheme: \"{url}\" is not {}:// like endpoints[0]",
                            up.endpoints[0].scheme_str().unwrap_or("http")
                        ),
                    ));
                }
                let authority = url.authority().map(|a| a.as_str().to_ascii_lowercase());
                if !seen.insert(authority) {
                    return Err(ConfigError::invalid(
                        at,
                        format!("\"{url}\" is listed more than once"),
                    ));
                }
            }
        }
    }
    match (up.balance, &up.hash_on) {
        (Balance::Hash, None) => {
            return Err(ConfigError::invalid(
                key("hash_on"),
                "balance = \"hash\" needs hash_on: \"header:NAME\", \"path\" or \"cookie:NAME\"",
            ))
        }
        (Balance::Hash, Some(h)) => {
            HashOn::parse(h).map_err(|m| ConfigError::invalid(key("hash_on"), m))?;
        }
        (_, Some(_)) => {
            return Err(ConfigError::invalid(
                key("hash_on"),
                "only applies with balance = \"hash\"",
            ))
        }
        (_, None) => {}
    }
    check::count(
        &key("consecutive_failures"),
        up.consecutive_failures as usize,
        1,
        1000,
    )?;
    check::positive_at_most(
        &key("base_ejection_time"),
        up.base_ejection_time,
        check::HOUR,
    )?;
    check::positive_at_most(&key("max_ejection_time"), up.max_ejection_time, check::DAY)?;
    if up.max_ejection_time < up.base_ejection_time {
        return Err(ConfigError::invalid(
            key("max_ejection_time"),
            format!(
                "must be at least base_ejection_time ({:?})",
                up.base_ejection_time
            ),
        ));
    }
    if up.max_ejection_percent > 100 {
        return Err(ConfigError::invalid(
            key("max_ejection_percent"),
            format!("must be 0 to 100 (got {})", up.max_ejection_percent),
        ));
    }
    check::positive_at_most(&key("drain_timeout"), up.drain_timeout, check::HOUR)?;
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
                up.first_url().map(|u| u.to_string()).unwrap_or_default()
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

fn default_dns_refresh() -> Duration {
    Duration::from_secs(5)
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

fn default_pool_max_connecting() -> usize {
    8
}

fn default_consecutive_failures() -> u32 {
    3
}

fn default_base_ejection_time() -> Duration {
    Duration::from_secs(5)
}

fn default_max_ejection_time() -> Duration {
    Duration::from_secs(60)
}

fn default_max_ejection_percent() -> u8 {
    50
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

fn deserialize_opt_uri<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<http::Uri>, D::Error> {
    deserialize_uri(deserializer).map(Some)
}

fn deserialize_uris<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<http::Uri>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .into_iter()
        .map(|text| {
            text.parse().map_err(|e| {
                serde::de::Error::custom(format!("invalid endpoint url {text:?}: {e}"))
            })
        })
        .collect()
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
