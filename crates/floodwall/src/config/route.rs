//! `[[routes]]`: which requests go where, and how they wait and share.

use std::time::Duration;

use serde::Deserialize;

use floodwall_core::limiter::TenantSpec;

use super::check;
use super::error::ConfigError;
use super::limit::LimitConfig;
use super::resilience::{RetryBudgetKeys, RouteMode};

/// Which requests go to which upstream, and how they are admitted
/// (`[[routes]]`). Routes are tried in file order; the first match wins.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The route's name, used in logs and as a metric label: letters,
    /// digits, `_`, `.` and `-`.
    pub name: String,
    /// Requests whose path starts with this prefix match. Must start with
    /// `/`; the default `/` matches every path.
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// If set, only requests for this host (the `Host` header) match; unset
    /// matches any host.
    #[serde(default)]
    pub host: Option<String>,
    /// The name of the `[[upstreams]]` entry admitted requests go to.
    pub upstream: String,
    /// The class of this route's requests that do not name one in the
    /// priority header. Unset means `server.default_class`.
    #[serde(default)]
    pub class: Option<String>,
    /// How many requests may be in flight to the upstream at once
    /// (`[routes.limit]`).
    #[serde(default)]
    pub limit: LimitConfig,
    /// What happens to a request that arrives when the limit is reached
    /// (`[routes.queue]`).
    #[serde(default)]
    pub queue: QueueConfig,
    /// How the limit is shared between tenants (`[routes.tenant]`).
    #[serde(default)]
    pub tenant: TenantConfig,
    /// A cap on retries as a share of first attempts
    /// (`[routes.retry_budget]`). Absent: none.
    #[serde(default)]
    pub retry_budget: Option<RetryBudgetKeys>,
    /// `"enforce"` (the default) or `"shadow"`: every decision computed
    /// and a would-be refusal counted, but the request forwarded anyway.
    #[serde(default)]
    pub mode: RouteMode,
}

impl RouteConfig {
    /// A route covering every path (`/`) that sends to `upstream`, with
    /// every admission setting at its default.
    pub fn new(name: impl Into<String>, upstream: impl Into<String>) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            path_prefix: default_path_prefix(),
            host: None,
            upstream: upstream.into(),
            class: None,
            limit: LimitConfig::default(),
            queue: QueueConfig::default(),
            tenant: TenantConfig::default(),
            retry_budget: None,
            mode: RouteMode::Enforce,
        }
    }
}

fn default_path_prefix() -> String {
    "/".to_owned()
}

/// Checks `[[routes]]` on its own: at least one, each name usable as a
/// label, each match well-formed and reachable, and each route's limit,
/// queue and tenant settings usable. Unique names and the upstream and
/// class a route names are checked with the other references
/// ([`super::validate`]).
pub(super) fn validate(routes: &[RouteConfig]) -> Result<(), ConfigError> {
    if routes.is_empty() {
        return Err(ConfigError::invalid(
            "routes",
            "at least one [[routes]] entry is required",
        ));
    }
    let mut matches: Vec<(Option<&str>, &str)> = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        check::label(&key("name"), &route.name)?;
        route.validate_match(&key)?;
        let here = (route.host.as_deref(), route.path_prefix.as_str());
        if let Some(j) = matches.iter().position(|m| *m == here) {
            return Err(ConfigError::invalid(
                key("path_prefix"),
                format!(
                    "routes[{j}] has the same host and path_prefix, so this route would never match"
                ),
            ));
        }
        matches.push(here);
        route.validate_admission(&key)?;
    }
    Ok(())
}

impl RouteConfig {
    /// `path_prefix` and `host`: what a request must look like to match.
    fn validate_match(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if !self.path_prefix.starts_with('/') {
            return Err(ConfigError::invalid(
                key("path_prefix"),
                format!("must start with '/' (got {:?})", self.path_prefix),
            ));
        }
        match self.path_prefix.parse::<http::uri::PathAndQuery>() {
            Ok(pq) if pq.query().is_none() => {}
            _ => {
                return Err(ConfigError::invalid(
                    key("path_prefix"),
                    format!(
                        "must be a URL path without query (got {:?})",
                        self.path_prefix
                    ),
                ))
            }
        }
        if let Some(host) = &self.host {
            let valid = host
                .parse::<http::uri::Authority>()
                .is_ok_and(|a| !a.as_str().contains('@') && !a.host().is_empty());
            if !valid {
                return Err(ConfigError::invalid(
                    key("host"),
                    format!("must be a host name, optionally with :port (got {host:?})"),
                ));
            }
        }
        Ok(())
    }

    /// `limit`, `queue` and `tenant`: how a matched request is admitted.
    fn validate_admission(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        self.limit.validate(&key("limit."))?;
        if let Some(b) = &self.retry_budget {
            b.budget_config(&key("retry_budget."))?;
        }

        check::count(
            &key("queue.capacity"),
            self.queue.capacity,
            0,
            check::MAX_COUNT,
        )?;
        if self.queue.capacity > 0 && self.queue.timeout.is_zero() {
            return Err(ConfigError::invalid(
                key("queue.timeout"),
                "must be greater than 0 when queue.capacity is above 0 \
                 (set capacity = 0 for no queue)",
            ));
        }

        check::duration(
            &key("queue.timeout"),
            self.queue.timeout,
            Duration::ZERO,
            check::HOUR,
        )?;

        let share = self.tenant.max_share;
        if !(share > 0.0 && share <= 1.0) {
            return Err(ConfigError::invalid(
                key("tenant.max_share"),
                format!("must be \"auto\", or greater than 0 and at most 1.0 (got {share})"),
            ));
        }
        check::positive_at_most(
            &key("tenant.contention_window"),
            self.tenant.contention_window,
            check::HOUR,
        )?;
        let quotas = &self.tenant.quotas;
        if quotas.len() > MAX_TENANT_QUOTAS {
            return Err(ConfigError::invalid(
                key("tenant.quotas"),
                format!(
                    "at most {MAX_TENANT_QUOTAS} per route (got {})",
                    quotas.len()
                ),
            ));
        }
        for (i, q) in quotas.iter().enumerate() {
            let id_ok = !q.tenant.is_empty()
                && q.tenant.len() <= 128
                && q.tenant
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
            if !id_ok {
                return Err(ConfigError::invalid(
                    key(&format!("tenant.quotas[{i}].tenant")),
                    format!(
                        "must be 1 to 128 visible ASCII characters, no braces (got {:?})",
                        q.tenant
                    ),
                ));
            }
            if quotas[..i].iter().any(|p| p.tenant == q.tenant) {
                return Err(ConfigError::invalid(
                    key(&format!("tenant.quotas[{i}].tenant")),
                    format!("{:?} is listed twice", q.tenant),
                ));
            }
            check::count(
                &key(&format!("tenant.quotas[{i}].max")),
                q.max,
                1,
                check::MAX_COUNT,
            )?;
        }
        Ok(())
    }
}

/// The wait queue of a route (`[routes.queue]`). A short queue absorbs
/// bursts that would otherwise be rejected; a long one only adds latency.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// How many requests may wait for a slot. 0 means no queue: a request
    /// that finds the limit reached is rejected at once.
    pub capacity: usize,
    /// How long a request may wait before it is rejected. Keep it well
    /// below your clients' timeouts: a request they have given up on is
    /// wasted work.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Which waiting request gets the next free slot.
    pub order: QueueOrder,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 0,
            timeout: Duration::from_millis(100),
            order: QueueOrder::default(),
        }
    }
}

/// The order in which queued requests are admitted (`fifo` or
/// `adaptive_lifo` in TOML).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueOrder {
    /// Oldest first. Fair while the queue is short.
    #[default]
    Fifo,
    /// Oldest first while the queue is short, newest first once it backs
    /// up, so that under overload the requests still likely to be wanted
    /// are served and the stale ones time out.
    AdaptiveLifo,
}

/// Per-tenant fairness on a route (`[routes.tenant]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    /// How much of the route's limit one tenant may hold, while tenants
    /// contend, before it must leave the others room: `"auto"` in TOML
    /// (the default, [`TenantSpec::AUTO`] here: the max-min fair share of
    /// the tenants holding slots), or a fixed fraction in (0, 1). `1.0`,
    /// a share of the whole limit, would never bind, and is read as auto.
    #[serde(deserialize_with = "share")]
    pub max_share: f64,
    /// How recently a tenant within its share must have been refused or
    /// queued for the rule to apply. A tenant alone on the route may use
    /// the whole limit.
    #[serde(with = "humantime_serde")]
    pub contention_window: Duration,
    /// Global in-flight caps for named tenants across every replica
    /// (`[[routes.tenant.quotas]]`), leased through `[store]` like the
    /// route's own limit. Tenants not listed keep the fair share above, and
    /// cost Redis nothing.
    pub quotas: Vec<TenantQuota>,
}

/// One tenant's global in-flight cap on a route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuota {
    /// The tenant id, as the tenant header carries it.
    pub tenant: String,
    /// The most requests of this tenant in flight at once, over all
    /// replicas.
    pub max: usize,
}

/// The most quotas one route may list: each costs one Redis call per
/// replica every `store.renew_interval`.
pub const MAX_TENANT_QUOTAS: usize = 100;

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            max_share: TenantSpec::AUTO,
            contention_window: Duration::from_secs(1),
            quotas: Vec::new(),
        }
    }
}

/// `max_share`: `"auto"` or a number (range-checked in validation, which
/// names the key).
fn share<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(f64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(x) => Ok(x),
        Raw::Text(s) if s == "auto" => Ok(TenantSpec::AUTO),
        Raw::Text(s) => Err(serde::de::Error::custom(format!(
            "max_share must be \"auto\" or a number, got {s:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};
    use floodwall_core::limiter::TenantSpec;

    fn with_tenant(keys: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(&format!(
            "[[upstreams]]\nname = \"api\"\nurl = \"http://127.0.0.1:3000\"\n\n\
             [[routes]]\nname = \"all\"\nupstream = \"api\"\n\n[routes.tenant]\n{keys}\n"
        ))
    }

    #[test]
    fn max_share_is_auto_by_default_by_name_or_a_fraction() {
        let share = |keys| with_tenant(keys).unwrap().routes[0].tenant.max_share;
        assert_eq!(share(""), TenantSpec::AUTO);
        assert_eq!(share("max_share = \"auto\""), TenantSpec::AUTO);
        assert_eq!(share("max_share = 0.25"), 0.25);
        assert_eq!(share("max_share = 1"), TenantSpec::AUTO);
        let err = with_tenant("max_share = \"fair\"").unwrap_err().to_string();
        assert!(err.contains("\"auto\" or a number"), "{err}");
        let err = with_tenant("max_share = 0.0").unwrap_err();
        assert_eq!(err.key(), Some("routes[0].tenant.max_share"));
    }
}
