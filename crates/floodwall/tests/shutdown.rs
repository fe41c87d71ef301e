//! Graceful shutdown of the real binary: on SIGTERM or SIGINT floodwall
//! stops accepting, lets admitted requests finish, and exits 0.

mod common;

use common::*;
use std::time::{Duration, Instant};

const EVENTUALLY: Duration = Duration::from_secs(5);

/// The drain timeout the test config sets; the process must be gone well
/// within it, since the requests in flight take about a second.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

/// 8 requests in flight when SIGTERM arrives: all 8 are answered 200, no new
/// connection is served, `/readyz` says draining, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_admitted_requests_then_exits_0() {
    let upstream = Upstream::start(Duration::from_secs(1)).await;
    let config = temp_file(
        "shutdown",
        &format!(
            r#"
[server]
drain_timeout = "{}s"

[[upstreams]]
name = "app"
url = "http://{}"

[[routes]]
name = "all"
upstream = "app"
"#,
            DRAIN_TIMEOUT.as_secs(),
            upstream.addr
        ),
    );
    let mut fw = spawn_binary(&[
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--limit",
        "8",
    ]);
    let (proxy, admin) = (fw.proxy, fw.admin);
    let client = Client::http1();
    let ready = client.get(admin, "/readyz", &[]).await;
    assert_eq!(ready.status, 200, "{ready:?}");

    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { burst(&client, proxy, 8, "/", &[]).await }
    });
    wait_until(EVENTUALLY, "8 requests are in flight", || async {
        wip_current(admin).await == 8.0
    })
    .await;

    let signalled = Instant::now();
    fw.terminate();
    wait_until(EVENTUALLY, "/readyz reports draining", || async {
        Client::http1().get(admin, "/readyz", &[]).await.status == 503
    })
    .await;
    // The listener is closed before draining is reported, so a new client
    // finds nobody to serve it.
    match Client::http1()
        .try_send(request(
            http::Method::GET,
            proxy,
            "/",
            &[],
            bytes::Bytes::new(),
        ))
        .await
    {
        Err(_) => {}
        Ok(r) => panic!("a request after SIGTERM was served: {r:?}"),
    }

    let replies = in_flight.await.unwrap();
    assert_eq!(count_status(&replies, 200), 8, "{replies:#?}");
    assert_eq!(upstream.total(), 8);

    let exit = tokio::task::spawn_blocking(move || {
        let exit = fw.wait_timeout(DRAIN_TIMEOUT);
        (exit, fw)
    })
    .await
    .unwrap();
    let (exit, fw) = exit;
    let Some(exit) = exit else {
        panic!(
            "still running {DRAIN_TIMEOUT:?} after SIGTERM; stderr:\n{}",
            fw.stderr()
        );
    };
    assert!(
        exit.success(),
        "exit status {exit}; stderr:\n{}",
        fw.stderr()
    );
    assert!(signalled.elapsed() < DRAIN_TIMEOUT);
    assert_eq!(fw.stdout_after_ready(), "", "one stdout line only");
    let _ = std::fs::remove_file(config);
}

/// SIGINT (Ctrl-C) with nothing in flight exits 0 promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_when_idle_exits_0() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let url = format!("http://{}", upstream.addr);
    let fw = spawn_binary(&[
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--upstream",
        &url,
        "--limit",
        "2",
    ]);
    let reply = Client::http1().get(fw.proxy, "/", &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");

    let status = std::process::Command::new("kill")
        .args(["-INT", &fw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (exit, fw) = tokio::task::spawn_blocking(move || {
        let mut fw = fw;
        (fw.wait_timeout(EVENTUALLY), fw)
    })
    .await
    .unwrap();
    let exit = exit.unwrap_or_else(|| panic!("still running after SIGINT:\n{}", fw.stderr()));
    assert!(exit.success(), "exit status {exit}:\n{}", fw.stderr());
}
