//! Breakers, bulkheads, retry budgets and shadow mode, end to end: the
//! real proxy in front of real hyper upstreams that really fail (answer
//! 500, hang, or are killed and come back), counting what reaches them.

mod common;

use bytes::Bytes;
use common::{Client, Reply};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

const OK: u8 = 0;
const FAIL_500: u8 = 1;
const HANG: u8 = 2;

#[derive(Default)]
struct FlakyState {
    mode: AtomicU8,
    hits: AtomicUsize,
}

/// An upstream that answers 200, or 500, or never (by `mode`), counts
/// every request it receives, and can be killed (listener and every open
/// connection dropped at once, as `kill -9` would) and started again on
/// the same port.
struct Flaky {
    addr: SocketAddr,
    state: Arc<FlakyState>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Flaky {
    async fn start() -> Flaky {
        let listener = TcpListener::bind(common::loopback()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(FlakyState::default());
        let f = Flaky {
            addr,
            state,
            task: Mutex::new(None),
        };
        f.serve(listener);
        f
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let task = tokio::spawn(async move {
            // Dropped with the task: every connection's task is aborted.
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |_req: Request<Incoming>| {
                        let state = state.clone();
                        async move {
                            state.hits.fetch_add(1, Ordering::SeqCst);
                            let status = match state.mode.load(Ordering::SeqCst) {
                                FAIL_500 => StatusCode::INTERNAL_SERVER_ERROR,
                                HANG => {
                                    std::future::pending::<()>().await;
                                    unreachable!()
                                }
                                _ => StatusCode::OK,
                            };
                            let mut r = Response::new(Full::new(Bytes::from_static(b"x")));
                            *r.status_mut() = status;
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    fn set(&self, mode: u8) {
        self.state.mode.store(mode, Ordering::SeqCst);
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    async fn kill(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }

    async fn revive(&self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind same port");
        self.serve(listener);
    }

    fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Flaky {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }
}

fn config(toml: &str) -> floodwall::config::Config {
    let mut c = floodwall::config::Config::from_toml_str(toml)
        .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{toml}"));
    c.server.listen = common::loopback();
    c.server.admin = common::loopback();
    c
}

fn breaker_config(url: &str, response_timeout: &str, breaker: &str) -> floodwall::config::Config {
    config(&format!(
        "[[upstreams]]\nname = \"api\"\nurl = \"{url}\"\nresponse_timeout = \"{response_timeout}\"\n\
         connect_timeout = \"200ms\"\n[upstreams.breaker]\n{breaker}\n\
         [[routes]]\nname = \"all\"\nupstream = \"api\"\n[routes.limit]\nalgorithm = \"fixed\"\nvalue = 50\n"
    ))
}

async fn get(addr: SocketAddr) -> Reply {
    Client::http1().get(addr, "/", &[]).await
}

/// Breaker state from `/metrics`: 0 closed, 1 open, 2 half-open.
async fn breaker_state(admin: SocketAddr) -> f64 {
    common::sum(
        &common::metrics(admin).await,
        "floodwall_breaker_state",
        &[("upstream", "api")],
    )
}

async fn transitions(admin: SocketAddr, from: &str, to: &str) -> f64 {
    common::sum(
        &common::metrics(admin).await,
        "floodwall_breaker_transitions_total",
        &[("upstream", "api"), ("from", from), ("to", to)],
    )
}

/// Admitted requests the route's limiter has recorded an outcome for.
fn limiter_outcomes(running: &floodwall::app::Running) -> u64 {
    running.proxy.router.routes()[0]
        .limiter
        .snapshot()
        .classes
        .iter()
        .flat_map(|c| c.outcomes)
        .sum()
}

/// An upstream switched to 500 under a steady client: exactly
/// `error_threshold` 500s reach the client, then `circuit_open` without
/// the upstream seeing anything but one trial per half-open; it recovers
/// after `error_timeout` (with backoff) and `success_threshold` trials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_opens_the_breaker_and_sees_only_trials() {
    let up = Flaky::start().await;
    let running = common::start(breaker_config(
        &up.uri(),
        "5s",
        "error_threshold = 3\nerror_threshold_timeout = \"10s\"\nerror_timeout = \"1s\"\n\
         backoff = 2.0\nerror_timeout_max = \"10s\"\nhalf_open_trials = 1\nsuccess_threshold = 2\n",
    ))
    .await;
    let (addr, admin) = (running.proxy_addr, running.admin_addr);

    for _ in 0..20 {
        assert_eq!(get(addr).await.status, 200);
    }
    assert_eq!(breaker_state(admin).await, 0.0);

    // Switched mid-load: one client, one request after another.
    up.set(FAIL_500);
    let mut served_500 = 0;
    let opened_at = loop {
        let r = get(addr).await;
        if r.status == 500 {
            served_500 += 1;
            assert!(served_500 <= 3, "more 500s than error_threshold");
            continue;
        }
        r.assert_refused(503, "circuit_open");
        // Retry-After is the time left open (1 s), jittered: 1 s rounded up.
        assert!(r.retry_after().unwrap() <= 2, "{r:?}");
        break Instant::now();
    };
    assert_eq!(served_500, 3, "opens on exactly error_threshold failures");
    // /status says so too, for the page and `floodwall top`.
    let status = common::status(admin).await;
    let breaker = &status["routes"][0]["breaker"];
    assert_eq!(breaker["state"], "open", "{status}");
    assert_eq!(breaker["transitions"]["closed->open"], 1, "{status}");
    let hits_at_open = up.hits();
    assert_eq!(hits_at_open, 23);

    // 2.5 s of steady load while it is still broken: open 1 s, a trial
    // (fails), open 2 s (backoff): the upstream sees that one trial.
    let mut refused = 0;
    let mut trials_seen = 0;
    while opened_at.elapsed() < Duration::from_millis(2500) {
        let r = get(addr).await;
        match r.status.as_u16() {
            500 => trials_seen += 1,
            503 => {
                assert_eq!(r.reason(), Some("circuit_open"), "{r:?}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {r:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let trials = up.hits() - hits_at_open;
    assert_eq!(trials, trials_seen, "every upstream hit was a trial");
    let half_opens = transitions(admin, "open", "half_open").await as usize;
    assert_eq!(trials, half_opens, "one trial per half-open, nothing else");
    assert!((1..=2).contains(&trials), "{trials} trials in 2.5 s");
    assert!(refused > 50, "{refused} refused at once");
    assert_eq!(
        transitions(admin, "half_open", "open").await as usize,
        trials
    );

    // The refusals never reached the route's limit: it recorded only what
    // was forwarded.
    assert_eq!(limiter_outcomes(&running), up.hits() as u64);

    // Recovery: the upstream is fixed; within the current open time (at
    // most 4 s after two re-opens) a trial succeeds, a second closes it.
    up.set(OK);
    let fixed_at = Instant::now();
    let mut ok = 0;
    while ok < 5 {
        let r = get(addr).await;
        if r.status == 200 {
            ok += 1;
        } else {
            assert_eq!(r.reason(), Some("circuit_open"), "{r:?}");
        }
        assert!(
            fixed_at.elapsed() < Duration::from_secs(10),
            "no recovery within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let recovered = fixed_at.elapsed();
    assert!(recovered <= Duration::from_secs(5), "took {recovered:?}");
    assert_eq!(breaker_state(admin).await, 0.0);
    assert_eq!(transitions(admin, "half_open", "closed").await, 1.0);
    common::promtool_check(&common::metrics_text(admin).await);
    running.shutdown().await;
}

/// The decision log (`[events]`) through the real proxy: one JSON line per
/// decision with Semian's fields, a `success` per forwarded request (with
/// the upstream's status), the breaker's `state_change` and its
/// `circuit_open` refusals, and exactly as many lines as
/// `floodwall_events_written_total` says, none dropped.
/// A client that hangs up before the upstream answers is in the decision
/// log as `abandoned` (status 499), with the time it held its slot and the
/// slot given back: `floodwall tune` reads the upstream's throughput from
/// such requests too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_is_logged_as_abandoned() {
    let up = Flaky::start().await;
    up.set(HANG);
    let log = common::temp_file("abandoned", "").with_extension("jsonl");
    let _ = std::fs::remove_file(&log);
    let mut c = breaker_config(&up.uri(), "30s", "error_threshold = 100\n");
    c.events.path = Some(log.display().to_string());
    let running = common::start(c).await;
    let (addr, admin) = (running.proxy_addr, running.admin_addr);
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_millis(300), get(addr)).await;
        assert!(r.is_err(), "the upstream hangs: no answer expected");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let abandoned = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["event"] == "abandoned")
            .collect()
    };
    while abandoned().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = abandoned();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        assert_eq!(
            (&l["status"], &l["route"]),
            (&serde_json::json!(499), &serde_json::json!("all"))
        );
        let ms = l["duration_ms"].as_f64().unwrap();
        assert!(
            (250.0..5000.0).contains(&ms),
            "held until the client left: {l}"
        );
        assert_eq!(l["count"], 0, "the slot was given back: {l}");
    }
    let text = common::metrics_text(admin).await;
    assert!(text.contains("floodwall_wip_current{"), "{text}");
    assert_eq!(
        common::sum(&common::metrics(admin).await, "floodwall_wip_current", &[]),
        0.0,
        "no slot held after the clients left"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_log_writes_every_decision_with_semians_fields() {
    let up = Flaky::start().await;
    let log = common::temp_file("events", "").with_extension("jsonl");
    let _ = std::fs::remove_file(&log);
    let mut c = breaker_config(
        &up.uri(),
        "5s",
        "error_threshold = 3\nerror_threshold_timeout = \"10s\"\nerror_timeout = \"10s\"\n",
    );
    c.events.path = Some(log.display().to_string());
    let running = common::start(c).await;
    let (addr, admin) = (running.proxy_addr, running.admin_addr);
    for _ in 0..5 {
        assert_eq!(get(addr).await.status, 200);
    }
    up.set(FAIL_500);
    for _ in 0..3 {
        assert_eq!(get(addr).await.status, 500);
    }
    for _ in 0..4 {
        get(addr).await.assert_refused(503, "circuit_open");
    }
    let written =
        |m: &prometheus_parse::Scrape| common::sum(m, "floodwall_events_written_total", &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut metrics = common::metrics(admin).await;
    while written(&metrics) < 13.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        metrics = common::metrics(admin).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len() as f64, written(&metrics), "{text}");
    assert_eq!(
        common::sum(&metrics, "floodwall_events_dropped_total", &[]),
        0.0
    );
    let of = |kind: &str| {
        lines
            .iter()
            .filter(|l| l["event"] == kind)
            .collect::<Vec<_>>()
    };
    let success = of("success");
    assert_eq!(success.len(), 8, "{text}");
    assert_eq!(success.iter().filter(|l| l["status"] == 500).count(), 3);
    let host = up
        .uri()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    for l in &success {
        assert_eq!(l["resource"], "all");
        assert_eq!(l["route"], "all");
        assert_eq!(l["adapter"], "http");
        assert_eq!(l["host"], host.as_str());
        assert_eq!(l["tickets"], 50, "the route's limit: {l}");
        assert!(l["count"].as_u64().unwrap() >= 1, "itself in flight: {l}");
        assert!(l["workers"].as_u64().unwrap() >= 1);
        assert!(l["class"].is_string() && l["duration_ms"].as_f64().unwrap() >= 0.0);
    }
    let open = of("circuit_open");
    assert_eq!(open.len(), 4, "{text}");
    assert!(open
        .iter()
        .all(|l| l["reason"] == "circuit_open" && l["status"] == 503));
    let changes = of("state_change");
    assert_eq!(changes.len(), 1, "{text}");
    assert_eq!(
        (
            &changes[0]["resource"],
            &changes[0]["from"],
            &changes[0]["to"]
        ),
        (
            &serde_json::json!("api"),
            &serde_json::json!("closed"),
            &serde_json::json!("open")
        )
    );
    common::promtool_check(&common::metrics_text(admin).await);
    running.shutdown().await;

    // `floodwall tune` reads that log: one client, one request at a time,
    // so never more than 1 in use; the refusals by the breaker say nothing
    // about room and are not counted.
    let tune = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_floodwall"))
            .arg("tune")
            .arg("--events")
            .arg(&log)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = tune(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &v["resources"][0];
    assert_eq!(
        (r["resource"].as_str(), r["baseline"].as_u64()),
        (Some("all"), Some(8)),
        "{v}"
    );
    assert_eq!(
        (r["max"].as_u64(), r["recommended"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let table = String::from_utf8(tune(&[]).stdout).unwrap();
    assert!(
        table.contains("## all: 8 decisions in the baseline"),
        "{table}"
    );
    assert!(
        table.contains("Recommended: `limit = { algorithm = \"fixed\", value = 1 }`"),
        "{table}"
    );
    // Everything excluded: nothing to tune from, said, and a failing exit.
    let out = tune(&["--exclude", "0..99999999999"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no decision"),
        "{out:?}"
    );
    let _ = std::fs::remove_file(&log);
}

/// An upstream that hangs: each request times out (504), the timeouts
/// open the breaker, and a half-open trial gets the shorter
/// `half_open_resource_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_hangs_opens_the_breaker_by_timeouts() {
    let up = Flaky::start().await;
    up.set(HANG);
    let running = common::start(breaker_config(
        &up.uri(),
        "1s",
        "error_threshold = 2\nerror_timeout = \"500ms\"\nhalf_open_resource_timeout = \"100ms\"\n",
    ))
    .await;
    let addr = running.proxy_addr;
    for _ in 0..2 {
        get(addr).await.assert_refused(504, "upstream_timeout");
    }
    get(addr).await.assert_refused(503, "circuit_open");
    assert_eq!(up.hits(), 2);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let t = Instant::now();
    get(addr).await.assert_refused(504, "upstream_timeout");
    let trial = t.elapsed();
    assert!(
        trial < Duration::from_millis(900),
        "the trial used the 100 ms half-open timeout, not 1 s: {trial:?}"
    );
    assert_eq!(up.hits(), 3);
    get(addr).await.assert_refused(503, "circuit_open");
    running.shutdown().await;
}

/// An upstream killed (listener and connections gone at once): connect
/// errors open the breaker; started again on its port, it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_upstream_opens_the_breaker_and_it_closes_when_back() {
    let up = Flaky::start().await;
    let running = common::start(breaker_config(
        &up.uri(),
        "2s",
        "error_threshold = 3\nerror_timeout = \"300ms\"\nbackoff = 1.0\nsuccess_threshold = 1\n",
    ))
    .await;
    let (addr, admin) = (running.proxy_addr, running.admin_addr);
    for _ in 0..5 {
        assert_eq!(get(addr).await.status, 200);
    }
    up.kill().await;
    let mut unavailable = 0;
    loop {
        let r = get(addr).await;
        if r.reason() == Some("circuit_open") {
            break;
        }
        r.assert_refused(502, "upstream_unavailable");
        unavailable += 1;
        assert!(
            unavailable <= 3,
            "{unavailable} connect errors and still closed"
        );
    }
    assert_eq!(unavailable, 3);
    assert_eq!(breaker_state(admin).await, 1.0);
    up.revive().await;
    common::wait_until(Duration::from_secs(10), "the breaker to close", || async {
        get(addr).await.status == 200 && breaker_state(admin).await == 0.0
    })
    .await;
    assert!(transitions(admin, "half_open", "closed").await >= 1.0);
    running.shutdown().await;
}

/// Two routes share one slow upstream with a bulkhead of 4: however many
/// requests both send, the upstream never serves more than 4 at once, the
/// rest are refused at once with `bulkhead_full`, and a third route to a
/// healthy upstream is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulkhead_caps_a_slow_upstream_shared_by_two_routes() {
    let slow = common::Upstream::start(Duration::from_millis(400)).await;
    let healthy = common::Upstream::start(Duration::from_millis(20)).await;
    let running = common::start(config(&format!(
        "[[upstreams]]\nname = \"slow\"\nurl = \"{}\"\n[upstreams.bulkhead]\ntickets = 4\n\
         [[upstreams]]\nname = \"healthy\"\nurl = \"{}\"\n\
         [[routes]]\nname = \"a\"\npath_prefix = \"/a\"\nupstream = \"slow\"\n\
         [routes.limit]\nalgorithm = \"fixed\"\nvalue = 100\n\
         [[routes]]\nname = \"b\"\npath_prefix = \"/b\"\nupstream = \"slow\"\n\
         [routes.limit]\nalgorithm = \"fixed\"\nvalue = 100\n\
         [[routes]]\nname = \"c\"\npath_prefix = \"/c\"\nupstream = \"healthy\"\n\
         [routes.limit]\nalgorithm = \"fixed\"\nvalue = 100\n",
        slow.uri(),
        healthy.uri()
    )))
    .await;
    let (addr, admin) = (running.proxy_addr, running.admin_addr);
    let client = Client::http1();
    let (a, b, c) = tokio::join!(
        common::burst(&client, addr, 20, "/a", &[]),
        common::burst(&client, addr, 20, "/b", &[]),
        common::burst(&client, addr, 20, "/c", &[]),
    );
    assert!(slow.peak() <= 4, "slow upstream peak {}", slow.peak());
    assert_eq!(slow.peak(), 4, "the bulkhead was filled");
    let served = common::count_status(&a, 200) + common::count_status(&b, 200);
    assert_eq!(served, slow.total());
    for r in a.iter().chain(&b).filter(|r| r.status != 200) {
        r.assert_refused(503, "bulkhead_full");
    }
    assert!((4..40).contains(&served), "{served} served of 40");
    assert_eq!(
        common::count_status(&c, 200),
        20,
        "the healthy route is unaffected"
    );
    let m = common::metrics(admin).await;
    assert_eq!(
        common::sum(&m, "floodwall_bulkhead_inflight", &[("upstream", "slow")]),
        0.0
    );
    assert_eq!(
        common::sum(&m, "floodwall_bulkhead_tickets", &[("upstream", "slow")]),
        4.0
    );
    assert_eq!(
        common::sum(
            &m,
            "floodwall_rejections_total",
            &[("reason", "bulkhead_full")]
        ),
        (40 - served) as f64
    );
    assert_eq!(common::wip_current(admin).await, 0.0, "no slot leaked");
    let status = common::status(admin).await;
    for r in status["routes"].as_array().unwrap() {
        let want = if r["upstream"] == "slow" {
            serde_json::json!({"in_use": 0, "tickets": 4})
        } else {
            serde_json::Value::Null
        };
        assert_eq!(r["bulkhead"], want, "{r}");
        assert!(r["breaker"].is_null(), "{r}");
    }
    running.shutdown().await;
}

/// Clients that retry at once, marked by `X-Retry-Attempt` (or Envoy's
/// count): above the budget (reserve plus 0.2 of first attempts) retries
/// get `retry_budget_exhausted`, while every first attempt is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_over_the_budget_are_refused_and_first_attempts_are_not() {
    let up = common::Upstream::start(Duration::ZERO).await;
    let running = common::start(common::config_from_toml(
        "[[upstreams]]\nname = \"api\"\nurl = \"{upstream}\"\n\
         [[routes]]\nname = \"all\"\nupstream = \"api\"\n\
         [routes.limit]\nalgorithm = \"fixed\"\nvalue = 100\n\
         [routes.retry_budget]\nratio = 0.2\nttl = \"30s\"\nmin_per_s = 0\n",
        &up.uri(),
    ))
    .await;
    let (addr, admin) = (running.proxy_addr, running.admin_addr);
    let client = Client::http1();
    let mut first_ok = 0;
    let (mut retry_ok, mut retry_refused) = (0, 0);
    // 100 clients: each first attempt, then up to 3 immediate retries
    // (alternating the two header styles).
    for i in 0..100 {
        let r = client.get(addr, "/", &[]).await;
        assert_eq!(r.status, 200, "a first attempt was refused: {r:?}");
        first_ok += 1;
        for attempt in 1..=3 {
            let (h, v) = if i % 2 == 0 {
                ("x-retry-attempt", attempt.to_string())
            } else {
                ("x-envoy-attempt-count", (attempt + 1).to_string())
            };
            let r = client.get(addr, "/", &[(h, &v)]).await;
            if r.status == 200 {
                retry_ok += 1;
            } else {
                r.assert_refused(503, "retry_budget_exhausted");
                retry_refused += 1;
            }
        }
    }
    assert_eq!(first_ok, 100);
    // 0.2 per first attempt, each earned before its retries: 20 at most,
    // and the budget never starves for long.
    assert!((18..=20).contains(&retry_ok), "{retry_ok} retries admitted");
    assert_eq!(retry_ok + retry_refused, 300);
    let m = common::metrics(admin).await;
    assert_eq!(
        common::sum(
            &m,
            "floodwall_rejections_total",
            &[("reason", "retry_budget_exhausted")]
        ),
        retry_refused as f64
    );
    assert_eq!(
        common::sum(&m, "floodwall_retry_budget_remaining", &[("route", "all")]),
        0.0
    );
    // A fresh first attempt still gets through, and earns a retry share.
    assert_eq!(client.get(addr, "/", &[]).await.status, 200);
    running.shutdown().await;
}

/// Fresh requests first: once the gate has refused a first attempt for
/// lack of room, a retry within `yield_window` is refused
/// (`retry_budget_exhausted`, told 1 s) even when the gate has room again
/// and the ratio would allow it, while a first attempt is admitted; after
/// the window, retries are let through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_yield_to_first_attempts_while_the_gate_refuses_them() {
    let up = common::Upstream::start(Duration::from_millis(300)).await;
    let running = common::start(common::config_from_toml(
        "[[upstreams]]\nname = \"api\"\nurl = \"{upstream}\"\n\
         [[routes]]\nname = \"all\"\nupstream = \"api\"\n\
         [routes.limit]\nalgorithm = \"fixed\"\nvalue = 2\n\
         [routes.retry_budget]\nmin_per_s = 1000\nyield_window = \"3s\"\n",
        &up.uri(),
    ))
    .await;
    let (addr, admin) = (running.proxy_addr, running.admin_addr);
    let client = Client::http1();
    let retry = [("x-retry-attempt", "1")];
    // A retry while nothing was refused: the reserve admits it.
    assert_eq!(client.get(addr, "/", &retry).await.status, 200);
    // Fill the gate, and have a first attempt refused by it.
    let (held, refused) = tokio::join!(common::burst(&client, addr, 2, "/", &[]), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.get(addr, "/", &[]).await
    });
    assert_eq!(common::count_status(&held, 200), 2);
    refused.assert_refused(503, "wip_limit_exceeded");
    // The gate is empty again, but retries yield; first attempts do not.
    let r = client.get(addr, "/", &retry).await;
    r.assert_refused(503, "retry_budget_exhausted");
    // 1 s, jittered over 0.5-1.5 s: `Retry-After` rounds it up.
    let ms: u64 = r.headers["x-floodwall-retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((500..=1500).contains(&ms), "{r:?}");
    assert!(matches!(r.retry_after(), Some(1 | 2)), "{r:?}");
    assert_eq!(client.get(addr, "/", &[]).await.status, 200);
    let m = common::metrics(admin).await;
    assert_eq!(
        common::sum(&m, "floodwall_retry_budget_remaining", &[("route", "all")]),
        0.0,
        "no room for retries while they yield"
    );
    // After the window, with no first attempt refused since, retries are
    // admitted again.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(client.get(addr, "/", &retry).await.status, 200);
    assert_eq!(common::wip_current(admin).await, 0.0, "no slot leaked");
    running.shutdown().await;
}

/// The same overload, enforced and in shadow mode: shadow refuses
/// nothing, marks what it would have refused, and counts within 5 % of
/// what enforcement refused; afterwards nothing is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_counts_what_enforcement_refuses_and_refuses_nothing() {
    async fn run(shadow: bool) -> (usize, f64, usize) {
        let up = common::Upstream::start(Duration::from_millis(150)).await;
        let mode = if shadow { "shadow" } else { "enforce" };
        let running = common::start(common::config_from_toml(
            &format!(
                "[[upstreams]]\nname = \"api\"\nurl = \"{{upstream}}\"\n[upstreams.bulkhead]\ntickets = 6\n\
                 [[routes]]\nname = \"all\"\nupstream = \"api\"\nmode = \"{mode}\"\n\
                 [routes.limit]\nalgorithm = \"fixed\"\nvalue = 4\n"
            ),
            &up.uri(),
        ))
        .await;
        let (addr, admin) = (running.proxy_addr, running.admin_addr);
        let client = Client::http1();
        let mut replies = Vec::new();
        for _ in 0..5 {
            replies.extend(common::burst(&client, addr, 30, "/", &[]).await);
        }
        let refused = replies.iter().filter(|r| r.status != 200).count();
        let marked = replies
            .iter()
            .filter(|r| r.headers.get("x-floodwall-shadow").is_some())
            .count();
        if shadow {
            for r in replies
                .iter()
                .filter(|r| r.headers.contains_key("x-floodwall-shadow"))
            {
                assert_eq!(r.status, 200);
                let reason = r.headers["x-floodwall-shadow"].to_str().unwrap();
                assert!(
                    ["bulkhead_full", "wip_limit_exceeded"].contains(&reason),
                    "{reason}"
                );
            }
        }
        let m = common::metrics(admin).await;
        let shadow_count = common::sum(&m, "floodwall_shadow_refusals_total", &[("route", "all")]);
        assert_eq!(shadow_count as usize, marked);
        assert_eq!(common::wip_current(admin).await, 0.0, "no permit leaked");
        assert_eq!(
            common::sum(&m, "floodwall_bulkhead_inflight", &[]),
            0.0,
            "no ticket leaked"
        );
        assert_eq!(up.current(), 0);
        common::promtool_check(&common::metrics_text(admin).await);
        running.shutdown().await;
        (refused, shadow_count, up.total())
    }
    let (enforced, none, served_enforced) = run(false).await;
    let (refused, shadow_count, served_shadow) = run(true).await;
    assert_eq!(none, 0.0, "enforcing counts no shadow refusal");
    assert_eq!(refused, 0, "shadow mode refused something");
    assert_eq!(served_shadow, 150, "shadow forwarded everything");
    assert!(enforced > 100, "the load overloads: {enforced} refused");
    assert_eq!(served_enforced + enforced, 150);
    eprintln!("enforced refused {enforced}, shadow counted {shadow_count}");
    let diff = (shadow_count - enforced as f64).abs();
    assert!(
        diff <= 0.05 * enforced as f64,
        "shadow counted {shadow_count}, enforcement refused {enforced}"
    );
}

/// A reload that leaves the upstream's config alone keeps its breaker,
/// open, and a bulkhead `quota` follows the routes' new limits; changing
/// the breaker's keys builds a new one, closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_unchanged_breaker_and_resizes_a_quota() {
    let up = Flaky::start().await;
    up.set(FAIL_500);
    let text = |limit: usize, threshold: u32| {
        format!(
            "[[upstreams]]\nname = \"api\"\nurl = \"{}\"\n\
             [upstreams.breaker]\nerror_threshold = {threshold}\nerror_timeout = \"1m\"\n\
             [upstreams.bulkhead]\nquota = 0.5\n\
             [[routes]]\nname = \"all\"\nupstream = \"api\"\n\
             [routes.limit]\nalgorithm = \"fixed\"\nvalue = {limit}\n",
            up.uri()
        )
    };
    let current = Arc::new(Mutex::new(text(10, 2)));
    let load = {
        let current = current.clone();
        move || Ok(config(&current.lock().unwrap()))
    };
    let running = floodwall::app::start_reloadable(config(&text(10, 2)), Some(Box::new(load)))
        .await
        .unwrap();
    let (addr, admin) = (running.proxy_addr, running.admin_addr);
    let tickets = || async {
        common::sum(
            &common::metrics(admin).await,
            "floodwall_bulkhead_tickets",
            &[("upstream", "api")],
        )
    };
    assert_eq!(tickets().await, 5.0, "0.5 of a limit of 10");
    for _ in 0..2 {
        assert_eq!(get(addr).await.status, 500);
    }
    get(addr).await.assert_refused(503, "circuit_open");

    *current.lock().unwrap() = text(20, 2);
    running.reload().unwrap();
    get(addr).await.assert_refused(503, "circuit_open");
    assert_eq!(
        breaker_state(admin).await,
        1.0,
        "kept open across the reload"
    );
    assert_eq!(tickets().await, 10.0, "0.5 of the new limit of 20");

    *current.lock().unwrap() = text(20, 3);
    running.reload().unwrap();
    assert_eq!(breaker_state(admin).await, 0.0, "a new breaker, closed");
    assert_eq!(get(addr).await.status, 500);
    running.shutdown().await;
}
