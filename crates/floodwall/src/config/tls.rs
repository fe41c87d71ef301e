//! `server.tls`: TLS on the proxy listener.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::ConfigError;
use crate::tls::certs::{self, PairError};

/// The certificate and key the proxy listener serves TLS with
/// (`server.tls = { cert = "...", key = "..." }`). Without it the listener
/// speaks plain HTTP. The files are re-read on SIGHUP, so a renewed
/// certificate is picked up without a restart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file with the certificate chain, the server's own certificate
    /// first, then the intermediates that lead to a root clients trust.
    pub cert: PathBuf,
    /// A PEM file with the private key of the first certificate in `cert`
    /// (PKCS#8, PKCS#1 or SEC1; RSA, ECDSA P-256/P-384 or Ed25519). May be
    /// the same file as `cert`.
    pub key: PathBuf,
}

impl TlsConfig {
    /// Checks that both files can be read, hold a PEM chain and a PEM
    /// private key, and that the key is the first certificate's, naming
    /// `server.tls.cert` or `server.tls.key`: the checks the listener makes
    /// at start-up and on every reload.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        certs::load_pair(&self.cert, &self.key)
            .map(drop)
            .map_err(|e| match e {
                PairError::Cert(m) => ConfigError::invalid("server.tls.cert", m),
                PairError::Key(m) => ConfigError::invalid("server.tls.key", m),
            })
    }
}
