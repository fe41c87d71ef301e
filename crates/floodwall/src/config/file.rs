//! [`Config`]: the whole file, and how it is read.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use super::admin::AdminConfig;
use super::class::{self, ClassConfig};
use super::error::ConfigError;
use super::events::EventsConfig;
use super::limit::LimitConfig;
use super::probe::ProbeConfig;
use super::route::RouteConfig;
use super::server::{LogConfig, ServerConfig};
use super::store::StoreConfig;
use super::upstream::UpstreamConfig;

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
    /// The decision log (`[events]`): one JSON line per decision, off
    /// unless a path is given.
    #[serde(default)]
    pub events: EventsConfig,
    /// Who may use the admin port (`[admin]`): the tokens of mutating
    /// endpoints and, optionally, of reads.
    #[serde(default)]
    pub admin: AdminConfig,
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
    /// What a bulkhead `quota` on upstream `name` is a fraction of: the
    /// limit ceilings (a fixed limit's value, an adaptive one's max) of
    /// every route that forwards to it, summed.
    pub fn upstream_ceiling(&self, name: &str) -> usize {
        self.routes
            .iter()
            .filter(|r| r.upstream == name)
            .map(|r| r.limit.ceiling())
            .sum()
    }

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
    /// [`Config::validate`] to refuse, say, an `ftp://` upstream or a
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
            events: EventsConfig::default(),
            admin: AdminConfig::default(),
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
