//! TLS on the proxy listener: the rustls server config, the certificate
//! pair behind a lock so a reload can swap it under live traffic, and the
//! bounded handshake.

use super::certs::{self, PairError};
use crate::config::TlsConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The ALPN protocols offered, preferred first (RFC 7301). hyper's auto
/// builder then tells HTTP/2 from HTTP/1.1 by the connection preface, so a
/// client that negotiates neither still gets served.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The pair every new handshake is served: swapped whole by
/// [`TlsListener::reload`], so a handshake sees the old pair or the new one,
/// never half of each. Connections already up keep the pair they began with.
#[derive(Debug)]
struct CurrentPair(RwLock<Arc<CertifiedKey>>);

impl CurrentPair {
    fn get(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, pair: CertifiedKey) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pair);
    }
}

impl ResolvesServerCert for CurrentPair {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// The proxy listener's TLS: what accepts a handshake, and the files it
/// was loaded from, to re-read on SIGHUP.
pub(crate) struct TlsListener {
    acceptor: TlsAcceptor,
    pair: Arc<CurrentPair>,
    files: TlsConfig,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("files", &self.files)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

/// `server.tls.cert` or `server.tls.key`, and what is wrong with it.
fn named(e: PairError) -> String {
    match e {
        PairError::Cert(m) => format!("server.tls.cert: {m}"),
        PairError::Key(m) => format!("server.tls.key: {m}"),
    }
}

impl TlsListener {
    /// Loads `files` and builds the server config: TLS 1.2 and 1.3 (rustls'
    /// safe defaults), no client certificates, ALPN `h2` then `http/1.1`.
    /// A handshake that takes longer than `handshake_timeout` is dropped.
    pub(crate) fn new(files: &TlsConfig, handshake_timeout: Duration) -> anyhow::Result<Self> {
        let pair =
            certs::load_pair(&files.cert, &files.key).map_err(|e| anyhow::anyhow!(named(e)))?;
        let pair = Arc::new(CurrentPair(RwLock::new(Arc::new(pair))));
        let mut config = rustls::ServerConfig::builder_with_provider(super::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(pair.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            pair,
            files: files.clone(),
            handshake_timeout,
        })
    }

    /// Re-reads the certificate and key files. On success new handshakes
    /// get the new pair; on failure the current pair stays and the error
    /// (naming the key and the file) is logged and returned, so a botched
    /// renewal never takes the listener down.
    pub(crate) fn reload(&self) -> Result<(), String> {
        match certs::load_pair(&self.files.cert, &self.files.key) {
            Ok(pair) => {
                self.pair.set(pair);
                tracing::info!(
                    cert = %self.files.cert.display(),
                    key = %self.files.key.display(),
                    "TLS certificate reloaded"
                );
                Ok(())
            }
            Err(e) => {
                let message = named(e);
                tracing::error!(error = %message, "TLS certificate reload failed; keeping the current certificate");
                Err(message)
            }
        }
    }

    /// The TLS handshake on an accepted connection, or `None` if it failed
    /// or took longer than the handshake timeout (a client that connects
    /// and says nothing holds its socket that long, no longer).
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<TlsStream<TcpStream>> {
        match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, timeout = ?self.handshake_timeout, "TLS handshake timed out");
                None
            }
        }
    }
}
