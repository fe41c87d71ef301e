//! A warm start (`server.state_file`, `--state-file`): the real binary
//! writes what its adaptive limit learned at shutdown, and the next one
//! starts from it, so a restart into a spike does not pin the floor to
//! measure a baseline it already had. A state file that cannot be used is
//! ignored (the route starts cold), never a reason not to start.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EVENTUALLY: Duration = Duration::from_secs(10);

/// A fresh directory for one test's state file.
fn state_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "floodwall-state-{tag}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `concurrency` clients sending back to back for `dur`; returns how many
/// got 200 and how many were refused with 503.
async fn drive(proxy: std::net::SocketAddr, concurrency: usize, dur: Duration) -> (usize, usize) {
    let (ok, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let end = Instant::now() + dur;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (ok, refused) = (ok.clone(), refused.clone());
            tokio::spawn(async move {
                let client = Client::http1();
                while Instant::now() < end {
                    match client.get(proxy, "/", &[]).await.status.as_u16() {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        503 => refused.fetch_add(1, Ordering::Relaxed),
                        s => panic!("unexpected status {s}"),
                    };
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed))
}

/// The first route's status.
async fn route_status(admin: std::net::SocketAddr) -> serde_json::Value {
    status(admin).await["routes"][0].clone()
}

/// The lowest limit `/status` showed, polled every 20 ms, while
/// `concurrency` clients load the gate for `dur`; and the 200s and 503s.
async fn lowest_limit_under(fw: &Binary, concurrency: usize, dur: Duration) -> (u64, usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let admin = fw.admin;
    let poller = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut lowest = u64::MAX;
            while !stop.load(Ordering::Relaxed) {
                let limit = route_status(admin).await["limit"].as_u64().unwrap();
                lowest = lowest.min(limit);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            lowest
        }
    });
    let (ok, refused) = drive(fw.proxy, concurrency, dur).await;
    stop.store(true, Ordering::Relaxed);
    (poller.await.unwrap(), ok, refused)
}

fn serve_args<'a>(upstream: &'a str, state: &'a Path) -> Vec<&'a str> {
    vec![
        "--upstream",
        upstream,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--state-file",
        state.to_str().unwrap(),
    ]
}

/// The zero-config form with `--state-file`: a process that learned its
/// limit and baseline in front of a 20 ms upstream writes them at SIGTERM;
/// the next one starts at that limit with the cause `restored`, and a
/// spike from its first request never pins the floor (the route's `min`, 3). A cold start into
/// the same spike does (the open measurement finds its limit full and
/// measures pinned at 3), which is what the state file is for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_at_the_learned_limit_and_a_spike_never_pins_the_floor() {
    let upstream = Upstream::start(Duration::from_millis(20)).await;
    let url = upstream.uri().to_string();
    let dir = state_dir("resume");
    let state = dir.join("floodwall.state");

    // 1. Learn: 16 clients, under the cold start's open limit of 64.
    let mut first = spawn_binary(&serve_args(&url, &state));
    let (ok, refused) = drive(first.proxy, 16, Duration::from_secs(2)).await;
    assert!(ok > 500 && refused == 0, "ok {ok}, refused {refused}");
    let learned = route_status(first.admin).await;
    assert_ne!(learned["last_decision"]["cause"], "probing", "{learned}");
    first.terminate();
    let exit = first.wait_timeout(EVENTUALLY).expect("exits after SIGTERM");
    assert!(exit.success(), "{exit}\n{}", first.stderr());
    assert!(
        first.stderr().contains("state file written"),
        "{}",
        first.stderr()
    );

    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let entry = &file["routes"][0];
    assert_eq!(entry["route"], "default", "{file}");
    assert_eq!(entry["algorithm"], "aimd", "{file}");
    let saved = entry["limit"].as_f64().unwrap();
    assert!(saved >= 16.0, "the limit the traffic needed: {saved}");
    let mut samples: Vec<u64> = entry["baseline_ns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(samples.len(), 200, "the whole baseline pool");
    samples.sort_unstable();
    let median = Duration::from_nanos(samples[100]);
    assert!(
        median >= Duration::from_millis(20) && median < Duration::from_millis(80),
        "{median:?}"
    );

    // 2. Restart warm: the limit before any request, and a spike of 96
    //    from the first request.
    let second = spawn_binary(&serve_args(&url, &state));
    wait_until(EVENTUALLY, "the warm start is logged", || async {
        second.stderr().contains("warm start from the state file")
    })
    .await;
    let at_start = route_status(second.admin).await;
    assert_eq!(
        at_start["limit"].as_u64().unwrap(),
        saved.floor() as u64,
        "{at_start}"
    );
    assert_eq!(at_start["last_decision"]["cause"], "restored", "{at_start}");
    let (warm_lowest, warm_ok, _) = lowest_limit_under(&second, 96, Duration::from_secs(2)).await;
    // It may cut on latency (96 clients share the 2 cores with the
    // upstream), but it never measures pinned at the floor of 3.
    assert!(
        warm_lowest > 3,
        "a warm start fell to {warm_lowest} under a spike, from {saved}"
    );
    drop(second);

    // 3. The same spike into a cold start pins the floor.
    let cold_state = dir.join("none-yet.state");
    let cold = spawn_binary(&serve_args(&url, &cold_state));
    let (cold_lowest, cold_ok, _) = lowest_limit_under(&cold, 96, Duration::from_secs(2)).await;
    assert_eq!(
        cold_lowest, 3,
        "a cold start into a spike measures pinned at the floor"
    );
    assert!(
        warm_ok > cold_ok,
        "warm served {warm_ok}, cold {cold_ok} in the first 2 s"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const ROUTE: &str = r#"
[[upstreams]]
name = "app"
url = "{upstream}"

[[routes]]
name = "all"
upstream = "app"
"#;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A state file as floodwall writes it, for route `all`.
fn state_text(written_ms: u64, upstream: &str, algorithm: &str, limit: f64) -> String {
    serde_json::json!({
        "version": 1,
        "written_ms": written_ms,
        "routes": [{
            "route": "all",
            "upstream": upstream,
            "algorithm": algorithm,
            "limit": limit,
            "baseline_ns": vec![20_000_000u64; 200],
        }],
    })
    .to_string()
}

/// Every state file that cannot be used starts the route cold (the open
/// limit of 64, no decision yet), and floodwall serves; a usable one is
/// taken, its limit clamped to the route's `max`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_that_cannot_be_used_starts_cold_and_never_stops_a_start() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let dir = state_dir("unusable");
    let path = dir.join("state.json");
    let hour_ago = now_ms() - 3_600_000;
    let cases: Vec<(&str, String, Option<usize>)> = vec![
        ("not JSON", "{\"version\": 1, \"writ".into(), None),
        ("empty", String::new(), None),
        (
            "older than state_max_age",
            state_text(hour_ago, "app", "aimd", 40.0),
            None,
        ),
        (
            "another upstream",
            state_text(now_ms(), "other", "aimd", 40.0),
            None,
        ),
        (
            "another algorithm",
            state_text(now_ms(), "app", "vegas", 40.0),
            None,
        ),
        (
            "a limit that is no limit",
            state_text(now_ms(), "app", "aimd", -4.0),
            None,
        ),
        (
            "another version",
            state_text(now_ms(), "app", "aimd", 40.0).replace("\"version\":1", "\"version\":9"),
            None,
        ),
        (
            "usable",
            state_text(now_ms(), "app", "aimd", 40.0),
            Some(40),
        ),
        (
            "usable, over max",
            state_text(now_ms(), "app", "aimd", 5_000.0),
            Some(1000),
        ),
    ];
    for (what, text, expect) in cases {
        std::fs::write(&path, &text).unwrap();
        let mut config = config_from_toml(ROUTE, &upstream.uri());
        config.server.state_file = Some(path.clone());
        let fw = start(config).await;
        let limiter = fw.proxy.router.routes()[0].limiter.clone();
        match expect {
            None => {
                assert_eq!(limiter.limit(), 64, "{what}: cold, the open limit");
                assert!(
                    limiter.explain().is_none(),
                    "{what}: {:?}",
                    limiter.explain()
                );
            }
            Some(limit) => {
                assert_eq!(limiter.limit(), limit, "{what}");
                assert_eq!(
                    limiter.explain().unwrap().cause,
                    floodwall_core::Cause::Restored,
                    "{what}"
                );
            }
        }
        let reply = Client::http1().get(fw.proxy_addr, "/", &[]).await;
        assert_eq!(reply.status, 200, "{what}: {reply:?}");
        fw.shutdown().await;
        // Shutdown wrote a file this floodwall can read again.
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{what}: the file written at shutdown: {e}"));
        assert_eq!(written["version"], 1, "{what}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A state file in a directory that does not exist, or that is itself a
/// directory, fails the start with the key named, instead of failing every
/// save after it.
#[tokio::test]
async fn a_state_file_that_cannot_be_written_fails_the_start_naming_the_key() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let mut config = config_from_toml(ROUTE, &upstream.uri());
    config.server.state_file = Some(PathBuf::from("/nonexistent-floodwall-dir/state.json"));
    let err = floodwall::app::start(config).await.unwrap_err();
    assert!(format!("{err:#}").contains("server.state_file"), "{err:#}");

    let dir = state_dir("a-directory");
    let mut config = config_from_toml(ROUTE, &upstream.uri());
    config.server.state_file = Some(dir.clone());
    let err = floodwall::app::start(config).await.unwrap_err();
    assert!(format!("{err:#}").contains("is a directory"), "{err:#}");
    let _ = std::fs::remove_dir_all(&dir);
}
