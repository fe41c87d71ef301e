//! The backlog flag with a real nginx in front (the backlog_reporter
//! gem's recipe): an upstream that stops calling accept() builds an accept
//! backlog; `floodwall backlog-reporter` raises the flag; nginx answers 503
//! from it at once; when the upstream accepts again the flag is removed
//! and nginx proxies again.

mod common;
mod operator;

use common::*;
use http::Method;
use operator::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

const MAX_BACKLOG: usize = 3;

fn nginx_bin() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("nginx not found: run scripts/install-deps.sh (Debian package nginx)");
}

/// A process stopped (SIGTERM, then killed) when dropped.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..100 {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx on a free port, from a temp config, in the foreground.
fn start_nginx(dir: &Path, upstream_port: u16, flag: &Path) -> (Stopped, u16) {
    for _ in 0..5 {
        let port = free_port();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                r#"daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            if (-f {flag}) {{ return 503; }}
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_read_timeout 30s;
        }}
    }}
}}
"#,
                dir = dir.display(),
                flag = flag.display(),
            ),
        )
        .unwrap();
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let nginx = Stopped(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (nginx, port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(nginx);
    }
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    panic!("nginx did not start:\n{log}");
}

/// An upstream that calls accept() only once `open` is notified, then
/// answers every request `200 ok` and closes.
async fn stalled_upstream(open: Arc<Notify>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        open.notified().await;
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_answers_503_from_the_flag_while_the_backlog_is_full() {
    let dir = temp_dir("nginx");
    let flag = dir.join("congested.flag");
    let open = Arc::new(Notify::new());
    let up_port = stalled_upstream(open.clone()).await;
    let mut reporter = Command::new(binary_path())
        .args([
            "backlog-reporter",
            "--listen-port",
            &up_port.to_string(),
            "--flag",
            flag.to_str().unwrap(),
            "--max-backlog",
            &MAX_BACKLOG.to_string(),
            "--interval",
            "10ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn floodwall backlog-reporter");
    let mut line = String::new();
    BufReader::new(reporter.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("floodwall backlog-reporter port="),
        "{line:?}"
    );
    let reporter_pid = reporter.id();
    let mut reporter = Stopped(reporter);
    let (nginx, port) = start_nginx(&dir, up_port, &flag);
    let nginx_addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();

    // The upstream is not accepting: requests through nginx queue in its
    // accept backlog and hang.
    let mut hung = Vec::new();
    for _ in 0..MAX_BACKLOG {
        hung.push(tokio::spawn(async move {
            Client::http1().get(nginx_addr, "/slow", &[]).await.status
        }));
    }
    eventually(Duration::from_secs(10), "the flag is raised", || async {
        flag.exists()
    })
    .await;
    let why = std::fs::read_to_string(&flag).unwrap();
    assert!(why.contains(&format!("backlog={MAX_BACKLOG}")), "{why}");

    // nginx answers 503 at once from the flag, without touching the
    // upstream.
    let started = std::time::Instant::now();
    let r = admin(Method::GET, nginx_addr, "/fast", None).await;
    assert_eq!(r.status.as_u16(), 503, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // The upstream accepts again: the queued requests are served, the
    // backlog drains, the flag goes, and nginx proxies again.
    open.notify_one();
    for h in hung {
        assert_eq!(h.await.unwrap().as_u16(), 200);
    }
    eventually(Duration::from_secs(10), "the flag is removed", || async {
        !flag.exists()
    })
    .await;
    let r = admin(Method::GET, nginx_addr, "/again", None).await;
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    assert_eq!(&r.body[..], b"ok");

    // Stopping the reporter leaves no flag behind and exits 0.
    signal(reporter_pid, "TERM");
    let mut status = None;
    for _ in 0..250 {
        if let Some(s) = reporter.0.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(!flag.exists());
    drop(nginx);
}

/// The same flag driven by the gate's own saturation (`kind = "gate"`),
/// for an nginx that fronts floodwall: while floodwall's gate is full and
/// refusing, nginx answers 503 from the flag without relaying; once the
/// load stops the flag goes and nginx proxies again. The gate probe never
/// touches the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_answers_503_from_the_flag_while_the_gate_is_full() {
    let dir = temp_dir("nginx-gate");
    let flag = dir.join("gate.flag");
    let up = Upstream::start(Duration::from_millis(300)).await;
    let fw = start(config_from_toml(
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[[upstreams]]
name = "app"
url = "{{upstream}}"

[[routes]]
name = "api"
upstream = "app"
limit = {{ algorithm = "fixed", value = 4 }}

[[probes]]
kind = "gate"
interval = "50ms"
flag_file = "{}"
"#,
            flag.display()
        ),
        &up.uri(),
    ))
    .await;
    let (nginx, port) = start_nginx(&dir, fw.proxy_addr.port(), &flag);
    let nginx_addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let r = admin(Method::GET, nginx_addr, "/before", None).await;
    assert_eq!(r.status.as_u16(), 200, "nginx proxies to floodwall: {r:?}");
    assert!(!flag.exists());

    // Twelve clients straight at floodwall fill its gate of 4.
    let load = Load::start(fw.proxy_addr, "/api/x", 12);
    eventually(Duration::from_secs(10), "the flag is raised", || async {
        flag.exists()
    })
    .await;
    let why = std::fs::read_to_string(&flag).unwrap();
    assert!(why.contains("api: inflight="), "{why}");
    // nginx's own 503, at once: no floodwall reason header, so the request
    // never reached floodwall.
    let started = std::time::Instant::now();
    let r = admin(Method::GET, nginx_addr, "/during", None).await;
    assert_eq!(r.status.as_u16(), 503, "{r:?}");
    assert!(r.headers.get("x-floodwall-reason").is_none(), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // The probe reads the gate and leaves its limit alone.
    let status = status_json(fw.admin_addr).await;
    assert_eq!(route(&status, "api")["limit"], 4, "{status}");
    assert!(route(&status, "api")["constraint"].is_null(), "{status}");
    let probe = &status["probes"][0];
    assert_eq!(probe["kind"], "gate", "{status}");
    assert_eq!(probe["flag_file"]["raised"], true, "{status}");

    let (by_status, _) = load.stop().await;
    assert!(
        by_status.get(&503).copied().unwrap_or(0) > 0,
        "{by_status:?}"
    );
    eventually(Duration::from_secs(10), "the flag is removed", || async {
        !flag.exists()
    })
    .await;
    let r = admin(Method::GET, nginx_addr, "/after", None).await;
    assert_eq!(r.status.as_u16(), 200, "{r:?}");
    drop(nginx);
    fw.shutdown().await;
}
