//! Hot reload: re-read the config file (SIGHUP or `POST /reload`) and
//! apply it without losing what the running gate has learned.
//!
//! A reload is all or nothing. The new file is read, overridden by the
//! same command-line flags as at start-up, and validated exactly as
//! `floodwall check` does; then every part it needs is built beside the
//! running ones. Any error up to that point changes nothing: the message
//! names the key, it is counted in `floodwall_config_reloads_total{result
//! ="error"}` and shown on `/status` and the page. Only then is it applied,
//! and the route table is swapped in one step ([`Router::swap`]), so each
//! request sees the old routes or the new ones, never a mix.
//!
//! **What carries over**, for a route whose name stays: its limiter,
//! which is the adaptive limit's state (limit, baseline, windows: no cold
//! start), the permits in flight (released into the limiter they came
//! from), the queue's waiters, the tenant and class state; its part of
//! the global limit (the store lease); its refusal counters. A fixed
//! limit's new value applies in place ([`Route::set_fixed_limit`]).
//!
//! **What does not**: a changed algorithm, changed settings of an
//! adaptive algorithm, or changed classes, queue, tenant or class/retry
//! timing need a new limiter for that route. Its adaptive state starts
//! over (a cold start, said in the log at `warn`), and the requests in
//! flight finish under the old limiter while the new one admits up to its
//! own limit, so for the length of one request the upstream may see both.
//! A removed route takes no new requests; its requests finish. A changed
//! upstream gets a new connection pool; requests on the old one finish.
//! An upstream whose endpoints alone changed is kept: its membership
//! changes in place (a new ring version; keys in flight drain, see
//! `floodwall_core::balance`).
//! Probes restart when they or the routes they constrain change (their
//! hysteresis starts over; each flag file is lowered, then kept by the new
//! task). Listener addresses, TLS, timeouts, buffers, `[log]` and
//! `[store]` cannot change without a restart: a reload that changes them
//! is refused, naming the key.

use crate::admin::auth::Auth;
use crate::admin::reload::{scrub, ReloadError, ReloadStats};
use crate::config::{Config, RouteConfig, ServerConfig};
use crate::distributed::Distributed;
use crate::probe::{self, ProbeSet};
use crate::proxy::{route_limiter_carries, Proxy, Route, RouteTable, Upstream};
use floodwall_core::Clock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Reads the config again: the file and the same flags as at start-up.
pub type LoadFn = dyn Fn() -> anyhow::Result<Config> + Send + Sync;

/// Applies reloads to a running floodwall.
pub struct Reloader {
    load: Option<Box<LoadFn>>,
    proxy: Arc<Proxy>,
    probes: Arc<ProbeSet>,
    distributed: Option<Arc<Distributed>>,
    auth: Arc<Auth>,
    clock: Arc<dyn Clock>,
    /// The running config and its upstreams, by name; the lock also keeps
    /// two reloads from interleaving.
    current: Mutex<Current>,
    stats: Arc<ReloadStats>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("has_file", &self.load.is_some())
            .finish_non_exhaustive()
    }
}

struct Current {
    config: Config,
    upstreams: HashMap<String, Arc<Upstream>>,
}

/// The parts of a running floodwall a reload changes.
pub struct Parts {
    /// The proxy (its route table).
    pub proxy: Arc<Proxy>,
    /// The probes.
    pub probes: Arc<ProbeSet>,
    /// Distributed mode, if configured.
    pub distributed: Option<Arc<Distributed>>,
    /// The admin tokens.
    pub auth: Arc<Auth>,
    /// The clock new limiters read.
    pub clock: Arc<dyn Clock>,
    /// The upstreams the running routes use, by name.
    pub upstreams: HashMap<String, Arc<Upstream>>,
}

impl Reloader {
    /// A reloader for a floodwall started from `config` with `parts`;
    /// `load` reads the config again (`None`: started without a file).
    pub fn new(config: Config, parts: Parts, load: Option<Box<LoadFn>>) -> Self {
        Self {
            load,
            proxy: parts.proxy,
            probes: parts.probes,
            distributed: parts.distributed,
            auth: parts.auth,
            clock: parts.clock,
            current: Mutex::new(Current {
                config,
                upstreams: parts.upstreams,
            }),
            stats: Arc::new(ReloadStats::default()),
        }
    }

    /// The results so far, shared with admin.
    pub fn stats(&self) -> Arc<ReloadStats> {
        self.stats.clone()
    }

    /// Re-reads and applies the config; see the module doc. Returns what
    /// changed, one line each (also logged), or why nothing did.
    pub fn reload(&self) -> Result<Vec<String>, ReloadError> {
        let result = self.try_reload().map_err(|e| match e {
            ReloadError::Refused(m) => ReloadError::Refused(scrub(&m)),
            e => e,
        });
        match &result {
            Ok(changes) if changes.is_empty() => {
                tracing::info!("config reloaded: nothing changed")
            }
            Ok(changes) => tracing::info!(changes = %changes.join("; "), "config reloaded"),
            Err(e) => tracing::error!(error = %e, "config reload refused"),
        }
        self.stats.record(&result);
        result
    }

    fn try_reload(&self) -> Result<Vec<String>, ReloadError> {
        let load = self.load.as_ref().ok_or(ReloadError::NoFile)?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let refused = |e: String| ReloadError::Refused(e);
        let new = load().map_err(|e| refused(format!("{e:#}")))?;
        let old = &current.config;
        restart_only(old, &new).map_err(refused)?;
        let tokens = new.admin.tokens().map_err(|e| refused(e.to_string()))?;
        let mut changes = Vec::new();

        // Upstreams: the same config keeps its pool.
        let mut upstreams = HashMap::new();
        for (i, u) in new.upstreams.iter().enumerate() {
            let same = old.upstreams.iter().find(|o| o.name == u.name);
            let up = match (same, current.upstreams.get(&u.name)) {
                (Some(o), Some(up)) if o == u => {
                    // Kept with its breaker state; a quota follows the
                    // routes' new limits.
                    if let Some(b) = &up.guards.bulkhead {
                        b.set_quota_of(new.upstream_ceiling(&u.name));
                    }
                    up.clone()
                }
                // Only the membership changed: the same upstream (its pool,
                // breaker, and each kept endpoint's counters and health)
                // with new members, a new ring version, and a graceful
                // drain of the keys whose owner moved.
                (Some(o), Some(up)) if o.with_urls_of(u) == *u && o.is_https() == u.is_https() => {
                    if let Some(b) = &up.guards.bulkhead {
                        b.set_quota_of(new.upstream_ceiling(&u.name));
                    }
                    if let Some(c) = up.endpoints.set_members(&u.name, u) {
                        changes.push(format!(
                            "upstream {}: membership version {} (added {:?}, removed {:?}; removed endpoints finish their requests)",
                            u.name, c.version, c.added, c.removed
                        ));
                    }
                    up.clone()
                }
                (same, _) => {
                    changes.push(match same {
                        Some(_) => format!("upstream {}: changed, a new connection pool (requests on the old one finish)", u.name),
                        None => format!("upstream {}: added", u.name),
                    });
                    let up = Upstream::new(
                        u,
                        old.server.worker_count(),
                        self.clock.clone(),
                        new.upstream_ceiling(&u.name),
                        &self.proxy.events,
                    )
                    .map_err(|e| refused(format!("upstreams[{i}]: {e:#}")))?;
                    if let Some(was) = current.upstreams.get(&u.name) {
                        up.endpoints.adopt_members(&was.endpoints);
                    }
                    Arc::new(up)
                }
            };
            upstreams.insert(u.name.clone(), up);
        }

        // Routes: by name, keeping every limiter that can carry.
        let running = self.proxy.router.routes();
        let mut routes = Vec::with_capacity(new.routes.len());
        let mut fixed = Vec::new();
        let mut rebuilt_limiters = Vec::new();
        for (i, rc) in new.routes.iter().enumerate() {
            let upstream = upstreams[&rc.upstream].clone();
            let kept = running.iter().find(|r| r.name == rc.name);
            let old_rc = old.routes.iter().find(|r| r.name == rc.name);
            let route = match (kept, old_rc) {
                (Some(route), Some(old_rc)) => {
                    let limiter = match route_limiter_carries((old, old_rc), (&new, rc)) {
                        Ok(()) => {
                            if old_rc.limit != rc.limit {
                                fixed.push((route.clone(), rc.limit.ceiling()));
                                changes.push(format!(
                                    "route {}: fixed limit {} -> {}, in place",
                                    rc.name,
                                    old_rc.limit.ceiling(),
                                    rc.limit.ceiling()
                                ));
                            }
                            route.kept_limiter()
                        }
                        Err(why) => {
                            rebuilt_limiters.push((rc.name.clone(), why.clone()));
                            changes.push(format!(
                                "route {}: a new limiter, because {why}; its adaptive state \
                                 starts over and the {} requests in flight finish under the old one",
                                rc.name,
                                route.limiter.inflight()
                            ));
                            Route::limiter(&new, i, self.clock.clone())
                                .map_err(|e| refused(format!("routes[{i}]: {e:#}")))?
                        }
                    };
                    if route_changed(old_rc, rc) {
                        changes.push(format!("route {}: match or upstream changed", rc.name));
                    }
                    route
                        .rebuilt(&new, rc, limiter, upstream, self.clock.clone())
                        .map_err(|e| refused(format!("routes[{i}]: {e:#}")))?
                }
                _ => {
                    changes.push(format!("route {}: added", rc.name));
                    let limiter = Route::limiter(&new, i, self.clock.clone())
                        .map_err(|e| refused(format!("routes[{i}]: {e:#}")))?;
                    Route::new(&new, rc, limiter, upstream, None, self.clock.clone())
                        .map_err(|e| refused(format!("routes[{i}]: {e:#}")))?
                }
            };
            routes.push(Arc::new(route));
        }
        for r in running.iter() {
            if !new.routes.iter().any(|rc| rc.name == r.name) {
                changes.push(format!(
                    "route {}: removed; its {} requests in flight finish",
                    r.name,
                    r.limiter.inflight()
                ));
            }
        }
        if self.distributed.is_some() {
            distributed_keeps(old, &new, &rebuilt_limiters).map_err(refused)?;
        }
        let table =
            RouteTable::new(&new, routes.clone()).map_err(|e| refused(format!("server: {e:#}")))?;
        let probes_change = new.probes != old.probes
            || (!new.probes.is_empty() && new.upstreams != old.upstreams)
            || !same_limiters(&running, &routes);
        if probes_change && !(old.probes.is_empty() && new.probes.is_empty()) {
            probe::buildable(&new).map_err(|e| refused(format!("{e:#}")))?;
        }
        if new.classes != old.classes {
            changes.push("classes changed".into());
        }
        if new.server != old.server {
            changes.push("server headers or class/retry timing changed".into());
        }
        if new.admin != old.admin {
            changes.push("admin tokens re-read".into());
        }

        // Apply: nothing below can fail.
        for (name, why) in &rebuilt_limiters {
            tracing::warn!(route = %name, "reload: a new limiter because {why}: its adaptive state starts over");
        }
        for (route, value) in fixed {
            route.set_fixed_limit(value);
        }
        self.proxy.router.swap(table);
        if probes_change && !(old.probes.is_empty() && new.probes.is_empty()) {
            let constrained = routes
                .iter()
                .map(|r| (r.name.clone(), r.limiter.clone()))
                .collect();
            if let Err(e) = probe::restart(&self.probes, &new, constrained) {
                // Checked above with `buildable`; a probe that fails now
                // cannot be undone, so say so loudly.
                tracing::error!(error = %e, "reload: a probe did not start");
            }
            changes.push("probes restarted".into());
        }
        self.auth.set(tokens);
        current.config = new;
        current.upstreams = upstreams;
        Ok(changes)
    }
}

/// Whether a route's match or upstream changed (what a rebuilt route
/// changes besides its limiter).
fn route_changed(old: &RouteConfig, new: &RouteConfig) -> bool {
    old.path_prefix != new.path_prefix
        || old.host != new.host
        || old.upstream != new.upstream
        || old.class != new.class
        || old.queue.timeout != new.queue.timeout
}

/// Whether the probes would constrain the same limiters, in the same order.
fn same_limiters(old: &[Arc<Route>], new: &[Arc<Route>]) -> bool {
    old.len() == new.len()
        && old
            .iter()
            .zip(new)
            .all(|(a, b)| a.name == b.name && Arc::ptr_eq(&a.limiter, &b.limiter))
}

/// The keys a reload cannot apply: refused, naming the first that changed.
fn restart_only(old: &Config, new: &Config) -> Result<(), String> {
    let (o, n) = (&old.server, &new.server);
    let restart = |key: &str, what: String| {
        Err(format!(
            "{key}: {what}; that needs a restart of floodwall, so the reload changed nothing"
        ))
    };
    if old.events != new.events {
        return restart(
            "events",
            "changed: the decision log's file and writer are set at start".into(),
        );
    }
    if o.listen != n.listen {
        return restart(
            "server.listen",
            format!(
                "changed from {} to {}: the proxy listener cannot move while it serves",
                o.listen, n.listen
            ),
        );
    }
    if o.admin != n.admin {
        return restart(
            "server.admin",
            format!(
                "changed from {} to {}: the admin listener cannot move while it serves",
                o.admin, n.admin
            ),
        );
    }
    // Every other [server] key but the headers, the default class and the
    // class/retry timing is read once, by the listeners and the request
    // path, at start-up.
    let applied = |s: &ServerConfig| ServerConfig {
        priority_header: String::new(),
        tenant_header: String::new(),
        default_class: String::new(),
        max_tenant_id_len: 0,
        class_idle_window: Default::default(),
        retry_after_max: Default::default(),
        ..s.clone()
    };
    let (ao, an) = (applied(o), applied(n));
    if ao != an {
        let keys = [
            ("drain_timeout", ao.drain_timeout != an.drain_timeout),
            (
                "header_read_timeout",
                ao.header_read_timeout != an.header_read_timeout,
            ),
            (
                "keepalive_timeout",
                ao.keepalive_timeout != an.keepalive_timeout,
            ),
            ("max_connections", ao.max_connections != an.max_connections),
            (
                "admin_max_connections",
                ao.admin_max_connections != an.admin_max_connections,
            ),
            ("body_timeout", ao.body_timeout != an.body_timeout),
            ("body_min_rate", ao.body_min_rate != an.body_min_rate),
            ("request_buffer", ao.request_buffer != an.request_buffer),
            ("response_buffer", ao.response_buffer != an.response_buffer),
            (
                "response_buffer_total",
                ao.response_buffer_total != an.response_buffer_total,
            ),
            ("send_timeout", ao.send_timeout != an.send_timeout),
            ("tls", ao.tls != an.tls),
            ("workers", ao.workers != an.workers),
            ("state_file", ao.state_file != an.state_file),
            ("state_max_age", ao.state_max_age != an.state_max_age),
        ];
        let key = keys
            .iter()
            .find(|(_, changed)| *changed)
            .map_or("server", |(k, _)| k);
        return restart(&format!("server.{key}"), "changed".into());
    }
    if old.log != new.log {
        return restart("log", "changed".into());
    }
    if old.store != new.store {
        // The URL may hold a password: never print the values.
        return restart("store", "changed".into());
    }
    Ok(())
}

/// In distributed mode every replica must agree on each route's global
/// limit, and a route's lease is held by its limiter: the routes, their
/// global limits and their limiters must stay.
fn distributed_keeps(
    old: &Config,
    new: &Config,
    rebuilt: &[(String, String)],
) -> Result<(), String> {
    let names = |c: &Config| c.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    if names(old) != names(new) {
        return Err(
            "routes: in distributed mode ([store]) adding, removing or reordering routes \
             needs a restart, since each route's lease is held by name"
                .into(),
        );
    }
    for (i, (o, n)) in old.routes.iter().zip(&new.routes).enumerate() {
        if o.limit.ceiling() != n.limit.ceiling() {
            return Err(format!(
                "routes[{i}].limit: in distributed mode the route's global limit ({} -> {}) \
                 must change on every replica at once: restart them",
                o.limit.ceiling(),
                n.limit.ceiling()
            ));
        }
    }
    if let Some((name, why)) = rebuilt.first() {
        return Err(format!(
            "routes: in distributed mode route {name} cannot take a new limiter ({why}): \
             its share of the global limit is held by the running one; restart instead"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_toml_str(&format!(
            "[[upstreams]]\nname = \"u\"\nurl = \"http://127.0.0.1:1\"\n\
             [[routes]]\nname = \"r\"\nupstream = \"u\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn listener_and_restart_only_changes_are_refused_naming_the_key() {
        let old = config("");
        let mut new = old.clone();
        new.server.listen = "127.0.0.1:9".parse().unwrap();
        let e = restart_only(&old, &new).unwrap_err();
        assert!(e.starts_with("server.listen: changed from"), "{e}");
        assert!(e.contains("needs a restart"), "{e}");
        let mut new = old.clone();
        new.server.admin = "0.0.0.0:9464".parse().unwrap();
        assert!(restart_only(&old, &new)
            .unwrap_err()
            .starts_with("server.admin:"));
        let mut new = old.clone();
        new.server.send_timeout *= 2;
        assert!(restart_only(&old, &new)
            .unwrap_err()
            .starts_with("server.send_timeout:"));
        let mut new = old.clone();
        new.events.path = Some("stdout".into());
        assert!(restart_only(&old, &new).unwrap_err().starts_with("events:"));
        let mut new = old.clone();
        new.server.tenant_header = "x-customer".into();
        new.server.retry_after_max *= 2;
        assert_eq!(restart_only(&old, &new), Ok(()));
    }

    #[test]
    fn distributed_mode_keeps_routes_and_their_global_limits() {
        let old = config("limit = { algorithm = \"fixed\", value = 10 }");
        let same = config("path_prefix = \"/api\"\nlimit = { algorithm = \"fixed\", value = 10 }");
        assert_eq!(distributed_keeps(&old, &same, &[]), Ok(()));
        let raised = config("limit = { algorithm = \"fixed\", value = 12 }");
        let e = distributed_keeps(&old, &raised, &[]).unwrap_err();
        assert!(e.starts_with("routes[0].limit:"), "{e}");
        let e = distributed_keeps(&old, &same, &[("r".into(), "x".into())]).unwrap_err();
        assert!(e.contains("route r"), "{e}");
    }
}
