//! TLS towards the outside: the gateway's HTTPS certificate.
//!
//! Owns: [`https_server_config`], which builds a rustls server configuration from the
//! user's certificate files (`--tls-cert`, `--tls-key`) or a self-signed development
//! certificate. Promises: TLS 1.2 and 1.3 (browsers and curl of every age), no client
//! certificates, and the SHA-256 fingerprint of the certificate served so that `colony up`
//! can print it. Must not touch: the cluster CA (the outside does not trust it).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls::ServerConfig;

use super::SecurityError;
use super::ca::{read, sha256_fingerprint};
use super::rotation::Leaf;

/// A server configuration for HTTPS, and what it serves.
#[derive(Debug)]
#[non_exhaustive]
pub struct HttpsConfig {
    /// The rustls configuration. Set `alpn_protocols` (`h2`, `http/1.1`) to what the HTTP
    /// server speaks, then wrap it in an `Arc` for `tokio_rustls::TlsAcceptor`.
    pub config: ServerConfig,
    /// The SHA-256 fingerprint of the certificate served, colon-separated hex.
    pub fingerprint: String,
    /// Whether the certificate is a self-signed development certificate.
    pub self_signed: bool,
}

/// Build the gateway's HTTPS configuration: from a PEM certificate chain and PKCS#8 key
/// (`files = Some((cert, key))`), or, with `None`, from a fresh self-signed certificate for
/// `localhost`, `127.0.0.1`, `::1` and `hostnames`, valid for 90 days (for development:
/// clients must be told to trust it, for example with `curl --insecure` or by pinning its
/// fingerprint).
///
/// ```
/// let https = colony::control::security::https_server_config(None, &["shop.local"]).expect("config");
/// assert!(https.self_signed);
/// assert_eq!(https.fingerprint.len(), 32 * 3 - 1);
/// ```
pub fn https_server_config(
    files: Option<(&Path, &Path)>,
    hostnames: &[&str],
) -> Result<HttpsConfig, SecurityError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (leaf, self_signed) = match files {
        Some((cert, key)) => {
            let what = format!(
                "--tls-cert {} with --tls-key {}",
                cert.display(),
                key.display()
            );
            (
                Leaf::from_pem(&read(cert)?, &read(key)?, &provider, &what)?,
                false,
            )
        }
        None => {
            let (cert, key) = self_signed_pem(hostnames)?;
            (
                Leaf::from_pem(&cert, &key, &provider, "the development certificate")?,
                true,
            )
        }
    };
    let fingerprint = sha256_fingerprint(&leaf.key.cert[0]);
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SecurityError::rustls)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(leaf.key)));
    Ok(HttpsConfig {
        config,
        fingerprint,
        self_signed,
    })
}

fn self_signed_pem(hostnames: &[&str]) -> Result<(String, String), SecurityError> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(hostnames.iter().map(|h| (*h).to_owned()));
    let mut params = CertificateParams::new(names)
        .map_err(|e| SecurityError::cert("name the development certificate", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Colony");
    dn.push(DnType::CommonName, "Colony development gateway");
    params.distinguished_name = dn;
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(90 * 24 * 3600)).into();
    let key = KeyPair::generate().map_err(|e| SecurityError::cert("generate a key", e))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| SecurityError::cert("self-sign the development certificate", e))?;
    Ok((cert.pem(), key.serialize_pem()))
}
