//! The TOML config file: plain serde structs, their defaults, and validation
//! whose errors name the offending key.
//!
//! The file is read in three steps, each in its own place:
//!
//! 1. **Parse** ([`Config::from_toml_str`], [`Config::load`]): serde with
//!    `deny_unknown_fields`, so a misspelt key is an error with a line and
//!    column instead of a silently ignored setting. Every optional key has a
//!    default, so a minimal file is one upstream and one route.
//! 2. **Override** ([`Config::apply_overrides`]): command-line flags win over
//!    the file, so an operator can move a listener or lower a limit without
//!    editing it.
//! 3. **Validate** ([`Config::validate`]): cross-references (a route's
//!    upstream, a class name) and ranges that serde cannot express. Parsing and
//!    overriding both end by validating, so a `Config` you got from them is
//!    ready to serve.
//!
//! Every key is documented, with its default and why you would change it, in
//! `docs/config.md`.

mod class;
mod error;
mod limit;
mod overrides;
pub mod probe;
mod route;
mod server;
mod store;
mod upstream;
mod validate;

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

pub use class::ClassConfig;
pub use error::ConfigError;
pub use overrides::Overrides;
pub use probe::{FailurePolicy, ProbeConfig, ProbeKind};
pub use route::{AdaptiveConfig, LimitConfig, QueueConfig, QueueOrder, RouteConfig, TenantConfig};
pub use server::{LogConfig, LogFormat, ServerConfig};
pub use store::{StoreConfig, StoreFailure, StoreMode};
pub use upstream::UpstreamConfig;

/// The whole config file: where floodwall listens, which upstreams it
/// protects, and how each route admits requests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners, request headers and timeouts of the proxy itself
    /// (`[server]`).
    #[serde(default)]
    pub server: ServerConfig,
    /// Log level and format (`[log]`).
    #[serde(default)]
    pub log: LogConfig,
    /// Priority classes (`[[classes]]`), highest priority first. When the
    /// limit is tight, a class's `reserved` share is kept free for it, so
    /// interactive traffic is not starved by batch jobs.
    #[serde(default = "class::default_classes")]
    pub classes: Vec<ClassConfig>,
    /// The backends floodwall protects (`[[upstreams]]`); at least one.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// How requests are matched to an upstream and admitted (`[[routes]]`);
    /// at least one. The first route that matches a request wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Bottleneck probes (`[[probes]]`): constraints on every route's limit
    /// that come from outside the request stream. None by default.
    #[serde(default)]
    pub probes: Vec<ProbeConfig>,
    /// Distributed mode (`[store]`): every route's limit becomes a global
    /// limit shared through Redis by all replicas with the same store and
    /// route name. Absent by default (each replica limits alone).
    #[serde(default)]
    pub store: Option<StoreConfig>,
}

impl Config {
    /// Parses a config from TOML text and validates it.
    ///
    /// Use [`Config::load`] for a file: its errors also name the file.
    pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(s).map_err(|error| ConfigError::Parse { path: None, error })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the config file at `path`.
    ///
    /// Every error names `path`, so `floodwall check FILE` and a failed
    /// start both say which file is wrong.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let config: Config = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: Some(path.to_path_buf()),
            error,
        })?;
        config.validate().map_err(|e| e.in_file(path))?;
        Ok(config)
    }

    /// Builds the config that `floodwall serve --listen … --upstream … --limit
    /// …` uses when no file is given: one upstream and one route, both named
    /// `default`, the route covering every path (`/`) with a fixed limit.
    /// Everything else has its default.
    ///
    /// It does not validate, because it cannot fail; call
    /// [`Config::validate`] to refuse, say, an `https://` upstream or a
    /// limit of 0.
    pub fn simple(
        listen: SocketAddr,
        upstream: http::Uri,
        limit: usize,
        admin: SocketAddr,
    ) -> Config {
        const NAME: &str = "default";
        Config {
            server: ServerConfig {
                listen,
                admin,
                ..ServerConfig::default()
            },
            log: LogConfig::default(),
            classes: class::default_classes(),
            upstreams: vec![UpstreamConfig::new(NAME, upstream)],
            routes: vec![RouteConfig {
                limit: LimitConfig::Fixed { value: limit },
                ..RouteConfig::new(NAME, NAME)
            }],
            probes: Vec::new(),
            store: None,
        }
    }

    /// The config `floodwall serve --upstream URL [--limit N]` runs without a
    /// file: [`Config::simple`] with a fixed limit of N, or, when no limit
    /// is given, the default adaptive limit, so there is nothing to tune by
    /// hand. The one place that decides "no limit means adaptive"; the CLI
    /// and the bench kit's in-process floodwall both build on it.
    pub fn for_upstream(
        listen: SocketAddr,
        upstream: http::Uri,
        limit: Option<usize>,
        admin: SocketAddr,
    ) -> Config {
        let mut config = Config::simple(listen, upstream, limit.unwrap_or(64), admin);
        if limit.is_none() {
            config.routes[0].limit = LimitConfig::default();
        }
        config
    }
}
