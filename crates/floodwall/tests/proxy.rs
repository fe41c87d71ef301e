//! The proxy end to end: real upstreams, real sockets, port 0 everywhere.
//!
//! Each test starts its own upstream (`common::Upstream`) and its own
//! floodwall, sends traffic through it and checks what the upstream saw,
//! what clients got back and what the admin endpoints report.

mod common;

use bytes::Bytes;
use common::*;
use http::Method;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Generous bound for things that must happen soon on a loaded machine.
const EVENTUALLY: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// 1. The limit holds at the upstream (the real binary)
// ---------------------------------------------------------------------------

/// 20 slow requests at once through `floodwall serve --limit 4`: the upstream
/// never serves more than 4, exactly 4 are served, and the other 16 are
/// refused at once with 503, a reason, a Retry-After and a JSON body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_holds_at_the_upstream() {
    let upstream = Upstream::start(Duration::from_millis(1500)).await;
    let url = format!("http://{}", upstream.addr);
    let fw = spawn_binary(&[
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--upstream",
        &url,
        "--limit",
        "4",
    ]);

    let started = Instant::now();
    let replies = burst(&Client::http1(), fw.proxy, 20, "/", &[]).await;

    assert_eq!(upstream.peak(), 4, "the limit was used, and never exceeded");
    assert_eq!(
        upstream.total(),
        4,
        "refused requests never reach the upstream"
    );
    assert_eq!(count_status(&replies, 200), 4, "{replies:#?}");
    assert_eq!(count_status(&replies, 503), 16, "{replies:#?}");
    for r in replies.iter().filter(|r| r.status != 200) {
        r.assert_refused(503, "wip_limit_exceeded");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the admitted requests waited for the upstream"
    );

    let scrape = metrics(fw.admin).await;
    let rejected = sum(
        &scrape,
        "floodwall_rejections_total",
        &[("reason", "wip_limit_exceeded")],
    );
    assert_eq!(rejected, 16.0);
    wait_until(EVENTUALLY, "every slot is released", || async {
        wip_current(fw.admin).await == 0.0
    })
    .await;
}

// ---------------------------------------------------------------------------
// 2. Disconnects release slots
// ---------------------------------------------------------------------------

/// Four HTTP/1.1 clients hold all four slots and hang up: the slots are free
/// again within a second, the next request is admitted, and the four count
/// as drops for the limit algorithm, since they waited far longer than
/// requests here normally take (a client timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_disconnects_release_slots() {
    let upstream = Upstream::start(Duration::from_secs(5)).await;
    let fw = start(simple_config(upstream.uri(), 4)).await;
    let admin = fw.admin_addr;
    // Requests here normally take 20 ms.
    for _ in 0..5 {
        let r = Client::http1()
            .get(fw.proxy_addr, "/?sleep_ms=20", &[])
            .await;
        assert_eq!(r.status, 200);
    }

    let mut sockets = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(fw.proxy_addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: floodwall.test\r\n\r\n")
            .await
            .unwrap();
        sockets.push(s);
    }
    wait_until(EVENTUALLY, "4 slots are held", || async {
        wip_current(admin).await == 4.0
    })
    .await;
    let refused = Client::http1().get(fw.proxy_addr, "/", &[]).await;
    refused.assert_refused(503, "wip_limit_exceeded");
    tokio::time::sleep(Duration::from_millis(200)).await;

    drop(sockets);
    wait_until(Duration::from_secs(1), "the slots are released", || async {
        wip_current(admin).await == 0.0
    })
    .await;
    let reply = Client::http1()
        .get(fw.proxy_addr, "/?sleep_ms=0", &[])
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");

    let scrape = metrics(admin).await;
    assert_eq!(
        sum(
            &scrape,
            "floodwall_requests_total",
            &[("outcome", "dropped")]
        ),
        4.0,
        "a request abandoned before the upstream answered is a drop (a client timeout), not a success"
    );
    wait_until(
        EVENTUALLY,
        "the upstream stops the abandoned work",
        || async { upstream.current() == 0 },
    )
    .await;
}

/// The same over HTTP/2: a client that drops its request futures (the
/// streams are reset, the connection stays up) gives the slots back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cancelled_streams_release_slots() {
    let upstream = Upstream::start(Duration::from_secs(5)).await;
    let fw = start(simple_config(upstream.uri(), 4)).await;
    let admin = fw.admin_addr;
    let h2 = Client::http2();

    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let h2 = h2.clone();
            let addr = fw.proxy_addr;
            tokio::spawn(async move { h2.get(addr, "/", &[]).await })
        })
        .collect();
    wait_until(EVENTUALLY, "4 slots are held", || async {
        wip_current(admin).await == 4.0
    })
    .await;
    h2.get(fw.proxy_addr, "/", &[])
        .await
        .assert_refused(503, "wip_limit_exceeded");

    for t in &tasks {
        t.abort();
    }
    wait_until(Duration::from_secs(1), "the slots are released", || async {
        wip_current(admin).await == 0.0
    })
    .await;
    for t in tasks {
        assert!(t.await.unwrap_err().is_cancelled());
    }
    let reply = h2.get(fw.proxy_addr, "/?sleep_ms=0", &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

// ---------------------------------------------------------------------------
// 3. Batch cannot starve interactive
// ---------------------------------------------------------------------------

/// With limit 10 and interactive reserving half of it, a batch flood gets
/// at most 5 slots while interactive is active, and 5 interactive requests
/// sent together in the middle of the flood are all served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_cannot_starve_interactive() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let fw = start(simple_config(upstream.uri(), 10)).await;
    let (proxy, admin) = (fw.proxy_addr, fw.admin_addr);
    let client = Client::http1();
    let interactive = [("x-priority", "interactive")];

    // Mark interactive active, and keep it so (a class counts as active
    // for 1 s after its last arrival) until the burst below.
    let first = client.get(proxy, "/?sleep_ms=0", &interactive).await;
    assert_eq!(first.status, 200);
    let heartbeat_stop = Arc::new(AtomicBool::new(false));
    let heartbeat = tokio::spawn({
        let (client, stop) = (client.clone(), heartbeat_stop.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                let r = client.get(proxy, "/?sleep_ms=0", &interactive).await;
                assert_eq!(r.status, 200, "interactive heartbeat refused: {r:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    // The flood: a new slow batch request every 20 ms until told to stop.
    let flood_stop = Arc::new(AtomicBool::new(false));
    let flood_replies = Arc::new(Mutex::new(Vec::new()));
    let flood = tokio::spawn({
        let (client, stop, replies) = (client.clone(), flood_stop.clone(), flood_replies.clone());
        async move {
            let mut tasks = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let (client, replies) = (client.clone(), replies.clone());
                tasks.push(tokio::spawn(async move {
                    let r = client
                        .get(proxy, "/?sleep_ms=3000", &[("x-priority", "batch")])
                        .await;
                    replies.lock().unwrap().push(r);
                }));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tasks
        }
    });
    wait_until(
        EVENTUALLY,
        "batch holds 5 slots at the upstream",
        || async { upstream.current_of("x-priority", "batch") == 5 },
    )
    .await;
    // Let the flood push against the limit for a while.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused_batch = flood_replies
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.status == 503)
        .count();
    assert!(refused_batch > 0, "the flood was refused some of the time");

    // Stop the heartbeat and wait for it, so no interactive request is in
    // flight, then send 5 at once while the flood goes on.
    heartbeat_stop.store(true, Ordering::SeqCst);
    heartbeat.await.unwrap();
    let burst_task = tokio::spawn({
        let client = client.clone();
        async move { burst(&client, proxy, 5, "/?sleep_ms=1000", &interactive).await }
    });
    wait_until(EVENTUALLY, "/status shows 5 + 5 in flight", || async {
        let s = status(admin).await;
        let route = &s["routes"][0];
        let class = |name: &str| {
            route["classes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .unwrap_or_else(|| panic!("no class {name} in {route}"))["inflight"]
                .as_u64()
                .unwrap()
        };
        class("interactive") == 5 && class("batch") == 5 && route["inflight"] == 10
    })
    .await;
    // Stop the flood before the interactive requests finish: once
    // interactive goes idle, batch may rightly borrow its reservation.
    flood_stop.store(true, Ordering::SeqCst);
    let flood_tasks = flood.await.unwrap();

    let replies = burst_task.await.unwrap();
    assert_eq!(count_status(&replies, 200), 5, "{replies:#?}");
    assert_eq!(upstream.peak_of("x-priority", "interactive"), 5);
    assert_eq!(
        upstream.peak_of("x-priority", "batch"),
        5,
        "batch never held more than its share while interactive was active"
    );
    for t in flood_tasks {
        t.await.unwrap();
    }
    for r in flood_replies.lock().unwrap().iter() {
        if r.status != 200 {
            r.assert_refused(503, "wip_limit_exceeded");
        }
    }
}

// ---------------------------------------------------------------------------
// 4. Tenant cap
// ---------------------------------------------------------------------------

/// `max_share = 0.25` of a limit of 8 caps a tenant at 2 slots, but only
/// while another tenant within its share has been refused recently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_is_capped_only_under_contention() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let mut config = simple_config(upstream.uri(), 8);
    config.routes[0].tenant.max_share = 0.25;
    // Long enough that the second phase below is still "contended", even
    // on a loaded machine.
    config.routes[0].tenant.contention_window = Duration::from_secs(60);
    let fw = start(config).await;
    let (proxy, admin) = (fw.proxy_addr, fw.admin_addr);
    let client = Client::http1();
    let hot = [("x-tenant-id", "hot")];
    let calm = [("x-tenant-id", "calm")];

    // Alone on the route, hot may use the whole limit.
    let hot_all = tokio::spawn({
        let client = client.clone();
        async move { burst(&client, proxy, 8, "/?hold=first", &hot).await }
    });
    wait_until(EVENTUALLY, "hot holds all 8 slots", || async {
        upstream.current_of("x-tenant-id", "hot") == 8
    })
    .await;
    assert_eq!(
        status(admin).await["routes"][0]["tenant_caps_enforced"],
        false
    );

    // calm, within its share, is refused because the limit is full: that
    // is contention, so hot is now held to its cap.
    client
        .get(proxy, "/", &calm)
        .await
        .assert_refused(503, "wip_limit_exceeded");
    client
        .get(proxy, "/", &hot)
        .await
        .assert_refused(429, "tenant_limit_exceeded");
    assert_eq!(
        status(admin).await["routes"][0]["tenant_caps_enforced"],
        true
    );

    upstream.open("first");
    let replies = hot_all.await.unwrap();
    assert_eq!(count_status(&replies, 200), 8, "{replies:#?}");
    wait_until(EVENTUALLY, "every slot is released", || async {
        inflight(&fw) == 0
    })
    .await;

    // Still contended: calm is served, and hot, sending 8 at once again,
    // may fill the limit only up to one share (2 slots) short of full: 5
    // slots next to calm's 1, so 2 stay free for others, and 3 refusals.
    upstream.reset_peaks();
    let calm_task = tokio::spawn({
        let client = client.clone();
        async move { client.get(proxy, "/?hold=second", &calm).await }
    });
    wait_until(EVENTUALLY, "calm is at the upstream", || async {
        upstream.current_of("x-tenant-id", "calm") == 1
    })
    .await;
    let hot_task = tokio::spawn({
        let client = client.clone();
        async move { burst(&client, proxy, 8, "/?hold=second", &hot).await }
    });
    wait_until(
        EVENTUALLY,
        "calm and 5 of hot are at the upstream",
        || async {
            upstream.current_of("x-tenant-id", "calm") == 1
                && upstream.current_of("x-tenant-id", "hot") == 5
                && inflight(&fw) == 6
        },
    )
    .await;
    // The share kept free is really free: another tenant gets in at once.
    let third = client.get(proxy, "/", &[("x-tenant-id", "third")]).await;
    assert_eq!(third.status, 200);
    let hot_refusals = sum(
        &metrics(admin).await,
        "floodwall_rejections_total",
        &[("reason", "tenant_limit_exceeded")],
    );
    assert!(hot_refusals >= 3.0, "{hot_refusals}");
    upstream.open("second");
    assert_eq!(calm_task.await.unwrap().status, 200);
    let replies = hot_task.await.unwrap();
    assert_eq!(count_status(&replies, 200), 5, "{replies:#?}");
    for r in replies.iter().filter(|r| r.status != 200) {
        r.assert_refused(429, "tenant_limit_exceeded");
    }
    assert_eq!(upstream.peak_of("x-tenant-id", "hot"), 5);
}

// ---------------------------------------------------------------------------
// 5. Bad input and failing upstreams
// ---------------------------------------------------------------------------

/// Asserts no slot is held, both in the limiter and in `/metrics`.
async fn assert_no_slot_held(fw: &floodwall::app::Running) {
    wait_until(EVENTUALLY, "no slot is held", || async {
        inflight(fw) == 0 && wip_current(fw.admin_addr).await == 0.0
    })
    .await;
}

/// Hostile tenant ids are refused with 400; an unknown priority falls back
/// to the default class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tenant_ids_and_unknown_priorities() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let fw = start(simple_config(upstream.uri(), 4)).await;
    let client = Client::http1();

    let too_long = "t".repeat(129);
    for bad in [too_long.as_str(), "two words"] {
        client
            .get(fw.proxy_addr, "/", &[("x-tenant-id", bad)])
            .await
            .assert_refused(400, "invalid_tenant_id");
        assert_no_slot_held(&fw).await;
    }
    let longest = "t".repeat(128);
    let ok = client
        .get(fw.proxy_addr, "/", &[("x-tenant-id", &longest)])
        .await;
    assert_eq!(ok.status, 200, "128 bytes is allowed: {ok:?}");
    assert_eq!(upstream.total(), 1, "refused ids never reach the upstream");

    let ok = client
        .get(fw.proxy_addr, "/", &[("x-priority", "urgent")])
        .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_no_slot_held(&fw).await;
    let scrape = metrics(fw.admin_addr).await;
    let served = |class| {
        sum(
            &scrape,
            "floodwall_requests_total",
            &[("class", class), ("outcome", "success")],
        )
    };
    assert_eq!(
        served("interactive"),
        2.0,
        "the unknown class is the default"
    );
    assert_eq!(served("batch"), 0.0);
    assert_eq!(
        sum(
            &scrape,
            "floodwall_rejections_total",
            &[("reason", "invalid_tenant_id")]
        ),
        2.0
    );
}

/// An upstream that refuses connections gives 502, with the slot released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_upstream_is_502() {
    // A port just freed on 127.0.0.1 may be taken again at once by this
    // very floodwall's own listeners (which bind 127.0.0.1:0); the same port
    // on 127.0.0.3, where nothing in the tests ever listens, stays refused.
    let dead = {
        let l = std::net::TcpListener::bind(loopback()).unwrap();
        let port = l.local_addr().unwrap().port();
        std::net::SocketAddr::from(([127, 0, 0, 3], port))
    };
    let fw = start(simple_config(format!("http://{dead}").parse().unwrap(), 4)).await;
    let reply = Client::http1().get(fw.proxy_addr, "/", &[]).await;
    reply.assert_refused(502, "upstream_unavailable");
    assert_no_slot_held(&fw).await;
    let scrape = metrics(fw.admin_addr).await;
    assert_eq!(
        sum(
            &scrape,
            "floodwall_rejections_total",
            &[("reason", "upstream_unavailable")]
        ),
        1.0
    );
    assert_eq!(
        sum(&scrape, "floodwall_requests_total", &[("outcome", "error")]),
        1.0
    );
}

/// An upstream that never answers gives 504 after `response_timeout`, with
/// the slot released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_is_504() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let mut config = simple_config(upstream.uri(), 4);
    config.upstreams[0].response_timeout = Duration::from_millis(300);
    let fw = start(config).await;

    let started = Instant::now();
    let reply = Client::http1()
        .get(fw.proxy_addr, "/?hold=never", &[])
        .await;
    let took = started.elapsed();
    reply.assert_refused(504, "upstream_timeout");
    assert!(
        took >= Duration::from_millis(300),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert_no_slot_held(&fw).await;
    assert_eq!(
        sum(
            &metrics(fw.admin_addr).await,
            "floodwall_rejections_total",
            &[("reason", "upstream_timeout")]
        ),
        1.0
    );
    upstream.open("never");
}

// ---------------------------------------------------------------------------
// 6. Metrics and the admin endpoints
// ---------------------------------------------------------------------------

/// After some traffic `/metrics` parses, has every series with its labels
/// and counts what happened; `/healthz`, `/readyz` and `/status` answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let mut config = simple_config(upstream.uri(), 1);
    // Short, so the batch request below is not shed for interactive's
    // refusal (lower classes do not borrow while a higher one wants slots).
    config.server.class_idle_window = Duration::from_millis(100);
    let fw = start(config).await;
    let (proxy, admin) = (fw.proxy_addr, fw.admin_addr);
    let client = Client::http1();

    for _ in 0..3 {
        assert_eq!(client.get(proxy, "/", &[]).await.status, 200);
    }
    // One more held at the upstream, and one refused meanwhile.
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.get(proxy, "/?hold=m", &[]).await }
    });
    wait_until(EVENTUALLY, "the held request is in flight", || async {
        upstream.current() == 1
    })
    .await;
    client
        .get(proxy, "/", &[])
        .await
        .assert_refused(503, "wip_limit_exceeded");
    let during = metrics(admin).await;
    let interactive = [("route", "default"), ("class", "interactive")];
    assert_eq!(sum(&during, "floodwall_wip_current", &interactive), 1.0);
    upstream.open("m");
    assert_eq!(held.await.unwrap().status, 200);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        client
            .get(proxy, "/", &[("x-priority", "batch")])
            .await
            .status,
        200
    );
    wait_until(EVENTUALLY, "no slot is held", || async {
        inflight(&fw) == 0
    })
    .await;

    let scrape = metrics(admin).await;
    let names: std::collections::HashSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "floodwall_wip_current",
        "floodwall_wip_limit",
        "floodwall_wip_reserved",
        "floodwall_limit",
        "floodwall_queue_depth",
        "floodwall_tenants_active",
        "floodwall_requests_total",
        "floodwall_rejections_total",
        "floodwall_request_duration_seconds",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    let has = |metric: &str, labels: &[(&str, &str)]| {
        scrape.samples.iter().any(|s| {
            s.metric == metric
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    };
    for class in ["interactive", "batch"] {
        let l = [("route", "default"), ("class", class)];
        assert!(has("floodwall_wip_current", &l), "wip_current {class}");
        assert!(has("floodwall_wip_limit", &l), "wip_limit {class}");
        assert!(has("floodwall_wip_reserved", &l), "wip_reserved {class}");
        for outcome in ["success", "error", "dropped", "ignored"] {
            let l = [("route", "default"), ("class", class), ("outcome", outcome)];
            assert!(has("floodwall_requests_total", &l), "{l:?}");
        }
        for reason in [
            "wip_limit_exceeded",
            "tenant_limit_exceeded",
            "queue_full",
            "queue_timeout",
        ] {
            let l = [("route", "default"), ("class", class), ("reason", reason)];
            assert!(has("floodwall_rejections_total", &l), "{l:?}");
        }
    }
    assert!(has("floodwall_limit", &[("route", "default")]));
    assert!(has("floodwall_queue_depth", &[("route", "default")]));

    let success = |class| {
        sum(
            &scrape,
            "floodwall_requests_total",
            &[
                ("route", "default"),
                ("class", class),
                ("outcome", "success"),
            ],
        )
    };
    assert_eq!(success("interactive"), 4.0);
    assert_eq!(success("batch"), 1.0);
    assert_eq!(
        sum(
            &scrape,
            "floodwall_rejections_total",
            &[
                ("route", "default"),
                ("class", "interactive"),
                ("reason", "wip_limit_exceeded")
            ]
        ),
        1.0
    );
    assert_eq!(sum(&scrape, "floodwall_wip_current", &[]), 0.0);
    assert_eq!(
        sum(&scrape, "floodwall_limit", &[("route", "default")]),
        1.0
    );
    assert_eq!(sum(&scrape, "floodwall_queue_depth", &[]), 0.0);
    // One histogram per route and class: 4 interactive + 1 batch.
    let mut total = 0.0;
    for histogram in scrape
        .samples
        .iter()
        .filter(|s| s.metric == "floodwall_request_duration_seconds")
    {
        let prometheus_parse::Value::Histogram(buckets) = &histogram.value else {
            panic!("request_duration is not a histogram: {histogram:?}");
        };
        assert_eq!(histogram.labels.get("route"), Some("default"));
        total += buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .expect("+Inf bucket")
            .count;
    }
    assert_eq!(total, 5.0, "every served request is timed");

    let text = metrics_text(admin).await;
    promtool_check(&text);

    let om = Client::http1()
        .get(
            admin,
            "/metrics",
            &[("accept", "application/openmetrics-text; version=1.0.0")],
        )
        .await;
    assert!(om.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(String::from_utf8_lossy(&om.body)
        .trim_end()
        .ends_with("# EOF"));

    for path in ["/healthz", "/readyz"] {
        let r = Client::http1().get(admin, path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    let s = status(admin).await;
    assert_eq!(s["draining"], false);
    let route = &s["routes"][0];
    assert_eq!(route["name"], "default", "{s}");
    assert_eq!(route["limit"], 1, "{s}");
    assert_eq!(route["inflight"], 0, "{s}");
    assert_eq!(route["queue_depth"], 0, "{s}");
    let classes = route["classes"].as_array().unwrap();
    assert_eq!(classes[0]["name"], "interactive");
    assert_eq!(classes[0]["rejections"]["wip_limit_exceeded"], 1, "{s}");
}

// ---------------------------------------------------------------------------
// 7. Hop-by-hop headers and forwarding
// ---------------------------------------------------------------------------

/// The headers the upstream received, from its `/echo` answer.
fn echoed(reply: &Reply) -> serde_json::Map<String, serde_json::Value> {
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json().as_object().unwrap().clone()
}

fn one(headers: &serde_json::Map<String, serde_json::Value>, name: &str) -> String {
    let values = headers
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing upstream: {headers:?}"))
        .as_array()
        .unwrap();
    assert_eq!(values.len(), 1, "{name}: {values:?}");
    values[0].as_str().unwrap().to_owned()
}

/// Hop-by-hop headers stop at floodwall, forwarding headers are added, and
/// large bodies pass through intact both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_and_bodies() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let fw = start(simple_config(upstream.uri(), 4)).await;
    let proxy = fw.proxy_addr;
    let client = Client::http1();

    let reply = client
        .get(
            proxy,
            "/echo",
            &[
                ("connection", "x-foo"),
                ("x-foo", "1"),
                ("keep-alive", "timeout=5"),
                ("x-kept", "yes"),
            ],
        )
        .await;
    let seen = echoed(&reply);
    assert!(!seen.contains_key("x-foo"), "{seen:?}");
    assert!(!seen.contains_key("keep-alive"), "{seen:?}");
    if let Some(c) = seen.get("connection") {
        assert!(!c.to_string().contains("x-foo"), "{seen:?}");
    }
    assert_eq!(one(&seen, "x-kept"), "yes");
    assert_eq!(one(&seen, "x-forwarded-for"), "127.0.0.1");
    assert_eq!(one(&seen, "x-forwarded-proto"), "http");
    assert_eq!(one(&seen, "host"), proxy.to_string(), "Host is kept");

    // A client-supplied X-Forwarded-For is extended, not replaced.
    let seen = echoed(
        &client
            .get(proxy, "/echo", &[("x-forwarded-for", "10.1.2.3")])
            .await,
    );
    assert_eq!(one(&seen, "x-forwarded-for"), "10.1.2.3, 127.0.0.1");

    // 1 MiB up and echoed back down.
    let body: Bytes = (0..1024 * 1024).map(pattern).collect::<Vec<u8>>().into();
    let reply = client
        .send(request(Method::POST, proxy, "/upload", &[], body.clone()))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), body.len());
    assert!(reply.body == body, "the echoed body differs");

    // 3 MiB streamed down in chunks.
    let n = 3 * 1024 * 1024 + 17;
    let reply = client.get(proxy, &format!("/bytes?n={n}"), &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), n);
    assert!(reply.body.iter().enumerate().all(|(i, b)| *b == pattern(i)));

    // h2c with prior knowledge, end to end.
    let h2 = Client::http2();
    let seen = echoed(&h2.get(proxy, "/echo", &[("x-kept", "h2")]).await);
    assert_eq!(one(&seen, "x-kept"), "h2");
    assert_eq!(
        one(&seen, "host"),
        proxy.to_string(),
        "Host from :authority"
    );
    assert_eq!(one(&seen, "x-forwarded-for"), "127.0.0.1");
    let reply = h2
        .send(request(Method::POST, proxy, "/upload", &[], body.clone()))
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.body == body, "the echoed h2 body differs");

    assert_no_slot_held(&fw).await;
    assert_eq!(
        sum(
            &metrics(fw.admin_addr).await,
            "floodwall_requests_total",
            &[("outcome", "success")]
        ),
        6.0
    );
}

// ---------------------------------------------------------------------------
// 9. The queue
// ---------------------------------------------------------------------------

const QUEUED: &str = r#"
[[upstreams]]
name = "app"
url = "{upstream}"

[[routes]]
name = "queued"
upstream = "app"
limit = { algorithm = "fixed", value = 1 }

[routes.queue]
capacity = 2
timeout = "200ms"
"#;

/// With limit 1 and a queue of 2 for 200 ms: a request that finds the slot
/// taken waits and is served when it frees; one that waits too long gets
/// queue_timeout; one that finds the queue full gets queue_full at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_waits_times_out_and_fills() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let fw = start(config_from_toml(QUEUED, &upstream.uri())).await;
    let proxy = fw.proxy_addr;
    let client = Client::http1();
    let limiter = fw.proxy.router.routes()[0].limiter.clone();
    let spawn_get = |path: &'static str| {
        let client = client.clone();
        tokio::spawn(async move { client.get(proxy, path, &[]).await })
    };

    // Waits, then is served.
    let first = spawn_get("/?hold=a");
    wait_until(EVENTUALLY, "the first request holds the slot", || async {
        upstream.current() == 1
    })
    .await;
    let second = spawn_get("/?sleep_ms=0");
    wait_until(EVENTUALLY, "the second request is queued", || async {
        limiter.snapshot().queue_depth == 1
    })
    .await;
    upstream.open("a");
    assert_eq!(first.await.unwrap().status, 200);
    let r = second.await.unwrap();
    assert_eq!(r.status, 200, "the queued request is served: {r:?}");

    // Waits too long.
    let holder = spawn_get("/?hold=b");
    wait_until(EVENTUALLY, "the slot is held", || async {
        upstream.current() == 1
    })
    .await;
    let started = Instant::now();
    let r = client.get(proxy, "/", &[]).await;
    let waited = started.elapsed();
    r.assert_refused(503, "queue_timeout");
    assert!(waited >= Duration::from_millis(200), "waited {waited:?}");

    // Three at once into a queue of two: two wait (and time out), one is
    // refused at once.
    let replies = burst(&client, proxy, 3, "/", &[]).await;
    let reasons: Vec<_> = replies.iter().map(|r| r.reason().unwrap_or("")).collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "queue_full").count(),
        1,
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| **r == "queue_timeout").count(),
        2,
        "{reasons:?}"
    );
    for r in &replies {
        r.assert_refused(503, r.reason().unwrap());
    }
    upstream.open("b");
    assert_eq!(holder.await.unwrap().status, 200);

    wait_until(EVENTUALLY, "the limiter and queue are empty", || async {
        limiter.inflight() == 0 && limiter.snapshot().queue_depth == 0
    })
    .await;
    let scrape = metrics(fw.admin_addr).await;
    let refused = |reason| {
        sum(
            &scrape,
            "floodwall_rejections_total",
            &[("route", "queued"), ("reason", reason)],
        )
    };
    assert_eq!(refused("queue_timeout"), 3.0);
    assert_eq!(refused("queue_full"), 1.0);
    assert_eq!(refused("wip_limit_exceeded"), 0.0);
    assert_eq!(
        upstream.total(),
        3,
        "refused requests never reach the upstream"
    );
}

// ---------------------------------------------------------------------------
// The slot is held while the response body streams
// ---------------------------------------------------------------------------

/// The upstream's work ends with its body, not its headers: while a slow
/// body streams through, its slot stays taken, and it is counted as a
/// success once the body ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_is_held_until_the_response_body_ends() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let fw = start(simple_config(upstream.uri(), 1)).await;
    let (proxy, admin) = (fw.proxy_addr, fw.admin_addr);
    let client = Client::http1();

    // 8 chunks 150 ms apart: the body takes over a second.
    let n = 8 * 64 * 1024;
    let path = format!("/bytes?n={n}&chunk_ms=150");
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.get(proxy, &path, &[]).await }
    });
    wait_until(EVENTUALLY, "the body is streaming", || async {
        upstream.total() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!slow.is_finished(), "the body is still streaming");
    assert_eq!(inflight(&fw), 1, "the slot is held while the body streams");
    assert_eq!(wip_current(admin).await, 1.0);
    client
        .get(proxy, "/", &[])
        .await
        .assert_refused(503, "wip_limit_exceeded");

    let reply = slow.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), n);
    assert_no_slot_held(&fw).await;
    let scrape = metrics(admin).await;
    assert_eq!(
        sum(
            &scrape,
            "floodwall_requests_total",
            &[("outcome", "success")]
        ),
        1.0,
        "a body read to its end is a success"
    );
    assert_eq!(
        sum(
            &scrape,
            "floodwall_requests_total",
            &[("outcome", "ignored")]
        ),
        0.0
    );
}
