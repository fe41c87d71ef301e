//! Reading PEM files: a certificate chain with its private key (the
//! listener's), and a CA bundle (an upstream's `ca_file`).
//!
//! A leaf: it knows files and rustls, not config sections, so config
//! validation (`config/tls.rs`, `config/upstream.rs`) and the listener's
//! reload call the same code and refuse the same files for the same reasons.
//! Every error says which file is wrong and why, and nothing here panics on
//! what a file holds.

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{Error as TlsError, InconsistentKeys, RootCertStore};
use std::path::Path;

/// Which of the two files of a certificate pair is wrong, and what is wrong
/// with it; the caller turns it into an error naming its own key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PairError {
    /// The certificate chain file.
    Cert(String),
    /// The private key file, or the key does not belong to the certificate.
    Key(String),
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Every certificate in the PEM file at `path`, in file order; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (a \"-----BEGIN CERTIFICATE-----\" block)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in the PEM file at `path`.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{} holds no PEM private key (a \"-----BEGIN PRIVATE KEY-----\", \
             \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)",
            path.display()
        ),
        e => format!("{} is not valid PEM: {e}", path.display()),
    })
}

/// Loads the certificate chain at `cert` (leaf first) and the private key
/// at `key` (they may be the same file), and checks that the key is the
/// leaf certificate's: the pair a TLS listener serves.
pub(crate) fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, PairError> {
    let chain = certificates(cert).map_err(PairError::Cert)?;
    let der = private_key(key).map_err(PairError::Key)?;
    let signing = super::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| {
            PairError::Key(format!(
                "{} holds a key rustls cannot use (RSA, ECDSA P-256/P-384 and Ed25519 \
                 work): {e}",
                key.display()
            ))
        })?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        // A key type that cannot say its public key: the handshake is the
        // check.
        Ok(()) | Err(TlsError::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(pair),
        Err(TlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(PairError::Key(format!(
                "the private key in {} does not belong to the first certificate in {}",
                key.display(),
                cert.display()
            )))
        }
        Err(e) => Err(PairError::Cert(format!(
            "the first certificate in {} cannot be parsed: {e}",
            cert.display()
        ))),
    }
}

/// The CA certificates in the PEM file at `path`, as the trust roots of an
/// upstream's certificate. Fails if the file holds none, or one that is not
/// a usable trust anchor.
pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            format!(
                "certificate {} in {} is not a usable CA certificate: {e}",
                i + 1,
                path.display()
            )
        })?;
    }
    Ok(roots)
}
