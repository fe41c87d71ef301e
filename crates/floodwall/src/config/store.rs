//! `[store]`: distributed mode, one global limit per route shared by every
//! replica pointed at the same Redis (see `docs/config.md`, "[store]").

use std::time::Duration;

use serde::Deserialize;

use super::check;
use super::error::ConfigError;

/// The longest `store.renew_interval`: shares follow demand within about
/// two intervals, so a longer one is a global limit that no longer moves;
/// 3 × it still fits under the one-hour `lease_ttl` bound.
const MAX_RENEW_INTERVAL: Duration = Duration::from_secs(600);

/// How replicas share a route's global limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreMode {
    /// Each replica holds a leased share, renewed every `renew_interval`;
    /// requests decide locally with no Redis round trip. The default.
    Lease,
    /// One atomic Lua call per request (plus one to release): exact, for
    /// small limits where exactness matters more than latency.
    Strict,
}

impl StoreMode {
    /// The mode's name, as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreMode::Lease => "lease",
            StoreMode::Strict => "strict",
        }
    }
}

/// What a replica does while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreFailure {
    /// Keep the last grant until its lease would have expired, then the
    /// global limit ÷ the last known replica count (1 before any answer).
    /// The default.
    Local,
    /// Drop the share: only the local limits apply.
    Open,
    /// Refuse everything (share 0) until Redis is back.
    Closed,
}

impl StoreFailure {
    /// The policy's name, as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreFailure::Local => "local",
            StoreFailure::Open => "open",
            StoreFailure::Closed => "closed",
        }
    }
}

/// The `[store]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The Redis URL, `redis://[user:password@]host:port[/db]`; for a Redis
    /// Cluster, one or more of its nodes' URLs separated by commas (any
    /// node will do: the client learns the others from it); for a primary
    /// behind Redis Sentinel, `redis+sentinel://[user:password@]host:port,
    /// host:port/PRIMARY[/db]`, the Sentinels and the primary's name (the
    /// credentials are the primary's), so floodwall follows a failover.
    pub url: String,
    /// Talk to a Redis Cluster (slot routing, `MOVED` followed) even when
    /// `url` names one node; implied when it names several.
    #[serde(default)]
    pub cluster: bool,
    /// `lease` (default) or `strict`.
    #[serde(default = "default_mode")]
    pub mode: StoreMode,
    /// How long a replica's membership and share live in Redis without a
    /// renewal: the bound on how long a crashed replica's slots stay taken.
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How often a replica renews its lease and rebalances its share.
    #[serde(default = "default_renew_interval", with = "humantime_serde")]
    pub renew_interval: Duration,
    /// The deadline of every Redis call, so a slow Redis never stalls
    /// requests.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// What to do while Redis is unreachable: `local`, `open` or `closed`.
    #[serde(default = "default_failure")]
    pub on_store_failure: StoreFailure,
    /// How long a joining replica takes to ramp its demand up to the whole
    /// global limit, so it does not grab its full share at once.
    #[serde(default = "default_join_ramp", with = "humantime_serde")]
    pub join_ramp: Duration,
    /// The prefix of every key; keys are `PREFIX:{ROUTE}:...`.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// This replica's id in Redis; default `HOSTNAME-PID-RANDOM`. Two live
    /// replicas must never share one.
    #[serde(default)]
    pub replica_id: Option<String>,
}

const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// Where a primary behind Redis Sentinel is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// Each Sentinel as `redis://host:port` (no credentials: Sentinels are
    /// asked only where the primary is).
    pub sentinels: Vec<String>,
    /// The name the Sentinels monitor the primary under.
    pub primary: String,
    /// A `redis://` URL with the primary's credentials and db (its host is
    /// the first Sentinel's, unused): what a connection to whichever node
    /// is primary is opened with.
    pub primary_settings: String,
}

/// `[user:password@]host[:port],host[:port]/PRIMARY[/db]`, after the
/// scheme. A port defaults to Sentinel's 26379.
fn parse_sentinel(rest: &str) -> Result<SentinelTarget, String> {
    let (auth, rest) = match rest.rfind('@') {
        Some(at) if rest[..at].find('/').is_none() => (&rest[..=at], &rest[at + 1..]),
        _ => ("", rest),
    };
    let (hosts, path) = rest
        .split_once('/')
        .ok_or("must end in /PRIMARY, the name the Sentinels monitor")?;
    let mut sentinels = Vec::new();
    for h in hosts.split(',').map(str::trim) {
        if h.is_empty() {
            return Err("an empty Sentinel address".into());
        }
        let with_port = if h
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            h.to_owned()
        } else {
            format!("{h}:26379")
        };
        let url = format!("redis://{with_port}");
        redis::Client::open(url.as_str()).map_err(|e| format!("Sentinel {h:?}: {e}"))?;
        sentinels.push(url);
    }
    let (primary, db) = match path.split_once('/') {
        Some((name, db)) => (name, db),
        None => (path, "0"),
    };
    let name_ok = !primary.is_empty()
        && primary
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name_ok {
        return Err(format!(
            "the primary's name must be letters, digits, '-', '_' or '.' (got {primary:?})"
        ));
    }
    if db.parse::<u16>().is_err() {
        return Err(format!(
            "the db after the primary's name must be a number (got {db:?})"
        ));
    }
    let first = sentinels[0].trim_start_matches("redis://");
    let primary_settings = format!("redis://{auth}{first}/{db}");
    redis::Client::open(primary_settings.as_str()).map_err(|e| e.to_string())?;
    Ok(SentinelTarget {
        sentinels,
        primary: primary.to_owned(),
        primary_settings,
    })
}

fn default_mode() -> StoreMode {
    StoreMode::Lease
}
fn default_lease_ttl() -> Duration {
    Duration::from_secs(2)
}
fn default_renew_interval() -> Duration {
    Duration::from_millis(200)
}
fn default_timeout() -> Duration {
    Duration::from_millis(50)
}
fn default_failure() -> StoreFailure {
    StoreFailure::Local
}
fn default_join_ramp() -> Duration {
    Duration::from_secs(3)
}
fn default_prefix() -> String {
    "floodwall".into()
}

impl StoreConfig {
    /// A store at `url` with every other key at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            mode: default_mode(),
            lease_ttl: default_lease_ttl(),
            renew_interval: default_renew_interval(),
            timeout: default_timeout(),
            on_store_failure: default_failure(),
            join_ramp: default_join_ramp(),
            key_prefix: default_prefix(),
            replica_id: None,
            cluster: false,
        }
    }

    /// Whether `url` names a primary behind Redis Sentinel
    /// (`redis+sentinel://`).
    pub fn is_sentinel(&self) -> bool {
        self.url.trim_start().starts_with(SENTINEL_SCHEME)
    }

    /// A `redis+sentinel://` `url` taken apart: `None` for any other.
    pub fn sentinel(&self) -> Option<Result<SentinelTarget, String>> {
        let rest = self.url.trim().strip_prefix(SENTINEL_SCHEME)?;
        Some(parse_sentinel(rest))
    }

    /// The node URLs `url` lists (one unless it is a cluster's).
    pub fn nodes(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// Whether the store is a Redis Cluster: `cluster = true`, or `url`
    /// lists several nodes.
    pub fn is_cluster(&self) -> bool {
        !self.is_sentinel() && (self.cluster || self.nodes().len() > 1)
    }

    /// Ranges and relations serde cannot express.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let nodes = if self.is_sentinel() {
            if self.cluster {
                return Err(ConfigError::invalid(
                    "store.cluster",
                    "a redis+sentinel:// url names one primary, not a cluster: remove cluster = true",
                ));
            }
            if let Some(Err(e)) = self.sentinel() {
                return Err(ConfigError::invalid(
                    "store.url",
                    format!("{e} (got {:?})", check::redact_url(&self.url)),
                ));
            }
            Vec::new()
        } else {
            self.nodes()
        };
        if nodes.is_empty() && !self.is_sentinel() {
            return Err(ConfigError::invalid("store.url", "must name a Redis"));
        }
        for u in &nodes {
            let scheme_ok = u.starts_with("redis://")
                || u.starts_with("rediss://")
                || (!self.is_cluster() && u.starts_with("unix://"));
            if !scheme_ok {
                let schemes = if self.is_cluster() {
                    "each node of a cluster must start with redis:// or rediss://"
                } else {
                    "must start with redis://, rediss:// or unix://"
                };
                return Err(ConfigError::invalid(
                    "store.url",
                    // Never the password: an error is printed, logged and
                    // shown in CI output.
                    format!("{schemes} (got {:?})", check::redact_url(u)),
                ));
            }
            if let Err(e) = redis::Client::open(*u) {
                return Err(ConfigError::invalid("store.url", format!("{e}")));
            }
        }
        if self.is_cluster() {
            // Same password, TLS and db 0 on every node: what the cluster
            // client needs, checked without connecting.
            if let Err(e) = redis::cluster::ClusterClient::new(nodes.clone()) {
                return Err(ConfigError::invalid(
                    "store.url",
                    format!("not a usable Redis Cluster node list: {e}"),
                ));
            }
        }
        let ms = |d: Duration| humantime::format_duration(d).to_string();
        if self.renew_interval < Duration::from_millis(10) {
            return Err(ConfigError::invalid(
                "store.renew_interval",
                format!("must be at least 10ms (got {})", ms(self.renew_interval)),
            ));
        }
        check::duration(
            "store.join_ramp",
            self.join_ramp,
            Duration::ZERO,
            check::HOUR,
        )?;
        // Saturating: an absurd renew_interval must be refused, not overflow.
        let three_renewals = self.renew_interval.saturating_mul(3);
        if self.lease_ttl < three_renewals {
            return Err(ConfigError::invalid(
                "store.lease_ttl",
                format!(
                    "must be at least 3 × store.renew_interval ({}), so one lost renewal does \
                     not expire a live replica (got {})",
                    ms(three_renewals),
                    ms(self.lease_ttl)
                ),
            ));
        }
        // After the 3 × check, which names lease_ttl for a renew_interval
        // too long for any lease.
        check::duration(
            "store.renew_interval",
            self.renew_interval,
            Duration::from_millis(10),
            MAX_RENEW_INTERVAL,
        )?;
        check::duration(
            "store.lease_ttl",
            self.lease_ttl,
            Duration::ZERO,
            check::HOUR,
        )?;
        if self.timeout.is_zero() || self.timeout >= self.renew_interval {
            return Err(ConfigError::invalid(
                "store.timeout",
                format!(
                    "must be above 0 and below store.renew_interval ({}) (got {})",
                    ms(self.renew_interval),
                    ms(self.timeout)
                ),
            ));
        }
        let label_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        };
        if !label_ok(&self.key_prefix) {
            return Err(ConfigError::invalid(
                "store.key_prefix",
                format!(
                    "must be 1 to 64 characters of A-Z a-z 0-9 _ - . (got {:?})",
                    self.key_prefix
                ),
            ));
        }
        if let Some(id) = &self.replica_id {
            if !label_ok(id) {
                return Err(ConfigError::invalid(
                    "store.replica_id",
                    format!("must be 1 to 64 characters of A-Z a-z 0-9 _ - . (got {id:?})"),
                ));
            }
        }
        Ok(())
    }
}
