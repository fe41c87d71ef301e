//! The integration harness: a purpose-built upstream, an HTTP client, and
//! helpers to read floodwall's admin endpoints and to run the real binary.
//!
//! Everything binds 127.0.0.1 port 0 and every test builds its own upstream
//! and its own floodwall, so tests share nothing and can run in parallel.

// Each test binary uses a different subset of the harness.
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// How long any single request may take before the test gives up on it.
/// Far above anything a passing test needs, so it only turns a hang into a
/// failure.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(20);

/// The loopback address with port 0: the OS picks a free port.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

// ---------------------------------------------------------------------------
// The upstream
// ---------------------------------------------------------------------------

/// Request headers the upstream tracks concurrency by, so a test can see how
/// many requests of one class or one tenant reached it at once.
const GROUP_HEADERS: [&str; 2] = ["x-priority", "x-tenant-id"];

type UpBody = BoxBody<Bytes, Infallible>;

#[derive(Debug, Default, Clone, Copy)]
struct Gauge {
    current: usize,
    peak: usize,
}

#[derive(Debug)]
struct UpState {
    delay: Duration,
    current: AtomicUsize,
    peak: AtomicUsize,
    total: AtomicUsize,
    groups: Mutex<HashMap<String, Gauge>>,
    gates: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl UpState {
    fn gate(&self, name: &str) -> Arc<Semaphore> {
        lock(&self.gates)
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(0)))
            .clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts one request as in progress at the upstream until dropped, so a
/// request floodwall abandons (its connection closed) stops counting too.
struct InProgress {
    state: Arc<UpState>,
    groups: Vec<String>,
}

impl InProgress {
    fn enter(state: &Arc<UpState>, headers: &HeaderMap) -> Self {
        let now = state.current.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak.fetch_max(now, Ordering::SeqCst);
        state.total.fetch_add(1, Ordering::SeqCst);
        let groups: Vec<String> = GROUP_HEADERS
            .iter()
            .filter_map(|h| {
                let v = headers.get(*h)?.to_str().ok()?;
                Some(format!("{h}={v}"))
            })
            .collect();
        let mut g = lock(&state.groups);
        for key in &groups {
            let e = g.entry(key.clone()).or_default();
            e.current += 1;
            e.peak = e.peak.max(e.current);
        }
        Self {
            state: state.clone(),
            groups,
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.state.current.fetch_sub(1, Ordering::SeqCst);
        let mut g = lock(&self.state.groups);
        for key in &self.groups {
            if let Some(e) = g.get_mut(key) {
                e.current -= 1;
            }
        }
    }
}

/// A test upstream on 127.0.0.1:0 that answers 200 after a delay and counts
/// how many requests it is serving at once.
///
/// Per request, the query can ask for:
/// - `sleep_ms=N`: sleep N ms instead of the default delay;
/// - `hold=NAME`: wait until the test calls [`Upstream::open`] with `NAME`
///   (a gate, so a test can hold requests in flight without guessing how
///   long they take);
///
/// and the path picks the answer:
/// - `/echo`: the request headers as JSON, `{"name": ["value", ...]}`;
/// - `/bytes?n=N`: N bytes of a known pattern ([`pattern`]) in 64 KiB chunks,
///   chunked (no content-length), with `chunk_ms=M` ms between chunks;
/// - anything else: a POST's body echoed back, or `ok` for other methods;
///
/// and every answer carries [`SEEN_PATH_HEADER`].
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<UpState>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// Starts an upstream whose requests take `delay` unless they say
    /// otherwise.
    pub async fn start(delay: Duration) -> Upstream {
        let listener = TcpListener::bind(loopback()).await.expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpState {
            delay,
            current: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            groups: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(serve(s, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, state, task }
    }

    /// The upstream's URL, for floodwall's config.
    pub fn uri(&self) -> http::Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    /// Requests being served now.
    pub fn current(&self) -> usize {
        self.state.current.load(Ordering::SeqCst)
    }

    /// The most requests ever served at once.
    pub fn peak(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    /// Requests received in all.
    pub fn total(&self) -> usize {
        self.state.total.load(Ordering::SeqCst)
    }

    /// The most requests with `header: value` (`x-priority` or
    /// `x-tenant-id`) ever served at once.
    pub fn peak_of(&self, header: &str, value: &str) -> usize {
        lock(&self.state.groups)
            .get(&format!("{header}={value}"))
            .map_or(0, |g| g.peak)
    }

    /// Requests with `header: value` being served now.
    pub fn current_of(&self, header: &str, value: &str) -> usize {
        lock(&self.state.groups)
            .get(&format!("{header}={value}"))
            .map_or(0, |g| g.current)
    }

    /// Forgets the peaks seen so far: from now on a peak counts only what
    /// happens next (starting from what is being served now).
    pub fn reset_peaks(&self) {
        self.state
            .peak
            .store(self.state.current.load(Ordering::SeqCst), Ordering::SeqCst);
        for g in lock(&self.state.groups).values_mut() {
            g.peak = g.current;
        }
    }

    /// Lets every request held with `hold=name`, now or later, proceed.
    pub fn open(&self, name: &str) {
        self.state.gate(name).close();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The byte at offset `i` of a `/bytes` answer: a pattern with a period that
/// does not divide any chunk size, so a lost, repeated or reordered chunk
/// shows.
pub fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn full(body: impl Into<Bytes>) -> UpBody {
    Full::new(body.into()).boxed()
}

/// The response header every upstream answer carries: the path and query
/// the upstream received, so a test can see what floodwall forwarded.
pub const SEEN_PATH_HEADER: &str = "x-upstream-path";

async fn serve(state: Arc<UpState>, req: Request<Incoming>) -> Response<UpBody> {
    let seen = req
        .uri()
        .path_and_query()
        .and_then(|pq| http::HeaderValue::from_str(pq.as_str()).ok());
    let mut resp = answer(state, req).await;
    if let Some(v) = seen {
        resp.headers_mut().insert(SEEN_PATH_HEADER, v);
    }
    resp
}

async fn answer(state: Arc<UpState>, req: Request<Incoming>) -> Response<UpBody> {
    let _in_progress = InProgress::enter(&state, req.headers());
    let query = req.uri().query();
    if let Some(name) = query_param(query, "hold") {
        // Closed means opened: acquire then fails at once.
        let _ = state.gate(name).acquire().await;
    }
    let delay = query_param(query, "sleep_ms")
        .and_then(|v| v.parse().ok())
        .map_or(state.delay, Duration::from_millis);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match req.uri().path() {
        "/echo" => {
            let mut seen: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
            for (name, value) in req.headers() {
                let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
                seen.entry(name.as_str())
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()))
                    .as_array_mut()
                    .unwrap()
                    .push(v.into());
            }
            Response::new(full(serde_json::to_vec(&seen).unwrap()))
        }
        "/bytes" => {
            let n: usize = query_param(query, "n")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let chunk_ms: u64 = query_param(query, "chunk_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            const CHUNK: usize = 64 * 1024;
            let chunks = futures_util::stream::unfold(0, move |start| async move {
                if start >= n {
                    return None;
                }
                if chunk_ms > 0 && start > 0 {
                    tokio::time::sleep(Duration::from_millis(chunk_ms)).await;
                }
                let end = (start + CHUNK).min(n);
                let chunk: Vec<u8> = (start..end).map(pattern).collect();
                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))), end))
            });
            Response::new(StreamBody::new(chunks).boxed())
        }
        _ if req.method() == Method::POST => match req.into_body().collect().await {
            Ok(body) => Response::new(full(body.to_bytes())),
            Err(_) => {
                let mut resp = Response::new(full("body error"));
                *resp.status_mut() = StatusCode::BAD_REQUEST;
                resp
            }
        },
        _ => Response::new(full("ok")),
    }
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/// A response read to its end.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The `x-floodwall-reason` header, if any.
    pub fn reason(&self) -> Option<&str> {
        self.headers
            .get("x-floodwall-reason")
            .and_then(|v| v.to_str().ok())
    }

    /// The `retry-after` header as whole seconds, if present and numeric.
    pub fn retry_after(&self) -> Option<u64> {
        self.headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts this is a refusal floodwall made itself: `status`, the
    /// reason header, the JSON body naming the same reason and, for 503
    /// and 429, an integer `retry-after` of at least 1 s and the
    /// millisecond hint.
    #[track_caller]
    pub fn assert_refused(&self, status: u16, reason: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.reason(), Some(reason), "{self:?}");
        let body = self.json();
        assert_eq!(body["reason"], reason, "{body}");
        assert!(body["error"].is_string(), "{body}");
        if status == 503 || status == 429 {
            let secs = self.retry_after().unwrap_or_else(|| {
                panic!("retry-after missing or not an integer: {:?}", self.headers)
            });
            assert!(secs >= 1, "retry-after {secs}");
            let ms: u64 = self.headers["x-floodwall-retry-after-ms"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(ms > 0, "x-floodwall-retry-after-ms {ms}");
        } else {
            assert!(
                !self.headers.contains_key(http::header::RETRY_AFTER),
                "no retry-after on {status}: {:?}",
                self.headers
            );
        }
    }
}

/// An HTTP client for tests: hyper's pooled client, HTTP/1.1 or h2c with
/// prior knowledge, with a deadline on every request.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// An HTTP/1.1 client.
    pub fn http1() -> Client {
        Client {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// An HTTP/2 client speaking h2c with prior knowledge.
    pub fn http2() -> Client {
        Client {
            inner: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// Sends `req` and reads the whole response; panics if that takes
    /// longer than [`REQUEST_DEADLINE`] or the connection fails.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        self.try_send(req).await.expect("request failed")
    }

    /// Like [`Client::send`], but a connection error is returned.
    pub async fn try_send(&self, req: Request<Full<Bytes>>) -> Result<Reply, String> {
        let what = format!("{} {}", req.method(), req.uri());
        let fut = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| format!("{e:?}"))?;
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body: body.to_bytes(),
            })
        };
        tokio::time::timeout(REQUEST_DEADLINE, fut)
            .await
            .unwrap_or_else(|_| panic!("{what} took longer than {REQUEST_DEADLINE:?}"))
    }

    /// `GET http://{addr}{path}` with `headers`.
    pub async fn get(&self, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(request(Method::GET, addr, path, headers, Bytes::new()))
            .await
    }
}

/// Builds a request to `http://{addr}{path}`.
pub fn request(
    method: Method,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).unwrap()
}

/// Sends `n` copies of `GET path` at once, each on its own task, and returns
/// the replies in no particular order.
pub async fn burst(
    client: &Client,
    addr: SocketAddr,
    n: usize,
    path: &str,
    headers: &[(&str, &str)],
) -> Vec<Reply> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let client = client.clone();
            let req = request(Method::GET, addr, path, headers, Bytes::new());
            tokio::spawn(async move { client.send(req).await })
        })
        .collect();
    let mut replies = Vec::with_capacity(n);
    for t in tasks {
        replies.push(t.await.expect("request task panicked"));
    }
    replies
}

/// How many replies have `status`.
pub fn count_status(replies: &[Reply], status: u16) -> usize {
    replies
        .iter()
        .filter(|r| r.status.as_u16() == status)
        .count()
}

// ---------------------------------------------------------------------------
// The admin endpoints
// ---------------------------------------------------------------------------

/// Scrapes `/metrics` (classic text format) and parses it.
pub async fn metrics(admin: SocketAddr) -> prometheus_parse::Scrape {
    let text = metrics_text(admin).await;
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("/metrics parses")
}

/// The raw `/metrics` text.
pub async fn metrics_text(admin: SocketAddr) -> String {
    let reply = Client::http1().get(admin, "/metrics", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    String::from_utf8(reply.body.to_vec()).expect("/metrics is UTF-8")
}

/// The `/status` document.
pub async fn status(admin: SocketAddr) -> serde_json::Value {
    let reply = Client::http1().get(admin, "/status", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.json()
}

/// The value of a counter, gauge or untyped sample.
pub fn scalar(v: &prometheus_parse::Value) -> f64 {
    match v {
        prometheus_parse::Value::Counter(x)
        | prometheus_parse::Value::Gauge(x)
        | prometheus_parse::Value::Untyped(x) => *x,
        other => panic!("not a scalar: {other:?}"),
    }
}

/// The sum of every `metric` sample whose labels include all of `labels`.
pub fn sum(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| scalar(&s.value))
        .sum()
}

/// `floodwall_wip_current` summed over every route and class.
pub async fn wip_current(admin: SocketAddr) -> f64 {
    sum(&metrics(admin).await, "floodwall_wip_current", &[])
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` if it
/// still does not after `timeout`. Returns how long it took.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------
// In-process floodwall
// ---------------------------------------------------------------------------

/// The config `floodwall serve --upstream URL --limit N` would use, on
/// loopback port 0 for both listeners.
pub fn simple_config(upstream: http::Uri, limit: usize) -> floodwall::config::Config {
    floodwall::config::Config::simple(loopback(), upstream, limit, loopback())
}

/// Parses `toml` after replacing `{upstream}` with `upstream`'s URL, and
/// moves both listeners to loopback port 0.
pub fn config_from_toml(toml: &str, upstream: &http::Uri) -> floodwall::config::Config {
    let text = toml.replace("{upstream}", &upstream.to_string());
    let mut config = floodwall::config::Config::from_toml_str(&text)
        .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{text}"));
    config.server.listen = loopback();
    config.server.admin = loopback();
    config
}

/// Starts floodwall in this process.
pub async fn start(config: floodwall::config::Config) -> floodwall::app::Running {
    floodwall::app::start(config)
        .await
        .expect("floodwall starts")
}

/// Slots held on the first route, read from the limiter itself.
pub fn inflight(running: &floodwall::app::Running) -> usize {
    running.proxy.router.routes()[0].limiter.inflight()
}

// ---------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------

/// A `floodwall serve` child process. Killed when dropped, so a failing test
/// leaves nothing behind.
pub struct Binary {
    /// The child process.
    pub child: Child,
    /// The proxy address from the ready line.
    pub proxy: SocketAddr,
    /// The admin address from the ready line.
    pub admin: SocketAddr,
    stdout_rest: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Binary {
    /// Everything the process wrote to stderr so far (its logs).
    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// What the process wrote to stdout after the ready line.
    pub fn stdout_after_ready(&self) -> String {
        lock(&self.stdout_rest).clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM with `kill(1)`.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of the `floodwall` binary cargo built for these tests.
pub fn binary_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_floodwall"))
}

fn drain_into(mut r: impl Read + Send + 'static, sink: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            lock(&sink).push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
}

/// Runs `floodwall serve ARGS` and waits (up to 10 s) for its ready line,
/// `floodwall listening proxy=ADDR admin=ADDR`.
pub fn spawn_binary(args: &[&str]) -> Binary {
    let mut cmd = Command::new(binary_path());
    cmd.arg("serve").args(args);
    spawn_command(cmd)
}

/// Runs `cmd`, which execs `floodwall serve` (through a wrapper such as
/// `unshare`), and waits for its ready line as [`spawn_binary`] does.
pub fn spawn_command(mut cmd: Command) -> Binary {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn floodwall");
    let stderr = Arc::new(Mutex::new(String::new()));
    drain_into(child.stderr.take().unwrap(), stderr.clone());
    let stdout = child.stdout.take().unwrap();
    let stdout_rest = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let rest = stdout_rest.clone();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        drain_into(reader, rest);
    });
    let line = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            panic!("no ready line within 10 s; stderr:\n{}", lock(&stderr));
        }
    };
    let parsed = line
        .trim_end()
        .strip_prefix("floodwall listening proxy=")
        .and_then(|rest| rest.split_once(" admin="))
        .and_then(|(p, a)| Some((p.parse().ok()?, a.parse().ok()?)));
    let Some((proxy, admin)) = parsed else {
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100));
        panic!("unexpected ready line {line:?}; stderr:\n{}", lock(&stderr));
    };
    Binary {
        child,
        proxy,
        admin,
        stdout_rest,
        stderr,
    }
}

/// A file under cargo's per-target temp dir with a name unique to this
/// process and `tag`, holding `contents`.
pub fn temp_file(tag: &str, contents: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("floodwall-{}-{tag}.toml", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

/// Pipes `text` into `promtool check metrics` (installed by
/// scripts/install-deps.sh); skipped with a note if it is missing.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("note: promtool is not on PATH, skipping `promtool check metrics`");
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- metrics ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}
