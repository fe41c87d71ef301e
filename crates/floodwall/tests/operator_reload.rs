//! Hot reload of the real binary: SIGHUP under load keeps every kept
//! route's limiter (no cold start, the limit holds, nothing fails), moves a
//! route to a new upstream without losing a request, and a broken file
//! changes nothing, is counted and shows on /status. `POST /reload` needs
//! the admin token.

mod common;
mod operator;

use common::*;
use http::{Method, StatusCode};
use operator::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PINNED: usize = 6;

/// The config: `pinned` (a fixed limit, queued so nothing is refused) on
/// `pinned_upstream`, and `learned` (aimd, a fixed baseline so no baseline
/// probe pins it to its floor during the test) on `b`. `extra` is appended.
fn config(pinned_upstream: &str, a: &Upstream, b: &Upstream, c: &Upstream, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[[upstreams]]
name = "a"
url = "{}"

[[upstreams]]
name = "b"
url = "{}"

[[upstreams]]
name = "c"
url = "{}"

[[routes]]
name = "pinned"
path_prefix = "/pinned"
upstream = "{pinned_upstream}"
limit = {{ algorithm = "fixed", value = {PINNED} }}
queue = {{ capacity = 200, timeout = "10s" }}

[[routes]]
name = "learned"
path_prefix = "/"
upstream = "b"
limit = {{ algorithm = "aimd", min = 3, ramp_up = "0s", baseline = "30ms" }}
queue = {{ capacity = 200, timeout = "10s" }}
{extra}
"#,
        a.uri(),
        b.uri(),
        c.uri()
    )
}

async fn reloads(admin: std::net::SocketAddr) -> (u64, u64) {
    let s = status_json(admin).await;
    (
        s["reload"]["ok_total"].as_u64().unwrap(),
        s["reload"]["error_total"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_under_load_keeps_every_limit_and_fails_nothing() {
    let a = Arc::new(Upstream::start(Duration::from_millis(20)).await);
    let b = Upstream::start(Duration::from_millis(20)).await;
    let c = Arc::new(Upstream::start(Duration::from_millis(20)).await);
    let path = temp_file("reload", &config("a", &a, &b, &c, ""));
    let fw = spawn_binary(&["--config", path.to_str().unwrap()]);

    // The pinned route's requests reach `a` before the reload and `c`
    // after it; across the two, never more than its limit at once.
    let watching = Arc::new(AtomicBool::new(true));
    let pinned_peak = Arc::new(AtomicUsize::new(0));
    let watcher = std::thread::spawn({
        let (watching, peak) = (watching.clone(), pinned_peak.clone());
        let (a, c) = (a.clone(), c.clone());
        move || {
            while watching.load(Ordering::Relaxed) {
                peak.fetch_max(a.current() + c.current(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    });
    let pinned = Load::start(fw.proxy, "/pinned/x", 16);
    let learned = Load::start(fw.proxy, "/learned", 24);

    // Let aimd learn a limit well above its floor.
    let learned_limit = || async {
        route(&status_json(fw.admin).await, "learned")["limit"]
            .as_u64()
            .unwrap()
    };
    eventually(Duration::from_secs(15), "aimd grew its limit", || async {
        learned_limit().await >= 12
    })
    .await;
    let before = learned_limit().await;

    // A good reload: pinned moves to upstream c, a route is added.
    std::fs::write(
        &path,
        config(
            "c",
            &a,
            &b,
            &c,
            "[[routes]]\nname = \"extra\"\npath_prefix = \"/extra\"\nupstream = \"a\"\n",
        ),
    )
    .unwrap();
    let reloaded_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    signal(fw.pid(), "HUP");
    eventually(Duration::from_secs(5), "the reload is counted", || async {
        reloads(fw.admin).await == (1, 0)
    })
    .await;
    let s = status_json(fw.admin).await;
    assert_eq!(s["routes"].as_array().unwrap().len(), 3, "{s}");
    assert_eq!(route(&s, "pinned")["upstream"], "c");
    assert_eq!(route(&s, "pinned")["limit"], PINNED);
    eventually(Duration::from_secs(5), "pinned reaches c", || async {
        c.total() > 20
    })
    .await;
    // Three more seconds of load on the reloaded gate.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A broken reload: nothing changes, the key is named, it is counted.
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        good.replace(&format!("value = {PINNED}"), "value = 0"),
    )
    .unwrap();
    signal(fw.pid(), "HUP");
    eventually(Duration::from_secs(5), "the refusal is counted", || async {
        reloads(fw.admin).await == (1, 1)
    })
    .await;
    let s = status_json(fw.admin).await;
    let error = s["reload"]["last_error"].as_str().unwrap();
    assert!(error.contains("routes[0].limit.value"), "{error}");
    assert_eq!(route(&s, "pinned")["limit"], PINNED, "unchanged");
    assert_eq!(s["routes"].as_array().unwrap().len(), 3);
    let text = metrics_text(fw.admin).await;
    assert!(
        text.contains("floodwall_config_reloads_total{result=\"error\"} 1"),
        "{text}"
    );
    assert!(text.contains("floodwall_config_reloads_total{result=\"ok\"} 1"));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (pinned_statuses, pinned_errors) = pinned.stop().await;
    let (learned_statuses, learned_errors) = learned.stop().await;
    watching.store(false, Ordering::Relaxed);
    watcher.join().unwrap();

    // Zero failed requests: every answer a 200, no connection error.
    for (name, statuses, errors) in [
        ("pinned", &pinned_statuses, &pinned_errors),
        ("learned", &learned_statuses, &learned_errors),
    ] {
        assert!(errors.is_empty(), "{name}: {errors:?}");
        assert_eq!(
            statuses.keys().collect::<Vec<_>>(),
            [&200],
            "{name}: {statuses:?}"
        );
    }
    let peak = pinned_peak.load(Ordering::Relaxed);
    assert!(
        peak <= PINNED,
        "pinned peak {peak} > {PINNED} across the reload"
    );
    assert!(peak >= PINNED - 1, "the load filled the limit ({peak})");

    // No cold start: after the reload the learned limit never fell back
    // toward its floor (3); it stayed within a latency cut of where it was.
    let history = admin(Method::GET, fw.admin, "/history.json", None).await;
    assert_eq!(history.status, StatusCode::OK);
    let points = history.json()["points"].as_array().unwrap().clone();
    let after: Vec<u64> = points
        .iter()
        .filter(|p| p["t"].as_u64().unwrap() > reloaded_at)
        .filter_map(|p| {
            p["routes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == "learned")
                .map(|r| r["limit"].as_u64().unwrap())
        })
        .collect();
    assert!(after.len() >= 3, "{after:?}");
    let low = *after.iter().min().unwrap();
    assert!(
        low * 2 >= before,
        "learned limit fell from {before} to {low} after the reload: {after:?}"
    );
    println!(
        "reload under load: pinned {pinned_statuses:?} peak {peak}/{PINNED}, \
         learned {learned_statuses:?}, learned limit {before} before, {after:?} after"
    );
    let log = fw.stderr();
    assert!(log.contains("config reloaded"), "{log}");
    assert!(log.contains("config reload refused"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_needs_the_token_and_listener_changes_are_refused() {
    let a = Upstream::start(Duration::from_millis(1)).await;
    let dir = temp_dir("reload-token");
    let token = "s3cret-admin-token-0123456789";
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [[upstreams]]\nname = \"a\"\nurl = \"{}\"\n\
         [[routes]]\nname = \"r\"\nupstream = \"a\"\nlimit = {{ algorithm = \"fixed\", value = 4 }}\n",
        a.uri()
    );
    let without = dir.join("without.toml");
    std::fs::write(&without, &base).unwrap();

    // No token configured: 403, saying how to enable it.
    let fw = spawn_binary(&["--config", without.to_str().unwrap()]);
    let r = admin(Method::POST, fw.admin, "/reload", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        body.contains("token_file") && body.contains("Authorization: Bearer"),
        "{body}"
    );
    let r = admin(Method::POST, fw.admin, "/reload", Some(token)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no token to match");
    drop(fw);

    // With a token file.
    let with = dir.join("with.toml");
    let with_token = format!("{base}[admin]\ntoken_file = \"{}\"\n", token_file.display());
    std::fs::write(&with, &with_token).unwrap();
    let fw = spawn_binary(&["--config", with.to_str().unwrap()]);
    assert!(
        fw.admin.ip().is_loopback(),
        "the admin port binds loopback: {}",
        fw.admin
    );
    for wrong in [None, Some("s3cret-admin-token-012345678x")] {
        let r = admin(Method::POST, fw.admin, "/reload", wrong).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{wrong:?}");
    }
    assert_eq!(
        reloads(fw.admin).await,
        (0, 0),
        "refused requests reload nothing"
    );

    // The limit changes in place.
    std::fs::write(&with, with_token.replace("value = 4", "value = 9")).unwrap();
    let r = admin(Method::POST, fw.admin, "/reload", Some(token)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let changes = r.json()["changes"].to_string();
    assert!(
        changes.contains("fixed limit 4 -> 9, in place"),
        "{changes}"
    );
    assert_eq!(route(&status_json(fw.admin).await, "r")["limit"], 9);

    // A listener change is refused with the key and a clear reason.
    std::fs::write(
        &with,
        with_token
            .replace("value = 4", "value = 9")
            .replace("admin = \"127.0.0.1:0\"", "admin = \"127.0.0.1:1\""),
    )
    .unwrap();
    let r = admin(Method::POST, fw.admin, "/reload", Some(token)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{r:?}");
    let error = r.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with("server.admin: changed from 127.0.0.1:0 to 127.0.0.1:1"),
        "{error}"
    );
    assert!(error.contains("needs a restart"), "{error}");
    assert_eq!(reloads(fw.admin).await, (1, 1));
    let log = fw.stderr();
    assert!(!log.contains(token), "the token never reaches the log");
}

#[test]
fn the_admin_address_defaults_to_loopback() {
    let c = floodwall::config::Config::from_toml_str(
        "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
         [[routes]]\nname = \"r\"\nupstream = \"a\"\n",
    )
    .unwrap();
    assert!(c.server.admin.ip().is_loopback(), "{}", c.server.admin);
    assert!(c.server.listen.ip().is_loopback(), "{}", c.server.listen);
}
