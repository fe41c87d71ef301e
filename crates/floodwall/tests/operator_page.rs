//! The live status page, opened in a real headless Chromium while floodwall
//! is under load: the DOM shows the current limit and the charts hold the
//! history, and a screenshot is written next to the test output.

mod common;
mod operator;

use common::*;
use http::{Method, StatusCode};
use operator::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const LIMIT: usize = 5;

/// Chromium's binary; scripts/install-deps.sh installs the Debian package.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
        {
            if out.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            }
        }
    }
    panic!("no chromium on PATH: run scripts/install-deps.sh (Debian package `chromium`)");
}

/// Runs headless Chromium on `url` with `extra` arguments, letting the
/// page's own timers run for `budget` of virtual time; returns stdout.
fn headless(url: &str, profile: &std::path::Path, budget: Duration, extra: &[&str]) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--virtual-time-budget={}", budget.as_millis()),
            "--window-size=1280,1500",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of attribute `attr` on the element carrying `marker`.
fn attr_after<'a>(dom: &'a str, marker: &str, attr: &str) -> Option<&'a str> {
    let at = dom.find(marker)?;
    let tag_start = dom[..at].rfind('<')?;
    let tag_end = at + dom[at..].find('>')?;
    let tag = &dom[tag_start..tag_end];
    let from = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
    Some(&tag[from..from + tag[from..].find('"')?])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_live_limit_and_five_minutes_of_charts_in_chromium() {
    let upstream = Upstream::start(Duration::from_millis(30)).await;
    let mut config = simple_config(upstream.uri(), LIMIT);
    config.routes[0].name = "api".into();
    let fw = start(config).await;
    // Twice the limit in closed loop: the gate is full and refuses.
    let load = Load::start(fw.proxy_addr, "/work", 2 * LIMIT);

    // The page itself: self-contained, from the binary.
    let page = admin(Method::GET, fw.admin_addr, "/", None).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = String::from_utf8_lossy(&page.body).into_owned();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    // The SVG namespace is a name, not a fetch.
    let html = html.replace("\"http://www.w3.org/2000/svg\"", "");
    for outside in ["http://", "https://", "//cdn", "<link", "src=\""] {
        assert!(
            !html.contains(outside),
            "the page fetches from outside: {outside}"
        );
    }

    // Wait for history to build up, then open it.
    eventually(Duration::from_secs(20), "8 points of history", || async {
        let h = admin(Method::GET, fw.admin_addr, "/history.json", None).await;
        h.json()["points"].as_array().unwrap().len() >= 8
    })
    .await;
    let dir = temp_dir("page");
    let url = format!("http://{}/", fw.admin_addr);
    let dom = headless(
        &url,
        &dir.join("profile-dom"),
        Duration::from_secs(3),
        &["--dump-dom"],
    );

    let shown: usize = attr_after(&dom, "id=\"limit-api\"", "data-limit")
        .unwrap_or_else(|| panic!("no limit in the DOM:\n{dom}"))
        .parse()
        .unwrap();
    assert_eq!(shown, LIMIT, "the page shows the current limit");
    let points: usize = attr_after(&dom, "data-series=\"limit\"", "data-points")
        .unwrap_or_else(|| panic!("no limit chart in the DOM:\n{dom}"))
        .parse()
        .unwrap();
    assert!(points >= 8, "the limit chart has {points} points");
    let inflight: usize = attr_after(&dom, "data-series=\"inflight\"", "data-points")
        .unwrap()
        .parse()
        .unwrap();
    assert!(inflight >= 8, "the in-flight chart has {inflight} points");
    assert!(
        dom.contains("data-series=\"wip_limit_exceeded\""),
        "refusals are charted by reason"
    );
    assert!(dom.contains("fixed limit of 5"), "limited_by is shown");
    assert!(dom.contains("data-ready=\"1\""), "the page read /status");

    // The screenshot, next to the test output.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("floodwall-status-page.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        &url,
        &dir.join("profile-shot"),
        Duration::from_secs(3),
        &[&format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    println!("screenshot: {} ({} bytes)", shot.display(), png.len());

    let (statuses, errors) = load.stop().await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        statuses.contains_key(&503),
        "the gate refused: {statuses:?}"
    );
    fw.shutdown().await;
}
