//! The HTTPS listeners' certificate: read from `proxy.tls_cert` and `proxy.tls_key` at start
//! and again on SIGHUP. A new pair that does not load (unreadable, no certificate, a key that
//! does not match) is refused with the reason in the log, and the old pair stays in use.
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate and key were not loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the certificate chain {}: {source}", path.display())]
    Cert {
        path: PathBuf,
        #[source]
        source: tokio_rustls::rustls::pki_types::pem::Error,
    },
    #[error("{} holds no PEM certificate", path.display())]
    NoCert { path: PathBuf },
    #[error("reading the private key {}: {source}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: tokio_rustls::rustls::pki_types::pem::Error,
    },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[source] tokio_rustls::rustls::Error),
}

/// The acceptor in use, swapped whole on a successful reload.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<TlsAcceptor>,
}

impl Tls {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(acceptor(cert, key)?),
        })
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again; on failure the old pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let new = acceptor(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = new;
        Ok(())
    }
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|source| TlsError::Cert {
            path: cert.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: cert.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
