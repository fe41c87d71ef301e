//! TLS both ways, end to end: certificates made at test time with rcgen (a
//! CA and leaves for 127.0.0.1 / localhost or for a name only), real
//! sockets on 127.0.0.1 port 0, `curl` as the TLS client, a TLS upstream
//! served with tokio-rustls, and the real binary for SIGHUP and for the
//! system's trust roots (pointed at a file with `SSL_CERT_FILE`).

mod common;

use common::*;
use floodwall::config::{Config, TlsConfig};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Generous bound for things that must happen soon on a loaded machine.
const EVENTUALLY: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A directory of PEM files unique to this process and `tag`.
fn pem_dir(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("floodwall-tls-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A test certificate authority.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A server certificate for `names` (IP addresses become IP SANs).
    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "floodwall test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.cert.pem()).unwrap();
        path
    }
}

/// A leaf certificate and its key, as PEM.
#[derive(Clone)]
struct Leaf {
    cert: String,
    key: String,
}

impl Leaf {
    /// Writes `cert.pem` and `key.pem` into `dir`.
    fn write(&self, dir: &Path) -> TlsConfig {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.cert).unwrap();
        std::fs::write(&key, &self.key).unwrap();
        TlsConfig { cert, key }
    }
}

// ---------------------------------------------------------------------------
// curl, the TLS client
// ---------------------------------------------------------------------------

/// What curl got: its exit code, the status and HTTP version it reports,
/// and the body.
#[derive(Debug)]
struct Curl {
    exit: i32,
    status: u16,
    version: String,
    body: String,
    // Read only through Debug, in failure messages.
    #[allow(dead_code)]
    stderr: String,
}

impl Curl {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// `curl -sS ARGS URL`, with the status and HTTP version written after
/// the body.
async fn curl(args: &[&str], url: &str) -> Curl {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code} %{http_version}",
    ])
    .args(args)
    .arg(url);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("curl runs (scripts/install-deps.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (status, version) = last.split_once(' ').unwrap_or((last, ""));
    Curl {
        exit: out.status.code().unwrap_or(-1),
        status: status.parse().unwrap_or(0),
        version: version.to_owned(),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// curl's exit code for a peer certificate it cannot verify.
const CURL_BAD_PEER_CERT: i32 = 60;

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The headers an `/echo` answer says the upstream saw: `name` → its one value.
fn seen(reply: &serde_json::Value, name: &str) -> String {
    let values = reply[name]
        .as_array()
        .unwrap_or_else(|| panic!("{name} missing: {reply}"));
    assert_eq!(values.len(), 1, "{name}: {values:?}");
    values[0].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------
// A TLS upstream
// ---------------------------------------------------------------------------

/// An upstream on 127.0.0.1:0 that speaks TLS (tokio-rustls) with the given
/// certificate, answers every request 200 with JSON `{"sni": …, "proto":
/// …}` (the server name the client sent, and its `X-Forwarded-Proto`), and
/// counts requests.
struct TlsUpstream {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsUpstream {
    async fn start(leaf: &Leaf) -> TlsUpstream {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(loopback()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().map(str::to_owned);
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let proto = req
                            .headers()
                            .get("x-forwarded-proto")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let body = serde_json::json!({ "sni": sni, "proto": proto }).to_string();
                        async move {
                            Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body),
                            )))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsUpstream {
            addr,
            requests,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A floodwall config (listeners on port 0) with one upstream at `url`
/// and `extra` lines in its `[[upstreams]]` table.
fn upstream_config(url: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [[upstreams]]\nname = \"api\"\nurl = \"{url}\"\nconnect_timeout = \"500ms\"\n\
         response_timeout = \"10s\"\n{extra}\n\
         [[routes]]\nname = \"all\"\nupstream = \"api\"\nlimit = {{ algorithm = \"fixed\", value = 8 }}\n"
    )
}

fn toml_path(p: &Path) -> String {
    // TOML basic strings: backslashes and quotes escaped.
    format!("{:?}", p.display().to_string())
}

// ---------------------------------------------------------------------------
// The real binary, with its environment
// ---------------------------------------------------------------------------

/// A `floodwall serve --config FILE` child with extra environment
/// variables; killed when dropped.
struct Proc {
    child: Child,
    proxy: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(config: &str, tag: &str, env: &[(&str, &str)]) -> Proc {
        let path = temp_file(tag, config);
        let mut cmd = Command::new(binary_path());
        cmd.args(["serve", "--config", path_str(&path)])
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn floodwall");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The ready line, then keep draining so the child never blocks.
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while let Ok(1) = out.read(&mut byte) {
                if byte[0] == b'\n' {
                    break;
                }
                line.push(byte[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        let proxy = line
            .strip_prefix("floodwall listening proxy=")
            .and_then(|r| r.split_once(' '))
            .and_then(|(p, _)| p.parse().ok());
        let Some(proxy) = proxy else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "no ready line ({line:?}); stderr:\n{}",
                stderr.lock().unwrap()
            );
        };
        Proc {
            child,
            proxy,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// (a) The TLS listener
// ---------------------------------------------------------------------------

/// curl trusting the test CA gets through the TLS listener over HTTP/1.1
/// and over HTTP/2 (negotiated by ALPN), and the upstream is told
/// `X-Forwarded-Proto: https`; curl trusting another CA is refused at the
/// handshake and nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_http1_and_h2_to_a_client_that_trusts_the_ca() {
    let dir = pem_dir("listener");
    let ca = Ca::new("floodwall test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let other_ca = Ca::new("another CA").write(&dir, "other-ca.pem");
    let tls = ca.leaf(&["127.0.0.1", "localhost"]).write(&dir);

    let upstream = Upstream::start(Duration::ZERO).await;
    let mut config = simple_config(upstream.uri(), 8);
    config.server.tls = Some(tls);
    let fw = start(config).await;
    let port = fw.proxy_addr.port();
    let url = format!("https://127.0.0.1:{port}/echo");

    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let r = curl(&["--cacert", path_str(&ca_file), flag], &url).await;
        assert_eq!((r.exit, r.status), (0, 200), "{flag}: {r:?}");
        assert_eq!(r.version, version, "{flag}: {r:?}");
        let headers = r.json();
        assert_eq!(seen(&headers, "x-forwarded-proto"), "https", "{headers}");
    }
    // The certificate's DNS name works too.
    let r = curl(
        &[
            "--cacert",
            path_str(&ca_file),
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
        ],
        &format!("https://localhost:{port}/echo"),
    )
    .await;
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    // A client-sent X-Forwarded-Proto does not survive.
    let r = curl(
        &[
            "--cacert",
            path_str(&ca_file),
            "-H",
            "x-forwarded-proto: http",
        ],
        &url,
    )
    .await;
    assert_eq!(seen(&r.json(), "x-forwarded-proto"), "https");

    let before = upstream.total();
    let r = curl(&["--cacert", path_str(&other_ca)], &url).await;
    assert_eq!(r.exit, CURL_BAD_PEER_CERT, "{r:?}");
    assert_eq!(upstream.total(), before, "nothing reached the upstream");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let r = curl(&[], &format!("http://127.0.0.1:{port}/echo")).await;
    assert_ne!(r.status, 200, "{r:?}");
    assert_eq!(upstream.total(), before, "nothing reached the upstream");
    fw.shutdown().await;
}

/// A client that connects to the TLS listener and says nothing is cut off
/// after `header_read_timeout`, and does not hold up anyone else meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tls_client_is_cut_off_after_header_read_timeout() {
    let dir = pem_dir("silent");
    let ca = Ca::new("floodwall test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let upstream = Upstream::start(Duration::ZERO).await;
    let mut config = simple_config(upstream.uri(), 8);
    config.server.tls = Some(ca.leaf(&["127.0.0.1"]).write(&dir));
    config.server.header_read_timeout = Duration::from_millis(500);
    let fw = start(config).await;

    let started = Instant::now();
    let mut silent = TcpStream::connect(fw.proxy_addr).await.unwrap();
    // Meanwhile a real client is served.
    let r = curl(
        &["--cacert", path_str(&ca_file)],
        &format!("https://127.0.0.1:{}/", fw.proxy_addr.port()),
    )
    .await;
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(EVENTUALLY, silent.read(&mut buf))
        .await
        .expect("the silent connection was closed within 5 s");
    // Closed (EOF or reset), with nothing sent.
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "closed after {took:?}, before the timeout"
    );
    fw.shutdown().await;
}

// ---------------------------------------------------------------------------
// (b) HTTPS upstreams
// ---------------------------------------------------------------------------

/// An `https://` upstream whose certificate chains to `ca_file` is reached
/// (its handshake saw no server name for an IP address, and the request
/// arrived plain, so `X-Forwarded-Proto: http`); the same upstream behind
/// a `ca_file` of another CA is 502 `upstream_unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_is_verified_against_ca_file() {
    let dir = pem_dir("ca-file");
    let ca = Ca::new("upstream CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let other_ca = Ca::new("another CA").write(&dir, "other-ca.pem");
    let upstream = TlsUpstream::start(&ca.leaf(&["127.0.0.1"])).await;
    let url = format!("https://{}", upstream.addr);

    let good = Config::from_toml_str(&upstream_config(
        &url,
        &format!("ca_file = {}", toml_path(&ca_file)),
    ))
    .unwrap();
    let fw = start(good).await;
    let reply = Client::http1().get(fw.proxy_addr, "/", &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["proto"], "http", "{body}");
    assert!(body["sni"].is_null(), "no SNI for an IP address: {body}");
    assert_eq!(upstream.requests(), 1);
    fw.shutdown().await;

    let wrong = Config::from_toml_str(&upstream_config(
        &url,
        &format!("ca_file = {}", toml_path(&other_ca)),
    ))
    .unwrap();
    let fw = start(wrong).await;
    let reply = Client::http1().get(fw.proxy_addr, "/", &[]).await;
    reply.assert_refused(502, "upstream_unavailable");
    assert_eq!(upstream.requests(), 1, "no request got past the handshake");
    fw.shutdown().await;
}

/// Without `ca_file` the system's roots decide (here the file that
/// `SSL_CERT_FILE` names, through the real binary): roots without the
/// upstream's CA give 502 `upstream_unavailable`; roots with it get
/// through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_without_ca_file_uses_the_system_roots() {
    let dir = pem_dir("system-roots");
    let ca = Ca::new("upstream CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let other_ca = Ca::new("another CA").write(&dir, "other-ca.pem");
    let upstream = TlsUpstream::start(&ca.leaf(&["127.0.0.1"])).await;
    let config = upstream_config(&format!("https://{}", upstream.addr), "");

    let fw = Proc::spawn(
        &config,
        "roots-without",
        &[("SSL_CERT_FILE", path_str(&other_ca))],
    );
    let reply = Client::http1().get(fw.proxy, "/", &[]).await;
    reply.assert_refused(502, "upstream_unavailable");
    assert_eq!(upstream.requests(), 0);
    // The operator is told why, once.
    wait_until(EVENTUALLY, "the TLS failure is logged", || async {
        fw.stderr().contains("TLS to the upstream failed")
    })
    .await;
    drop(fw);

    let fw = Proc::spawn(
        &config,
        "roots-with",
        &[("SSL_CERT_FILE", path_str(&ca_file))],
    );
    let reply = Client::http1().get(fw.proxy, "/", &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(upstream.requests(), 1);
}

/// An upstream whose certificate is valid only for `upstream.test`,
/// reached at 127.0.0.1: 502 without `sni`; with `sni = "upstream.test"`
/// the handshake names it and verification passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_sets_the_name_sent_and_verified() {
    let dir = pem_dir("sni");
    let ca = Ca::new("upstream CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let upstream = TlsUpstream::start(&ca.leaf(&["upstream.test"])).await;
    let url = format!("https://{}", upstream.addr);
    let ca_line = format!("ca_file = {}", toml_path(&ca_file));

    let fw = start(Config::from_toml_str(&upstream_config(&url, &ca_line)).unwrap()).await;
    Client::http1()
        .get(fw.proxy_addr, "/", &[])
        .await
        .assert_refused(502, "upstream_unavailable");
    fw.shutdown().await;
    assert_eq!(upstream.requests(), 0);

    let with_sni = format!("{ca_line}\nsni = \"upstream.test\"");
    let fw = start(Config::from_toml_str(&upstream_config(&url, &with_sni)).unwrap()).await;
    let reply = Client::http1().get(fw.proxy_addr, "/", &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["sni"], "upstream.test");
    fw.shutdown().await;
}

/// An upstream that accepts TCP and never answers the handshake is
/// unavailable after `connect_timeout` (502), not a 504 after the much
/// longer `response_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tls_upstream_is_502_after_connect_timeout() {
    let dir = pem_dir("silent-upstream");
    let ca_file = Ca::new("upstream CA").write(&dir, "ca.pem");
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            keep.lock().unwrap().push(s);
        }
    });
    let config = upstream_config(
        &format!("https://{addr}"),
        &format!("ca_file = {}", toml_path(&ca_file)),
    );
    let fw = start(Config::from_toml_str(&config).unwrap()).await;
    let started = Instant::now();
    let reply = Client::http1().get(fw.proxy_addr, "/", &[]).await;
    let took = started.elapsed();
    reply.assert_refused(502, "upstream_unavailable");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(!held.lock().unwrap().is_empty(), "floodwall connected");
    fw.shutdown().await;
    task.abort();
}

// ---------------------------------------------------------------------------
// (c) Config errors
// ---------------------------------------------------------------------------

/// The error for `text`, which must be refused naming `key`, with every
/// one of `mentions` in its message.
#[track_caller]
fn refused(text: &str, key: &str, mentions: &[&str]) {
    let err = Config::from_toml_str(text).expect_err("refused");
    assert_eq!(err.key(), Some(key), "{err}");
    let message = err.to_string();
    for m in mentions {
        assert!(message.contains(m), "{message:?} should mention {m:?}");
    }
}

fn server_tls_config(cert: &Path, key: &Path) -> String {
    format!(
        "[server]\ntls = {{ cert = {}, key = {} }}\n\
         [[upstreams]]\nname = \"api\"\nurl = \"http://127.0.0.1:3000\"\n\
         [[routes]]\nname = \"all\"\nupstream = \"api\"\n",
        toml_path(cert),
        toml_path(key)
    )
}

/// Every bad `server.tls` file is refused naming `server.tls.cert` or
/// `server.tls.key` and the file, never a panic; a good pair is accepted,
/// also as one file holding both.
#[test]
fn bad_server_tls_files_are_refused_naming_the_key() {
    let dir = pem_dir("config");
    let ca = Ca::new("floodwall test CA");
    let good = ca.leaf(&["127.0.0.1"]).write(&dir);
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let missing = dir.join("missing.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "hello, I am not a certificate\n").unwrap();
    let broken_pem = dir.join("broken.pem");
    std::fs::write(
        &broken_pem,
        "-----BEGIN CERTIFICATE-----\nMIIB!!!!not base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let bad_der = dir.join("bad-der.pem");
    std::fs::write(
        &bad_der,
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let both = dir.join("both.pem");
    let text =
        std::fs::read_to_string(&good.cert).unwrap() + &std::fs::read_to_string(&good.key).unwrap();
    std::fs::write(&both, text).unwrap();

    let cert = |p: &Path| server_tls_config(p, &good.key);
    let key = |p: &Path| server_tls_config(&good.cert, p);
    let name = |p: &Path| p.display().to_string();
    refused(
        &cert(&missing),
        "server.tls.cert",
        &["cannot read", &name(&missing)],
    );
    refused(
        &cert(&dir),
        "server.tls.cert",
        &["cannot read", &name(&dir)],
    );
    refused(
        &cert(&garbage),
        "server.tls.cert",
        &["no PEM certificate", &name(&garbage)],
    );
    refused(
        &cert(&broken_pem),
        "server.tls.cert",
        &["not valid PEM", &name(&broken_pem)],
    );
    refused(
        &cert(&bad_der),
        "server.tls.cert",
        &["cannot be parsed", &name(&bad_der)],
    );
    refused(&cert(&good.key), "server.tls.cert", &["no PEM certificate"]);
    refused(
        &key(&missing),
        "server.tls.key",
        &["cannot read", &name(&missing)],
    );
    refused(
        &key(&garbage),
        "server.tls.key",
        &["no PEM private key", &name(&garbage)],
    );
    refused(&key(&good.cert), "server.tls.key", &["no PEM private key"]);
    refused(
        &key(&other_key),
        "server.tls.key",
        &["does not belong", &name(&other_key)],
    );
    // An unknown key in the table is a parse error with its line.
    let err = Config::from_toml_str(&cert(&good.cert).replace(" }", ", ciphers = \"x\" }"))
        .expect_err("unknown key");
    assert!(err.to_string().contains("ciphers"), "{err}");

    Config::from_toml_str(&cert(&good.cert)).expect("a good pair is accepted");
    Config::from_toml_str(&server_tls_config(&both, &both)).expect("one file with both");
}

/// `floodwall check` refuses a key that does not match the certificate,
/// naming `server.tls.key`, and accepts the right one.
#[test]
fn floodwall_check_names_the_tls_key() {
    let dir = pem_dir("check");
    let good = Ca::new("floodwall test CA")
        .leaf(&["127.0.0.1"])
        .write(&dir);
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let run = |text: String, tag: &str| {
        let path = temp_file(tag, &text);
        Command::new(binary_path())
            .args(["check", path_str(&path)])
            .output()
            .unwrap()
    };
    let out = run(server_tls_config(&good.cert, &other_key), "check-bad");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("server.tls.key"), "{stderr}");
    assert!(stderr.contains("does not belong"), "{stderr}");
    let out = run(server_tls_config(&good.cert, &good.key), "check-good");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ca_file` and `sni` are checked: only on `https://`, a CA file must
/// hold a CA certificate, a name must be a DNS name.
#[test]
fn bad_upstream_tls_keys_are_refused_naming_the_key() {
    let dir = pem_dir("upstream-config");
    let ca_file = Ca::new("upstream CA").write(&dir, "ca.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let missing = dir.join("missing.pem");
    let https = "https://127.0.0.1:8443";
    let ca = |p: &Path| format!("ca_file = {}", toml_path(p));

    refused(
        &upstream_config("http://127.0.0.1:3000", &ca(&ca_file)),
        "upstreams[0].ca_file",
        &["only applies to an https:// upstream"],
    );
    refused(
        &upstream_config("http://127.0.0.1:3000", "sni = \"a.test\""),
        "upstreams[0].sni",
        &["only applies to an https:// upstream"],
    );
    refused(
        &upstream_config(https, &ca(&missing)),
        "upstreams[0].ca_file",
        &["cannot read", &missing.display().to_string()],
    );
    refused(
        &upstream_config(https, &ca(&garbage)),
        "upstreams[0].ca_file",
        &["no PEM certificate"],
    );
    for bad in ["", "not a name!", "127.0.0.1", "a..b"] {
        refused(
            &upstream_config(https, &format!("sni = {bad:?}")),
            "upstreams[0].sni",
            &["must be a DNS name"],
        );
    }
    Config::from_toml_str(&upstream_config(https, "")).expect("https without ca_file");
    let c = Config::from_toml_str(&upstream_config(
        "https://api.internal",
        &format!("{}\nsni = \"api.test\"", ca(&ca_file)),
    ))
    .expect("https with ca_file and sni");
    assert_eq!(c.upstreams[0].port(), 443, "https defaults to port 443");
}

// ---------------------------------------------------------------------------
// (d) SIGHUP reloads the certificate
// ---------------------------------------------------------------------------

/// The real binary: after the certificate files are replaced and SIGHUP
/// sent, new connections get the new certificate (trusted by the new CA,
/// not the old). Files that no longer load are refused on the next SIGHUP:
/// the current certificate stays, the error is logged naming the key, and
/// the process keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_keeps_it_if_the_new_one_is_bad() {
    let dir = pem_dir("reload");
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let old_ca_file = old_ca.write(&dir, "old-ca.pem");
    let new_ca_file = new_ca.write(&dir, "new-ca.pem");
    let files = old_ca.leaf(&["127.0.0.1"]).write(&dir);
    let upstream = Upstream::start(Duration::ZERO).await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         tls = {{ cert = {}, key = {} }}\n\
         [[upstreams]]\nname = \"api\"\nurl = \"{}\"\n\
         [[routes]]\nname = \"all\"\nupstream = \"api\"\n",
        toml_path(&files.cert),
        toml_path(&files.key),
        upstream.uri()
    );
    let mut fw = Proc::spawn(&config, "reload", &[]);
    let url = format!("https://127.0.0.1:{}/", fw.proxy.port());
    let trusting = |ca: &Path| vec!["--cacert".to_owned(), path_str(ca).to_owned()];
    let get = |args: Vec<String>| {
        let url = url.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(&args, &url).await
        }
    };
    assert_eq!(get(trusting(&old_ca_file)).await.status, 200);
    assert_eq!(get(trusting(&new_ca_file)).await.exit, CURL_BAD_PEER_CERT);

    // Renewal: new files, then SIGHUP.
    new_ca.leaf(&["127.0.0.1"]).write(&dir);
    fw.signal("HUP");
    wait_until(EVENTUALLY, "the new certificate is served", || {
        let r = get(trusting(&new_ca_file));
        async move { r.await.status == 200 }
    })
    .await;
    let r = get(trusting(&old_ca_file)).await;
    assert_eq!(r.exit, CURL_BAD_PEER_CERT, "{r:?}");
    assert!(
        fw.stderr().contains("TLS certificate reloaded"),
        "{}",
        fw.stderr()
    );

    // A botched renewal: garbage in the certificate file.
    std::fs::write(&files.cert, "not a certificate").unwrap();
    fw.signal("HUP");
    wait_until(EVENTUALLY, "the failed reload is logged", || async {
        fw.stderr().contains("TLS certificate reload failed")
    })
    .await;
    let log = fw.stderr();
    assert!(log.contains("server.tls.cert"), "{log}");
    assert!(log.contains("keeping the current certificate"), "{log}");
    let r = get(trusting(&new_ca_file)).await;
    assert_eq!(
        (r.exit, r.status),
        (0, 200),
        "the last good pair stays: {r:?}"
    );
    assert!(fw.running(), "still running; stderr:\n{}", fw.stderr());
}

/// SIGHUP to a floodwall without TLS has nothing to reload: it keeps
/// serving (the default action of SIGHUP would have ended it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_tls_keeps_serving() {
    let upstream = Upstream::start(Duration::ZERO).await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [[upstreams]]\nname = \"api\"\nurl = \"{}\"\n\
         [[routes]]\nname = \"all\"\nupstream = \"api\"\n",
        upstream.uri()
    );
    let mut fw = Proc::spawn(&config, "hup-plain", &[]);
    fw.signal("HUP");
    wait_until(EVENTUALLY, "SIGHUP is logged", || async {
        fw.stderr().contains("SIGHUP received")
    })
    .await;
    assert!(fw.running(), "stderr:\n{}", fw.stderr());
    let reply = Client::http1().get(fw.proxy, "/", &[]).await;
    assert_eq!(reply.status, 200);
}
