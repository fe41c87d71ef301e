//! TLS both ways, with rustls and its `ring` crypto provider (no OpenSSL,
//! and no cmake: `aws-lc-rs` would need both to build).
//!
//! - [`listener`]: TLS on the proxy listener (`server.tls`): ALPN `h2` and
//!   `http/1.1`, the handshake bounded by `server.header_read_timeout`, and
//!   the certificate pair re-read on SIGHUP (the old pair is kept if the new
//!   files do not load).
//! - [`upstream`]: `https://` upstreams, verified against the system's
//!   roots (read once with `rustls-native-certs`) or an upstream's
//!   `ca_file`, with an optional `sni` name; TCP connect and handshake
//!   together bounded by the upstream's `connect_timeout`.
//! - `certs`: reading PEM files, shared with config validation so
//!   `floodwall check` refuses exactly what start-up and reload would.
//!
//! A request that arrived over TLS carries [`ArrivedOverTls`] in its
//! extensions, so `proxy/forward.rs` can say `X-Forwarded-Proto: https`.

pub(crate) mod certs;
pub(crate) mod listener;
pub mod upstream;

pub(crate) use listener::TlsListener;
pub use upstream::UpstreamConnector;

use rustls::crypto::CryptoProvider;
use std::sync::{Arc, OnceLock};

/// The marker, in a request's extensions, of a request that arrived on a
/// TLS connection. Set by the accept loop, read by the forwarder: the
/// upstream is told the scheme the client used, not the one floodwall used
/// to reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrivedOverTls;

/// The one crypto provider of both directions, built once. Passed
/// explicitly to every rustls config, so nothing depends on a process-wide
/// default being installed.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
