//! Hostile config: every key set to an extreme value (0, 1, u64::MAX
//! seconds, huge integers, NaN, infinities, negative floats, very long
//! strings). Parsing must never panic (the config is accepted, or refused
//! by a `ConfigError` naming the key or the line), and a config that is
//! accepted must serve: floodwall starts on 127.0.0.1 port 0, answers one
//! request (to a dead upstream port, so with a 502) and shuts down, with no
//! panic anywhere, in any task.
//!
//! Also the store URL from `FLOODWALL_STORE_URL`, through the real binary.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use floodwall::config::{Config, ConfigError};
use proptest::prelude::*;

/// What kind of value a key takes, and so which extremes it gets.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Duration,
    Int,
    Float,
    Str,
}

/// Every key of the config: where it goes (see [`config_with`]), its name
/// and its kind. Addresses, enums and booleans are left out: serde refuses
/// anything but their few values.
const KEYS: &[(&str, &str, Kind)] = &[
    ("server", "drain_timeout", Kind::Duration),
    ("server", "state_max_age", Kind::Duration),
    ("server", "priority_header", Kind::Str),
    ("server", "tenant_header", Kind::Str),
    ("server", "default_class", Kind::Str),
    ("server", "max_tenant_id_len", Kind::Int),
    ("server", "retry_after_max", Kind::Duration),
    ("server", "header_read_timeout", Kind::Duration),
    ("server", "keepalive_timeout", Kind::Duration),
    ("server", "max_connections", Kind::Int),
    ("server", "admin_max_connections", Kind::Int),
    ("server", "workers", Kind::Int),
    ("server", "class_idle_window", Kind::Duration),
    ("server", "body_timeout", Kind::Duration),
    ("server", "body_min_rate", Kind::Int),
    ("server", "request_buffer", Kind::Int),
    ("server", "response_buffer", Kind::Int),
    ("server", "response_buffer_total", Kind::Int),
    ("server", "send_timeout", Kind::Duration),
    ("log", "level", Kind::Str),
    ("class", "name", Kind::Str),
    ("class", "reserved", Kind::Float),
    ("upstream", "name", Kind::Str),
    ("upstream", "url", Kind::Str),
    ("upstream", "connect_timeout", Kind::Duration),
    ("upstream", "response_timeout", Kind::Duration),
    ("upstream", "pool_idle_timeout", Kind::Duration),
    ("upstream", "pool_max_idle_per_host", Kind::Int),
    ("upstream", "ca_file", Kind::Str),
    ("upstream", "sni", Kind::Str),
    ("upstream:https", "ca_file", Kind::Str),
    ("upstream:https", "sni", Kind::Str),
    ("breaker", "error_threshold", Kind::Int),
    ("breaker", "error_threshold_timeout", Kind::Duration),
    ("breaker", "failure_rate", Kind::Float),
    ("breaker:rate", "window_calls", Kind::Int),
    ("breaker:rate", "window", Kind::Duration),
    ("breaker:rate", "minimum_calls", Kind::Int),
    ("breaker", "error_timeout", Kind::Duration),
    ("breaker", "backoff", Kind::Float),
    ("breaker", "error_timeout_max", Kind::Duration),
    ("breaker", "half_open_trials", Kind::Int),
    ("breaker", "half_open_resource_timeout", Kind::Duration),
    ("breaker", "success_threshold", Kind::Int),
    ("bulkhead", "tickets", Kind::Int),
    ("bulkhead", "quota", Kind::Float),
    ("retry_budget", "ratio", Kind::Float),
    ("retry_budget", "ttl", Kind::Duration),
    ("retry_budget", "min_per_s", Kind::Int),
    ("retry_budget", "attempt_header", Kind::Str),
    ("retry_budget", "attempt_count_header", Kind::Str),
    ("tls", "cert", Kind::Str),
    ("tls", "key", Kind::Str),
    ("route", "name", Kind::Str),
    ("route", "path_prefix", Kind::Str),
    ("route", "host", Kind::Str),
    ("route", "upstream", Kind::Str),
    ("route", "class", Kind::Str),
    ("limit:fixed", "value", Kind::Int),
    ("limit:aimd", "min", Kind::Int),
    ("limit:aimd", "max", Kind::Int),
    ("limit:aimd", "ramp_up", Kind::Duration),
    ("limit:aimd", "stable_for", Kind::Duration),
    ("limit:aimd", "window_min_samples", Kind::Int),
    ("limit:aimd", "window_min_duration", Kind::Duration),
    ("limit:aimd", "min_rtt", Kind::Duration),
    ("limit:aimd", "baseline", Kind::Duration),
    ("limit:aimd", "baseline", Kind::Str),
    ("limit:aimd", "probe_interval", Kind::Duration),
    ("limit:aimd", "probe_shift", Kind::Float),
    ("limit:aimd", "error_rate", Kind::Float),
    ("limit:aimd", "drop_rate", Kind::Float),
    ("limit:aimd", "failure_backoff", Kind::Float),
    ("limit:aimd", "tolerance", Kind::Float),
    ("limit:aimd", "backoff", Kind::Float),
    ("limit:aimd", "max_cut", Kind::Float),
    ("limit:aimd", "increase", Kind::Float),
    ("limit:aimd", "min_queue_delay", Kind::Duration),
    ("limit:aimd", "initial", Kind::Int),
    ("limit:gradient", "tolerance", Kind::Float),
    ("limit:gradient", "smoothing", Kind::Float),
    ("limit:gradient", "min_queue_delay", Kind::Duration),
    ("limit:gradient", "min", Kind::Int),
    ("limit:vegas", "alpha", Kind::Float),
    ("limit:vegas", "beta", Kind::Float),
    ("limit:vegas", "threshold", Kind::Float),
    ("limit:vegas", "min_queue_delay", Kind::Duration),
    ("limit:vegas", "max", Kind::Int),
    ("limit:wip", "multiplier", Kind::Float),
    ("limit:wip", "min_queue_delay", Kind::Duration),
    ("limit:wip", "stable_for", Kind::Duration),
    ("queue", "capacity", Kind::Int),
    ("queue", "timeout", Kind::Duration),
    ("tenant", "max_share", Kind::Float),
    ("tenant", "contention_window", Kind::Duration),
    ("quota", "tenant", Kind::Str),
    ("quota", "max", Kind::Int),
    ("probe:memory", "name", Kind::Str),
    ("probe:memory", "interval", Kind::Duration),
    ("probe:memory", "timeout", Kind::Duration),
    ("probe:memory", "backoff", Kind::Float),
    ("probe:memory", "min_limit", Kind::Int),
    ("probe:memory", "cooldown", Kind::Duration),
    ("probe:memory", "flag_file", Kind::Str),
    ("probe:memory", "ratio", Kind::Float),
    ("probe:memory", "max_bytes", Kind::Int),
    ("probe:memory", "max_bytes", Kind::Str),
    ("probe:postgres", "dsn", Kind::Str),
    ("probe:postgres", "conn_ratio", Kind::Float),
    ("probe:postgres", "lock_waits", Kind::Int),
    ("probe:postgres", "interval", Kind::Duration),
    ("probe:backlog", "port", Kind::Int),
    ("probe:backlog", "upstream", Kind::Str),
    ("probe:backlog", "max_backlog", Kind::Int),
    ("probe:latency", "multiplier", Kind::Float),
    ("probe:latency", "baseline_half_life", Kind::Duration),
    ("probe:latency", "cooldown", Kind::Duration),
    ("probe:gate", "saturated_at", Kind::Float),
    ("probe:gate", "recover_at", Kind::Float),
    ("probe:gate", "interval", Kind::Duration),
    ("store", "url", Kind::Str),
    ("store", "lease_ttl", Kind::Duration),
    ("store", "renew_interval", Kind::Duration),
    ("store", "timeout", Kind::Duration),
    ("store", "join_ramp", Kind::Duration),
    ("store", "key_prefix", Kind::Str),
    ("store", "replica_id", Kind::Str),
];

/// The extreme values of each kind, as TOML. Durations include the bounds
/// floodwall accepts, so accepted configs at the bounds are served too.
fn extremes(kind: Kind) -> Vec<String> {
    let strs = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    match kind {
        Kind::Duration => strs(&[
            "\"0s\"",
            "\"1ns\"",
            "\"100ms\"",
            "\"1s\"",
            "\"1m\"",
            "\"10m\"",
            "\"1h\"",
            "\"24h\"",
            "\"25h\"",
            "\"18446744073709551615s\"",
            "\"18446744073709551615ns\"",
            "\"584942417355y\"",
            "\"-1s\"",
        ]),
        Kind::Int => strs(&[
            "0",
            "1",
            "-1",
            "65535",
            "65536",
            "1000000",
            "1000001",
            "4294967296",
            "9223372036854775807",
            "-9223372036854775808",
        ]),
        Kind::Float => strs(&[
            "0.0", "-0.0", "1.0", "0.5", "1.5", "10.0", "-1.0", "nan", "-nan", "inf", "-inf",
            "1e308", "5e-324", "100.0", "1000.0",
        ]),
        Kind::Str => {
            let mut v = strs(&[
                "\"\"",
                "\"a\"",
                "\"/\"",
                "\"a b\"",
                "\"\\u0000\"",
                "\"é\"",
                "\"redis://u:p@127.0.0.1:1\"",
                "\"http://127.0.0.1:1\"",
                "\"/tmp\"",
                "\"1TiB\"",
                "\"18446744073709551615TiB\"",
                "\"50ms\"",
            ]);
            v.push(format!("\"{}\"", "x".repeat(100_000)));
            v.push(format!("\"/{}\"", "a/".repeat(5_000)));
            v
        }
    }
}

/// A port nothing listens on: bound once, then closed.
fn dead_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    })
}

/// A valid minimal config (listeners on port 0, one upstream on a dead
/// port, one route) with `key = value` set at `place`.
fn config_with(place: &str, key: &str, value: &str) -> String {
    let port = dead_port();
    let line = format!("{key} = {value}");
    let (server, log, class, upstream, route, tables) = {
        let mut server = String::new();
        let mut log = String::new();
        let mut class = String::new();
        let mut upstream = String::new();
        let mut route = String::new();
        let mut tables = String::new();
        match place.split_once(':').map_or((place, ""), |(a, b)| (a, b)) {
            ("server", _) => server = line,
            ("log", _) => log = format!("[log]\n{line}\n"),
            ("class", _) => {
                class = if key == "name" {
                    format!("[[classes]]\n{line}\n")
                } else {
                    format!("[[classes]]\nname = \"interactive\"\n{line}\n")
                }
            }
            ("upstream", _) => upstream = line,
            // A file that does not exist: every value of the other key is
            // refused, naming one of the two, or (if the value is not a
            // path at all) by its line.
            ("tls", _) => {
                let other = if key == "cert" { "key" } else { "cert" };
                tables = format!("[server.tls]\n{other} = \"/nonexistent.pem\"\n{line}\n")
            }
            ("route", _) => route = line,
            ("limit", algorithm) => {
                tables = format!("[routes.limit]\nalgorithm = \"{algorithm}\"\n{line}\n")
            }
            ("queue", _) if key == "capacity" => tables = format!("[routes.queue]\n{line}\n"),
            ("queue", _) => tables = format!("[routes.queue]\ncapacity = 4\n{line}\n"),
            ("tenant", _) => tables = format!("[routes.tenant]\n{line}\n"),
            // A quota needs the other key and a store.
            ("quota", _) => {
                let other = if key == "tenant" {
                    "max = 1"
                } else {
                    "tenant = \"acme\""
                };
                tables = format!(
                    "[[routes.tenant.quotas]]\n{other}\n{line}\n\n[store]\n\
                     url = \"redis://127.0.0.1:{port}\"\n"
                )
            }
            ("retry_budget", _) => tables = format!("[routes.retry_budget]\n{line}\n"),
            // `[upstreams.*]` attaches to the last `[[upstreams]]` entry,
            // wherever in the file it comes.
            ("breaker", "rate") => {
                tables = format!("[upstreams.breaker]\nfailure_rate = 0.5\n{line}\n")
            }
            ("breaker", _) => tables = format!("[upstreams.breaker]\n{line}\n"),
            ("bulkhead", _) => tables = format!("[upstreams.bulkhead]\n{line}\n"),
            ("probe", kind) => {
                // What each kind needs to start anywhere: a DSN (to a dead
                // port: the probe fails, and `on_failure = "ignore"` lifts
                // it), a memory budget outside a cgroup with memory.max.
                let dsn = match kind {
                    "postgres" if key != "dsn" => format!(
                        "dsn = \"host=127.0.0.1 port={port} user=x dbname=x connect_timeout=1\"\n"
                    ),
                    "memory" if key != "max_bytes" => "max_bytes = \"1GiB\"\n".to_owned(),
                    "gate" => format!(
                        "flag_file = \"{}/fw-extremes-gate.flag\"\n",
                        std::env::temp_dir().display()
                    ),
                    _ => String::new(),
                };
                tables = format!("[[probes]]\nkind = \"{kind}\"\n{dsn}{line}\n")
            }
            ("store", _) => {
                let url = if key == "url" {
                    String::new()
                } else {
                    format!("url = \"redis://127.0.0.1:{port}\"\n")
                };
                tables = format!("[store]\n{url}{line}\n")
            }
            (other, _) => unreachable!("{other}"),
        }
        (server, log, class, upstream, route, tables)
    };
    // Tables that belong to the route (`[routes.*]`) must follow it; the
    // others may come anywhere after the top-level tables.
    let (route_tables, after) = if tables.starts_with("[routes.") {
        (tables, String::new())
    } else {
        (String::new(), tables)
    };
    let upstream_key = if upstream.starts_with("name ") {
        String::new()
    } else {
        "name = \"api\"\n".to_owned()
    };
    let scheme = if place == "upstream:https" {
        "https"
    } else {
        "http"
    };
    let upstream_url = if upstream.starts_with("url ") {
        String::new()
    } else {
        format!("url = \"{scheme}://127.0.0.1:{port}\"\n")
    };
    let (route_name, route_upstream) = match route.split_once(" = ").map(|(k, _)| k) {
        Some("name") => (String::new(), "upstream = \"api\"\n"),
        Some("upstream") => ("name = \"all\"\n".to_owned(), ""),
        _ => ("name = \"all\"\n".to_owned(), "upstream = \"api\"\n"),
    };
    let class = if class.is_empty() {
        String::new()
    } else {
        // The defaults minus the class the case replaces.
        format!("{class}[[classes]]\nname = \"batch\"\n")
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{server}\n{log}\n{class}\
         [[upstreams]]\n{upstream_key}{upstream_url}{upstream}\n\
         [[routes]]\n{route_name}{route_upstream}{route}\n{route_tables}\n{after}"
    )
}

/// Counts panics in every thread (tokio catches a task's panic, so a test
/// would not see it otherwise), then runs the default hook.
fn panics() -> usize {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    INSTALLED.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            COUNT.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
    COUNT.load(Ordering::SeqCst)
}

/// Parses `text`: accepted, or refused by an error that names a key or
/// (for a value of the wrong type) a line. Never a panic: a panic here
/// fails the test by itself.
fn parse(text: &str) -> Option<Config> {
    match Config::from_toml_str(text) {
        Ok(config) => Some(config),
        Err(e @ ConfigError::Invalid { .. }) => {
            let key = e.key().expect("an Invalid error names its key");
            assert!(!key.is_empty(), "{e}");
            None
        }
        Err(e @ ConfigError::Parse { .. }) => {
            assert!(e.to_string().contains("line"), "{e}");
            None
        }
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

/// Starts floodwall with `config`, sends one request, shuts it down; fails
/// if anything panicked meanwhile, in any thread or task.
fn serve_once(config: Config, what: &str) {
    // One at a time, so a panic is counted against the config that caused
    // it, not against another test's.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
    let before = panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let running = tokio::time::timeout(Duration::from_secs(10), floodwall::app::start(config))
            .await
            .unwrap_or_else(|_| panic!("{what}: start took over 10 s"))
            .unwrap_or_else(|e| panic!("{what}: a validated config failed to start: {e:#}"));
        let proxy = running.proxy_addr;
        let reply = tokio::task::spawn_blocking(move || one_request(proxy))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), running.shutdown())
            .await
            .unwrap_or_else(|_| panic!("{what}: shutdown took over 10 s"));
        // Any status will do (the upstream is dead: 502, or a refusal);
        // a connection closed without a response means a panicked task.
        assert!(
            reply.starts_with("HTTP/1.1 "),
            "{what}: no response, got {reply:?}"
        );
    });
    drop(rt);
    assert_eq!(panics(), before, "{what}: something panicked while serving");
}

/// One `GET /` over a raw socket; what came back (maybe nothing).
fn one_request(proxy: SocketAddr) -> String {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-tenant-id: t\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The cases, served: at u64::MAX seconds they are refused, and at
/// their bounds they serve.
#[test]
fn the_reported_panics_are_refused_and_the_bounds_serve() {
    for (place, key) in [
        ("server", "header_read_timeout"),
        ("upstream", "pool_idle_timeout"),
        ("store", "renew_interval"),
    ] {
        let text = config_with(place, key, "\"18446744073709551615s\"");
        let err = Config::from_toml_str(&text).expect_err(key);
        assert!(err.key().is_some(), "{err}");
    }
    for (place, key, value) in [
        ("server", "header_read_timeout", "\"1h\""),
        ("server", "drain_timeout", "\"1h\""),
        ("upstream", "pool_idle_timeout", "\"24h\""),
        ("upstream", "response_timeout", "\"24h\""),
        ("upstream", "connect_timeout", "\"1h\""),
    ] {
        let text = config_with(place, key, value);
        let config = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{key}: {e}"));
        serve_once(config, &format!("{key} = {value}"));
    }
}

/// The extremes of a number or duration, largest first.
fn largest_first(kind: Kind) -> Vec<&'static str> {
    match kind {
        Kind::Duration => vec![
            "\"18446744073709551615s\"",
            "\"584942417355y\"",
            "\"18446744073709551615ns\"",
            "\"25h\"",
            "\"24h\"",
            "\"1h\"",
            "\"10m\"",
            "\"1m\"",
            "\"1s\"",
            "\"100ms\"",
            "\"1ns\"",
        ],
        Kind::Int => vec![
            "9223372036854775807",
            "4294967296",
            "1000001",
            "1000000",
            "65536",
            "65535",
            "1",
        ],
        Kind::Float => vec![
            "inf", "1e308", "1000.0", "100.0", "10.0", "1.5", "1.0", "0.5", "5e-324",
        ],
        Kind::Str => Vec::new(),
    }
}

/// Every number and duration at the largest value floodwall accepts for
/// it serves without a panic. This is where an unbounded key shows: the
/// largest accepted `header_read_timeout` used to be u64::MAX seconds,
/// which panicked every connection.
#[test]
fn every_key_at_its_largest_accepted_value_serves() {
    for (place, key, kind) in KEYS {
        let Some((value, config)) = largest_first(*kind)
            .into_iter()
            .find_map(|v| parse(&config_with(place, key, v)).map(|c| (v, c)))
        else {
            assert!(matches!(kind, Kind::Str), "{place} {key}: nothing accepted");
            continue;
        };
        serve_once(config, &format!("{place} {key} = {value}"));
    }
}

/// Every key at every extreme of its kind parses without a panic, to a
/// config or to an error naming where the problem is. Parsing only (fast);
/// serving is the proptest below.
#[test]
fn every_key_at_every_extreme_parses_without_panic() {
    let mut accepted = 0;
    let mut total = 0;
    for (place, key, kind) in KEYS {
        let mut this_key = 0;
        for value in extremes(*kind) {
            total += 1;
            let text = config_with(place, key, &value);
            if parse(&text).is_some() {
                accepted += 1;
                this_key += 1;
            }
        }
        // Every number and duration has an accepted extreme, so the
        // proptest below serves one for every such key it picks.
        assert!(
            this_key > 0 || matches!(kind, Kind::Str),
            "no extreme of {place} {key} is accepted"
        );
    }
    // The generator must produce valid configs too, or it tests nothing.
    assert!(accepted > total / 10, "{accepted} of {total} accepted");
    // And the base config itself is valid.
    assert!(parse(&config_with("server", "drain_timeout", "\"30s\"")).is_some());
}

fn case() -> impl Strategy<Value = (usize, usize)> {
    (0..KEYS.len(), 0..64usize)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// One key per case at an extreme value; whatever is accepted serves
    /// one request and shuts down without a panic.
    #[test]
    fn accepted_extreme_configs_serve_without_panic((k, v) in case()) {
        let (place, key, kind) = KEYS[k];
        let values = extremes(kind);
        // Prefer values that are accepted, so most cases really serve:
        // walk from the chosen value to the first one that parses.
        let mut served = false;
        for i in 0..values.len() {
            let value = &values[(v + i) % values.len()];
            let text = config_with(place, key, value);
            if let Some(config) = parse(&text) {
                serve_once(config, &format!("{place} {key} = {}", &value[..value.len().min(40)]));
                served = true;
                break;
            }
        }
        // Some strings must name something that exists (a class, an
        // upstream); every number and duration has an accepted extreme.
        prop_assert!(served || matches!(kind, Kind::Str),
            "no extreme of {place} {key} is accepted");
    }
}

// ------------------------------------------------------ FLOODWALL_STORE_URL

/// Runs `floodwall serve --config FILE` with `env` set and no `--store`.
fn serve_with_env(config: &str, env: &[(&str, &str)]) -> std::process::Child {
    let path = common::temp_file("store-env", config);
    let mut cmd = Command::new(common::binary_path());
    cmd.args(["serve", "--config", path.to_str().unwrap()])
        .env_remove("FLOODWALL_STORE_URL")
        .env_remove("FLOODWALL_STORE_URL_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn floodwall")
}

fn plain_config() -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [[upstreams]]\nname = \"api\"\nurl = \"http://127.0.0.1:{}\"\n\
         [[routes]]\nname = \"all\"\nupstream = \"api\"\n",
        dead_port()
    )
}

/// A store URL in the environment is used as `--store` would be: with a
/// wrong scheme it is refused naming `store.url`, without the password.
#[test]
fn store_url_from_the_environment_is_validated_and_redacted() {
    let child = serve_with_env(
        &plain_config(),
        &[(
            "FLOODWALL_STORE_URL",
            "http://floodwall:hunter2@127.0.0.1:6379",
        )],
    );
    // It must exit at once; one that starts serving is killed after 10 s.
    let mut child = child;
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "did not refuse the store url from the environment: {stderr}"
    );
    assert!(stderr.contains("store.url"), "{stderr}");
    assert!(stderr.contains("http://***@127.0.0.1:6379"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "password echoed: {stderr}");
}

/// A valid store URL in the environment turns distributed mode on, without
/// the flag: `/status` shows the store, its password redacted.
#[test]
fn store_url_from_the_environment_turns_on_distributed_mode() {
    let url = format!("redis://floodwall:hunter2@127.0.0.1:{}", dead_port());
    distributed_mode_with_env(&[("FLOODWALL_STORE_URL", &url)]);
}

/// The same from a file (a mounted Secret), named by
/// `FLOODWALL_STORE_URL_FILE`, with the file's trailing newline ignored:
/// the password is then in neither the command line nor the environment.
#[test]
fn store_url_from_a_file_turns_on_distributed_mode() {
    let url = format!("redis://floodwall:hunter2@127.0.0.1:{}\n", dead_port());
    let file = common::temp_file("store-url", &url);
    distributed_mode_with_env(&[("FLOODWALL_STORE_URL_FILE", file.to_str().unwrap())]);
}

/// An empty or missing store URL file is refused, naming the flag.
#[test]
fn an_empty_or_missing_store_url_file_is_refused() {
    let empty = common::temp_file("store-url-empty", "\n");
    for (path, expected) in [
        (empty.to_str().unwrap().to_owned(), "the file is empty"),
        ("/nonexistent/store-url".to_owned(), "No such file"),
    ] {
        let out = serve_with_env(&plain_config(), &[("FLOODWALL_STORE_URL_FILE", &path)])
            .wait_with_output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("--store-file"), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// Serves with `env`, and checks through `/status` that distributed mode
/// is on with the store's password redacted.
fn distributed_mode_with_env(env: &[(&str, &str)]) {
    let mut child = serve_with_env(&plain_config(), env);
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let admin: Option<SocketAddr> = line
        .trim_end()
        .rsplit_once(" admin=")
        .and_then(|(_, a)| a.parse().ok());
    let Some(admin) = admin else {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "no ready line ({line:?}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    let _ = child.kill();
    let _ = child.wait();
    let expected = format!("redis://***@127.0.0.1:{}", dead_port());
    assert!(body.contains(&expected), "{body}");
    assert!(!body.contains("hunter2"), "{body}");
}
