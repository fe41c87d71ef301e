//! TLS to upstreams: the connector of an upstream's pooled client.
//!
//! Every upstream's client has the same connector type: plain `http://`
//! upstreams pass straight through hyper-rustls to the TCP connector, and
//! `https://` ones get a handshake after the TCP connect, verified against
//! the system's roots or the upstream's `ca_file`, for the URL's host or
//! the upstream's `sni` name. A failed verification or handshake is a
//! connect error like a refused connection, so the proxy answers it as it
//! answers any unreachable upstream (502 `upstream_unavailable`).

use super::certs;
use crate::config::UpstreamConfig;
use hyper_rustls::{
    DefaultServerNameResolver, FixedServerNameResolver, HttpsConnector, MaybeHttpsStream,
    ResolveServerName,
};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Connecting =
    Pin<Box<dyn Future<Output = Result<MaybeHttpsStream<TokioIo<TcpStream>>, BoxError>> + Send>>;

/// How often, at most, a failing upstream handshake is logged at warn
/// level: a wrong certificate fails every new connection, and one line per
/// request would bury everything else.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// An upstream's connector: TCP (with the upstream's connect timeout,
/// `TCP_NODELAY` and keep-alive), then TLS for an `https://` upstream, the
/// two together bounded by the connect timeout so an upstream that accepts
/// and never answers the handshake is unavailable, not slow.
#[derive(Clone)]
pub struct UpstreamConnector {
    inner: HttpsConnector<HttpConnector>,
    /// `Some` for an `https://` upstream: the bound on connect + handshake.
    tls_within: Option<Duration>,
    log: Arc<FailureLog>,
}

impl std::fmt::Debug for UpstreamConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConnector")
            .field("upstream", &self.log.upstream)
            .field("tls", &self.tls_within.is_some())
            .finish()
    }
}

/// Rate-limited warnings about one upstream's failed handshakes.
#[derive(Debug)]
struct FailureLog {
    upstream: String,
    since: Instant,
    /// Milliseconds after `since` of the last warning, plus one (0: never).
    last: AtomicU64,
}

impl FailureLog {
    fn failed(&self, error: &dyn std::fmt::Display) {
        let now = self.since.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(upstream = %self.upstream, %error, "TLS to the upstream failed; its requests get 502 upstream_unavailable (logged at most every 10 s)");
        } else {
            tracing::debug!(upstream = %self.upstream, %error, "TLS to the upstream failed");
        }
    }
}

/// The system's trust roots, read once per process (`rustls-native-certs`:
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` if set, else the distribution's
/// bundle, e.g. `/etc/ssl/certs` from `ca-certificates`).
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(format!(
                    "no system root certificates found{}; install the ca-certificates \
                     package or set ca_file",
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", why.join("; "))
                    }
                ));
            }
            tracing::debug!(roots = added, "system root certificates loaded");
            Ok(Arc::new(roots))
        })
        .clone()
}

impl UpstreamConnector {
    /// The connector for `cfg` (validated), or why it cannot be built: a
    /// `ca_file` that no longer loads, or no system roots at all.
    pub fn new(cfg: &UpstreamConfig) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        // Let `https://` URIs through to the TLS layer.
        http.enforce_http(false);
        let https = cfg.is_https();
        let name = &cfg.name;
        let roots = match (&cfg.ca_file, https) {
            (_, false) => Arc::new(RootCertStore::empty()),
            (Some(path), true) => Arc::new(
                certs::load_roots(path)
                    .map_err(|m| anyhow::anyhow!("upstream {name:?} ca_file: {m}"))?,
            ),
            (None, true) => {
                system_roots().map_err(|m| anyhow::anyhow!("upstream {name:?}: {m}"))?
            }
        };
        let mut tls = ClientConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // floodwall speaks HTTP/1.1 to upstreams.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        // `sni`, or a `dns` upstream's name: its endpoints are addresses.
        let server_name: Arc<dyn ResolveServerName + Send + Sync> = match &cfg.tls_name() {
            Some(sni) => Arc::new(FixedServerNameResolver::new(
                ServerName::try_from(sni.clone())
                    .map_err(|e| anyhow::anyhow!("upstream {name:?} sni {sni:?}: {e}"))?,
            )),
            None => Arc::new(DefaultServerNameResolver::default()),
        };
        Ok(Self {
            inner: HttpsConnector::new(http, tls, false, server_name),
            tls_within: https.then_some(cfg.connect_timeout),
            log: Arc::new(FailureLog {
                upstream: cfg.name.clone(),
                since: Instant::now(),
                last: AtomicU64::new(0),
            }),
        })
    }
}

impl tower_service::Service<http::Uri> for UpstreamConnector {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let Some(within) = self.tls_within else {
            return connecting;
        };
        let log = self.log.clone();
        Box::pin(async move {
            match tokio::time::timeout(within, connecting).await {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(e)) => {
                    // hyper-rustls returns the TCP connector's own error for
                    // the connect, and an io::Error for the handshake.
                    if e.downcast_ref::<io::Error>().is_some() {
                        log.failed(&e);
                    }
                    Err(e)
                }
                Err(_) => {
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("TCP connect and TLS handshake took longer than connect_timeout ({within:?})"),
                    );
                    log.failed(&e);
                    Err(e.into())
                }
            }
        })
    }
}
