//! TLS for the server (rustls with the ring provider, ADR 0006): loading a PEM
//! certificate chain and key, the key's pin for the phones, and a listener that does
//! the handshakes off the accept loop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish the TLS handshake: as long as the phone's own
/// stall timeout, since a handshake over 2G can take seconds.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Handshakes in progress at once; past this the listener stops accepting until one
/// ends, so a flood of idle connections holds bounded memory.
pub const MAX_HANDSHAKES: usize = 1024;

/// A server certificate and key, ready to serve, with the pin phones are given.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    /// The rustls configuration (HTTP/1.1 over TLS 1.2 or 1.3).
    pub config: Arc<ServerConfig>,
    /// `sha256/<base64>` of the certificate's key ([`doorstep_core::sync::spki_pin`]).
    pub pin: String,
}

/// Reads the PEM certificate chain at `cert` (the server's certificate first) and the
/// PEM private key at `key` (PKCS#8, PKCS#1 or SEC1).
///
/// Errors: a message naming the file that is missing, unreadable, holds no
/// certificate or key, or whose key does not belong to the certificate.
pub fn load(cert: &Path, key: &Path) -> Result<TlsSetup, String> {
    let chain = read_certs(cert)?;
    let pin = doorstep_core::sync::spki_pin(&chain[0])
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
    let key_bytes = std::fs::read(key)
        .map_err(|e| format!("cannot read the TLS key {}: {e}", key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        format!(
            "TLS key {}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it: {e}",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "TLS key {} cannot serve the certificate {}: {e}",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsSetup {
        config: Arc::new(config),
        pin,
    })
}

/// The certificates of a PEM file, in order; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the TLS certificate {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS certificate {}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "TLS certificate {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// The pin of the first certificate in the PEM file at `cert`: what `tls-pin` prints.
///
/// Errors: a message naming the file.
pub fn pin_of_file(cert: &Path) -> Result<String, String> {
    let chain = read_certs(cert)?;
    doorstep_core::sync::spki_pin(&chain[0])
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))
}

/// A TCP listener that hands out connections once their TLS handshake is done. The
/// handshakes run as tasks of their own, each bounded by [`HANDSHAKE_TIMEOUT`], so a
/// slow or silent client holds up no one else; one that fails is logged and dropped.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<(std::io::Result<TlsStream<TcpStream>>, SocketAddr)>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("tcp", &self.tcp)
            .field("handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// TLS with `config` over the bound `tcp`.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    // Cancel-safe: `TcpListener::accept` and `JoinSet::join_next` are, and the
    // handshakes in progress stay in `self`.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_HANDSHAKES => {
                    match accepted {
                        Ok((stream, addr)) => {
                            let acceptor = self.acceptor.clone();
                            self.handshakes.spawn(async move {
                                let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                    .await
                                    .unwrap_or_else(|_| Err(std::io::Error::new(
                                        std::io::ErrorKind::TimedOut,
                                        "TLS handshake timed out",
                                    )));
                                (done, addr)
                            });
                        }
                        // As axum's own listener: out of file descriptors and the like
                        // pass; wait a moment rather than spin.
                        Err(e) => {
                            tracing::error!("accept error: {e}");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    match done {
                        Ok((Ok(stream), addr)) => return (stream, addr),
                        Ok((Err(e), addr)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                        Err(e) => tracing::error!("TLS handshake task failed: {e}"),
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
