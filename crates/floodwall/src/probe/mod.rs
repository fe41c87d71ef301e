//! Bottleneck probes: constraints on the limit that come from outside the
//! request stream.
//!
//! An adaptive limit learns from the requests it admits, so it only sees a
//! bottleneck once requests already suffer from it. Some bottlenecks say so
//! earlier, and directly: PostgreSQL running out of connections or piling up
//! lock waits, this process nearing its memory limit, the upstream's accept
//! queue filling. A probe reads one of them on its own interval and turns
//! the reading into a *constraint*, and each route's effective limit is the
//! minimum over its algorithm and every probe's constraint (the composite
//! bottleneck probe of the Phoenix WIP-gate article).
//!
//! - **Off the hot path.** Each probe runs on its own tokio task, one check
//!   per `interval`, each bounded by `timeout`. A request never waits for a
//!   probe: the composition ends in [`floodwall_core::Limiter::set_constraint`],
//!   one atomic store.
//! - **Hysteresis** ([`constraint`]): a saturated reading cuts the limit by
//!   `backoff`, a hard one (memory) drops it to `min_limit`, and healthy
//!   readings grow it back by ×1.2 after a `cooldown` until the algorithm's
//!   own limit is reached and the constraint is lifted.
//! - **Failure is not saturation.** The Phoenix WIP-gate article read a
//!   failed query as "saturated" and so shut off all traffic whenever its database
//!   connection blipped. Here a failing probe follows its `on_failure`
//!   policy, `ignore` by default: its constraint is lifted and it shows as
//!   failing in `/status`, metrics and one log line per change of state.
//!
//! | probe | reads | saturated when |
//! |---|---|---|
//! | [`PostgresProbe`] | `pg_stat_activity`, `max_connections` | client connections ≥ `conn_ratio` × max, or lock waits ≥ `lock_waits` |
//! | [`MemoryProbe`] | cgroup v2 `memory.current`/`memory.max`, else `VmRSS`/`max_bytes` | usage ≥ `ratio` (hard) |
//! | [`BacklogProbe`] | `rx_queue` of the LISTEN socket in `/proc/net/tcp{,6}` | accept queue ≥ `max_backlog` |
//! | [`LatencyProbe`] | each route's smoothed latency | latency > `multiplier` × learned baseline |
//! | [`GateProbe`] | each route's in flight and refusals | a route refuses, or holds `saturated_at` of its limit (flag file only: never constrains) |
//!
//! One file per kind (`postgres`, `memory`, `backlog`, `latency`, `gate`, and the
//! `flag_file` a probe may keep), then what they share: `check.rs` (what a
//! check returns), `constraint.rs` (the hysteresis), `state.rs` (the state
//! the tasks and the set share), `runner.rs` (one probe's task), `set.rs`
//! (the running set) and `snapshot.rs` (what the set shows of itself).

pub mod backlog;
mod check;
pub mod constraint;
pub mod flag_file;
pub mod gate;
pub mod latency;
pub mod memory;
pub mod postgres;
pub mod reporter;
mod runner;
mod set;
mod snapshot;
mod state;

use std::sync::Arc;

use floodwall_core::Limiter;

pub use backlog::BacklogProbe;
pub use check::{Probe, ProbeError, Reading};
pub use flag_file::FlagFile;
pub use gate::GateProbe;
pub use latency::LatencyProbe;
pub use memory::MemoryProbe;
pub use postgres::PostgresProbe;
pub use set::ProbeSet;
pub use snapshot::{FlagFileSnapshot, ProbeSnapshot, RouteConstraint};
pub use state::Health;

use crate::config::{Config, ProbeKind};

/// Starts one task per `config.probes` entry over `routes`: the name and
/// limiter of every route the probes constrain.
///
/// Call it once the routes are built, inside the runtime; stop the tasks
/// with [`ProbeSet::stop`] at shutdown. With no probes configured it starts
/// nothing and the set reports nothing. Errors only for a probe that can
/// never work here (a memory probe with no limit to measure against).
pub fn start(
    config: &Config,
    routes: Vec<(String, Arc<Limiter>)>,
) -> anyhow::Result<Arc<ProbeSet>> {
    let set = ProbeSet::new(routes.clone());
    populate(&set, config, routes)?;
    Ok(Arc::new(set))
}

/// Stops `set`'s probes and starts `config.probes` over `routes` in it (a
/// config reload; see [`ProbeSet::restart`]). Every probe is built first,
/// so one that cannot work here fails the reload before anything stops.
pub fn restart(
    set: &ProbeSet,
    config: &Config,
    routes: Vec<(String, Arc<Limiter>)>,
) -> anyhow::Result<()> {
    buildable(config)?;
    set.restart(|s| populate(s, config, routes.clone()), routes.clone())
}

/// Whether every probe of `config` can be built here, building and
/// dropping each without starting it.
pub fn buildable(config: &Config) -> anyhow::Result<()> {
    for (i, p) in config.probes.iter().enumerate() {
        let context = |e: String| anyhow::anyhow!("probes[{i}] ({}): {e}", p.name());
        match p.kind {
            ProbeKind::Postgres => drop(PostgresProbe::new(p).map_err(context)?),
            ProbeKind::Memory => drop(MemoryProbe::new(p).map_err(context)?),
            ProbeKind::Backlog => drop(p.backlog_port(&config.upstreams).map_err(context)?),
            ProbeKind::Latency | ProbeKind::Gate => {}
        }
    }
    Ok(())
}

fn populate(
    set: &ProbeSet,
    config: &Config,
    routes: Vec<(String, Arc<Limiter>)>,
) -> anyhow::Result<()> {
    for (i, p) in config.probes.iter().enumerate() {
        let context = |e: String| anyhow::anyhow!("probes[{i}] ({}): {e}", p.name());
        match p.kind {
            ProbeKind::Postgres => set.add(p, PostgresProbe::new(p).map_err(context)?),
            ProbeKind::Memory => set.add(p, MemoryProbe::new(p).map_err(context)?),
            ProbeKind::Backlog => {
                let port = p.backlog_port(&config.upstreams).map_err(context)?;
                set.add(p, BacklogProbe::new(p, port))
            }
            ProbeKind::Latency => set.add(p, LatencyProbe::new(p, routes.clone())),
            ProbeKind::Gate => set.add(p, GateProbe::new(p, routes.clone())),
        }
    }
    Ok(())
}
