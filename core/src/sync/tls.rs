//! TLS for the phone's client: the server's key pin (RFC 7469 `sha256/<base64>`), the
//! rustls verifier that accepts exactly the pinned key, and the ureq connector that
//! uses it. ADR 0006 says why a pin and not a certificate authority.
//!
//! ureq 3 takes no custom rustls `ClientConfig` or verifier in its `TlsConfig`, so a
//! pinned client gets its own connector in ureq's connector chain (its `unversioned`
//! transport API: a ureq upgrade that changes it fails to compile, never silently).

use std::io::{Read, Write};
use std::sync::Arc;

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct};
use rustls::{OtherError, SignatureScheme, StreamOwned};
use sha2::{Digest, Sha256};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

use crate::error::{Error, Result};

/// The prefix of a pin: the hash algorithm, as OkHttp's `CertificatePinner` writes it
/// (curl's `--pinnedpubkey` takes `sha256//` and the same base64; HPKP's header
/// `pin-sha256="..."`, RFC 7469 section 2.1.1).
pub const PIN_PREFIX: &str = "sha256/";

/// The pin of a certificate: `sha256/` and the standard base64 (with padding) of the
/// SHA-256 of its SubjectPublicKeyInfo in DER, as RFC 7469 section 2.4 computes it.
/// The phone and `doorstep-server tls-pin` both use this one function.
///
/// Errors: [`Error::Invalid`] when `cert_der` is not an X.509 certificate.
pub fn spki_pin(cert_der: &[u8]) -> Result<String> {
    let hash = spki_sha256(&CertificateDer::from(cert_der)).map_err(|e| Error::Invalid {
        field: "certificate",
        reason: format!("not an X.509 certificate in DER: {e}"),
    })?;
    Ok(format_pin(&hash))
}

/// `sha256/<base64>` of a SHA-256.
fn format_pin(hash: &[u8; 32]) -> String {
    format!(
        "{PIN_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// Reads a pin in the form [`spki_pin`] gives (surrounding spaces ignored) into its
/// 32-byte hash.
///
/// Errors: [`Error::Invalid`] (field `pin`) saying what is wrong with it.
pub fn parse_pin(pin: &str) -> Result<[u8; 32]> {
    let invalid = |reason: String| Error::Invalid {
        field: "pin",
        reason,
    };
    let pin = pin.trim();
    let b64 = pin.strip_prefix(PIN_PREFIX).ok_or_else(|| {
        invalid(format!(
            "a pin is \"{PIN_PREFIX}\" and the base64 of a SHA-256, as `doorstep-server tls-pin` prints it"
        ))
    })?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| {
            invalid(format!(
                "the part after \"{PIN_PREFIX}\" is not base64: {e}"
            ))
        })?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        invalid(format!(
            "the part after \"{PIN_PREFIX}\" holds {} bytes; a SHA-256 holds 32",
            b.len()
        ))
    })
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo (DER, with its outer SEQUENCE).
fn spki_sha256(cert: &CertificateDer<'_>) -> std::result::Result<[u8; 32], rustls::Error> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert)?;
    Ok(Sha256::digest(parsed.subject_public_key_info().as_ref()).into())
}

/// The server presented a key other than the pinned one. Carried through rustls and
/// ureq as the handshake's error, and turned into [`Error::PinMismatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PinMismatch {
    pub pinned: String,
    pub presented: String,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server's key {} does not match the pinned key {}",
            self.presented, self.pinned
        )
    }
}

impl std::error::Error for PinMismatch {}

/// Accepts the server exactly when its end-entity certificate's key hashes to the pin,
/// whoever signed the certificate (a town's self-signed one, or a public CA's), and
/// whatever name and dates it carries: the key is the server's identity, and a phone's
/// clock in the field is often wrong. The handshake's signature is still checked
/// against that same certificate's key with the provider's algorithms, so only the
/// holder of the pinned private key gets through.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let presented = spki_sha256(end_entity)?;
        if presented == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch {
                    pinned: format_pin(&self.pin),
                    presented: format_pin(&presented),
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The rustls client configuration of a pinned client: the ring provider, TLS 1.2 and
/// 1.3, and the [`PinVerifier`].
fn pinned_config(pin: [u8; 32]) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Network(format!("TLS setup: {e}")))?
        .dangerous() // a verifier of our own: it checks the key and the signatures
        .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, algorithms }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A ureq agent that connects (directly, or through a CONNECT proxy as ureq's own
/// agent does) and speaks TLS with the [`PinVerifier`].
pub(crate) fn pinned_agent(config: ureq::config::Config, pin: [u8; 32]) -> Result<ureq::Agent> {
    use ureq::unversioned::resolver::DefaultResolver;
    use ureq::unversioned::transport::{ConnectProxyConnector, TcpConnector};
    let connector =
        ().chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(PinnedTlsConnector {
                config: pinned_config(pin)?,
            });
    Ok(ureq::Agent::with_parts(
        config,
        connector,
        DefaultResolver::default(),
    ))
}

/// Wraps the connection in TLS with a fixed rustls configuration (ureq's own
/// `RustlsConnector` builds its configuration from `TlsConfig`, which has no verifier).
#[derive(Debug)]
struct PinnedTlsConnector {
    config: Arc<ClientConfig>,
}

impl<In: Transport> Connector<In> for PinnedTlsConnector {
    type Out = Either<In, PinnedTlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> std::result::Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .authority()
            .map(|a| a.host())
            .ok_or(ureq::Error::Tls("no host to connect to"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ureq::Error::Tls("the server's host is not a DNS name or address"))?;
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        let boxed: Box<dyn Transport> = Box::new(transport);
        let mut sock = TransportAdapter::new(boxed, details.current_time.clone());
        sock.set_timeout(details.timeout);
        if let Err(e) = conn.complete_io(&mut sock) {
            return Err(match pin_mismatch_in_io(&e) {
                Some(m) => ureq::Error::Other(Box::new(m.clone())),
                None => e.into(),
            });
        }
        Ok(Some(Either::B(PinnedTlsTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: StreamOwned { conn, sock },
        })))
    }
}

/// The [`PinMismatch`] inside an I/O error that rustls made of a failed handshake.
fn pin_mismatch_in_io(e: &std::io::Error) -> Option<&PinMismatch> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<PinMismatch>()
        }
        _ => None,
    }
}

/// The rustls error inside a ureq error, if the failure was TLS's.
fn rustls_error(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// The core's error for a failed request: [`Error::PinMismatch`] for a server whose key
/// is not the pinned one, a network error that says so for a certificate no known
/// authority signed, else [`Error::Network`] with ureq's words.
pub(crate) fn network_error(e: ureq::Error) -> Error {
    if let ureq::Error::Other(inner) = &e
        && let Some(m) = inner.downcast_ref::<PinMismatch>()
    {
        return Error::PinMismatch {
            pinned: m.pinned.clone(),
            presented: m.presented.clone(),
        };
    }
    if let Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) =
        rustls_error(&e)
    {
        return Error::Network(format!(
            "the server's certificate is not signed by an authority this phone knows (UnknownIssuer); a server with its own certificate needs its pin: {e}"
        ));
    }
    Error::Network(e.to_string())
}

/// A TLS connection over ureq's transport (as ureq's own rustls transport).
pub(crate) struct PinnedTlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl std::fmt::Debug for PinnedTlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedTlsTransport").finish_non_exhaustive()
    }
}

impl Transport for PinnedTlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(
        &mut self,
        amount: usize,
        timeout: NextTimeout,
    ) -> std::result::Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> std::result::Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// Whether a server certificate is one a pinned client accepts: for the tests.
#[cfg(test)]
fn accepts(pin: [u8; 32], cert: &CertificateDer<'_>) -> bool {
    let provider = rustls::crypto::ring::default_provider();
    PinVerifier {
        pin,
        algorithms: provider.signature_verification_algorithms,
    }
    .verify_server_cert(
        cert,
        &[],
        &ServerName::try_from("localhost").unwrap(),
        &[],
        UnixTime::now(),
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    fn cert() -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert, key)
    }

    #[test]
    fn the_pin_is_the_sha256_of_the_spki_in_standard_base64() {
        let (cert, key) = cert();
        let pin = spki_pin(cert.der()).unwrap();
        // The key pair's own SPKI encoding, hashed apart from the certificate parser.
        let want = base64::engine::general_purpose::STANDARD
            .encode(Sha256::digest(key.subject_public_key_info()));
        assert_eq!(pin, format!("sha256/{want}"));
        assert_eq!(pin.len(), "sha256/".len() + 44);
        assert_eq!(
            parse_pin(&pin).unwrap().to_vec(),
            Sha256::digest(key.subject_public_key_info()).to_vec()
        );
        assert!(matches!(
            spki_pin(b"not a certificate"),
            Err(Error::Invalid {
                field: "certificate",
                ..
            })
        ));
    }

    #[test]
    fn malformed_pins_are_refused_with_the_reason() {
        let good = format!("sha256/{}", "A".repeat(43) + "=");
        assert_eq!(parse_pin(&good).unwrap(), [0; 32]);
        assert_eq!(parse_pin(&format!("  {good}\n")).unwrap(), [0; 32]);
        let reason = |pin: &str| match parse_pin(pin) {
            Err(Error::Invalid {
                field: "pin",
                reason,
            }) => reason,
            other => panic!("{pin:?}: {other:?}"),
        };
        assert!(reason("").contains("sha256/"));
        assert!(reason(&good.replace("sha256/", "sha1/")).contains("sha256/"));
        assert!(reason(&good.replace("sha256/", "SHA256/")).contains("sha256/"));
        assert!(reason(&good.replace("sha256/", "pin-sha256=")).contains("sha256/"));
        assert!(reason("sha256/not*base64!").contains("not base64"));
        // URL-safe base64 is not the standard alphabet.
        assert!(reason(&format!("sha256/{}", "_".repeat(43) + "=")).contains("not base64"));
        assert!(reason("sha256/AAAA").contains("3 bytes"));
        assert!(reason(&format!("sha256/{}", "A".repeat(64))).contains("48 bytes"));
    }

    #[test]
    fn the_verifier_accepts_the_pinned_key_only() {
        let (a, _) = cert();
        let (b, _) = cert();
        let pin_a = parse_pin(&spki_pin(a.der()).unwrap()).unwrap();
        assert!(accepts(pin_a, a.der()));
        assert!(!accepts(pin_a, b.der()));
    }
}
