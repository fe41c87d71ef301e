//! Connections as an attacker sees them: silent and slow connections are
//! closed on time, idle keep-alive ends, the proxy refuses connections
//! past its cap at once and counts them, accept errors are logged at most
//! once a second, and the admin port answers throughout, with the real
//! binary under a 1,024-descriptor limit.

mod common;

use common::*;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far above anything a passing assertion needs; only turns a hang into a
/// failure.
const PATIENCE: Duration = Duration::from_secs(10);

/// Reads `s` until its peer closes it (end of stream or reset) and says
/// how long that took, or `None` if it is still open after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all)
        .await
        .ok()
        .map(|()| start.elapsed())
}

/// Sends one HTTP/1.1 request on `s` (keeping the connection) and reads
/// its response head and `ok` body; panics unless it is a 200.
async fn one_request(s: &mut TcpStream, path: &str) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !got.ends_with(b"\r\n\r\nok") && !got.ends_with(b"\r\n\r\nok\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed mid-response: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("a response");
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

/// `GET path` over a fresh connection, within `limit`: the status code,
/// or why there was none (refused, reset, closed, timed out).
async fn status_of(addr: SocketAddr, path: &str, limit: Duration) -> Result<u16, String> {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out);
        text.strip_prefix("HTTP/1.1 ")
            .and_then(|t| t.get(..3))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("closed without a response ({text:?})"))
    };
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
}

/// `floodwall_*` series summed over samples with `labels`.
async fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    sum(&metrics(admin).await, name, labels)
}

fn toml(server: &str) -> String {
    format!(
        "[server]\n{server}\n\
         [[upstreams]]\nname = \"app\"\nurl = \"{{upstream}}\"\n\
         [[routes]]\nname = \"all\"\nupstream = \"app\"\nlimit = {{ algorithm = \"fixed\", value = 2000 }}\n"
    )
}

// ------------------------------------------------------------- timeouts

/// A connection that never sends a byte is closed at
/// `header_read_timeout`, on the proxy and on the admin port alike (it
/// used to stay open for good: hyper's version detection has no timer),
/// and so is one that sends the HTTP/2 preface and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_at_the_header_read_timeout() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let config = config_from_toml(
        &toml("header_read_timeout = \"1s\"\nkeepalive_timeout = \"30s\""),
        &upstream.uri(),
    );
    let fw = start(config).await;
    let mut proxy = TcpStream::connect(fw.proxy_addr).await.unwrap();
    let mut admin = TcpStream::connect(fw.admin_addr).await.unwrap();
    let mut h2 = TcpStream::connect(fw.proxy_addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let (p, a, h) = tokio::join!(
        closed_within(&mut proxy, PATIENCE),
        closed_within(&mut admin, PATIENCE),
        closed_within(&mut h2, PATIENCE),
    );
    for (what, lived) in [("proxy", p), ("admin", a), ("proxy, h2 preface", h)] {
        let lived =
            lived.unwrap_or_else(|| panic!("{what}: silent connection open after {PATIENCE:?}"));
        println!("{what}: a silent connection lived {lived:?}");
        assert!(
            lived >= Duration::from_millis(900) && lived < Duration::from_secs(3),
            "{what}: closed after {lived:?}, expected about 1 s"
        );
    }
    let m = metrics(fw.admin_addr).await;
    let timed_out = |l| {
        sum(
            &m,
            "floodwall_connections_timed_out_total",
            &[("listener", l), ("timeout", "header_read")],
        )
    };
    assert_eq!(timed_out("proxy"), 2.0);
    assert_eq!(timed_out("admin"), 1.0);
    fw.shutdown().await;
}

/// After a request, an idle keep-alive connection stays open for
/// `keepalive_timeout`, even when that is longer than
/// `header_read_timeout` (hyper's header timer used to close it at the
/// header timeout), and is then closed; the next request's headers, once
/// begun, are timed by `header_read_timeout` from their first byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_lasts_its_own_timeout_and_slow_headers_do_not() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let config = config_from_toml(
        &toml("header_read_timeout = \"1s\"\nkeepalive_timeout = \"3s\""),
        &upstream.uri(),
    );
    let fw = start(config).await;

    let mut idle = TcpStream::connect(fw.proxy_addr).await.unwrap();
    one_request(&mut idle, "/").await;
    let lived = closed_within(&mut idle, PATIENCE)
        .await
        .expect("an idle keep-alive connection is closed in the end");
    println!("an idle keep-alive connection lived {lived:?}");
    assert!(
        lived >= Duration::from_millis(2800) && lived < Duration::from_secs(5),
        "idle keep-alive closed after {lived:?}, expected about 3 s"
    );

    let mut slow = TcpStream::connect(fw.proxy_addr).await.unwrap();
    one_request(&mut slow, "/").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    slow.write_all(b"GET / HTTP/1.1\r\nho").await.unwrap();
    let lived = closed_within(&mut slow, PATIENCE)
        .await
        .expect("slow headers are cut");
    println!("headers begun after 1.5 s idle were cut {lived:?} after their first byte");
    assert!(
        lived >= Duration::from_millis(900) && lived < Duration::from_millis(2500),
        "slow headers closed {lived:?} after their first byte, expected about 1 s"
    );

    let m = metrics(fw.admin_addr).await;
    let timed_out = |t| {
        sum(
            &m,
            "floodwall_connections_timed_out_total",
            &[("listener", "proxy"), ("timeout", t)],
        )
    };
    assert_eq!(
        (timed_out("keepalive"), timed_out("header_read")),
        (1.0, 1.0)
    );
    fw.shutdown().await;
}

// ------------------------------------------------------------------- cap

/// With `max_connections = 3`, a fourth connection is accepted and reset
/// at once and counted; closing one of the three frees a place, and the
/// next request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_connection_is_reset_and_counted() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let config = config_from_toml(
        &toml("max_connections = 3\nheader_read_timeout = \"30s\""),
        &upstream.uri(),
    );
    let fw = start(config).await;
    let admin = fw.admin_addr;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(fw.proxy_addr).await.unwrap());
    }
    wait_until(PATIENCE, "3 connections are open", || async {
        metric(
            admin,
            "floodwall_connections_open",
            &[("listener", "proxy")],
        )
        .await
            == 3.0
    })
    .await;

    // Reset at once: maybe before `connect` even returns.
    let started = Instant::now();
    let lived = match TcpStream::connect(fw.proxy_addr).await {
        Ok(mut fourth) => closed_within(&mut fourth, Duration::from_secs(5))
            .await
            .expect("the fourth connection is closed at once"),
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
            started.elapsed()
        }
    };
    println!("the connection past the cap was closed after {lived:?}");
    assert!(lived < Duration::from_secs(1), "closed after {lived:?}");
    let refused = status_of(fw.proxy_addr, "/", Duration::from_secs(5)).await;
    assert!(
        refused.is_err(),
        "a request past the cap was served: {refused:?}"
    );

    let m = metrics(admin).await;
    let l = [("listener", "proxy")];
    assert_eq!(sum(&m, "floodwall_connections_refused_total", &l), 2.0);
    assert_eq!(sum(&m, "floodwall_connections_open", &l), 3.0);
    assert_eq!(sum(&m, "floodwall_connections_max", &l), 3.0);
    assert_eq!(
        sum(&m, "floodwall_connections_max", &[("listener", "admin")]),
        64.0
    );

    drop(held.pop());
    wait_until(PATIENCE, "a place is free", || async {
        metric(
            admin,
            "floodwall_connections_open",
            &[("listener", "proxy")],
        )
        .await
            == 2.0
    })
    .await;
    assert_eq!(status_of(fw.proxy_addr, "/", PATIENCE).await, Ok(200));
    fw.shutdown().await;
}

// ------------------------------------------------------------ the binary

/// `floodwall serve ARGS` under `ulimit -n NOFILE` (soft and hard), with
/// its stderr collected.
struct Limited {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
    stderr: Arc<Mutex<String>>,
    started: Instant,
}

impl Limited {
    fn spawn(nofile: u64, config: &str) -> Limited {
        use std::io::{BufRead, BufReader, Read};
        let path = temp_file(&format!("connections-{nofile}-{}", config.len()), config);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(binary_path())
            .args(["serve", "--config", path.to_str().unwrap()])
            .env("FLOODWALL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn floodwall under sh");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().push_str(&text);
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let parsed = line
            .trim_end()
            .strip_prefix("floodwall listening proxy=")
            .and_then(|rest| rest.split_once(" admin="))
            .and_then(|(p, a)| Some((p.parse().ok()?, a.parse().ok()?)));
        let Some((proxy, admin)) = parsed else {
            let _ = child.kill();
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "no ready line ({line:?}); stderr:\n{}",
                stderr.lock().unwrap()
            );
        };
        Limited {
            child,
            proxy,
            admin,
            stderr,
            started: Instant::now(),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Lines of stderr holding `what`, and the seconds since start.
    fn lines_per_second(&self, what: &str) -> (usize, f64) {
        let n = self.stderr().lines().filter(|l| l.contains(what)).count();
        (n, self.started.elapsed().as_secs_f64())
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connections opened by [`open_idle`].
struct Opened {
    /// Those whose `connect` returned, in order, kept silent.
    kept: Vec<TcpStream>,
    /// Those reset by the peer before `connect` returned (refused at the
    /// cap that fast).
    reset: usize,
}

/// Opens `n` connections to `addr`, 100 at a time, each given `limit` to
/// connect. One left waiting in a full backlog past `limit` is neither
/// kept nor reset.
async fn open_idle(addr: SocketAddr, n: usize, limit: Duration) -> Opened {
    let mut opened = Opened {
        kept: Vec::with_capacity(n),
        reset: 0,
    };
    for wave in (0..n).collect::<Vec<_>>().chunks(100) {
        let attempts = wave
            .iter()
            .map(|_| tokio::time::timeout(limit, TcpStream::connect(addr)));
        for attempt in futures_util::future::join_all(attempts).await {
            match attempt {
                Ok(Ok(s)) => opened.kept.push(s),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => opened.reset += 1,
                _ => {}
            }
        }
    }
    opened
}

/// The attack that took floodwall down: at a 1,024-descriptor limit,
/// 1,100 idle connections to the proxy. The proxy now holds what its
/// derived cap allows, (1024 - 128 - 64) / 2 = 416, and resets the rest
/// at once (counted); `/healthz` answers 200 throughout; a normal client
/// at the cap sees its connection reset within a second (not a hang) and
/// is served as soon as places free; and no accept fails at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_1024_descriptors_1100_idle_connections_leave_admin_and_the_proxy_answering() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nheader_read_timeout = \"60s\"\n\
         [[upstreams]]\nname = \"app\"\nurl = \"{}\"\n\
         [[routes]]\nname = \"all\"\nupstream = \"app\"\n",
        upstream.uri()
    );
    let fw = Limited::spawn(1024, &config);
    let Opened {
        kept: mut idle,
        reset,
    } = open_idle(fw.proxy, 1100, PATIENCE).await;
    // Every connection past the 416th is reset: before `connect` returned
    // or after.
    let past_the_cap = (reset + idle.len()).saturating_sub(416) as f64;
    println!(
        "1,100 connects: {} returned, {reset} reset before returning",
        idle.len()
    );

    let healthz = status_of(fw.admin, "/healthz", Duration::from_secs(5)).await;
    assert_eq!(
        healthz,
        Ok(200),
        "/healthz with 1,100 idle connections; stderr:\n{}",
        fw.stderr()
    );
    wait_until(PATIENCE, "416 are held and the rest refused", || async {
        let m = metrics(fw.admin).await;
        let proxy = [("listener", "proxy")];
        sum(&m, "floodwall_connections_open", &proxy) == 416.0
            && sum(&m, "floodwall_connections_refused_total", &proxy) >= past_the_cap
    })
    .await;
    let m = metrics(fw.admin).await;
    let proxy = [("listener", "proxy")];
    assert_eq!(sum(&m, "floodwall_fd_limit", &[]), 1024.0);
    assert_eq!(sum(&m, "floodwall_connections_max", &proxy), 416.0);
    let refused = sum(&m, "floodwall_connections_refused_total", &proxy);
    println!("1,100 idle connections at 1,024 fds: 416 held, {refused} refused");
    assert!(
        refused >= past_the_cap && refused <= 1100.0 - 416.0,
        "{refused}"
    );
    assert_eq!(sum(&m, "floodwall_accept_errors_total", &[]), 0.0);

    // A normal client at the cap: reset at once, not left hanging.
    let asked = Instant::now();
    let at_cap = status_of(fw.proxy, "/", Duration::from_secs(5)).await;
    let took = asked.elapsed();
    println!("a request at the cap: {at_cap:?} after {took:?}");
    assert!(at_cap.is_err(), "served at the cap: {at_cap:?}");
    assert!(took < Duration::from_secs(1), "refused after {took:?}");

    // Places free (the first connections are the ones held): the next
    // request is served.
    idle.drain(..100);
    let served = wait_until(PATIENCE, "a request is served again", || async {
        status_of(fw.proxy, "/", Duration::from_secs(2)).await == Ok(200)
    })
    .await;
    println!("served again {served:?} after 100 held connections closed");
    assert_eq!(status_of(fw.admin, "/healthz", PATIENCE).await, Ok(200));

    let (lines, secs) = fw.lines_per_second("accept failed");
    assert_eq!(
        lines,
        0,
        "no accept may fail under the cap; stderr:\n{}",
        fw.stderr()
    );
    let (lines, secs2) = fw.lines_per_second("connection refused");
    assert!(
        lines as f64 <= secs2.max(secs) + 2.0,
        "{lines} refusal lines in {secs2:.1} s; stderr:\n{}",
        fw.stderr()
    );
}

/// When descriptors do run out (an explicit `max_connections` above what
/// the limit allows for busy connections: each holds an upstream
/// connection too), failed accepts are counted, logged at most once a
/// second with the number suppressed, and backed off: the process does
/// not spin. Once the requests finish, the proxy and admin serve again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_accept_errors_are_rate_limited_and_backed_off() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         header_read_timeout = \"60s\"\nmax_connections = 800\n\
         [[upstreams]]\nname = \"app\"\nurl = \"{}\"\n\
         [[routes]]\nname = \"all\"\nupstream = \"app\"\n\
         limit = {{ algorithm = \"fixed\", value = 2000 }}\n",
        upstream.uri()
    );
    let fw = Limited::spawn(1024, &config);
    // Logged before the ready line; stderr is read on another thread.
    wait_until(
        PATIENCE,
        "start-up warns about the overcommitted cap",
        || {
            let warned = fw.stderr().contains("server.max_connections = 800");
            async move { warned }
        },
    )
    .await;
    // 700 requests held at the upstream: 700 client and up to 700
    // upstream descriptors, well past 1,024.
    let mut busy = open_idle(fw.proxy, 700, PATIENCE).await.kept;
    assert_eq!(busy.len(), 700);
    for s in &mut busy {
        let _ = s
            .write_all(b"GET /?hold=g HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
    }
    // Only once the proxy has used its descriptors up (client plus upstream
    // connections) do the next ones fail at accept; before that they would
    // be accepted, and meet the connection cap instead (seen on a loaded
    // machine, where the 700 upstream connects lag the writes).
    let pid = fw.child.id();
    wait_until(PATIENCE, "the proxy runs out of descriptors", || async move {
        std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()) >= 1000
    })
    .await;
    let more = open_idle(fw.proxy, 200, Duration::from_millis(500))
        .await
        .kept;
    let window = Duration::from_secs(3);
    let cpu_before = cpu_seconds(fw.child.id());
    let lines_before = fw.lines_per_second("accept failed").0;
    tokio::time::sleep(window).await;
    let lines = fw.lines_per_second("accept failed").0 - lines_before;
    let cpu = cpu_seconds(fw.child.id()) - cpu_before;
    println!(
        "out of descriptors: {lines} accept-failure lines and {cpu:.2} s of CPU in {window:?}"
    );
    assert!(
        lines <= 4,
        "{lines} accept-failure lines in {window:?}; stderr:\n{}",
        fw.stderr()
    );
    assert!(
        cpu < 1.0,
        "{cpu:.2} s of CPU in {window:?}: the accept loop spins"
    );
    assert!(
        fw.stderr().contains("accept failed") && fw.stderr().contains("suppressed"),
        "accept failures are logged with the count suppressed; stderr:\n{}",
        fw.stderr()
    );

    upstream.open("g");
    drop(busy);
    drop(more);
    let served = wait_until(PATIENCE, "the proxy serves again", || async {
        status_of(fw.proxy, "/", Duration::from_secs(2)).await == Ok(200)
    })
    .await;
    println!("served again {served:?} after the held requests were released");
    let m = metrics(fw.admin).await;
    let errors = sum(
        &m,
        "floodwall_accept_errors_total",
        &[("listener", "proxy")],
    );
    println!("accept errors counted: {errors}");
    assert!(errors >= 1.0, "accept errors are counted");
}

/// User plus system CPU time of process `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name: utime is the 14th
    // field of the line, stime the 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

// ---------------------------------------------------------------- config

/// The new keys are bounded, with errors naming them.
#[test]
fn connection_keys_are_bounded_and_named() {
    use floodwall::config::Config;
    let base = "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
                [[routes]]\nname = \"r\"\nupstream = \"a\"\n";
    for (line, key) in [
        ("max_connections = 0", "server.max_connections"),
        ("max_connections = 1000001", "server.max_connections"),
        ("admin_max_connections = 0", "server.admin_max_connections"),
        (
            "admin_max_connections = 1000001",
            "server.admin_max_connections",
        ),
        ("keepalive_timeout = \"0s\"", "server.keepalive_timeout"),
        ("keepalive_timeout = \"2h\"", "server.keepalive_timeout"),
        (
            "keepalive_timeout = \"18446744073709551615s\"",
            "server.keepalive_timeout",
        ),
    ] {
        let err = Config::from_toml_str(&format!("[server]\n{line}\n{base}")).expect_err(line);
        assert_eq!(err.key(), Some(key), "{line}: {err}");
    }
    for line in [
        "max_connections = 1",
        "max_connections = 1000000",
        "admin_max_connections = 1000000",
        "keepalive_timeout = \"1h\"",
    ] {
        Config::from_toml_str(&format!("[server]\n{line}\n{base}"))
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    let defaults = Config::from_toml_str(base).unwrap().server;
    assert_eq!(defaults.max_connections, None, "derived from the fd limit");
    assert_eq!(defaults.admin_max_connections, 64);
    assert_eq!(defaults.keepalive_timeout, Duration::from_secs(75));
}
