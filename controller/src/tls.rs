//! Optional TLS for the API, through rustls (no OpenSSL). [`crate::server`] runs each
//! handshake in the connection's own task with a time limit, so a slow or silent client
//! cannot hold up other connections.
//!
//! TLS protects the transport; it is not what keeps preshared keys secret (they are sealed
//! to each node) nor what authenticates nodes (their requests are signed).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the certificate or key.
    #[error("TLS configuration")]
    Config(#[from] tokio_rustls::rustls::Error),
}

fn pem_err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Builds an acceptor from the certificate chain and key files.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| pem_err(&files.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(&files.cert, e))?;
    if certs.is_empty() {
        return Err(pem_err(&files.cert, "no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_err(&files.key, e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
