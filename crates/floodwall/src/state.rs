//! The state file (`server.state_file`): what each route's adaptive limit
//! has learned, kept across restarts.
//!
//! A restart forgets the limit and the baseline. Into steady traffic the
//! cold start costs nothing (its first measurement runs at the traffic's
//! own concurrency), but into a spike that measurement finds the limit
//! full and falls back to one pinned at the floor, and slow start climbs
//! from there: a second or two of refusals the previous process had
//! stopped making long ago. Envoy's adaptive concurrency filter has the
//! same gap and no way around it (Envoy #16392).
//!
//! So every 5 s, and once more at shutdown after the last request
//! finished, each adaptive route's [`Learned`] state is written here, by
//! route name; at start, a route whose name, algorithm and upstream match
//! an entry starts from it ([`Limiter::warm_start`]). The file is written
//! to a temporary name and renamed over the old one, so a crash mid-write
//! leaves the last good file. A file that is missing, unreadable, older
//! than `server.state_max_age`, or from another version is logged and
//! ignored: a restart is never stopped by the state it would have used,
//! it only starts cold.
//!
//! Reloads do not come through here: a reload keeps each limiter that can
//! carry (`reload.rs`).

use crate::config::Config;
use crate::proxy::{Proxy, Route};
use floodwall_core::{Learned, Limiter};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the state is written while serving.
pub const SAVE_EVERY: Duration = Duration::from_secs(5);

/// The file format's version; a file of another is ignored.
const VERSION: u32 = 1;

/// A file larger than this is not a state file: 200 samples a route make a
/// few kilobytes, so this allows thousands of routes.
const MAX_BYTES: u64 = 16 << 20;

/// The longest baseline sample taken from a file: anything longer was not
/// written by floodwall.
const MAX_SAMPLE: Duration = Duration::from_secs(3600);

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    /// When it was written, in milliseconds since the Unix epoch.
    written_ms: u64,
    routes: Vec<RouteState>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteState {
    route: String,
    upstream: String,
    algorithm: String,
    limit: f64,
    /// The pooled baseline probe samples, oldest first, in nanoseconds.
    baseline_ns: Vec<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Checks at start that `path` can be written (its directory exists and is
/// writable), so a typo fails the start instead of every save after it.
pub fn check_writable(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        anyhow::bail!(
            "server.state_file: {} is a directory; name a file in it",
            path.display()
        );
    }
    let tmp = temp_path(path);
    std::fs::write(&tmp, b"")
        .and_then(|()| std::fs::remove_file(&tmp))
        .map_err(|e| {
            anyhow::anyhow!(
                "server.state_file: cannot write next to {}: {e}",
                path.display()
            )
        })
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Reads `config.server.state_file`, if set, and warm-starts every route
/// of `routes` it has a matching entry for. Returns the names of the
/// routes warmed. Never fails: what cannot be used is logged.
pub fn restore(config: &Config, routes: &[Arc<Route>]) -> Vec<String> {
    let Some(path) = &config.server.state_file else {
        return Vec::new();
    };
    let file = match read(path, config.server.state_max_age) {
        Ok(Some(f)) => f,
        Ok(None) => return Vec::new(),
        Err(why) => {
            tracing::warn!(file = %path.display(), "state file not used, every route starts cold: {why}");
            return Vec::new();
        }
    };
    let mut warmed = Vec::new();
    for route in routes {
        let Some(entry) = file.routes.iter().find(|e| e.route == route.name) else {
            continue;
        };
        match warm(&route.limiter, &route.upstream.name, entry) {
            Ok(()) => {
                tracing::info!(
                    route = %route.name,
                    limit = entry.limit,
                    samples = entry.baseline_ns.len(),
                    "warm start from the state file"
                );
                warmed.push(route.name.clone());
            }
            Err(why) => tracing::info!(route = %route.name, "starts cold: {why}"),
        }
    }
    warmed
}

/// The file at `path`, if there is one young enough to use.
fn read(path: &Path, max_age: Duration) -> Result<Option<File>, String> {
    let text = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(file = %path.display(), "no state file yet: every route starts cold");
            return Ok(None);
        }
        Err(e) => return Err(e.to_string()),
        Ok(m) if m.len() > MAX_BYTES => {
            return Err(format!("{} bytes, more than a state file holds", m.len()))
        }
        Ok(_) => std::fs::read_to_string(path).map_err(|e| e.to_string())?,
    };
    let file: File = serde_json::from_str(&text).map_err(|e| format!("not a state file: {e}"))?;
    if file.version != VERSION {
        return Err(format!(
            "version {}, this floodwall reads {VERSION}",
            file.version
        ));
    }
    let age = Duration::from_millis(now_ms().saturating_sub(file.written_ms));
    if age > max_age {
        tracing::info!(
            file = %path.display(),
            age_s = age.as_secs(),
            "state file older than server.state_max_age: every route starts cold"
        );
        return Ok(None);
    }
    Ok(Some(file))
}

/// Warm-starts `limiter` from `entry`, or says why not.
fn warm(limiter: &Arc<Limiter>, upstream: &str, entry: &RouteState) -> Result<(), String> {
    if entry.upstream != upstream {
        return Err(format!(
            "its upstream is now {upstream:?}, the state was learned in front of {:?}",
            entry.upstream
        ));
    }
    if !entry.limit.is_finite() || entry.limit < 1.0 {
        return Err(format!("the saved limit {} is not a limit", entry.limit));
    }
    if entry
        .baseline_ns
        .iter()
        .any(|n| *n == 0 || Duration::from_nanos(*n) > MAX_SAMPLE)
    {
        return Err("a saved baseline sample is zero or over an hour".into());
    }
    let learned = Learned {
        algorithm: entry.algorithm.clone(),
        limit: entry.limit,
        baseline: entry
            .baseline_ns
            .iter()
            .map(|n| Duration::from_nanos(*n))
            .collect(),
    };
    if limiter.warm_start(&learned) {
        Ok(())
    } else {
        Err(format!(
            "the state is for algorithm {:?} (or has no baseline); this route runs {:?}",
            entry.algorithm,
            limiter.snapshot().algorithm
        ))
    }
}

/// Writes the learned state of every route of `proxy` to `path`, through
/// a temporary file renamed over the old one.
pub fn save(path: &Path, proxy: &Proxy) -> std::io::Result<()> {
    let routes = proxy
        .router
        .routes()
        .iter()
        .filter_map(|r| {
            let l = r.limiter.learned()?;
            Some(RouteState {
                route: r.name.clone(),
                upstream: r.upstream.name.clone(),
                algorithm: l.algorithm,
                limit: l.limit,
                baseline_ns: l
                    .baseline
                    .iter()
                    .map(|d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
                    .collect(),
            })
        })
        .collect();
    let file = File {
        version: VERSION,
        written_ms: now_ms(),
        routes,
    };
    let text = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
    let tmp = temp_path(path);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Saves every [`SAVE_EVERY`] until aborted. A failed save is logged once,
/// and again when saving works again, not every 5 s.
pub fn spawn_saver(path: PathBuf, proxy: Arc<Proxy>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut failing = false;
        loop {
            tick.tick().await;
            let (p, px) = (path.clone(), proxy.clone());
            let result = tokio::task::spawn_blocking(move || save(&p, &px))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match result {
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(file = %path.display(), error = %e, "cannot write the state file; will keep trying");
                }
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(file = %path.display(), "the state file is written again");
                }
                _ => {}
            }
        }
    })
}
