//! `floodwall top --once`, the real binary, against a real floodwall
//! whose reads are locked down, while a load keeps its gate full: the
//! screen shows the route, its limit and in-flight count, the refusals of
//! the last second by reason, and the classes; without the token it is
//! refused, and says so.

mod common;
mod operator;

use common::*;
use operator::temp_dir;
use std::process::Command;
use std::time::Duration;

const READ_TOKEN: &str = "top-read-token-0123456789";

fn top(admin: std::net::SocketAddr, token_file: Option<&std::path::Path>) -> (bool, String) {
    let mut cmd = Command::new(binary_path());
    cmd.args(["top", "--once", "--width", "160", "--admin"])
        .arg(admin.to_string())
        .env_remove("FLOODWALL_ADMIN_TOKEN")
        .env_remove("FLOODWALL_ADMIN_READ_TOKEN");
    if let Some(f) = token_file {
        cmd.arg("--token-file").arg(f);
    }
    let out = cmd.output().expect("run floodwall top");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_draws_the_live_figures_and_needs_the_read_token() {
    // 200 ms answers behind a fixed limit of 4: 12 concurrent clients keep
    // 4 in flight and the rest refused.
    let up = Upstream::start(Duration::from_millis(200)).await;
    let dir = temp_dir("top");
    let token = dir.join("read-token");
    std::fs::write(&token, READ_TOKEN).unwrap();
    let fw = start(config_from_toml(
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[admin]
read_token_file = "{}"

[[upstreams]]
name = "app"
url = "{{upstream}}"

[[routes]]
name = "orders"
upstream = "app"
limit = {{ algorithm = "fixed", value = 4 }}
"#,
            token.display()
        ),
        &up.uri(),
    ))
    .await;
    let proxy = fw.proxy_addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..12 {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let client = Client::http1();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client.get(proxy, "/orders/1", &[]).await;
                if r.status != 200 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    // Two history points, so the last second has refusals in it.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let admin = fw.admin_addr;
    let (ok, screen) = tokio::task::spawn_blocking(move || top(admin, None))
        .await
        .unwrap();
    assert!(!ok, "reads are locked down:\n{screen}");
    assert!(screen.contains("HTTP 401"), "{screen}");

    let t = token.clone();
    let (ok, screen) = tokio::task::spawn_blocking(move || top(admin, Some(&t)))
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    println!("{screen}");
    assert!(ok, "{screen}");
    let route = screen
        .lines()
        .find(|l| l.contains("orders") && l.contains("fixed"))
        .unwrap_or_else(|| panic!("no route row:\n{screen}"));
    let cells: Vec<&str> = route
        .trim_matches(|c: char| c == '│' || c.is_whitespace())
        .split_whitespace()
        .collect();
    // route, upstream, algo, limit, algo lim, inflight, queue, use, ...
    assert_eq!(&cells[..5], ["orders", "app", "fixed", "4", "4"], "{route}");
    let inflight: u32 = cells[5].parse().unwrap();
    assert!((1..=4).contains(&inflight), "{route}");
    assert!(
        screen.contains("refused by reason: wip_limit_exceeded"),
        "{screen}"
    );
    let refused: f64 = screen
        .split("refused/s ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no refused/s:\n{screen}"));
    assert!(refused > 0.0, "{screen}");
    assert!(screen.contains("interactive"), "{screen}");
    assert!(screen.contains("store: none"), "{screen}");
    assert!(!screen.contains(READ_TOKEN), "{screen}");
    fw.shutdown().await;
}

#[test]
fn bad_flags_and_a_dead_admin_port_are_clear_errors() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = free.local_addr().unwrap();
    drop(free);
    let (ok, out) = top(dead, None);
    assert!(!ok && out.contains(&dead.to_string()), "{out}");
    for (flag, value, says) in [
        ("--interval", "10ms", "--interval must be"),
        ("--admin", "ftp://x:1", "needs host:port"),
    ] {
        let out = Command::new(binary_path())
            .args(["top", flag, value])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && text.contains(says),
            "{flag} {value}: {text}"
        );
    }
}
