//! The one in-process floodwall: every use of the `floodwall` library by the
//! bench kit lives in this file.
//!
//! The demo and every bench scenario start floodwall the same way, through
//! [`Gateway::start`]: the config `floodwall serve --upstream URL [--limit N]
//! [--algorithm NAME]` would run (built by the gateway's own
//! [`Config::for_upstream`] and [`Config::apply_overrides`], so "no limit
//! means adaptive" is decided in one place, the gateway), started with the
//! gateway's own start function on loopback ports the OS picks. Keeping the
//! library's API in one file means a change to it is fixed here and nowhere
//! else in the kit.

use floodwall::app::{self, Running};
use floodwall::config::{Config, Overrides};
use floodwall_core::Limiter;
use http::Uri;
use std::net::SocketAddr;
use std::sync::Arc;

/// The header in which floodwall's refusals carry their precise retry hint
/// in milliseconds; the load generator's retrying clients read it.
pub use floodwall::proxy::respond::RETRY_AFTER_MS_HEADER;

/// How to start an in-process floodwall: the `floodwall serve` flags the
/// bench varies, plus the config keys some scenarios and commands set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayOptions {
    /// `--limit N`: a fixed limit. `None` is what `floodwall serve` runs
    /// without `--limit`: the default adaptive limit, not told the
    /// backend's capacity.
    pub limit: Option<usize>,
    /// `--algorithm NAME`: an adaptive algorithm's default settings instead
    /// of the default one. Cannot be combined with `limit` unless `fixed`.
    pub algorithm: Option<String>,
    /// The upstream's `pool_max_idle_per_host`. The bench raises it: its
    /// clients give up after their own timeout, and the upstream should take
    /// as long as it takes, like a real deployment with a generous pool.
    pub pool_max_idle_per_host: Option<usize>,
    /// A `[routes.retry_budget]` at its defaults on the route: retries
    /// (the load generator marks them `X-Retry-Attempt`) past 0.2 of first
    /// attempts plus 10/s are refused.
    pub retry_budget: bool,
    /// The route in shadow mode (`mode = "shadow"`): decisions computed,
    /// counted and logged, nothing refused.
    pub shadow: bool,
    /// `[events] path`: the decision log, for `floodwall tune`.
    pub events: Option<std::path::PathBuf>,
    /// `--state-file`: a warm start from what an earlier gateway learned,
    /// and written at [`Gateway::stop`] for the next.
    pub state_file: Option<std::path::PathBuf>,
}

/// The limit algorithm `floodwall serve --upstream URL` runs when told
/// nothing, as the gateway's own config decides it.
pub fn default_algorithm() -> &'static str {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let upstream = Uri::from_static("http://127.0.0.1:1");
    Config::for_upstream(loopback, upstream, None, loopback).routes[0]
        .limit
        .algorithm()
}

/// A running in-process floodwall in front of one upstream.
pub struct Gateway {
    running: Running,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("proxy_addr", &self.running.proxy_addr)
            .field("admin_addr", &self.running.admin_addr)
            .finish()
    }
}

impl Gateway {
    /// Starts floodwall proxying to `upstream` on a loopback port chosen by
    /// the OS, with the config `floodwall serve` would build from the same
    /// flags.
    pub async fn start(upstream: &Uri, options: &GatewayOptions) -> anyhow::Result<Gateway> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = Config::for_upstream(loopback, upstream.clone(), options.limit, loopback);
        config.apply_overrides(&Overrides {
            algorithm: options.algorithm.clone(),
            state_file: options.state_file.clone(),
            ..Overrides::default()
        })?;
        if options.retry_budget {
            config.routes[0].retry_budget = Some(floodwall::config::RetryBudgetKeys::default());
        }
        if options.shadow {
            config.routes[0].mode = floodwall::config::RouteMode::Shadow;
        }
        if let Some(path) = &options.events {
            config.events.path = Some(path.display().to_string());
        }
        if let Some(pool) = options.pool_max_idle_per_host {
            config.upstreams[0].pool_max_idle_per_host = pool;
        }
        let running = app::start(config).await?;
        Ok(Gateway { running })
    }

    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        self.running.proxy_addr
    }

    /// The only route's limiter, to sample its limit during a run.
    pub fn limiter(&self) -> Option<Arc<Limiter>> {
        self.running
            .proxy
            .router
            .routes()
            .first()
            .map(|route| route.limiter.clone())
    }

    /// Shuts the proxy down gracefully and frees its ports.
    pub async fn stop(self) {
        self.running.shutdown().await;
    }
}

/// The replica-side arithmetic of distributed mode (fair shares, demand,
/// join ramp, failure shares), for the lease simulation (`sim.rs`), which
/// must run the very code the gateway runs.
pub use floodwall::distributed::share;

/// `store.on_store_failure`, which [`share::failure_share`] takes.
pub use floodwall::config::StoreFailure;
