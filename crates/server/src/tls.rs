//! TLS on the client (Redis protocol) port and the peer port, from the PEM files
//! the configuration names. A bad path or bad PEM is a configuration error naming
//! the field and the file (never quoting the file), so the binary prints one line
//! and exits 2.
//!
//! Client port: `tls_cert` + `tls_key` turn TLS on; `tls_client_ca` additionally
//! requires every client to present a certificate signed by that CA. Peer port:
//! `peer_tls_cert` + `peer_tls_key` + `peer_tls_ca` turn on mutual TLS between
//! members (see `net::tls`); every member's certificate must carry
//! `peer_tls_name` (default `paxosstore`) as a DNS name.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use net::TlsError;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, NodeConfig};
use crate::runtime::Shared;

fn field_err(field: &'static str, e: TlsError) -> ConfigError {
    ConfigError::Field {
        field,
        message: e.to_string(),
    }
}

fn missing(field: &'static str, needs: &str) -> ConfigError {
    ConfigError::Field {
        field,
        message: format!("needs {needs} as well"),
    }
}

/// The client port's TLS acceptor, or `None` when `tls_cert` is not set.
pub fn client_acceptor(cfg: &NodeConfig) -> Result<Option<TlsAcceptor>, ConfigError> {
    let (cert, key) = match (&cfg.tls_cert, &cfg.tls_key) {
        (None, None) => {
            if cfg.tls_client_ca.is_some() {
                return Err(missing("tls_client_ca", "`tls_cert` and `tls_key`"));
            }
            return Ok(None);
        }
        (Some(_), None) => return Err(missing("tls_cert", "`tls_key`")),
        (None, Some(_)) => return Err(missing("tls_key", "`tls_cert`")),
        (Some(c), Some(k)) => (c, k),
    };
    let certs = net::tls::load_certs(cert).map_err(|e| field_err("tls_cert", e))?;
    let key = net::tls::load_key(key).map_err(|e| field_err("tls_key", e))?;
    let roots = match &cfg.tls_client_ca {
        Some(ca) => Some(net::tls::load_roots(ca).map_err(|e| field_err("tls_client_ca", e))?),
        None => None,
    };
    let server = net::tls::server_config(certs, key, roots).map_err(|e| field_err("tls_key", e))?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

/// The peer port's mutual TLS, or `None` when `peer_tls_cert` is not set.
pub fn peer_tls(cfg: &NodeConfig) -> Result<Option<net::PeerTls>, ConfigError> {
    let files: [(&'static str, &Option<std::path::PathBuf>); 3] = [
        ("peer_tls_cert", &cfg.peer_tls_cert),
        ("peer_tls_key", &cfg.peer_tls_key),
        ("peer_tls_ca", &cfg.peer_tls_ca),
    ];
    if files.iter().all(|(_, p)| p.is_none()) {
        return Ok(None);
    }
    if let Some((name, _)) = files.iter().find(|(_, p)| p.is_none()) {
        let others = "`peer_tls_cert`, `peer_tls_key` and `peer_tls_ca`";
        return Err(ConfigError::Field {
            field: name,
            message: format!("peer TLS needs all of {others}"),
        });
    }
    let path = |p: &Option<std::path::PathBuf>| p.clone().unwrap_or_default();
    let load = |f: &'static str, p: &Path| -> Result<_, ConfigError> {
        net::tls::load_certs(p).map_err(|e| field_err(f, e))
    };
    let certs = load("peer_tls_cert", &path(&cfg.peer_tls_cert))?;
    let key =
        net::tls::load_key(&path(&cfg.peer_tls_key)).map_err(|e| field_err("peer_tls_key", e))?;
    let ca =
        net::tls::load_roots(&path(&cfg.peer_tls_ca)).map_err(|e| field_err("peer_tls_ca", e))?;
    let tls = net::PeerTls::new(certs, key, ca, &cfg.peer_tls_name).map_err(|e| match e {
        TlsError::ServerName(_) => field_err("peer_tls_name", e),
        e => field_err("peer_tls_key", e),
    })?;
    Ok(Some(tls))
}

/// A client connection: a TCP socket, or TLS over one. `tcp` gives the socket
/// (addresses, file descriptor) either way.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send {
    fn tcp(&self) -> &TcpStream;
}

impl ClientStream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Check every TLS option (files readable, PEM valid, key matching certificate).
pub fn check(cfg: &NodeConfig) -> Result<(), ConfigError> {
    client_acceptor(cfg)?;
    peer_tls(cfg)?;
    Ok(())
}

/// Serve one client connection, over TLS when `tls` is set. A failed or slow TLS
/// handshake (a plaintext client on a TLS port, an untrusted client certificate)
/// closes the connection and is counted in `paxosstore_client_tls_failures_total`.
pub async fn serve_client(
    sock: TcpStream,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    shared: Arc<Shared>,
) {
    let _ = sock.set_nodelay(true);
    let Some(acceptor) = tls else {
        crate::client::serve(sock, shared).await;
        return;
    };
    let peer = sock.peer_addr().ok();
    match tokio::time::timeout(handshake_timeout, acceptor.accept(sock)).await {
        Ok(Ok(stream)) => crate::client::serve(stream, shared).await,
        Ok(Err(e)) => {
            metrics::counter!("paxosstore_client_tls_failures_total").increment(1);
            tracing::debug!(peer = ?peer, error = %e, "client TLS handshake failed");
        }
        Err(_) => {
            metrics::counter!("paxosstore_client_tls_failures_total").increment(1);
            tracing::debug!(peer = ?peer, "client TLS handshake timed out");
        }
    }
}
