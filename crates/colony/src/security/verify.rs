//! Checking a peer's certificate during the TLS handshake, and explaining refusals.
//!
//! Owns: the rustls verifiers of both sides and [`Refusal`], the reasons a connection is
//! refused. Promises: a peer is accepted only with a certificate from the cluster CA, valid
//! now, naming at least one identity of this app; a listener also refuses a caller that no
//! hosted service's allow-list admits. All of it runs inside the handshake, so a refused
//! peer never gets an application byte read. Must not touch: sockets.

use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls::{RootCertStore, SignatureScheme};

use super::names::{CallerPolicy, names_in_certificate, uris_in_certificate};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// The peer does not speak TLS: plaintext, or another protocol.
    NotTls,
    /// The peer offered no TLS 1.3 (TLS 1.2 or older), or nothing in common with us.
    OldProtocol,
    /// The peer presented no certificate.
    NoCertificate,
    /// The peer's certificate is not from the cluster CA.
    UnknownIssuer,
    /// The peer's certificate has expired, or is not valid yet.
    Expired,
    /// The peer's certificate names no identity of this app, or not the one expected.
    WrongIdentity,
    /// The peer may call none of the services hosted here (allow-lists).
    NotAllowed,
    /// The peer did not finish the handshake in time.
    Timeout,
    /// Anything else: the peer hung up, or broke the protocol.
    Other,
}

impl Refusal {
    /// Every kind, in a fixed order.
    pub const ALL: [Refusal; 9] = [
        Refusal::NotTls,
        Refusal::OldProtocol,
        Refusal::NoCertificate,
        Refusal::UnknownIssuer,
        Refusal::Expired,
        Refusal::WrongIdentity,
        Refusal::NotAllowed,
        Refusal::Timeout,
        Refusal::Other,
    ];

    /// A short name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotTls => "not_tls",
            Refusal::OldProtocol => "old_protocol",
            Refusal::NoCertificate => "no_certificate",
            Refusal::UnknownIssuer => "unknown_issuer",
            Refusal::Expired => "expired",
            Refusal::WrongIdentity => "wrong_identity",
            Refusal::NotAllowed => "not_allowed",
            Refusal::Timeout => "timeout",
            Refusal::Other => "other",
        }
    }

    pub(crate) fn index(self) -> usize {
        Refusal::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal decided by our own identity checks, carried through rustls as the source of
/// a certificate error.
#[derive(Debug)]
struct IdentityRefusal {
    kind: Refusal,
    reason: String,
}

impl std::fmt::Display for IdentityRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for IdentityRefusal {}

fn refuse(kind: Refusal, reason: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        IdentityRefusal { kind, reason },
    ))))
}

/// What a failed handshake means, for logs and errors: the kind, and a sentence about the
/// peer that says what to do.
pub(crate) fn classify(err: &io::Error) -> (Refusal, String) {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(tls) => explain(tls),
        None if err.kind() == io::ErrorKind::UnexpectedEof => (
            Refusal::Other,
            "the peer closed the connection during the TLS handshake".to_owned(),
        ),
        None => (Refusal::Other, err.to_string()),
    }
}

fn explain(err: &rustls::Error) -> (Refusal, String) {
    use rustls::Error as E;
    match err {
        E::InvalidMessage(_) => (
            Refusal::NotTls,
            "the peer does not speak TLS (a plaintext client, or another protocol); Colony \
             instances accept mutual TLS 1.3 only"
                .to_owned(),
        ),
        E::PeerIncompatible(p) => (
            Refusal::OldProtocol,
            format!("the peer's TLS is incompatible ({p:?}); Colony accepts TLS 1.3 only"),
        ),
        E::NoCertificatesPresented => (
            Refusal::NoCertificate,
            "the peer presented no certificate; every member of the cluster needs one from the \
             cluster CA"
                .to_owned(),
        ),
        E::InvalidCertificate(cert) => explain_certificate(cert),
        E::AlertReceived(alert) => (
            Refusal::Other,
            format!(
                "the peer refused us with the TLS alert {alert:?} (does it trust our cluster CA, \
                 and is our certificate valid?)"
            ),
        ),
        other => (Refusal::Other, format!("TLS failed: {other}")),
    }
}

fn explain_certificate(err: &CertificateError) -> (Refusal, String) {
    use CertificateError as C;
    match err {
        C::UnknownIssuer | C::BadSignature => (
            Refusal::UnknownIssuer,
            "the peer's certificate is not from this cluster's CA (another cluster, or another \
             CA directory: check COLONY_CA_DIR on both sides)"
                .to_owned(),
        ),
        C::Expired | C::ExpiredContext { .. } => (
            Refusal::Expired,
            format!(
                "the peer's certificate has expired ({err}); its process must renew it: is it \
                 running, and is its clock right?"
            ),
        ),
        C::NotValidYet | C::NotValidYetContext { .. } => (
            Refusal::Expired,
            format!("the peer's certificate is not valid yet ({err}); check both clocks"),
        ),
        C::Other(other) => match other.0.downcast_ref::<IdentityRefusal>() {
            Some(refusal) => (refusal.kind, refusal.reason.clone()),
            None => (
                Refusal::Other,
                format!("the peer's certificate is invalid: {other}"),
            ),
        },
        other => (
            Refusal::Other,
            format!("the peer's certificate is invalid: {other}"),
        ),
    }
}

/// What a dialer checks of the instance it reached: a certificate from the cluster CA,
/// valid now, naming some identity of this app. (Which services it must name is checked
/// once the handshake is done, against what the caller expected at that address.)
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    pub(crate) app: String,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if names_in_certificate(&self.app, end_entity).is_empty() {
            return Err(no_identity(&self.app, end_entity));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn no_identity(app: &str, der: &CertificateDer<'_>) -> rustls::Error {
    let uris = uris_in_certificate(der);
    refuse(
        Refusal::WrongIdentity,
        format!(
            "the peer's certificate names no identity of app `{app}` (its URIs: {}); it \
             belongs to another app, or was not issued by Colony",
            if uris.is_empty() {
                "none".to_owned()
            } else {
                uris.join(", ")
            }
        ),
    )
}

/// What a listener checks of a caller: a certificate from the cluster CA (webpki does the
/// chain and validity), naming some identity of this app, that at least one hosted
/// service's allow-list admits.
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) app: String,
    pub(crate) hosted: Vec<String>,
    pub(crate) callers: CallerPolicy,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = names_in_certificate(&self.app, end_entity);
        if names.is_empty() {
            return Err(no_identity(&self.app, end_entity));
        }
        let admitted = self.hosted.is_empty()
            || self
                .hosted
                .iter()
                .any(|service| self.callers.permits(service, &names));
        if !admitted {
            let lists: Vec<String> = self
                .hosted
                .iter()
                .map(|s| {
                    format!(
                        "`{s}` admits [{}]",
                        self.callers.callers_of(s).unwrap_or_default().join(", ")
                    )
                })
                .collect();
            return Err(refuse(
                Refusal::NotAllowed,
                format!(
                    "caller {} may call none of the services hosted here: {}; add it to \
                     `callers` in colony.toml if it should",
                    names.join(", "),
                    lists.join("; ")
                ),
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
