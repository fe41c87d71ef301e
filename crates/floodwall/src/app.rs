//! Start-up, in one readable order: routes → distributed → probes →
//! listeners. Everything per route is built here, with the route, and
//! handed to whoever needs it; nothing is looked up by name later (a
//! reload, `reload.rs`, hands the kept parts to the routes it rebuilds).

use crate::admin::auth::Auth;
use crate::admin::history::History;
use crate::admin::Admin;
use crate::config::Config;
use crate::distributed::Distributed;
use crate::events::Events;
use crate::probe::{self, ProbeSet};
use crate::proxy::{Proxy, Route, Router, Upstream};
use crate::reload::{LoadFn, Parts, Reloader};
use crate::server::{self, Listeners, Serving};
use crate::state;
use crate::tls::TlsListener;
use floodwall_core::MonotonicClock;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A started floodwall: its bound addresses and the handle to stop it.
#[derive(Debug)]
pub struct Running {
    /// Where the proxy listens (useful with port 0).
    pub proxy_addr: SocketAddr,
    /// Where the admin endpoints listen.
    pub admin_addr: SocketAddr,
    /// The proxy state, for in-process inspection.
    pub proxy: Arc<Proxy>,
    /// The bottleneck probes (`[[probes]]`), for in-process inspection.
    pub probes: Arc<ProbeSet>,
    /// The admin endpoints' state, for in-process inspection.
    pub admin: Arc<Admin>,
    distributed: Option<Arc<Distributed>>,
    tls: Option<Arc<TlsListener>>,
    reloader: Arc<Reloader>,
    history: tokio::task::JoinHandle<()>,
    /// `server.state_file` and the task that writes it every 5 s.
    state: Option<(std::path::PathBuf, tokio::task::JoinHandle<()>)>,
    serving: Serving,
}

impl Running {
    /// Re-reads the config file and applies it, or changes nothing and
    /// says why (what `floodwall serve` does on SIGHUP, with
    /// [`Running::reload_tls`], and `POST /reload`); see [`crate::reload`].
    pub fn reload(&self) -> Result<Vec<String>, crate::admin::reload::ReloadError> {
        self.reloader.reload()
    }

    /// Re-reads `server.tls.cert` and `server.tls.key` (what `floodwall
    /// serve` does on SIGHUP): new handshakes get the new certificate,
    /// connections already up keep theirs. If the files do not load, the
    /// current certificate stays and the error, naming the key, is logged
    /// and returned. Without `server.tls` there is nothing to reload: `Ok`.
    pub fn reload_tls(&self) -> Result<(), String> {
        match &self.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }

    /// Begins a graceful shutdown and waits for it: stop accepting, let
    /// admitted requests finish within the drain timeout, close the admin
    /// listener last; then stop the probes (lowering their flag files) and
    /// leave the global limits.
    pub async fn shutdown(self) {
        self.history.abort();
        if let Some((_, saver)) = &self.state {
            saver.abort();
        }
        self.serving.shutdown().await;
        // Written once more now the last request has finished, so a
        // restart starts from everything this process learned.
        if let Some((path, _)) = &self.state {
            match state::save(path, &self.proxy) {
                Ok(()) => tracing::info!(file = %path.display(), "state file written"),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot write the state file")
                }
            }
        }
        self.probes.stop().await;
        if let Some(d) = &self.distributed {
            d.stop().await;
        }
    }
}

/// Starts a floodwall for `config`: the same start-up as `floodwall serve`.
/// Returns once both listeners are bound, so the addresses are usable
/// immediately. Must be called inside a tokio runtime. There is no file
/// to reload from; see [`start_reloadable`].
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_reloadable(config, None).await
}

/// [`start`], with `load` to read the config again on a reload (the file
/// and the same flags: `floodwall serve --config`).
pub async fn start_reloadable(
    config: Config,
    load: Option<Box<LoadFn>>,
) -> anyhow::Result<Running> {
    config.validate()?;
    let tokens = config.admin.tokens()?;
    let clock = Arc::new(MonotonicClock::new());

    // 1. Routes, each built with everything it owns: its limiter, its
    //    upstream's pooled client, and in distributed mode its handle on
    //    its part of the global limit (the client connects lazily).
    // The decision log first: upstreams' breakers write to it too.
    let events = Arc::new(Events::start(&config.events, config.server.worker_count())?);
    let upstreams: HashMap<String, Arc<Upstream>> = config
        .upstreams
        .iter()
        .map(|u| {
            Ok((
                u.name.clone(),
                Arc::new(Upstream::new(
                    u,
                    config.server.worker_count(),
                    clock.clone(),
                    config.upstream_ceiling(&u.name),
                    &events,
                )?),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut distributed = config.store.as_ref().map(Distributed::new).transpose()?;
    let mut routes = Vec::with_capacity(config.routes.len());
    for (i, rc) in config.routes.iter().enumerate() {
        let limiter = Route::limiter(&config, i, clock.clone())?;
        let global = distributed
            .as_mut()
            .map(|d| d.join(rc, limiter.limiter.clone()));
        let upstream = upstreams
            .get(rc.upstream.as_str())
            .ok_or_else(|| {
                anyhow::anyhow!("routes[{i}].upstream: no upstream named {:?}", rc.upstream)
            })?
            .clone();
        routes.push(Arc::new(Route::new(
            &config,
            rc,
            limiter,
            upstream,
            global,
            clock.clone(),
        )?));
    }
    let proxy = Arc::new(Proxy::new(
        Router::new(&config, routes)?,
        config.server.upload_limits(),
        config.server.response_limits(),
        events,
    ));
    let routes = proxy.router.routes();

    // 1a. A warm start: each route resumes from what the last process
    //     learned, if `server.state_file` has it (`state.rs`).
    if let Some(path) = &config.server.state_file {
        state::check_writable(path)?;
        state::restore(&config, &routes);
    }

    // 1b. A `dns` upstream's first answer, so the first requests find its
    //     members (bounded by the resolver's timeout; a failure starts
    //     with none and keeps resolving).
    for up in upstreams.values() {
        up.endpoints.ready().await;
    }

    // 2. Distributed mode, before any listener: the first renewal sets
    //    every route's share, so nothing is admitted beyond what this
    //    replica holds.
    let distributed = distributed.map(Arc::new);
    if let Some(d) = &distributed {
        d.start().await;
    }

    // 3. Probes, given the limiters of the routes they constrain.
    let probes = probe::start(
        &config,
        routes
            .iter()
            .map(|r| (r.name.clone(), r.limiter.clone()))
            .collect(),
    )?;

    // 4. Listeners: the proxy (with TLS if `server.tls`), and the admin
    //    endpoints, which hold what they show.
    let tls = config
        .server
        .tls
        .as_ref()
        .map(|t| TlsListener::new(t, config.server.header_read_timeout).map(Arc::new))
        .transpose()?;
    let listeners = Listeners::bind(&config.server).await?;
    let (proxy_addr, admin_addr) = listeners.addrs()?;
    let draining = Arc::new(AtomicBool::new(false));
    let auth = Arc::new(Auth::new(tokens));
    if !config.server.admin.ip().is_loopback() && !auth.reads_protected() {
        tracing::warn!(admin = %config.server.admin, "the admin port is not on loopback and reads need no token: set admin.read_token_file");
    }
    let server_config = config.server.clone();
    let reloader = Arc::new(Reloader::new(
        config,
        Parts {
            proxy: proxy.clone(),
            probes: probes.clone(),
            distributed: distributed.clone(),
            auth: auth.clone(),
            clock,
            upstreams,
        },
        load,
    ));
    let admin = Arc::new(Admin {
        proxy: proxy.clone(),
        unrouted: proxy.unrouted.clone(),
        probes: probes.clone(),
        distributed: distributed.clone(),
        draining: draining.clone(),
        connections: listeners.connections(),
        auth,
        history: Arc::new(History::new()),
        reloads: reloader.stats(),
        reload: {
            let reloader = reloader.clone();
            Arc::new(move || reloader.reload())
        },
    });
    // 5. The history the status page charts: one point a second.
    let history = tokio::spawn({
        let admin = admin.clone();
        async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                admin.sample_history();
            }
        }
    });
    let state = server_config
        .state_file
        .clone()
        .map(|path| (path.clone(), state::spawn_saver(path, proxy.clone())));
    let serving = server::serve(
        listeners,
        proxy.clone(),
        admin.clone(),
        draining,
        tls.clone(),
        &server_config,
    );
    tracing::info!(%proxy_addr, %admin_addr, tls = tls.is_some(), "floodwall listening");
    Ok(Running {
        proxy_addr,
        admin_addr,
        proxy,
        probes,
        admin,
        distributed,
        tls,
        reloader,
        history,
        state,
        serving,
    })
}
