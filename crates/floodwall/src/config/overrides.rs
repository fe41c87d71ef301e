//! Command-line flags that win over the file.

use std::net::SocketAddr;

use super::error::ConfigError;
use super::file::Config;
use super::limit::{check_limit, LimitConfig};
use super::store::{StoreConfig, StoreMode};
use super::upstream;

/// Command-line flags that override the config file. `None` leaves the
/// file's value alone; flags always win over the file, so an operator can
/// move a listener or lower a limit without editing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--listen`: replaces `server.listen`.
    pub listen: Option<SocketAddr>,
    /// `--admin`: replaces `server.admin`.
    pub admin: Option<SocketAddr>,
    /// `--upstream`: replaces the url of the only upstream. A file with
    /// several upstreams is refused, since the flag cannot say which.
    pub upstream: Option<http::Uri>,
    /// `--limit`: sets every route's limit to a fixed limit of this value.
    pub limit: Option<usize>,
    /// `--algorithm`: sets every route's limit algorithm, keeping the
    /// file's keys when the route already uses that algorithm. Cannot be
    /// combined with `--limit` unless it is `fixed`.
    pub algorithm: Option<String>,
    /// `--store`: replaces `store.url`, adding a `[store]` section with
    /// defaults when the file has none. Every route's limit then becomes a
    /// global limit shared by the replicas.
    pub store: Option<String>,
    /// `--store-mode`: replaces `store.mode`; needs a store from the file or
    /// `--store`.
    pub store_mode: Option<StoreMode>,
    /// `--shadow`: every route in shadow mode (decisions computed and
    /// counted, nothing refused), whatever its `mode`.
    pub shadow: bool,
    /// `--state-file`: replaces `server.state_file`.
    pub state_file: Option<std::path::PathBuf>,
}

impl Config {
    /// Applies command-line overrides, then validates the result.
    ///
    /// Errors caused by a flag's own value (an `ftp://` upstream, a limit
    /// of 0) name the flag, not the key it replaced. On error `self` is left
    /// unchanged.
    pub fn apply_overrides(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        let mut next = self.clone();
        next.apply_unchecked(o)?;
        next.validate()?;
        *self = next;
        Ok(())
    }

    fn apply_unchecked(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        if let Some(listen) = o.listen {
            self.server.listen = listen;
        }
        if let Some(admin) = o.admin {
            self.server.admin = admin;
        }
        if let Some(path) = &o.state_file {
            self.server.state_file = Some(path.clone());
        }
        if o.shadow {
            for r in &mut self.routes {
                r.mode = super::resilience::RouteMode::Shadow;
            }
        }
        if let Some(url) = &o.upstream {
            upstream::check_url(url).map_err(|message| ConfigError::Flag {
                flag: "--upstream",
                message,
            })?;
            match self.upstreams.as_mut_slice() {
                [only] => {
                    only.url = Some(url.clone());
                    only.endpoints.clear();
                }
                many => {
                    return Err(ConfigError::Flag {
                        flag: "--upstream",
                        message: format!(
                            "can only replace the url of a config with exactly one upstream \
                             (this one has {}); edit the file instead",
                            many.len()
                        ),
                    })
                }
            }
        }
        if let Some(name) = &o.algorithm {
            let Some(fresh) = LimitConfig::named(name) else {
                return Err(ConfigError::Flag {
                    flag: "--algorithm",
                    message: format!(
                        "unknown algorithm {name:?} (known: fixed, aimd, gradient, vegas, wip)"
                    ),
                });
            };
            if o.limit.is_some() && name != "fixed" {
                return Err(ConfigError::Flag {
                    flag: "--limit",
                    message: format!(
                        "pins a fixed limit; it cannot be combined with --algorithm {name}"
                    ),
                });
            }
            for route in &mut self.routes {
                if route.limit.algorithm() != name {
                    route.limit = fresh.clone();
                }
            }
        }
        if let Some(value) = o.limit {
            check_limit(value).map_err(|message| ConfigError::Flag {
                flag: "--limit",
                message,
            })?;
            for route in &mut self.routes {
                route.limit = LimitConfig::Fixed { value };
            }
        }
        if let Some(url) = &o.store {
            match &mut self.store {
                Some(s) => s.url = url.clone(),
                None => self.store = Some(StoreConfig::new(url.clone())),
            }
        }
        if let Some(mode) = o.store_mode {
            match &mut self.store {
                Some(s) => s.mode = mode,
                None => {
                    return Err(ConfigError::Flag {
                        flag: "--store-mode",
                        message: "needs a store: pass --store URL or add a [store] section".into(),
                    })
                }
            }
        }
        Ok(())
    }
}
