//! Validation of a whole config: each section checks itself, then this file
//! checks, in one place, what the sections say about each other: names are
//! unique, and every name one section gives for another's entry exists.
//! The first problem found is returned, named by its key path.

use std::collections::HashSet;

use super::error::ConfigError;
use super::file::Config;
use super::probe::{self, ProbeKind};
use super::{class, route, upstream};

impl Config {
    /// Checks everything serde cannot: at least one upstream and route,
    /// unique well-formed names, class shares, references between sections,
    /// header names, and that limits and timeouts are usable.
    ///
    /// [`Config::from_toml_str`], [`Config::load`] and
    /// [`Config::apply_overrides`] call it; call it yourself after building
    /// or changing a `Config` in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Each section on its own, in file order...
        self.server.validate()?;
        if let Some(tls) = &self.server.tls {
            tls.validate()?;
        }
        self.log.validate()?;
        self.events.validate()?;
        self.admin.validate()?;
        class::validate(&self.classes)?;
        upstream::validate(&self.upstreams)?;
        route::validate(&self.routes)?;
        probe::validate(&self.probes)?;
        if let Some(store) = &self.store {
            store.validate()?;
        }
        // A quota is a global cap: it is leased through the store.
        if self.store.is_none() {
            if let Some(i) = self.routes.iter().position(|r| !r.tenant.quotas.is_empty()) {
                return Err(ConfigError::invalid(
                    format!("routes[{i}].tenant.quotas"),
                    "needs a [store] (or --store): a quota is a cap over every replica, \
                     leased through Redis",
                ));
            }
        }
        // ...then what they say about each other.
        self.validate_references()
    }

    /// Names are unique within their section, and every reference to a
    /// class or an upstream names one that exists.
    fn validate_references(&self) -> Result<(), ConfigError> {
        let classes = unique(self.classes.iter().map(|c| c.name.as_str()), "classes")?;
        let upstreams = unique(self.upstreams.iter().map(|u| u.name.as_str()), "upstreams")?;
        unique(self.routes.iter().map(|r| r.name.as_str()), "routes")?;
        let mut probes = HashSet::new();
        for (i, p) in self.probes.iter().enumerate() {
            if !probes.insert(p.name()) {
                return Err(ConfigError::invalid(
                    format!("probes[{i}].name"),
                    format!(
                        "{:?} is used by more than one probe; give each a name",
                        p.name()
                    ),
                ));
            }
        }

        let default_class = &self.server.default_class;
        if !classes.contains(default_class.as_str()) {
            return Err(ConfigError::invalid(
                "server.default_class",
                format!(
                    "no class named {default_class:?} (known: {})",
                    known(self.classes.iter().map(|c| &c.name))
                ),
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if !upstreams.contains(route.upstream.as_str()) {
                return Err(ConfigError::invalid(
                    format!("routes[{i}].upstream"),
                    format!(
                        "no upstream named {:?} (known: {})",
                        route.upstream,
                        known(self.upstreams.iter().map(|u| &u.name))
                    ),
                ));
            }
            if let Some(class) = &route.class {
                if !classes.contains(class.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("routes[{i}].class"),
                        format!(
                            "no class named {class:?} (known: {})",
                            known(self.classes.iter().map(|c| &c.name))
                        ),
                    ));
                }
            }
        }
        for (i, p) in self.probes.iter().enumerate() {
            if p.kind != ProbeKind::Backlog {
                continue;
            }
            if let Err(m) = p.backlog_port(&self.upstreams) {
                let field = if p.upstream.is_some() {
                    "upstream"
                } else {
                    "port"
                };
                return Err(ConfigError::invalid(format!("probes[{i}].{field}"), m));
            }
        }
        Ok(())
    }
}

/// The names of one section as a set, or the key of the first repeated one
/// (`section[i].name`).
fn unique<'a>(
    names: impl Iterator<Item = &'a str>,
    section: &str,
) -> Result<HashSet<&'a str>, ConfigError> {
    let mut seen = HashSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name) {
            return Err(ConfigError::invalid(
                format!("{section}[{i}].name"),
                format!("{name:?} is used more than once"),
            ));
        }
    }
    Ok(seen)
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<String> = names.map(|n| format!("{n:?}")).collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}
