//! The operations kit's harness: a real Prometheus server per test, open-loop
//! load, and the PromQL and docs parsing the rule, dashboard and KEDA checks
//! share.
//!
//! - **Prometheus** (`prometheus`, Debian package `prometheus`, installed by
//!   scripts/install-deps.sh) runs from a temp dir under cargo's target dir
//!   with its own TSDB, on a free loopback port, scraping the given targets
//!   every second and evaluating the given rule files every second. Stopped
//!   by PID and deleted on drop.
//! - **Load** is open loop: arrivals on a schedule whatever the answers, so
//!   refusals do not slow the offered load down (a closed loop would).

// Each test binary uses a different subset of the harness.
#![allow(dead_code)]

use crate::common::Client;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh directory under cargo's per-target temp dir, unique to this
/// process and `tag`.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "ops-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A port nothing listens on now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `program args` and returns (success, stdout + stderr); panics with
/// a pointer to install-deps if the program is missing.
pub fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (scripts/install-deps.sh installs it)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs the real floodwall binary's `sub`command with `args` off the async
/// runtime: (succeeded, stdout, stderr).
pub async fn floodwall_cli(sub: &'static str, args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(crate::common::binary_path())
            .arg(sub)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("run floodwall {sub}: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// Now, Unix seconds: the time axis of Prometheus and of the CLI windows.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------

/// A running Prometheus server; killed and its directory deleted on drop.
pub struct Prometheus {
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

/// One series of an instant query: its labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The series' labels (`__name__` included when it has one).
    pub labels: BTreeMap<String, String>,
    /// The value (NaN and ±Inf as Prometheus writes them).
    pub value: f64,
}

/// Percent-encodes a URL query value: the client's own, so the tests
/// encode as `floodwall report` and `tune` do.
pub use floodwall::prometheus::encode;

fn value_of(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| match s {
            "NaN" => Some(f64::NAN),
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            s => s.parse().ok(),
        })
        .unwrap_or(f64::NAN)
}

/// Whether Prometheus at `addr` answers `/-/ready` with 200 (it answers
/// 503 while it replays its WAL and loads rules).
fn ready(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (admin addresses, job
    /// `floodwall`) every second, with `rule_files` evaluated every second.
    pub fn start(targets: &[SocketAddr], rule_files: &[PathBuf]) -> Prometheus {
        let dir = temp_dir("prometheus");
        let targets: Vec<String> = targets.iter().map(|a| format!("'{a}'")).collect();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("  - '{}'", p.canonicalize().unwrap().display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{}\n\
             scrape_configs:\n  - job_name: floodwall\n    static_configs:\n      - targets: [{}]\n",
            if rules.is_empty() {
                "  []".to_owned()
            } else {
                rules.join("\n")
            },
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        // A free port can be taken between the probe and Prometheus' bind:
        // try a few.
        for _ in 0..5 {
            let port = free_port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let log = std::fs::File::create(dir.join("log")).unwrap();
            let child = Command::new("prometheus")
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run prometheus: {e} (scripts/install-deps.sh installs it)")
                });
            let mut p = Prometheus {
                addr,
                child,
                dir: dir.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = p.child.try_wait() {
                    break;
                }
                if ready(addr) {
                    return p;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
            // Keep the dir for the next attempt; forget this handle.
            std::mem::forget(p);
        }
        panic!(
            "prometheus did not start:\n{}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
    }

    /// Its base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// GETs `path` and returns the JSON document (any status: errors are
    /// JSON too).
    pub async fn get(&self, path: &str) -> Value {
        let reply = Client::http1().get(self.addr, path, &[]).await;
        serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {:?}", reply.body))
    }

    /// Runs an instant query; `Err` carries Prometheus' error (a parse
    /// error, say).
    pub async fn query(&self, expr: &str) -> Result<Vec<Sample>, String> {
        let doc = self
            .get(&format!("/api/v1/query?query={}", encode(expr)))
            .await;
        if doc["status"] != "success" {
            return Err(format!("{}: {}", doc["errorType"], doc["error"]));
        }
        let data = &doc["data"];
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| Sample {
                    labels: s["metric"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect(),
                    value: value_of(&s["value"][1]),
                })
                .collect()),
            Some("scalar") => Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: value_of(&data["result"][1]),
            }]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }

    /// Polls `expr` until it returns at least one series, up to `timeout`;
    /// a parse error fails at once.
    pub async fn query_until_data(
        &self,
        expr: &str,
        timeout: Duration,
    ) -> Result<Vec<Sample>, String> {
        let start = Instant::now();
        loop {
            let r = self.query(expr).await?;
            if !r.is_empty() {
                return Ok(r);
            }
            if start.elapsed() > timeout {
                return Err("no series".into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until every target has been scraped successfully.
    pub async fn wait_for_targets(&self, n: usize) {
        crate::common::wait_until(Duration::from_secs(20), "every target is up", || async {
            matches!(self.query("up == 1").await, Ok(v) if v.len() == n)
        })
        .await;
    }

    /// The rules Prometheus loaded: (kind "recording"/"alerting", name,
    /// query) in file order.
    pub async fn rules(&self) -> Vec<(String, String, String)> {
        let doc = self.get("/api/v1/rules").await;
        assert_eq!(doc["status"], "success", "{doc}");
        let mut out = Vec::new();
        for g in doc["data"]["groups"].as_array().unwrap() {
            for r in g["rules"].as_array().unwrap() {
                out.push((
                    r["type"].as_str().unwrap().to_owned(),
                    r["name"].as_str().unwrap().to_owned(),
                    r["query"].as_str().unwrap().to_owned(),
                ));
            }
        }
        out
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The rule files in deploy/prometheus/.
pub fn rule_files() -> Vec<PathBuf> {
    let dir = repo_root().join("deploy/prometheus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".rules.yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "rule files in {}", dir.display());
    files
}

// ---------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------

/// What an open-loop run got back, by status (0: no answer).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Replies by status code.
    pub by_status: BTreeMap<u16, usize>,
}

impl Tally {
    /// Replies with `status`.
    pub fn count(&self, status: u16) -> usize {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// Every request sent.
    pub fn total(&self) -> usize {
        self.by_status.values().sum()
    }
}

/// Sends `rate` requests a second for `duration` to `addr`, cycling
/// through `requests` (path, headers), each on its own task, whatever the
/// answers; returns once every request has been answered or given up on.
pub async fn open_loop(
    addr: SocketAddr,
    requests: &[(&str, &[(&str, &str)])],
    rate: f64,
    duration: Duration,
) -> Tally {
    let client = Client::http1();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = tokio::time::Instant::now();
    let n = (rate * duration.as_secs_f64()).round() as usize;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let (path, headers) = requests[i % requests.len()];
        let mut b = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::new())).unwrap();
        let client = client.clone();
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let status = match client.try_send(req).await {
                Ok(r) => r.status.as_u16(),
                Err(_) => 0,
            };
            *tally.lock().unwrap().by_status.entry(status).or_default() += 1;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let t = tally.lock().unwrap().clone();
    t
}

// ---------------------------------------------------------------------------
// PromQL and docs
// ---------------------------------------------------------------------------

const KEYWORDS: [&str; 26] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
];

/// The metric names (and recording-rule names) a PromQL expression
/// selects: identifiers outside strings, label matchers `{…}`, ranges
/// `[…]` and the label lists of `by`/`without`/`on`/`ignoring`/`group_*`,
/// that are neither keywords nor function calls.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Set after a keyword whose parenthesised list holds label names.
    let mut label_list_next = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'{' | b'[' => {
                let close = if c == b'{' { b'}' } else { b']' };
                while i < b.len() && b[i] != close {
                    if b[i] == b'"' {
                        i += 1;
                        while i < b.len() && b[i] != b'"' {
                            if b[i] == b'\\' {
                                i += 1;
                            }
                            i += 1;
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            b'(' if label_list_next => {
                while i < b.len() && b[i] != b')' {
                    i += 1;
                }
                i += 1;
                label_list_next = false;
            }
            b'0'..=b'9' => {
                // A number or a duration (5m, 1e3, 0.95).
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let lower = word.to_ascii_lowercase();
                if [
                    "by",
                    "without",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                ]
                .contains(&lower.as_str())
                {
                    // `group_left` may stand without a list.
                    label_list_next = j < b.len() && b[j] == b'(';
                } else if KEYWORDS.contains(&lower.as_str()) {
                } else if j < b.len() && b[j] == b'(' {
                    // A function call.
                } else {
                    names.insert(word.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The metric a series name belongs to: a histogram's `_bucket`, `_sum` and
/// `_count` series belong to the histogram.
pub fn family_of(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return base;
        }
    }
    name
}

/// The metric names docs/metrics.md documents: the first cell of each row
/// of its metrics table.
pub fn documented_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo_root().join("docs/metrics.md")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("| `floodwall_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|n| format!("floodwall_{n}"))
        .collect()
}

/// A query and what it belongs to (a panel's title, a variable's name).
pub type Named = (String, String);

/// Every PromQL expression in a Grafana dashboard: panel targets (rows'
/// panels too) as (panel title, expr), and the template variables' queries
/// as (variable name, query).
pub fn dashboard_queries(dashboard: &Value) -> (Vec<Named>, Vec<Named>) {
    fn walk(panels: &Value, out: &mut Vec<Named>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("").to_owned();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((title.clone(), e.to_owned()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut targets = Vec::new();
    walk(&dashboard["panels"], &mut targets);
    let vars = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = match &v["query"] {
                Value::String(s) => s.clone(),
                o => o["query"].as_str().unwrap_or("").to_owned(),
            };
            (v["name"].as_str().unwrap_or("").to_owned(), q)
        })
        .collect();
    (targets, vars)
}

/// Grafana's `label_values(SELECTOR, LABEL)` as PromQL that returns one
/// series per value: `count by (LABEL) (SELECTOR)`.
pub fn label_values_as_promql(query: &str) -> Option<String> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some(format!("count by ({}) ({})", label.trim(), selector.trim()))
}

// ---------------------------------------------------------------------------
// A floodwall with every series
// ---------------------------------------------------------------------------

/// A floodwall config that exposes every series the rules and the dashboard
/// read, and can be made to raise every alert, in front of `upstream` (a
/// `common::Upstream`):
///
/// - route `api` (`/api`): a fixed limit of 8, held at 4 by the memory
///   probe, whose budget (1 MiB) this process always exceeds: a binding
///   probe constraint;
/// - route `sick` (`/sick`): aimd with a floor of 2 in front of an upstream
///   that refuses every connection, so its algorithm sits at its floor;
/// - a postgres probe on a port nothing listens on: a failing probe;
/// - a `[store]` on a port nothing listens on: Redis down.
pub fn everything_toml() -> String {
    format!(
        r#"
[[upstreams]]
name = "app"
url = "{{upstream}}"

[[upstreams]]
name = "dead"
url = "http://127.0.0.1:{dead}"
connect_timeout = "200ms"

# Nobody listens here either; its breaker opens on the first connect errors
# and stays open (FloodwallCircuitOpen).
[[upstreams]]
name = "gone"
url = "http://127.0.0.1:{gone}"
connect_timeout = "200ms"
[upstreams.breaker]
error_threshold = 3
error_timeout = "1m"

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "app"
limit = {{ algorithm = "fixed", value = 8 }}

[[routes]]
name = "sick"
path_prefix = "/sick"
upstream = "dead"
[routes.limit]
algorithm = "aimd"
min = 2
max = 8
baseline = "10ms"
window_min_samples = 5

[[routes]]
name = "tripped"
path_prefix = "/tripped"
upstream = "gone"
limit = {{ algorithm = "fixed", value = 8 }}

[[probes]]
kind = "memory"
name = "memory"
max_bytes = "1MiB"
min_limit = 4
interval = "200ms"
timeout = "100ms"

[[probes]]
kind = "postgres"
name = "pg"
dsn = "host=127.0.0.1 port={pg} user=floodwall dbname=app connect_timeout=1"
interval = "500ms"
timeout = "200ms"

[store]
url = "redis://127.0.0.1:{redis}"
"#,
        dead = free_port(),
        gone = free_port(),
        pg = free_port(),
        redis = free_port(),
    )
}

/// The names of every series in a `/metrics` text (histograms under their
/// family name).
pub fn exposed_metrics(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| family_of(n).to_owned())
        .collect()
}

/// The ScaledObject in deploy/keda/.
pub fn scaled_object_path() -> PathBuf {
    repo_root().join("deploy/keda/scaledobject.yaml")
}

/// The Prometheus query of the ScaledObject's trigger: the block scalar
/// after its `query: |-` line (the file writes it so; this fails loudly if
/// it ever does not).
pub fn keda_query() -> String {
    let text = std::fs::read_to_string(scaled_object_path()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == "query: |-")
        .expect("the ScaledObject writes its query as `query: |-` and a block");
    let indent = |l: &str| l.len() - l.trim_start().len();
    let own = indent(lines[at]);
    let body: Vec<&str> = lines[at + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > own)
        .map(|l| l.trim())
        .collect();
    let q = body.join("\n").trim().to_owned();
    assert!(!q.is_empty(), "empty KEDA query");
    q
}

/// `expr` with the dashboard's template variables replaced by one real
/// value each: `$job` the scrape job, `$instance` the floodwall's admin
/// address, `$route` a route, and Grafana's `$__rate_interval` a window of
/// several scrapes.
pub fn substitute(expr: &str, instance: SocketAddr, route: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("${job}", "floodwall")
        .replace("$job", "floodwall")
        .replace("${instance}", &instance.to_string())
        .replace("$instance", &instance.to_string())
        .replace("${route}", route)
        .replace("$route", route)
}
