//! Optional TLS (rustls with the `ring` provider) for the peer port, and the PEM
//! loading and server-config building shared with the client port.
//!
//! On the peer port TLS is mutual: every member presents its certificate (signed by
//! the cluster CA), the acceptor requires a client certificate signed by that CA,
//! and the dialer verifies the acceptor's certificate against the CA and a fixed
//! server name (`paxosstore` by default) that every node certificate carries as a
//! DNS subject alternative name. The PaxosStore handshake (cluster id, member id,
//! optional HMAC) then runs inside the TLS stream, so member identity is still
//! checked as without TLS.
//!
//! Errors name the file they come from and never quote its contents.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The server name peers verify when none is configured.
pub const DEFAULT_SERVER_NAME: &str = "paxosstore";

/// Why TLS material could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed; the message never quotes its contents.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// The material loaded but rustls refused the combination.
    #[error("{0}")]
    Config(String),
    /// The server name to verify is not a valid DNS name or IP address.
    #[error("invalid TLS server name `{0}`")]
    ServerName(String),
}

fn file_err(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn pem_err(path: &Path, e: rustls_pki_types::pem::Error, what: &str) -> TlsError {
    use rustls_pki_types::pem::Error as E;
    let message = match e {
        E::Io(e) => format!("cannot read: {e}"),
        E::NoItemsFound => format!("no PEM {what} found"),
        E::MissingSectionEnd { .. } => "bad PEM: a section has no END line".into(),
        E::IllegalSectionStart { .. } => "bad PEM: malformed BEGIN line".into(),
        E::Base64Decode(_) => "bad PEM: invalid base64".into(),
        _ => "bad PEM".into(),
    };
    file_err(path, message)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))
}

/// The crypto provider every TLS config here uses (`ring`; no aws-lc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, e, "certificate"))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file, checked to be
/// usable by the crypto provider.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| pem_err(path, e, "private key"))?;
    provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|_| file_err(path, "unsupported or malformed private key"))?;
    Ok(key)
}

/// A root store holding every certificate of a PEM CA file.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots
            .add(c)
            .map_err(|e| file_err(path, format!("unusable CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn rustls_err(e: rustls::Error) -> TlsError {
    TlsError::Config(format!("TLS configuration refused: {e}"))
}

/// A server config presenting `certs`/`key`; with `client_roots`, clients must
/// present a certificate signed by one of them.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<RootCertStore>,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?;
    let builder = match client_roots {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Config(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(certs, key).map_err(rustls_err)
}

/// Mutual TLS for the peer port: the acceptor and connector of one member.
#[derive(Clone)]
pub struct PeerTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) connector: tokio_rustls::TlsConnector,
    pub(crate) server_name: ServerName<'static>,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never show key material.
        f.debug_struct("PeerTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// From DER material: this member's chain and key, the cluster CA, and the
    /// server name every member's certificate carries.
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        ca: RootCertStore,
        server_name: &str,
    ) -> Result<Self, TlsError> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| TlsError::ServerName(server_name.to_string()))?;
        let ca = Arc::new(ca);
        let server = server_config(certs.clone(), key.clone_key(), Some((*ca).clone()))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rustls_err)?
            .with_root_certificates(ca)
            .with_client_auth_cert(certs, key)
            .map_err(rustls_err)?;
        Ok(PeerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            server_name: name,
        })
    }

    /// From PEM files: certificate chain, private key, CA certificate(s).
    pub fn from_files(
        cert: &Path,
        key: &Path,
        ca: &Path,
        server_name: &str,
    ) -> Result<Self, TlsError> {
        Self::new(
            load_certs(cert)?,
            load_key(key)?,
            load_roots(ca)?,
            server_name,
        )
    }
}
