//! Checks serde cannot express: ranges, names, and references between
//! sections. The first problem found is returned, named by its key path.

use std::collections::HashSet;
use std::time::Duration;

use super::{upstream, Config, ConfigError, LimitConfig};

/// The longest `server.max_tenant_id_len` accepted. Tenant ids are kept as
/// map keys; anything longer is not an id but a payload.
const MAX_TENANT_ID_LEN: usize = 1024;

/// Slack for float sums: 0.7 + 0.2 + 0.1 is 0.9999999999999999 and
/// 0.6 + 0.3 + 0.1 is 1.0000000000000002; both mean 1.0.
const SHARE_EPSILON: f64 = 1e-9;

impl Config {
    /// Checks everything serde cannot: at least one upstream and route,
    /// unique well-formed names, class shares, references between sections,
    /// header names, and that limits and timeouts are usable.
    ///
    /// [`Config::from_toml_str`], [`Config::load`] and
    /// [`Config::apply_overrides`] call it; call it yourself after building
    /// or changing a `Config` in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_log()?;
        self.validate_classes()?;
        self.validate_upstreams()?;
        self.validate_routes()?;
        if let Some(store) = &self.store {
            store.validate()?;
        }
        super::probe::validate(self)
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.listen == s.admin && s.listen.port() != 0 {
            return Err(ConfigError::invalid(
                "server.admin",
                format!("must differ from server.listen (both are {})", s.listen),
            ));
        }
        positive("server.drain_timeout", s.drain_timeout)?;
        positive("server.header_read_timeout", s.header_read_timeout)?;
        positive("server.class_idle_window", s.class_idle_window)?;
        if s.retry_after_max < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "server.retry_after_max",
                format!(
                    "must be at least 1s, since Retry-After counts whole seconds (got {})",
                    humantime::format_duration(s.retry_after_max)
                ),
            ));
        }
        let priority = header_name("server.priority_header", &s.priority_header)?;
        let tenant = header_name("server.tenant_header", &s.tenant_header)?;
        if priority == tenant {
            return Err(ConfigError::invalid(
                "server.tenant_header",
                format!("must differ from server.priority_header (both are \"{priority}\")"),
            ));
        }
        if !(1..=MAX_TENANT_ID_LEN).contains(&s.max_tenant_id_len) {
            return Err(ConfigError::invalid(
                "server.max_tenant_id_len",
                format!(
                    "must be between 1 and {MAX_TENANT_ID_LEN} (got {})",
                    s.max_tenant_id_len
                ),
            ));
        }
        Ok(())
    }

    fn validate_log(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            ConfigError::invalid(
                "log.level",
                format!(
                    "not a valid filter directive (got {:?}): {e}",
                    self.log.level
                ),
            )
        })?;
        Ok(())
    }

    fn validate_classes(&self) -> Result<(), ConfigError> {
        if self.classes.is_empty() {
            return Err(ConfigError::invalid(
                "classes",
                "at least one class is required (omit [[classes]] for the defaults)",
            ));
        }
        let mut seen = HashSet::new();
        let mut total = 0.0;
        for (i, class) in self.classes.iter().enumerate() {
            unique_name(&format!("classes[{i}].name"), &class.name, &mut seen)?;
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
        let default_class = &self.server.default_class;
        if !seen.contains(default_class.as_str()) {
            return Err(ConfigError::invalid(
                "server.default_class",
                format!(
                    "no class named {default_class:?} (known: {})",
                    known(self.classes.iter().map(|c| &c.name))
                ),
            ));
        }
        Ok(())
    }

    fn validate_upstreams(&self) -> Result<(), ConfigError> {
        if self.upstreams.is_empty() {
            return Err(ConfigError::invalid(
                "upstreams",
                "at least one [[upstreams]] entry is required",
            ));
        }
        let mut seen = HashSet::new();
        for (i, up) in self.upstreams.iter().enumerate() {
            unique_name(&format!("upstreams[{i}].name"), &up.name, &mut seen)?;
            upstream::check_url(&up.url)
                .map_err(|m| ConfigError::invalid(format!("upstreams[{i}].url"), m))?;
            positive(
                &format!("upstreams[{i}].connect_timeout"),
                up.connect_timeout,
            )?;
            positive(
                &format!("upstreams[{i}].response_timeout"),
                up.response_timeout,
            )?;
            positive(
                &format!("upstreams[{i}].pool_idle_timeout"),
                up.pool_idle_timeout,
            )?;
        }
        Ok(())
    }

    fn validate_routes(&self) -> Result<(), ConfigError> {
        if self.routes.is_empty() {
            return Err(ConfigError::invalid(
                "routes",
                "at least one [[routes]] entry is required",
            ));
        }
        let mut seen = HashSet::new();
        let mut matches: Vec<(Option<&str>, &str)> = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("routes[{i}].{field}");
            unique_name(&key("name"), &route.name, &mut seen)?;

            if !route.path_prefix.starts_with('/') {
                return Err(ConfigError::invalid(
                    key("path_prefix"),
                    format!("must start with '/' (got {:?})", route.path_prefix),
                ));
            }
            match route.path_prefix.parse::<http::uri::PathAndQuery>() {
                Ok(pq) if pq.query().is_none() => {}
                _ => {
                    return Err(ConfigError::invalid(
                        key("path_prefix"),
                        format!(
                            "must be a URL path without query (got {:?})",
                            route.path_prefix
                        ),
                    ))
                }
            }
            if let Some(host) = &route.host {
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

            if !self.upstreams.iter().any(|u| u.name == route.upstream) {
                return Err(ConfigError::invalid(
                    key("upstream"),
                    format!(
                        "no upstream named {:?} (known: {})",
                        route.upstream,
                        known(self.upstreams.iter().map(|u| &u.name))
                    ),
                ));
            }
            if let Some(class) = &route.class {
                if !self.classes.iter().any(|c| &c.name == class) {
                    return Err(ConfigError::invalid(
                        key("class"),
                        format!(
                            "no class named {class:?} (known: {})",
                            known(self.classes.iter().map(|c| &c.name))
                        ),
                    ));
                }
            }

            if let LimitConfig::Fixed { value } = route.limit {
                check_limit(value).map_err(|m| ConfigError::invalid(key("limit.value"), m))?
            }
            let prefix = key("limit.");
            if let Err(message) = route.limit.build(&prefix, 0) {
                // The message starts with the full key it is about.
                let (k, m) = message
                    .split_once(": ")
                    .map_or((prefix.clone(), message.clone()), |(k, m)| {
                        (k.to_owned(), m.to_owned())
                    });
                return Err(ConfigError::invalid(k, m));
            }

            if route.queue.capacity > 0 {
                positive(&key("queue.timeout"), route.queue.timeout).map_err(|_| {
                    ConfigError::invalid(
                        key("queue.timeout"),
                        "must be greater than 0 when queue.capacity is above 0 \
                         (set capacity = 0 for no queue)",
                    )
                })?;
            }

            let share = route.tenant.max_share;
            if !(share > 0.0 && share <= 1.0) {
                return Err(ConfigError::invalid(
                    key("tenant.max_share"),
                    format!("must be greater than 0 and at most 1.0 (got {share})"),
                ));
            }
            positive(
                &key("tenant.contention_window"),
                route.tenant.contention_window,
            )?;
        }
        Ok(())
    }
}

/// Shared with `--limit`, so the flag gets the same message as the key.
pub(super) fn check_limit(value: usize) -> Result<(), String> {
    if value == 0 {
        return Err(format!("must be at least 1 (got {value})"));
    }
    Ok(())
}

fn positive(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(())
}

fn header_name(key: &str, name: &str) -> Result<http::HeaderName, ConfigError> {
    http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        ConfigError::invalid(key, format!("not a valid HTTP header name (got {name:?})"))
    })
}

/// Names become metric label values and appear in logs and headers, so
/// they are kept to a conservative character set.
fn unique_name<'a>(
    key: &str,
    name: &'a str,
    seen: &mut HashSet<&'a str>,
) -> Result<(), ConfigError> {
    check_label(key, name)?;
    if !seen.insert(name) {
        return Err(ConfigError::invalid(
            key,
            format!("{name:?} is used more than once"),
        ));
    }
    Ok(())
}

/// A name that becomes a metric label value: non-empty, letters, digits,
/// `_`, `.` and `-` only.
pub(super) fn check_label(key: &str, name: &str) -> Result<(), ConfigError> {
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

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<String> = names.map(|n| format!("{n:?}")).collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}
