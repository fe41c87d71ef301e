//! Distributed mode with a real redis-server and real floodwall processes:
//! the global limit holds across replicas (lease and strict), a killed
//! replica's slots come back within the documented bound, a Redis outage
//! causes no spike of refusals, a joining replica gets a share without
//! breaking the limit, hostile tenant ids cost no memory, a graceful stop
//! returns the share at once, and a slow (paused) Redis never stalls a
//! request.
//!
//! Needs redis-server and redis-cli (`scripts/install-deps.sh`).

mod common;
mod redis;

use common::{promtool_check, spawn_binary, status, temp_file, Binary, Client, Upstream};
use floodwall::config::{Config, Overrides, StoreMode};
use redis::{Cluster, Redis, Sentinels, Store};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

const GLOBAL: usize = 12;
const LEASE_TTL: Duration = Duration::from_secs(1);
const RENEW: Duration = Duration::from_millis(100);
/// Scheduling margin on top of documented bounds: two shared cores, debug
/// builds, several processes.
const MARGIN: Duration = Duration::from_millis(700);

fn config(upstream: &Upstream, redis: &dyn Store, mode: &str, extra: &str) -> String {
    format!(
        r#"
[log]
level = "warn"

[[upstreams]]
name = "app"
url = "{}"

[[routes]]
name = "api"
upstream = "app"
limit = {{ algorithm = "fixed", value = {GLOBAL} }}
{extra}

[store]
url = "{}"
mode = "{mode}"
lease_ttl = "1s"
renew_interval = "100ms"
timeout = "50ms"
join_ramp = "1s"
"#,
        upstream.uri(),
        redis.url()
    )
}

fn replica(file: &std::path::Path) -> Binary {
    spawn_binary(&[
        "--config",
        file.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ])
}

fn replicas(tag: &str, text: &str, n: usize) -> (std::path::PathBuf, Vec<Binary>) {
    let file = temp_file(tag, text);
    let bins = (0..n).map(|_| replica(&file)).collect();
    (file, bins)
}

async fn store_status(admin: SocketAddr) -> Value {
    status(admin).await["store"].clone()
}

fn route0(s: &Value) -> &Value {
    &s["routes"][0]
}

/// Failed or late Redis calls (`floodwall_store_errors_total`) over these
/// replicas.
async fn store_errors(admins: &[SocketAddr]) -> f64 {
    let mut sum = 0.0;
    for a in admins {
        let m = common::metrics_text(*a).await;
        sum += m
            .lines()
            .filter(|l| l.starts_with("floodwall_store_errors_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    sum
}

/// The most `replicas` replicas may hold at the upstream in `mode`: the
/// global limit, except in strict mode once a Redis call failed or
/// outlived `store.timeout` (two shared cores under every store test at
/// once are enough): then docs/config.md's bound for a Redis that answers
/// some calls and not others, `global + replicas × max(1, ⌊global ÷
/// replicas⌋)`.
fn bound(mode: &str, errors: f64, replicas: usize) -> usize {
    if mode == "strict" && errors > 0.0 {
        GLOBAL + replicas * (GLOBAL / replicas).max(1)
    } else {
        GLOBAL
    }
}

/// Waits until every replica is up and sees `n` members.
async fn converged(bins: &[&Binary], n: usize) -> Duration {
    converged_at(bins.iter().map(|b| b.admin).collect(), n).await
}

/// Waits until the replicas with these admin addresses are all up and see
/// `n` members on every route.
async fn converged_at(admins: Vec<SocketAddr>, n: usize) -> Duration {
    common::wait_until(Duration::from_secs(10), "replicas converge", || {
        let admins = admins.clone();
        async move {
            for a in admins {
                let s = store_status(a).await;
                let routes = s["routes"].as_array().cloned().unwrap_or_default();
                if s["state"] != "up"
                    || routes.is_empty()
                    || routes.iter().any(|r| r["replicas"] != n)
                {
                    return false;
                }
            }
            true
        }
    })
    .await
}

async fn share_of(b: &Binary) -> usize {
    route0(&store_status(b.admin).await)["share"]
        .as_u64()
        .unwrap_or(GLOBAL as u64) as usize
}

/// Closed-loop clients spread round-robin over a changeable set of
/// replicas, counting 200s, refusals (503) and connection failures. A
/// refused client waits 20 ms before trying again, so the load stays
/// above the limit without burning the two shared cores.
struct Load {
    ok: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    reasons: Arc<Mutex<std::collections::HashMap<String, u64>>>,
    targets: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Which tenant a [`Load`]'s requests come from.
#[derive(Debug, Clone)]
enum Tenant {
    /// No tenant header.
    None,
    /// A new random id per request (hostile clients).
    Random,
    /// This one.
    Fixed(String),
}

#[derive(Debug, Clone, Copy)]
struct Counts {
    ok: u64,
    refused: u64,
    failed: u64,
}

impl Counts {
    fn minus(self, o: Counts) -> Counts {
        Counts {
            ok: self.ok - o.ok,
            refused: self.refused - o.refused,
            failed: self.failed - o.failed,
        }
    }
    fn refused_fraction(self) -> f64 {
        self.refused as f64 / (self.ok + self.refused).max(1) as f64
    }
}

impl Load {
    fn start(targets: Vec<SocketAddr>, workers: usize, tenants: bool) -> Load {
        let tenant = if tenants {
            Tenant::Random
        } else {
            Tenant::None
        };
        Load::start_as(targets, workers, tenant, "/")
    }

    /// [`Load::start`] sending `GET path`.
    fn start_on(targets: Vec<SocketAddr>, workers: usize, tenants: bool, path: &str) -> Load {
        let tenant = if tenants {
            Tenant::Random
        } else {
            Tenant::None
        };
        Load::start_as(targets, workers, tenant, path)
    }

    /// [`Load::start`] with every request from `tenant`.
    fn start_as(targets: Vec<SocketAddr>, workers: usize, tenant: Tenant, path: &str) -> Load {
        let load = Load {
            ok: Arc::default(),
            refused: Arc::default(),
            failed: Arc::default(),
            reasons: Arc::default(),
            targets: Arc::new(Mutex::new(targets)),
            stop: Arc::default(),
            tasks: Vec::new(),
        };
        let client = Arc::new(Client::http1());
        let next = Arc::new(AtomicUsize::new(0));
        let tasks = (0..workers)
            .map(|_| {
                let (ok, refused, failed, reasons) = (
                    load.ok.clone(),
                    load.refused.clone(),
                    load.failed.clone(),
                    load.reasons.clone(),
                );
                let (targets, stop, client, next, path, tenant) = (
                    load.targets.clone(),
                    load.stop.clone(),
                    client.clone(),
                    next.clone(),
                    path.to_owned(),
                    tenant.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let addr = {
                            let t = targets.lock().unwrap();
                            t[next.fetch_add(1, Ordering::Relaxed) % t.len()]
                        };
                        let id = match &tenant {
                            Tenant::None => None,
                            Tenant::Random => Some(format!("t{:016x}", fastrand::u64(..))),
                            Tenant::Fixed(t) => Some(t.clone()),
                        };
                        let headers: Vec<(&str, &str)> = match &id {
                            Some(id) => vec![("x-tenant-id", id.as_str())],
                            None => vec![],
                        };
                        let req = common::request(
                            http::Method::GET,
                            addr,
                            &path,
                            &headers,
                            bytes::Bytes::new(),
                        );
                        match client.try_send(req).await {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                let reason = r.reason().unwrap_or("none").to_owned();
                                *reasons.lock().unwrap().entry(reason).or_default() += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Load { tasks, ..load }
    }

    fn set_targets(&self, t: Vec<SocketAddr>) {
        *self.targets.lock().unwrap() = t;
    }

    fn counts(&self) -> Counts {
        Counts {
            ok: self.ok.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    async fn stop(self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        Counts {
            ok: self.ok.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

async fn sleep(d: Duration) {
    tokio::time::sleep(d).await
}

async fn global_limit_holds(mode: &str, redis: &dyn Store) -> (usize, f64, Counts) {
    let upstream = Upstream::start(Duration::from_millis(50)).await;
    let (_f, bins) = replicas(
        &format!("global-{mode}"),
        &config(&upstream, redis, mode, ""),
        3,
    );
    converged(&bins.iter().collect::<Vec<_>>(), 3).await;
    let admins: Vec<SocketAddr> = bins.iter().map(|b| b.admin).collect();
    let errors_before = store_errors(&admins).await;
    // Script calls that decide admissions: every script call but the
    // one-time `SCRIPT LOAD`s (broadcast to every primary on a cluster).
    let calls_before = redis.script_calls() - redis.script_loads();
    let admitted_before = upstream.total();
    let load = Load::start(bins.iter().map(|b| b.proxy).collect(), 30, false);
    sleep(Duration::from_secs(3)).await;
    let counts = load.stop().await;
    let calls = redis.script_calls() - redis.script_loads() - calls_before;
    let admitted = upstream.total() - admitted_before;
    let per = calls as f64 / admitted as f64;
    let errors = store_errors(&admins).await - errors_before;
    let bound = bound(mode, errors, 3);
    eprintln!(
        "{mode}: upstream peak {} of global {GLOBAL} (bound {bound}, {errors} store errors), \
         {counts:?}, {calls} script calls for {admitted} admitted = {per:.3}/request",
        upstream.peak()
    );
    assert!(
        upstream.peak() <= bound,
        "{mode}: peak {} above the bound {bound}",
        upstream.peak()
    );
    assert!(
        upstream.peak() >= GLOBAL - 2,
        "{mode}: the global limit was not used: peak {}",
        upstream.peak()
    );
    assert!(counts.refused > 0, "the load was above the limit");
    assert_eq!(counts.failed, 0);
    (upstream.peak(), per, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_holds_across_three_replicas_in_lease_mode() {
    let (_, per, _) = global_limit_holds("lease", &Redis::start()).await;
    // 3 replicas renew 10 times a second at ~240 admitted/s in this test;
    // the benchmark measures the default 200 ms at full throughput.
    assert!(per < 0.5, "lease mode should rarely call Redis: {per}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_holds_across_three_replicas_in_strict_mode() {
    strict_calls_are_per_request(global_limit_holds("strict", &Redis::start()).await);
}

fn strict_calls_are_per_request((_, per, c): (usize, f64, Counts)) {
    // One acquire and one release per admitted request, one acquire per
    // request Redis refused, and 3 replicas' heartbeats (10/s for ~5 s).
    let expected = (2 * c.ok + c.refused) as f64 / c.ok as f64;
    let heartbeats = 3.0 * 10.0 * 6.0 / c.ok as f64;
    assert!(
        per >= 2.0 && per <= expected + heartbeats,
        "strict mode: {per} calls per admitted request, expected {expected:.2} + heartbeats"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_slots_return_within_the_lease_bound() {
    killed_replica_slots_return(&Redis::start()).await;
}

async fn killed_replica_slots_return(redis: &dyn Store) {
    let upstream = Upstream::start(Duration::from_millis(50)).await;
    let (_f, mut bins) = replicas("crash", &config(&upstream, redis, "lease", ""), 3);
    converged(&bins.iter().collect::<Vec<_>>(), 3).await;
    let load = Load::start(bins.iter().map(|b| b.proxy).collect(), 30, false);
    sleep(Duration::from_millis(1500)).await;
    let victim_share = share_of(&bins[0]).await;
    assert!(victim_share > 0, "the victim held part of the limit");

    let mut victim = bins.remove(0);
    load.set_targets(bins.iter().map(|b| b.proxy).collect());
    victim.child.kill().unwrap(); // SIGKILL: no goodbye
    let killed = Instant::now();
    let _ = victim.child.wait();
    upstream.reset_peaks();
    let admins: Vec<SocketAddr> = bins.iter().map(|b| b.admin).collect();
    common::wait_until(
        Duration::from_secs(10),
        "survivors hold the whole limit",
        || {
            let admins = admins.clone();
            async move {
                let mut sum = 0;
                for a in admins {
                    sum += route0(&store_status(a).await)["share"]
                        .as_u64()
                        .unwrap_or(0);
                }
                sum == GLOBAL as u64
            }
        },
    )
    .await;
    let recovered = killed.elapsed();
    // Then the survivors actually use it.
    common::wait_until(Duration::from_secs(5), "upstream busy with 12", || async {
        upstream.current() >= GLOBAL - 1
    })
    .await;
    let used = killed.elapsed();
    sleep(Duration::from_millis(500)).await;
    let counts = load.stop().await;
    let bound = LEASE_TTL + RENEW * 2;
    eprintln!(
        "crash: victim held {victim_share}; survivors hold {GLOBAL} after {recovered:?}, \
         upstream at >= {} after {used:?} (bound {bound:?}); peak after kill {}; {counts:?}",
        GLOBAL - 1,
        upstream.peak()
    );
    assert!(
        recovered <= bound + MARGIN,
        "slots returned after {recovered:?}, documented bound {bound:?}"
    );
    assert!(upstream.peak() <= GLOBAL, "peak {}", upstream.peak());
    assert_eq!(route0(&store_status(bins[0].admin).await)["replicas"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_keeps_serving_within_shares_then_resyncs() {
    let mut redis = Redis::start();
    let upstream = Upstream::start(Duration::from_millis(50)).await;
    let (_f, bins) = replicas("outage", &config(&upstream, &redis, "lease", ""), 3);
    let all: Vec<&Binary> = bins.iter().collect();
    converged(&all, 3).await;
    let load = Load::start(bins.iter().map(|b| b.proxy).collect(), 30, false);
    sleep(Duration::from_millis(1000)).await;
    let t0 = load.counts();
    sleep(Duration::from_millis(2000)).await;
    let before = load.counts().minus(t0);

    upstream.reset_peaks();
    redis.stop();
    // Longer than the lease, so the fallback (global ÷ 3) is in force for
    // most of the window.
    let t1 = load.counts();
    sleep(Duration::from_millis(3000)).await;
    let during = load.counts().minus(t1);
    let peak_during = upstream.peak();
    for b in &bins {
        let s = store_status(b.admin).await;
        assert_eq!(s["state"], "down", "{s}");
        assert_eq!(route0(&s)["share"], GLOBAL / 3, "fallback share: {s}");
    }

    redis.restart();
    let restarted = Instant::now();
    let resync = converged(&all, 3).await;
    let _ = restarted;
    sleep(Duration::from_millis(500)).await;
    let counts = load.stop().await;
    let usage: u64 = redis
        .cli(&["HVALS", "floodwall:{api}:usage"])
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum();
    eprintln!(
        "outage: before {before:?} ({:.1}% refused), during 3 s without Redis {during:?} \
         ({:.1}% refused), peak during {peak_during}; resynced {resync:?} after restart, \
         usage in Redis {usage}; total {counts:?}",
        before.refused_fraction() * 100.0,
        during.refused_fraction() * 100.0
    );
    assert!(
        during.ok as f64 >= 0.8 * before.ok as f64 * 1.5,
        "kept serving: {} ok in 3 s vs {} in 2 s before",
        during.ok,
        before.ok
    );
    assert!(
        during.refused_fraction() <= before.refused_fraction() + 0.1,
        "no spike of refusals"
    );
    assert_eq!(during.failed, 0);
    assert!(
        peak_during <= GLOBAL,
        "fallback shares sum to the global limit"
    );
    assert!(usage <= GLOBAL as u64, "resynced usage {usage}");
    assert!(resync < Duration::from_secs(3), "resync took {resync:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_replica_gets_a_share_and_the_limit_holds() {
    joining_replica_gets_a_share(&Redis::start()).await;
}

async fn joining_replica_gets_a_share(redis: &dyn Store) {
    let upstream = Upstream::start(Duration::from_millis(50)).await;
    let (file, mut bins) = replicas("join", &config(&upstream, redis, "lease", ""), 3);
    converged(&bins.iter().collect::<Vec<_>>(), 3).await;
    let load = Load::start(bins.iter().map(|b| b.proxy).collect(), 32, false);
    sleep(Duration::from_millis(1500)).await;
    upstream.reset_peaks();
    bins.push(replica(&file));
    let joined = Instant::now();
    let first = route0(&store_status(bins[3].admin).await).clone();
    load.set_targets(bins.iter().map(|b| b.proxy).collect());
    let took = converged(&bins.iter().collect::<Vec<_>>(), 4).await;
    common::wait_until(
        Duration::from_secs(5),
        "the newcomer has a share",
        || async { share_of(&bins[3]).await >= 2 },
    )
    .await;
    let got = joined.elapsed();
    sleep(Duration::from_millis(1500)).await;
    let mut shares = Vec::new();
    for b in &bins {
        shares.push(share_of(b).await);
    }
    let counts = load.stop().await;
    eprintln!(
        "join: newcomer started with {first}, all saw 4 members after {took:?}, share >= 2 \
         after {got:?}; shares then {shares:?}; peak {}; {counts:?}",
        upstream.peak()
    );
    assert!(upstream.peak() <= GLOBAL, "peak {}", upstream.peak());
    assert!(shares.iter().sum::<usize>() <= GLOBAL, "{shares:?}");
    assert!(shares.iter().all(|&s| s >= 2), "rebalanced: {shares:?}");
    assert!(
        first["demand"].as_u64().unwrap() <= 2,
        "the newcomer ramps up: {first}"
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// How many random tenant ids the hostile test sends: 1,000,000 with
/// `FLOODWALL_HOSTILE_TENANTS=1000000`; the default keeps the test near 30 s
/// on two cores in a debug build.
/// Redis's `used_memory` less its replication backlog, which fills with the
/// write stream (up to `repl-backlog-size`, 1 MiB) whatever the writes are:
/// 205 KB of a 280 KB growth over 60,000 requests, with 3 keys throughout.
fn memory_but_backlog(redis: &Redis) -> u64 {
    let used: u64 = redis
        .info("memory", "used_memory")
        .unwrap()
        .parse()
        .unwrap();
    let stats = redis.cli(&["MEMORY", "STATS"]);
    let mut lines = stats.lines();
    let mut backlog = 0;
    while let Some(l) = lines.next() {
        if l.trim() == "replication.backlog" {
            backlog = lines
                .next()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    used.saturating_sub(backlog)
}

fn hostile_count() -> u64 {
    std::env::var("FLOODWALL_HOSTILE_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tenant_ids_grow_neither_redis_nor_floodwall() {
    let redis = Redis::start();
    let upstream = Upstream::start(Duration::ZERO).await;
    let tenant = "[routes.tenant]\nmax_share = 0.5";
    let (_f, bins) = replicas("hostile", &config(&upstream, &redis, "lease", tenant), 2);
    converged(&bins.iter().collect::<Vec<_>>(), 2).await;
    let targets: Vec<SocketAddr> = bins.iter().map(|b| b.proxy).collect();

    // Warm up (allocator, pools), then measure.
    let load = Load::start(targets.clone(), 16, true);
    while load.counts().ok < 5_000 {
        sleep(Duration::from_millis(50)).await;
    }
    load.stop().await;
    let mem0 = memory_but_backlog(&redis);
    let keys0 = redis.cli(&["DBSIZE"]);
    let rss0: Vec<u64> = bins.iter().map(|b| rss_kib(b.pid())).collect();

    let n = hostile_count();
    let started = Instant::now();
    let load = Load::start(targets, 16, true);
    while load.counts().ok + load.counts().refused < n {
        sleep(Duration::from_millis(50)).await;
    }
    let counts = load.stop().await;
    let mem1 = memory_but_backlog(&redis);
    let keys1 = redis.cli(&["DBSIZE"]);
    let rss1: Vec<u64> = bins.iter().map(|b| rss_kib(b.pid())).collect();
    eprintln!(
        "hostile: {} requests with random tenant ids in {:?} ({counts:?}); Redis keys \
         {keys0} -> {keys1}, used_memory less the replication backlog {mem0} -> {mem1} B; floodwall RSS {rss0:?} -> \
         {rss1:?} KiB",
        counts.ok + counts.refused,
        started.elapsed()
    );
    assert_eq!(keys0, keys1, "no key per tenant");
    assert!(
        mem1 < mem0 + 256 * 1024,
        "Redis memory grew: {mem0} -> {mem1}"
    );
    for (a, b) in rss0.iter().zip(&rss1) {
        assert!(b < &(a + 16 * 1024), "floodwall RSS grew: {a} -> {b} KiB");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_returns_the_share_at_once() {
    let redis = Redis::start();
    let upstream = Upstream::start(Duration::from_millis(20)).await;
    // A long lease, so only leaving (not expiry) can explain a fast return.
    let text =
        config(&upstream, &redis, "lease", "").replace("lease_ttl = \"1s\"", "lease_ttl = \"10s\"");
    let (_f, mut bins) = replicas("leave", &text, 2);
    converged(&bins.iter().collect::<Vec<_>>(), 2).await;
    let load = Load::start(bins.iter().map(|b| b.proxy).collect(), 16, false);
    sleep(Duration::from_millis(800)).await;
    let mut leaving = bins.remove(1);
    load.set_targets(vec![bins[0].proxy]);
    leaving.terminate();
    let t = Instant::now();
    assert!(leaving.wait_timeout(Duration::from_secs(10)).is_some());
    let took = common::wait_until(Duration::from_secs(5), "the stayer holds all", || async {
        share_of(&bins[0]).await == GLOBAL
    })
    .await;
    load.stop().await;
    eprintln!(
        "leave: share back {took:?} after exit ({:?} after SIGTERM)",
        t.elapsed()
    );
    assert!(
        took < Duration::from_secs(2),
        "returned by leaving, not by expiry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_closed_policy_refuses_with_store_unavailable() {
    let mut redis = Redis::start();
    let upstream = Upstream::start(Duration::ZERO).await;
    let text = config(&upstream, &redis, "strict", "") + "on_store_failure = \"closed\"\n";
    let (_f, bins) = replicas("closed", &text, 1);
    converged(&[&bins[0]], 1).await;
    let client = Client::http1();
    assert_eq!(client.get(bins[0].proxy, "/", &[]).await.status, 200);
    redis.stop();
    let r = common::wait_until(Duration::from_secs(5), "refused", || async {
        client.get(bins[0].proxy, "/", &[]).await.status == 503
    })
    .await;
    let reply = client.get(bins[0].proxy, "/", &[]).await;
    let reason = reply.reason().map(str::to_owned);
    eprintln!("closed: refusing {r:?} after Redis stopped: {reason:?}");
    assert!(
        reason.as_deref() == Some("store_unavailable")
            || reason.as_deref() == Some("wip_limit_exceeded"),
        "{reason:?}"
    );
    let m = common::metrics_text(bins[0].admin).await;
    assert!(m.contains("floodwall_store_up 0"), "{m}");
    for series in [
        "floodwall_store_latency_seconds_bucket",
        "floodwall_store_commands_total",
        "floodwall_store_errors_total",
        "floodwall_store_commands_per_admitted",
        "floodwall_store_replicas{route=\"api\"}",
        "floodwall_store_share{route=\"api\"}",
        "floodwall_store_global_limit{route=\"api\"} 12",
        "reason=\"store_unavailable\"",
    ] {
        assert!(m.contains(series), "{series} missing:\n{m}");
    }
    promtool_check(&m);
}

#[test]
fn store_config_errors_name_the_key() {
    let base = "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
                [[routes]]\nname = \"r\"\nupstream = \"a\"\n[store]\n";
    let cases = [
        ("url = \"http://x:1\"", "store.url"),
        (
            "url = \"redis://h:1\"\nlease_ttl = \"100ms\"",
            "store.lease_ttl",
        ),
        (
            "url = \"redis://h:1\"\ntimeout = \"300ms\"",
            "store.timeout",
        ),
        (
            "url = \"redis://h:1\"\nrenew_interval = \"1ms\"",
            "store.renew_interval",
        ),
        // So large that 3 × it overflows a Duration: refused, not a panic.
        (
            "url = \"redis://h:1\"\nrenew_interval = \"18446744073709551615s\"",
            "store.lease_ttl",
        ),
        (
            "url = \"redis://h:1\"\nkey_prefix = \"a b\"",
            "store.key_prefix",
        ),
        (
            "url = \"redis://h:1\"\nreplica_id = \"\"",
            "store.replica_id",
        ),
        // A cluster's nodes: TCP only, one password for all, nothing empty.
        ("url = \"redis://h:1,unix:///tmp/r.sock\"", "store.url"),
        ("url = \"unix:///tmp/r.sock\"\ncluster = true", "store.url"),
        ("url = \"redis://:a@h:1,redis://:b@h:2\"", "store.url"),
        ("url = \" , \"", "store.url"),
        // Sentinel: the primary's name, its db, each Sentinel's address.
        ("url = \"redis+sentinel://h:26379\"", "store.url"),
        ("url = \"redis+sentinel://h:26379/\"", "store.url"),
        ("url = \"redis+sentinel://h:1,,h:2/p\"", "store.url"),
        ("url = \"redis+sentinel://h:1/p q\"", "store.url"),
        ("url = \"redis+sentinel://h:1/p/x\"", "store.url"),
        (
            "url = \"redis+sentinel://h:1/p\"\ncluster = true",
            "store.cluster",
        ),
    ];
    let quota = |body: &str| {
        format!(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n[[routes]]\nname = \"r\"\n\
             upstream = \"a\"\n{body}\n[store]\nurl = \"redis://h:1\"\n"
        )
    };
    for (body, key) in [
        ("[[routes.tenant.quotas]]\ntenant = \"\"\nmax = 1", "routes[0].tenant.quotas[0].tenant"),
        ("[[routes.tenant.quotas]]\ntenant = \"a{b}\"\nmax = 1", "routes[0].tenant.quotas[0].tenant"),
        ("[[routes.tenant.quotas]]\ntenant = \"a\"\nmax = 0", "routes[0].tenant.quotas[0].max"),
        (
            "[[routes.tenant.quotas]]\ntenant = \"a\"\nmax = 1\n[[routes.tenant.quotas]]\ntenant = \"a\"\nmax = 2",
            "routes[0].tenant.quotas[1].tenant",
        ),
    ] {
        let err = Config::from_toml_str(&quota(body)).unwrap_err();
        assert_eq!(err.key(), Some(key), "{body}: {err}");
    }
    let ok = quota("[[routes.tenant.quotas]]\ntenant = \"acme\"\nmax = 20");
    let c = Config::from_toml_str(&ok).unwrap();
    assert_eq!(c.routes[0].tenant.quotas[0].max, 20);
    let no_store = ok.replace("[store]\nurl = \"redis://h:1\"\n", "");
    let err = Config::from_toml_str(&no_store).unwrap_err();
    assert_eq!(err.key(), Some("routes[0].tenant.quotas"), "{err}");
    for (text, key) in cases {
        let err = Config::from_toml_str(&format!("{base}{text}")).unwrap_err();
        assert_eq!(err.key(), Some(key), "{text}: {err}");
    }
    for text in [
        "url = \"redis://h:1\"\nmode = \"paxos\"",
        "url = \"redis://h:1\"\nttl = \"1s\"",
    ] {
        let err = Config::from_toml_str(&format!("{base}{text}")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("paxos") || msg.contains("ttl"), "{msg}");
    }
    let err = Config::from_toml_str(&format!(
        "{base}url = \"redis://:secret@h:1,ftp://:secret@h:2\""
    ))
    .unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    let err = Config::from_toml_str(&format!(
        "{base}url = \"redis+sentinel://:secret@h:1,,h:2/p\""
    ))
    .unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    let c = Config::from_toml_str(&format!(
        "{base}url = \"redis+sentinel://:pw@h1:1, h2/fw.primary/2\""
    ))
    .unwrap();
    let store = c.store.as_ref().unwrap();
    assert!(store.is_sentinel() && !store.is_cluster());
    let t = store.sentinel().unwrap().unwrap();
    assert_eq!(t.sentinels, ["redis://h1:1", "redis://h2:26379"]);
    assert_eq!(t.primary, "fw.primary");
    assert_eq!(t.primary_settings, "redis://:pw@h1:1/2");
    for (text, cluster) in [
        ("url = \"redis://h:1\"", false),
        ("url = \"redis://h:1\"\ncluster = true", true),
        ("url = \"redis://h:1, redis://h:2,redis://h:3\"", true),
    ] {
        let c = Config::from_toml_str(&format!("{base}{text}")).unwrap();
        assert_eq!(c.store.unwrap().is_cluster(), cluster, "{text}");
    }
    let ok = Config::from_toml_str(&format!("{base}url = \"redis://h:1\"")).unwrap();
    let s = ok.store.unwrap();
    assert_eq!(s.mode, StoreMode::Lease);
    assert_eq!(s.lease_ttl, Duration::from_secs(2));

    let mut c = Config::from_toml_str(&base.replace("[store]\n", "")).unwrap();
    let err = c
        .apply_overrides(&Overrides {
            store_mode: Some(StoreMode::Strict),
            ..Overrides::default()
        })
        .unwrap_err();
    assert_eq!(err.key(), Some("--store-mode"));
    c.apply_overrides(&Overrides {
        store: Some("redis://127.0.0.1:6379".into()),
        store_mode: Some(StoreMode::Strict),
        ..Overrides::default()
    })
    .unwrap();
    assert_eq!(c.store.unwrap().mode, StoreMode::Strict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_counts_requests_admitted_during_an_outage_once_redis_is_back() {
    let mut redis = Redis::start();
    let upstream = Upstream::start(Duration::ZERO).await;
    let (_f, bins) = replicas("strict-outage", &config(&upstream, &redis, "strict", ""), 1);
    converged(&[&bins[0]], 1).await;
    redis.stop();
    // Three requests admitted under the `local` policy while Redis is down,
    // held at the upstream until the test lets them go.
    let proxy = bins[0].proxy;
    let held: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move { Client::http1().get(proxy, "/?hold=h", &[]).await.status })
        })
        .collect();
    common::wait_until(Duration::from_secs(5), "3 at the upstream", || async {
        upstream.current() == 3
    })
    .await;
    redis.restart();
    converged(&[&bins[0]], 1).await;
    let held_in_redis = || {
        redis
            .cli(&["HVALS", "floodwall:{api}:held"])
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .sum::<u64>()
    };
    common::wait_until(Duration::from_secs(3), "Redis counts them", || async {
        held_in_redis() == 3
    })
    .await;
    upstream.open("h");
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    common::wait_until(Duration::from_secs(3), "and forgets them", || async {
        held_in_redis() == 0
    })
    .await;
}

/// A Redis that is slow rather than down: `CLIENT PAUSE 2000 ALL` holds
/// every command for 2 s while the connections stay open. In strict mode,
/// where every request asks Redis, each call gives up after `store.timeout`
/// (50 ms) and the replica falls back to its local share, so no request
/// waits for Redis: the slowest answer stays far below the 2 s a stalled
/// request would take, and every request is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_never_stalls_requests() {
    let redis = Redis::start();
    let upstream = Upstream::start(Duration::from_millis(5)).await;
    let (_f, bins) = replicas("slow", &config(&upstream, &redis, "strict", ""), 1);
    converged(&[&bins[0]], 1).await;
    let client = Client::http1();
    assert_eq!(client.get(bins[0].proxy, "/", &[]).await.status, 200);

    redis.cli(&["CLIENT", "PAUSE", "2000", "ALL"]);
    let paused = Instant::now();
    let (mut worst, mut served, mut other) = (Duration::ZERO, 0u32, Vec::new());
    while paused.elapsed() < Duration::from_millis(1500) {
        let t = Instant::now();
        let reply = client.get(bins[0].proxy, "/", &[]).await;
        worst = worst.max(t.elapsed());
        if reply.status == 200 {
            served += 1;
        } else {
            other.push((reply.status, reply.reason().map(str::to_owned)));
        }
    }
    let errors = common::metrics_text(bins[0].admin).await;
    let errors: f64 = errors
        .lines()
        .filter(|l| l.starts_with("floodwall_store_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    eprintln!(
        "slow redis: {served} served in 1.5 s of a 2 s pause, slowest {worst:?}, \
         store errors {errors}, others {other:?}"
    );
    assert!(
        worst < Duration::from_millis(1000),
        "a request waited {worst:?} on a paused Redis"
    );
    assert!(other.is_empty(), "refused while Redis was slow: {other:?}");
    assert!(served >= 10, "only {served} served");
    assert!(errors >= 1.0, "the timeouts are counted as store errors");
}

/// Three in-process replicas in strict mode share a global limit of 12
/// behind a Redis made slow by `CLIENT PAUSE` (calls outlive the 50 ms
/// `store.timeout`, then run late), and 60 slow requests arrive at once, 20
/// per replica. Under `on_store_failure = "local"` a replica that gets no
/// answer admits only within its fallback share (`max(1, ⌊12 ÷ 3⌋) = 4`
/// slots in all, those Redis granted it included), never the whole global
/// limit (before, it admitted up to its local limit, 12, so up to 36). The
/// bounds are the ones docs/config.md states for strict mode:
/// - `flapping = false`: one 1.5 s pause from before the burst, so no
///   replica reaches Redis: at most 3 × 4 = the global limit.
/// - `flapping = true`: Redis is paused 80 ms out of every 100 ms, so
///   answers and timeouts interleave; a slot admitted locally may be granted
///   once more to another replica until its note reaches Redis, so the bound
///   is the global limit plus each replica's fallback share, 12 + 3 × 4.
///
/// Returns the upstream's peak concurrency.
async fn strict_burst_on_a_slow_redis(flapping: bool) -> usize {
    let redis = Redis::start();
    let upstream = Upstream::start(Duration::from_millis(400)).await;
    let text = config(&upstream, &redis, "strict", "");
    let mut running = Vec::new();
    for _ in 0..3 {
        running.push(common::start(common::config_from_toml(&text, &upstream.uri())).await);
    }
    let admins: Vec<SocketAddr> = running.iter().map(|r| r.admin_addr).collect();
    converged_at(admins.clone(), 3).await;
    sleep(Duration::from_secs(1)).await;
    upstream.reset_peaks();

    let port = redis.port.to_string();
    let pauser = if flapping {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let _ = std::process::Command::new("redis-cli")
                    .args(["-p", &port, "CLIENT", "PAUSE", "80", "ALL"])
                    .output();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Some((stop, t))
    } else {
        redis.cli(&["CLIENT", "PAUSE", "1500", "ALL"]);
        None
    };
    let client = Client::http1();
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let (client, addr) = (client.clone(), running[i % 3].proxy_addr);
            tokio::spawn(async move {
                let mut ok = 0;
                // Flapping: each client keeps asking for 2 s, so grants and
                // local admissions overlap for longer than one request.
                let until = Instant::now() + Duration::from_secs(if flapping { 2 } else { 0 });
                loop {
                    if client.get(addr, "/", &[]).await.status == 200 {
                        ok += 1;
                    }
                    if Instant::now() >= until {
                        return ok;
                    }
                    sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    if let Some((stop, t)) = pauser {
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
    }
    let errors = store_errors(&admins[..1]).await;
    let peak = upstream.peak();
    eprintln!(
        "strict burst on a slow Redis (flapping {flapping}): upstream peak {peak} of global \
         {GLOBAL}, {ok} served, store errors on replica 0: {errors}"
    );
    assert!(errors >= 1.0, "Redis was not slow enough to time out");
    assert!(ok >= 3, "the local policy still serves: {ok}");
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_on_a_paused_redis_stays_within_the_fallback_shares() {
    let peak = strict_burst_on_a_slow_redis(false).await;
    assert!(
        peak <= GLOBAL,
        "peak {peak} above 3 fallback shares, {GLOBAL}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_on_a_flapping_redis_stays_within_the_documented_bound() {
    let peak = strict_burst_on_a_slow_redis(true).await;
    let bound = GLOBAL + 3 * (GLOBAL / 3);
    assert!(
        peak <= bound,
        "peak {peak} above the documented bound {bound}"
    );
}

// ---------------------------------------------------------------------------
// The same tests on a real 3-primary Redis Cluster
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_global_limit_holds_across_three_replicas_in_lease_mode() {
    let cluster = Cluster::start();
    let (_, per, _) = global_limit_holds("lease", &cluster).await;
    assert!(per < 0.5, "lease mode should rarely call Redis: {per}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_global_limit_holds_across_three_replicas_in_strict_mode() {
    strict_calls_are_per_request(global_limit_holds("strict", &Cluster::start()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_killed_replica_slots_return_within_the_lease_bound() {
    killed_replica_slots_return(&Cluster::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_joining_replica_gets_a_share_and_the_limit_holds() {
    joining_replica_gets_a_share(&Cluster::start()).await;
}

/// Route names whose `{ROUTE}` hash tags land on each of the cluster's
/// three primaries, found by asking the cluster (`CLUSTER KEYSLOT`,
/// `CLUSTER NODES`), so the test does not depend on slot arithmetic.
fn routes_on_every_node(cluster: &Cluster) -> Vec<String> {
    let mut found: Vec<Option<String>> = vec![None; cluster.nodes.len()];
    for i in 0..1000 {
        let name = format!("r{i}");
        let node = cluster.owner(&format!("floodwall:{{{name}}}:members"));
        if found[node].is_none() {
            found[node] = Some(name);
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found
        .into_iter()
        .map(|n| n.expect("a route per node"))
        .collect()
}

/// Three routes, each on its own primary and its own upstream, each with
/// a global limit of 12 over three replicas: every route's keys live on the
/// node that owns its slot (and only there), and every route's limit holds
/// at its upstream, in both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_routes_on_different_nodes_each_hold_their_limit() {
    let cluster = Cluster::start();
    let names = routes_on_every_node(&cluster);
    for mode in ["lease", "strict"] {
        let mut upstreams = Vec::new();
        let mut text = String::from("[log]\nlevel = \"warn\"\n");
        for (i, n) in names.iter().enumerate() {
            let up = Upstream::start(Duration::from_millis(50)).await;
            text += &format!(
                "\n[[upstreams]]\nname = \"app{i}\"\nurl = \"{}\"\n\n[[routes]]\nname = \"{n}\"\n\
                 path_prefix = \"/{n}\"\nupstream = \"app{i}\"\n\
                 limit = {{ algorithm = \"fixed\", value = {GLOBAL} }}\n",
                up.uri()
            );
            upstreams.push(up);
        }
        text += &format!(
            "\n[store]\nurl = \"{}\"\nmode = \"{mode}\"\nlease_ttl = \"1s\"\n\
             renew_interval = \"100ms\"\ntimeout = \"50ms\"\njoin_ramp = \"1s\"\n",
            cluster.url()
        );
        let (_f, bins) = replicas(&format!("cluster-routes-{mode}"), &text, 3);
        converged(&bins.iter().collect::<Vec<_>>(), 3).await;
        let routes = store_status(bins[0].admin).await["routes"].clone();
        assert_eq!(routes.as_array().map(Vec::len), Some(3), "{routes}");
        // Every primary holds one route's keys, and no other's.
        for (i, n) in names.iter().enumerate() {
            let keys = cluster.nodes[i].cli(&["KEYS", "floodwall:*"]);
            let prefix = format!("floodwall:{{{n}}}:");
            assert!(
                !keys.is_empty() && keys.lines().all(|k| k.starts_with(&prefix)),
                "{mode}: node {i} should hold route {n}'s keys only: {keys:?}"
            );
        }
        let admins: Vec<SocketAddr> = bins.iter().map(|b| b.admin).collect();
        let errors_before = store_errors(&admins).await;
        let targets: Vec<SocketAddr> = bins.iter().map(|b| b.proxy).collect();
        let loads: Vec<Load> = names
            .iter()
            .map(|n| Load::start_on(targets.clone(), 30, false, &format!("/{n}/x")))
            .collect();
        sleep(Duration::from_secs(3)).await;
        let mut counts = Vec::new();
        for load in loads {
            counts.push(load.stop().await);
        }
        let errors = store_errors(&admins).await - errors_before;
        let bound = bound(mode, errors, 3);
        for ((n, c), up) in names.iter().zip(counts).zip(&upstreams) {
            eprintln!(
                "cluster {mode}: route {n} (node {}): upstream peak {} of {GLOBAL} (bound \
                 {bound}, {errors} store errors), {c:?}",
                cluster.owner(&format!("floodwall:{{{n}}}:members")),
                up.peak()
            );
            assert!(up.peak() <= bound, "{mode}: route {n}: peak {}", up.peak());
            // Strict mode makes two Redis calls per request for 90 clients
            // on two shared cores: a CI run with other work on the machine
            // peaked at 9 on one route. Half the limit still shows it used.
            let used = if mode == "strict" {
                GLOBAL / 2
            } else {
                GLOBAL - 2
            };
            assert!(up.peak() >= used, "{mode}: route {n} unused: {}", up.peak());
            assert!(
                c.refused > 0,
                "{mode}: route {n}: the load was above the limit"
            );
            assert_eq!(c.failed, 0);
        }
    }
}

/// A floodwall started while its cluster is down starts anyway (the
/// cluster connection is made at the first call that finds the cluster
/// up), serves under `local` with the fallback share, and joins once the
/// cluster is back; a second whole-cluster outage on the live connection
/// is survived the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_down_at_start_then_outage_resyncs() {
    let mut cluster = Cluster::start();
    let upstream = Upstream::start(Duration::from_millis(20)).await;
    let text = config(&upstream, &cluster, "lease", "");
    cluster.stop();
    let (_f, bins) = replicas("cluster-down", &text, 3);
    let all: Vec<&Binary> = bins.iter().collect();
    let client = Client::http1();
    for round in 0..2 {
        common::wait_until(
            Duration::from_secs(10),
            "replicas see the store down",
            || async {
                for b in &bins {
                    if store_status(b.admin).await["state"] != "down" {
                        return false;
                    }
                }
                true
            },
        )
        .await;
        // The last grant lasts until its lease would expire (it may be 0
        // for a replica that had just joined), then the fallback share:
        // 1 before any answer, global ÷ replicas after.
        common::wait_until(
            Duration::from_secs(5),
            "the local policy serves",
            || async { client.get(bins[0].proxy, "/", &[]).await.status == 200 },
        )
        .await;
        if round == 0 {
            // Never answered: each serves 1 at a time, not the whole
            // global limit (it holds no lease the others count).
            for b in &bins {
                assert_eq!(share_of(b).await, 1, "a replica that never reached Redis");
            }
        }
        cluster.restart();
        let t = Instant::now();
        converged(&all, 3).await;
        eprintln!(
            "cluster round {round}: replicas up with 3 members {:?} after the cluster",
            t.elapsed()
        );
        let shares: usize = {
            let mut sum = 0;
            for b in &bins {
                sum += share_of(b).await;
            }
            sum
        };
        assert!(shares <= GLOBAL, "round {round}: shares {shares}");
        assert!(cluster.dbsize() > 0, "round {round}: leases written");
        cluster.stop();
    }
}

/// A configured tenant quota is a global cap: tenant `acme`, alone on a
/// route whose global limit is 12, is held to its quota of 8 in flight over
/// three replicas (alone, the fairness rule never binds, so only the
/// quota can explain 8), leased through three keys of its own in the
/// route's slot; an unconfigured tenant on the same route still gets the
/// whole limit and writes no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_quota_is_held_globally_across_three_replicas() {
    let redis = Redis::start();
    let upstream = Upstream::start(Duration::from_millis(50)).await;
    let quota = "[[routes.tenant.quotas]]\ntenant = \"acme\"\nmax = 8";
    let (_f, bins) = replicas("quota", &config(&upstream, &redis, "lease", quota), 3);
    converged(&bins.iter().collect::<Vec<_>>(), 3).await;
    let targets: Vec<SocketAddr> = bins.iter().map(|b| b.proxy).collect();

    let load = Load::start_as(targets.clone(), 30, Tenant::Fixed("acme".into()), "/");
    sleep(Duration::from_millis(1000)).await;
    upstream.reset_peaks();
    sleep(Duration::from_secs(3)).await;
    let acme = load.stop().await;
    let acme_peak = upstream.peak_of("x-tenant-id", "acme");
    let keys = redis.cli(&["KEYS", "floodwall:*"]);
    let usage: u64 = redis
        .cli(&["HVALS", "floodwall:{api}:tenant:acme:usage"])
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum();

    let load = Load::start_as(targets, 30, Tenant::Fixed("beta".into()), "/");
    sleep(Duration::from_millis(1000)).await;
    upstream.reset_peaks();
    sleep(Duration::from_secs(2)).await;
    let beta = load.stop().await;
    let beta_peak = upstream.peak_of("x-tenant-id", "beta");
    let keys_after = redis.cli(&["KEYS", "floodwall:*"]);
    eprintln!(
        "quota: acme peak {acme_peak} (quota 8, route 12), {acme:?}, usage in Redis {usage}; \
         beta peak {beta_peak}, {beta:?}; keys {}",
        keys.lines().count()
    );
    assert!(acme_peak <= 8, "acme above its quota: {acme_peak}");
    assert!(acme_peak >= 7, "acme's quota unused: {acme_peak}");
    assert!(acme.refused > 0, "acme's load was above its quota");
    assert!(usage <= 8, "the quota's usage in Redis: {usage}");
    assert!(keys.contains("floodwall:{api}:tenant:acme:usage"), "{keys}");
    assert!(
        beta_peak >= GLOBAL - 1,
        "an unconfigured tenant gets the route: {beta_peak}"
    );
    assert!(beta_peak <= GLOBAL);
    assert!(
        !keys_after.contains("beta"),
        "no key for an unconfigured tenant: {keys_after}"
    );
}

/// A Sentinel failover under load: a primary, its replica and three
/// Sentinels; three replicas of floodwall in lease mode at 30 clients over
/// a global limit of 12. The primary is `kill -9`'d; the Sentinels promote
/// the replica; each floodwall finds the new primary through them, counts
/// the switch, re-registers its leases at once and caps its grant at the
/// fallback share for a lease_ttl (the leases written to the old primary
/// may be lost). Measured: how long until the promotion, until the three
/// shares are consistent again (everyone up on the new primary, seeing 3
/// members, shares summing to at most 12), the refusals in between, and
/// the upstream's peak concurrency through it, which must stay within the
/// global limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_keeps_the_global_limit_and_follows_the_new_primary() {
    let mut set = Sentinels::start();
    let upstream = Arc::new(Upstream::start(Duration::from_millis(50)).await);
    let (_f, bins) = replicas("sentinel", &config(&upstream, &set, "lease", ""), 3);
    let all: Vec<&Binary> = bins.iter().collect();
    converged(&all, 3).await;
    let load = Load::start(bins.iter().map(|b| b.proxy).collect(), 30, false);
    sleep(Duration::from_millis(1000)).await;
    let t0 = load.counts();
    sleep(Duration::from_millis(2000)).await;
    let before = load.counts().minus(t0);

    upstream.reset_peaks();
    let at_kill = load.counts();
    let killed = Instant::now();
    let replica_port = set.replica.port;
    set.primary.stop();
    common::wait_until(
        Duration::from_secs(20),
        "the replica is promoted",
        || async { set.primary_port() == Some(replica_port) },
    )
    .await;
    let promoted = killed.elapsed();
    let admins: Vec<SocketAddr> = bins.iter().map(|b| b.admin).collect();
    common::wait_until(
        Duration::from_secs(10),
        "consistent shares on the new primary",
        || {
            let admins = admins.clone();
            async move {
                let mut shares = 0;
                for a in admins {
                    let s = store_status(a).await;
                    let r = route0(&s);
                    if s["state"] != "up" || s["switches"] != 1 || r["replicas"] != 3 {
                        return false;
                    }
                    shares += r["share"].as_u64().unwrap_or(GLOBAL as u64);
                }
                shares <= GLOBAL as u64
            }
        },
    )
    .await;
    let consistent = killed.elapsed();
    let through = load.counts().minus(at_kill);
    let peak = upstream.peak();
    sleep(Duration::from_millis(1000)).await;
    let counts = load.stop().await;
    let usage: u64 = set
        .cli(&["HVALS", "floodwall:{api}:usage"])
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum();
    let m = common::metrics_text(bins[0].admin).await;
    assert!(
        m.lines().any(|l| l == "floodwall_store_switches_total 1"),
        "the switch is counted"
    );
    assert!(
        bins[0].stderr().contains("store primary switched"),
        "the switch is logged"
    );
    eprintln!(
        "sentinel failover: before {before:?} ({:.1}% refused); primary killed, replica promoted \
         after {promoted:?}, shares consistent after {consistent:?}; through the switch {through:?} \
         ({:.1}% refused), upstream peak {peak} of {GLOBAL}; usage on the new primary {usage}; \
         total {counts:?}",
        before.refused_fraction() * 100.0,
        through.refused_fraction() * 100.0
    );
    assert!(
        peak <= GLOBAL,
        "peak {peak} above the global limit {GLOBAL}"
    );
    assert_eq!(through.failed, 0, "nothing failed through the switch");
    assert!(usage <= GLOBAL as u64, "usage on the new primary {usage}");
    assert!(
        consistent < promoted + Duration::from_secs(3),
        "consistent {consistent:?}, {promoted:?} after the promotion"
    );
}

/// Jain's fairness index of `xs`: 1 when all are equal, 1/n when one has
/// everything.
fn jain(xs: &[usize]) -> f64 {
    let sum: f64 = xs.iter().map(|&x| x as f64).sum();
    let squares: f64 = xs.iter().map(|&x| (x as f64).powi(2)).sum();
    if squares == 0.0 {
        return 1.0;
    }
    sum * sum / (xs.len() as f64 * squares)
}

async fn shares_of(bins: &[Binary]) -> Vec<usize> {
    let mut shares = Vec::new();
    for b in bins {
        shares.push(share_of(b).await);
    }
    shares
}

/// As many floodwall processes as this machine holds comfortably: 20
/// replicas on the default lease timings (renew every 200 ms, lease 2 s,
/// join ramp 3 s) over one real redis-server, a global limit of 40 and 60
/// clients spread evenly. Measured, next to the simulation's 20-replica
/// row in BENCHMARKS.md: the renew load on Redis (20 × 1 route ÷ 200 ms =
/// 100 script calls a second, by the formula in docs/config.md), the
/// fairness of the shares, the upstream's peak, and how long 10 more
/// replicas joining at once take to get a share, the limit holding
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_replicas_share_one_limit_and_ten_more_join() {
    const WIDE: usize = 40;
    let redis = Redis::start();
    let upstream = Upstream::start(Duration::from_millis(50)).await;
    let text = format!(
        "[log]\nlevel = \"warn\"\n\n[[upstreams]]\nname = \"app\"\nurl = \"{}\"\n\n\
         [[routes]]\nname = \"api\"\nupstream = \"app\"\n\
         limit = {{ algorithm = \"fixed\", value = {WIDE} }}\n\n[store]\nurl = \"{}\"\n",
        upstream.uri(),
        redis.url()
    );
    let (file, mut bins) = replicas("twenty", &text, 20);
    let admins = |bins: &[Binary]| bins.iter().map(|b| b.admin).collect::<Vec<_>>();
    converged_at(admins(&bins), 20).await;
    let load = Load::start(bins.iter().map(|b| b.proxy).collect(), 60, false);
    // Past the join ramp, then 5 s measured.
    sleep(Duration::from_secs(4)).await;
    upstream.reset_peaks();
    let calls0 = redis.script_calls() - redis.script_loads();
    let t0 = Instant::now();
    let c0 = load.counts();
    sleep(Duration::from_secs(5)).await;
    let per_s =
        (redis.script_calls() - redis.script_loads() - calls0) as f64 / t0.elapsed().as_secs_f64();
    let steady = load.counts().minus(c0);
    let shares = shares_of(&bins).await;
    let fair = jain(&shares);
    let peak = upstream.peak();

    // 10 more at once.
    upstream.reset_peaks();
    let joined = Instant::now();
    bins.extend((0..10).map(|_| replica(&file)));
    load.set_targets(bins.iter().map(|b| b.proxy).collect());
    converged_at(admins(&bins), 30).await;
    let members = joined.elapsed();
    common::wait_until(
        Duration::from_secs(15),
        "every newcomer has a share",
        || async {
            for b in &bins[20..] {
                if share_of(b).await == 0 {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let shared = joined.elapsed();
    let after = shares_of(&bins).await;
    let counts = load.stop().await;
    let join_peak = upstream.peak();
    eprintln!(
        "twenty replicas: {per_s:.0} script calls/s; shares {shares:?} (sum {}, Jain {fair:.3}); \
         peak {peak} of {WIDE}; steady {steady:?}; +10 at once: 30 members seen after \
         {members:?}, every newcomer with a share after {shared:?}, shares then {after:?} (sum \
         {}, Jain {:.3}); peak through the join {join_peak}; total {counts:?}",
        shares.iter().sum::<usize>(),
        after.iter().sum::<usize>(),
        jain(&after)
    );
    assert!(
        (80.0..=130.0).contains(&per_s),
        "renew load {per_s:.0}/s, expected 20 ÷ 200 ms = 100/s"
    );
    assert!(
        peak <= WIDE && join_peak <= WIDE,
        "peaks {peak}, {join_peak}"
    );
    assert!(shares.iter().sum::<usize>() <= WIDE, "{shares:?}");
    assert!(after.iter().sum::<usize>() <= WIDE, "{after:?}");
    assert!(fair >= 0.9, "shares under even load: {shares:?}");
    assert!(peak >= WIDE - 8, "the limit was used: peak {peak}");
    assert_eq!(counts.failed, 0);
}

/// `lease.lua` itself, called directly on a real redis-server.
mod lease_script {
    use super::Redis;
    use floodwall::distributed::share;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    const LEASE: &str = include_str!("../src/distributed/lua/lease.lua");
    const LEAVE: &str = include_str!("../src/distributed/lua/leave.lua");

    struct Route {
        con: ::redis::Connection,
        base: String,
        lease: ::redis::Script,
        leave: ::redis::Script,
    }

    impl Route {
        fn new(redis: &Redis, base: &str) -> Route {
            let client = ::redis::Client::open(redis.url()).unwrap();
            Route {
                con: client.get_connection().unwrap(),
                base: format!("t:{{{base}}}"),
                lease: ::redis::Script::new(LEASE),
                leave: ::redis::Script::new(LEAVE),
            }
        }
        fn key(&self, k: &str) -> String {
            format!("{}:{k}", self.base)
        }
        /// One renewal: (grant, usage, members, fair).
        #[allow(clippy::too_many_arguments)]
        fn renew(
            &mut self,
            id: &str,
            global: usize,
            cap: usize,
            floor: usize,
            demand: usize,
            fill_ms: u64,
        ) -> (i64, i64, i64, i64) {
            let mut inv = self.lease.prepare_invoke();
            for k in ["members", "usage", "demand", "fair", "meta"] {
                inv.key(self.key(k));
            }
            inv.arg(id)
                .arg(global)
                .arg(60_000)
                .arg(cap)
                .arg(floor)
                .arg(demand)
                .arg(fill_ms);
            inv.invoke(&mut self.con).unwrap()
        }
        fn leave(&mut self, id: &str) {
            let mut inv = self.leave.prepare_invoke();
            for k in ["members", "usage", "demand", "held", "fair", "meta"] {
                inv.key(self.key(k));
            }
            let _: i64 = inv.arg(id).invoke(&mut self.con).unwrap();
        }
        fn hash(&mut self, k: &str) -> Vec<(String, i64)> {
            let mut v: Vec<(String, i64)> = ::redis::cmd("HGETALL")
                .arg(self.key(k))
                .query(&mut self.con)
                .unwrap();
            v.sort();
            v
        }
        /// The next call fills, whatever the interval.
        fn force_fill(&mut self) {
            let _: i64 = ::redis::cmd("HDEL")
                .arg(self.key("meta"))
                .arg("filled")
                .query(&mut self.con)
                .unwrap();
        }
        fn meta(&mut self, field: &str) -> Option<i64> {
            ::redis::cmd("HGET")
                .arg(self.key("meta"))
                .arg(field)
                .query(&mut self.con)
                .unwrap()
        }
    }

    fn ids() -> impl Strategy<Value = Vec<String>> {
        // Ids of mixed lengths, so their order matters. Lowercase and
        // digits only: Lua compares strings by the server's collation,
        // which is byte order for these under every common locale.
        proptest::collection::btree_set("[a-z0-9]{1,12}", 1..40)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>())
            .prop_shuffle()
    }

    /// The fill Redis computes is the gateway's `share::water_fill` over
    /// the demands in id order, and a random run of renewals and leaves
    /// (each floor at most the replica's previous usage, as the gateway
    /// sends) never has the usages sum past the global limit, with the
    /// running total equal to that sum.
    #[test]
    fn the_fill_is_water_fill_and_the_usages_never_pass_the_limit() {
        let redis = Redis::start();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 48,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let case = std::sync::atomic::AtomicU64::new(0);
        runner
            .run(
                &(ids(), 0usize..200, any::<u64>()),
                |(ids, global, seed)| {
                    let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    one_case(&redis, case, ids, global, seed)
                },
            )
            .unwrap();
    }

    fn one_case(
        redis: &Redis,
        case: u64,
        ids: Vec<String>,
        global: usize,
        seed: u64,
    ) -> Result<(), TestCaseError> {
        let mut r = Route::new(redis, &format!("p{case}"));
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut demands: Vec<(String, usize)> = Vec::new();
        for id in &ids {
            let d = rng.usize(0..60);
            r.renew(id, global, global, 0, d, 3_600_000);
            demands.push((id.clone(), d));
        }
        // Force a fill, then compare.
        r.force_fill();
        r.renew(&ids[0], global, global, 0, demands[0].1, 3_600_000);
        demands.sort();
        let values: Vec<usize> = demands.iter().map(|(_, d)| *d).collect();
        let expected: Vec<(String, i64)> = demands
            .iter()
            .zip(share::water_fill(global, &values))
            .map(|((id, _), s)| (id.clone(), s as i64))
            .collect();
        prop_assert_eq!(&r.hash("fair"), &expected);

        let mut usage: std::collections::HashMap<String, usize> = r
            .hash("usage")
            .into_iter()
            .map(|(id, u)| (id, u as usize))
            .collect();
        let mut live: Vec<String> = ids.clone();
        for _ in 0..200 {
            let i = rng.usize(0..live.len() + 2);
            if i >= live.len() && !live.is_empty() && rng.bool() {
                let gone = live.swap_remove(rng.usize(0..live.len()));
                r.leave(&gone);
                usage.remove(&gone);
                continue;
            }
            let id = if i < live.len() {
                live[i].clone()
            } else {
                let new = format!("new{}", rng.u32(..));
                live.push(new.clone());
                new
            };
            let prev = usage.get(&id).copied().unwrap_or(0);
            let floor = rng.usize(0..=prev);
            let cap = rng.usize(0..=global);
            if rng.u8(0..4) == 0 {
                r.force_fill();
            }
            let (grant, held, _, fair) =
                r.renew(&id, global, cap, floor, rng.usize(0..60), 3_600_000);
            prop_assert!(grant as usize <= cap, "grant {} above cap {}", grant, cap);
            prop_assert!(
                fair < 0 || grant <= fair,
                "grant {} above fair {}",
                grant,
                fair
            );
            prop_assert_eq!(held as usize, (grant as usize).max(floor));
            usage.insert(id, held as usize);
            let sum: i64 = r.hash("usage").iter().map(|(_, u)| u).sum();
            prop_assert!(
                sum as usize <= global,
                "usages {} above global {}",
                sum,
                global
            );
            prop_assert_eq!(r.meta("total"), Some(sum));
        }
        Ok(())
    }

    /// `usec_per_call` of the script calls since the last `CONFIG RESETSTAT`.
    fn usec_per_call(redis: &Redis) -> f64 {
        redis
            .commandstat("usec_per_call")
            .into_iter()
            .find_map(|(name, usec)| (name == "evalsha" || name == "eval").then_some(usec))
            .unwrap()
    }

    /// What a renewal costs Redis as the members grow, at the default fill
    /// interval (renew 200 ms: fills every 100 ms), from `INFO
    /// commandstats`: `cargo test -p floodwall --test store
    /// lease_cost -- --nocapture` prints the table in docs/operations.md.
    /// Asserted: the fills are at most one per fill interval however many
    /// calls come (the property that keeps the cost flat), and the shares
    /// of N equal demands are global ÷ N.
    #[test]
    fn lease_cost_per_call_stays_flat_as_members_grow() {
        let redis = Redis::start();
        let fill = share::fill_interval(Duration::from_millis(200));
        eprintln!("| members | µs per renewal | fills / calls | µs per fill |");
        for n in [10usize, 100, 300, 1000] {
            let mut r = Route::new(&redis, &format!("cost{n}"));
            let global = 4 * n;
            let ids: Vec<String> = (0..n).map(|i| format!("replica-{i:05}")).collect();
            for id in &ids {
                r.renew(id, global, global, 0, 8, fill.as_millis() as u64);
            }
            redis.cli(&["CONFIG", "RESETSTAT"]);
            let fills0 = r.meta("fills").unwrap_or(0);
            let started = Instant::now();
            let mut calls = 0u64;
            while calls < 3_000 || started.elapsed() < 4 * fill {
                let id = &ids[calls as usize % n];
                r.renew(id, global, global, 4, 8, fill.as_millis() as u64);
                calls += 1;
            }
            let elapsed = started.elapsed();
            let fills = (r.meta("fills").unwrap_or(0) - fills0) as u64;
            let usec = usec_per_call(&redis);
            // And what one fill costs: calls that each recompute.
            redis.cli(&["CONFIG", "RESETSTAT"]);
            for k in 0..50 {
                r.force_fill();
                r.renew(&ids[k % n], global, global, 4, 8, fill.as_millis() as u64);
            }
            let per_fill = usec_per_call(&redis);
            eprintln!("| {n} | {usec:.1} | {fills} / {calls} | {per_fill:.0} |");
            let most = elapsed.as_millis() as u64 / fill.as_millis() as u64 + 1;
            assert!(
                fills <= most,
                "{fills} fills in {elapsed:?}, at most {most}"
            );
            assert!(fills >= 1, "the shares were never recomputed");
            let fair = r.hash("fair");
            assert_eq!(fair.len(), n);
            assert!(fair.iter().all(|(_, s)| *s == 4), "{n}: {fair:?}");
        }
    }
}
