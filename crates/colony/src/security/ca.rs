//! The cluster certificate authority: creating, storing, loading, and issuing leaves.
//!
//! Owns: [`Ca`] and the files of a CA directory (`ca.pem`, `ca.key` with mode 0600, and a
//! `.gitignore` that keeps both out of git). Promises: every leaf it issues carries one
//! SPIFFE URI SAN per name, is usable for both TLS client and server authentication, has a
//! fresh ECDSA P-256 key and a random serial, and is backdated by a minute to absorb clock
//! skew. Must not touch: sockets or TLS sessions.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::SecurityError;
use super::names::spiffe_id;

/// The CA certificate's file name in a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key's file name in a CA directory (mode 0600).
pub const CA_KEY_FILE: &str = "ca.key";

/// How long before its issue time a leaf is valid, so that peers whose clocks lag a little
/// accept it at once.
const BACKDATE: Duration = Duration::from_secs(60);

/// How long a CA that [`Ca::generate`] creates is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A certificate authority that issues the certificates of one cluster's instances.
///
/// ```
/// use std::time::Duration;
/// use colony::control::security::Ca;
///
/// let ca = Ca::generate("shop").expect("a CA");
/// let leaf = ca
///     .issue("shop", &["shop::checkout::pay"], Duration::from_secs(3600))
///     .expect("a leaf");
/// assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
/// assert_eq!(leaf.names, ["shop::checkout::pay"]);
/// ```
pub struct Ca {
    /// Signs leaves: the CA's subject, key identifier and private key.
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, for peers' trust stores and for saving.
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    /// The private key as PKCS#8 PEM, for saving.
    key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// A leaf certificate and its private key, as PEM, issued by a [`Ca`].
#[derive(Clone)]
#[non_exhaustive]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM. Keep it secret: store it with mode 0600.
    pub key_pem: String,
    /// When it expires.
    pub not_after: SystemTime,
    /// The names (services and roles) it carries.
    pub names: Vec<String>,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Create a new CA (ECDSA P-256, valid for ten years) named after `cluster`.
    pub fn generate(cluster: &str) -> Result<Ca, SecurityError> {
        let key = KeyPair::generate().map_err(|e| SecurityError::cert("generate a CA key", e))?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Colony");
        dn.push(DnType::CommonName, format!("Colony cluster CA ({cluster})"));
        params.distinguished_name = dn;
        // Leaves only: this CA signs no intermediate CAs.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + CA_LIFETIME).into();
        params.serial_number = Some(random_serial()?);
        let cert = params
            .self_signed(&key)
            .map_err(|e| SecurityError::cert("self-sign the CA certificate", e))?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its certificate and private key, as PEM (bring your own CA). The key must
    /// be PKCS#8 ECDSA P-256/P-384 or Ed25519 or RSA; the certificate must be a CA's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, SecurityError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| SecurityError::BadCa {
            reason: format!("{what}: {e}"),
        };
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| bad("the CA certificate is not a PEM certificate", &e))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| {
            bad(
                "the CA key is not a PKCS#8 PEM private key (convert it with `openssl pkcs8 -topk8 -nocrypt`)",
                &e,
            )
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| bad("the CA certificate does not parse", &e))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(SecurityError::BadCa {
                reason: "the CA key does not belong to the CA certificate".to_owned(),
            });
        }
        if !parsed.is_ca() {
            return Err(SecurityError::BadCa {
                reason: "the certificate is not a CA certificate (basicConstraints CA:TRUE)"
                    .to_owned(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| bad("the CA certificate cannot issue certificates", &e))?;
        Ok(Ca {
            issuer,
            cert_pem: cert_pem.to_owned(),
            cert_der,
            key_pem: key_pem.to_owned(),
        })
    }

    /// Load the CA saved in `dir` (`ca.pem` and `ca.key`).
    pub fn load(dir: &Path) -> Result<Ca, SecurityError> {
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        let cert = read(&cert_path)?;
        let key = read(&key_path)?;
        warn_if_readable_by_others(&key_path);
        Ca::from_pem(&cert, &key).map_err(|e| match e {
            SecurityError::BadCa { reason } => SecurityError::BadCa {
                reason: format!(
                    "{} and {}: {reason}",
                    cert_path.display(),
                    key_path.display()
                ),
            },
            other => other,
        })
    }

    /// Whether `dir` holds a CA with its key.
    pub fn exists_in(dir: &Path) -> bool {
        dir.join(CA_KEY_FILE).is_file() && dir.join(CA_CERT_FILE).is_file()
    }

    /// Save the CA in `dir` (created with mode 0700 if missing): `ca.key` with mode 0600,
    /// `ca.pem`, and a `.gitignore` so that git ignores the directory even without the
    /// project's. Refuses to replace an existing CA unless `overwrite`.
    pub fn save(&self, dir: &Path, overwrite: bool) -> Result<(), SecurityError> {
        let io = |path: &Path, e: std::io::Error| SecurityError::Io {
            path: path.to_owned(),
            source: e,
        };
        if !overwrite && (dir.join(CA_KEY_FILE).exists() || dir.join(CA_CERT_FILE).exists()) {
            return Err(SecurityError::CaExists {
                dir: dir.to_owned(),
            });
        }
        create_private_dir(dir).map_err(|e| io(dir, e))?;
        for (name, contents, private) in [
            (CA_KEY_FILE, self.key_pem.as_str(), true),
            (CA_CERT_FILE, self.cert_pem.as_str(), false),
            (
                ".gitignore",
                "# The cluster CA: never commit it.\n*\n",
                false,
            ),
        ] {
            let path = dir.join(name);
            write_file(&path, contents, private).map_err(|e| io(&path, e))?;
        }
        Ok(())
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The SHA-256 fingerprint of the CA certificate, as `openssl x509 -fingerprint -sha256`
    /// prints it.
    pub fn fingerprint(&self) -> String {
        sha256_fingerprint(&self.cert_der)
    }

    /// Issue a leaf naming `names` (services like `shop::checkout::pay`, or roles like
    /// `@client`) in `app`, valid from now for `lifetime`.
    ///
    /// This is what the orchestrator calls for each instance it starts; it hands the
    /// result to the instance as files (`COLONY_TLS_CERT`, `COLONY_TLS_KEY`).
    pub fn issue(
        &self,
        app: &str,
        names: &[&str],
        lifetime: Duration,
    ) -> Result<IssuedCert, SecurityError> {
        let now = SystemTime::now();
        self.issue_valid(app, names, now - BACKDATE, now + lifetime)
    }

    /// Issue a leaf valid from `not_before` to `not_after` (for tests of expired and
    /// not-yet-valid certificates, and for issuers with their own clock policy).
    pub fn issue_valid(
        &self,
        app: &str,
        names: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, SecurityError> {
        if names.is_empty() {
            return Err(SecurityError::Config {
                reason:
                    "a certificate needs at least one name: a service or a role such as `@client`"
                        .to_owned(),
            });
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Colony");
        dn.push(DnType::CommonName, format!("{app} instance"));
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|name| {
                let uri = spiffe_id(app, name);
                rcgen::string::Ia5String::try_from(uri.clone())
                    .map(SanType::URI)
                    .map_err(|e| SecurityError::cert(&format!("write the SAN {uri}"), e))
            })
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial()?);
        let key = KeyPair::generate().map_err(|e| SecurityError::cert("generate a key", e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| SecurityError::cert("sign a certificate", e))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
            names: names.iter().map(|n| (*n).to_owned()).collect(),
        })
    }
}

fn random_serial() -> Result<SerialNumber, SecurityError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecurityError::cert("draw a random serial number", "no system randomness"))?;
    // Positive, and of a fixed length.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The SHA-256 fingerprint of DER bytes, as colon-separated uppercase hex.
pub(crate) fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub(crate) fn read(path: &Path) -> Result<String, SecurityError> {
    fs::read_to_string(path).map_err(|e| SecurityError::Io {
        path: path.to_owned(),
        source: e,
    })
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Write `contents` to `path`, replacing it; a `private` file is created with mode 0600
/// before any byte is written, so that the key is never readable by others.
pub(crate) fn write_file(path: &Path, contents: &str, private: bool) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

fn warn_if_readable_by_others(path: &PathBuf) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the cluster CA key is readable by other users; run `chmod 600` on it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_ca_loads_back_and_its_key_is_private() {
        let dir = std::env::temp_dir().join(format!("colony-ca-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ca = Ca::generate("test").expect("generates");
        ca.save(&dir, false).expect("saves");
        assert!(matches!(
            ca.save(&dir, false),
            Err(SecurityError::CaExists { .. })
        ));
        let loaded = Ca::load(&dir).expect("loads");
        assert_eq!(loaded.fingerprint(), ca.fingerprint());
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(CA_KEY_FILE))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A leaf from the loaded CA names what it was asked to.
        let leaf = loaded
            .issue("test", &["a::b", "@client"], Duration::from_secs(60))
            .expect("issues");
        let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("pem");
        assert_eq!(
            super::super::names::names_in_certificate("test", &der),
            ["a::b", "@client"]
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let a = Ca::generate("a").expect("a");
        let b = Ca::generate("b").expect("b");
        let err = Ca::from_pem(&a.cert_pem, &b.key_pem).expect_err("mismatch");
        assert!(err.to_string().contains("does not belong"), "{err}");
    }
}
