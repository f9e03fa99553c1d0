//! This process's own certificate: the one in use, and renewing it before it expires.
//!
//! Owns: [`CertStore`] (the current certificate and key, which rustls asks for at every
//! handshake, on both sides) and the renewal task. Promises: a renewed certificate is used by
//! every handshake that starts after it is installed, while connections set up earlier keep
//! running untouched (TLS checks certificates only during the handshake); a failed renewal
//! is logged and retried, and the current certificate stays until a new one is ready.
//! Must not touch: sockets.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::SecurityError;
use super::ca::{Ca, IssuedCert, read};

/// How long this process's certificates live, and how long before expiry they are renewed.
///
/// ```
/// use std::time::Duration;
/// use colony::control::security::CertLifetime;
///
/// let short = CertLifetime::new(Duration::from_secs(30), Duration::from_secs(10)).expect("valid");
/// assert_eq!(short.renew_at_age(), Duration::from_secs(20));
/// assert!(CertLifetime::new(Duration::from_secs(30), Duration::from_secs(30)).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertLifetime {
    lifetime: Duration,
    renew_before: Duration,
}

impl Default for CertLifetime {
    /// 24 hours, renewed 8 hours before expiry.
    fn default() -> Self {
        CertLifetime {
            lifetime: Duration::from_secs(24 * 3600),
            renew_before: Duration::from_secs(8 * 3600),
        }
    }
}

impl CertLifetime {
    /// Certificates valid for `lifetime`, renewed `renew_before` ahead of expiry.
    /// `renew_before` must be shorter than `lifetime`, and `lifetime` at least a second.
    pub fn new(lifetime: Duration, renew_before: Duration) -> Result<CertLifetime, SecurityError> {
        if lifetime < Duration::from_secs(1) || renew_before >= lifetime {
            return Err(SecurityError::Config {
                reason: format!(
                    "certificate lifetime {lifetime:?} with renewal {renew_before:?} before \
                     expiry: the lifetime must be at least 1s and the renewal margin shorter \
                     than it (for example cert_lifetime = \"24h\", cert_renew_before = \"8h\")"
                ),
            });
        }
        Ok(CertLifetime {
            lifetime,
            renew_before,
        })
    }

    /// How long a certificate is valid.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// How long before expiry it is renewed.
    pub fn renew_before(&self) -> Duration {
        self.renew_before
    }

    /// The age at which a certificate is renewed.
    pub fn renew_at_age(&self) -> Duration {
        self.lifetime - self.renew_before
    }
}

/// A leaf certificate and key that an issuer handed to this process as files, with the CA
/// certificate to trust (`COLONY_TLS_CERT`, `COLONY_TLS_KEY`, `COLONY_TLS_CA`). The issuer
/// renews them by rewriting the files; the process reloads them when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeafFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PKCS#8 PEM.
    pub key: PathBuf,
    /// The cluster CA certificate(s) to trust, PEM.
    pub ca: PathBuf,
}

impl LeafFiles {
    /// Files at these paths.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>, ca: impl Into<PathBuf>) -> Self {
        LeafFiles {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
        }
    }
}

/// A certificate ready for rustls, and when it expires.
pub(crate) struct Leaf {
    pub(crate) key: Arc<CertifiedKey>,
    pub(crate) not_after: SystemTime,
}

impl Leaf {
    pub(crate) fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        provider: &CryptoProvider,
        what: &str,
    ) -> Result<Leaf, SecurityError> {
        let bad = |reason: String| SecurityError::BadCertificate {
            what: what.to_owned(),
            reason,
        };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| bad(format!("the certificate is not PEM: {e}")))?;
        let first = chain
            .first()
            .ok_or_else(|| bad("there is no certificate in it".to_owned()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(first)
            .map_err(|e| bad(format!("the certificate does not parse: {e}")))?;
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or_default(),
            );
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| bad(format!("the key is not a PEM private key: {e}")))?;
        let certified = CertifiedKey::from_der(chain, key, provider)
            .map_err(|e| bad(format!("the key does not fit the certificate: {e}")))?;
        Ok(Leaf {
            key: Arc::new(certified),
            not_after,
        })
    }

    fn issued(issued: &IssuedCert, provider: &CryptoProvider) -> Result<Leaf, SecurityError> {
        Leaf::from_pem(
            &issued.cert_pem,
            &issued.key_pem,
            provider,
            "a freshly issued certificate",
        )
    }
}

/// Where this process's certificates come from.
pub(crate) enum LeafSource {
    /// Issued here, by a CA whose key this process holds.
    Ca {
        ca: Arc<Ca>,
        app: String,
        names: Vec<String>,
        lifetime: CertLifetime,
    },
    /// Files that an issuer writes and rewrites.
    Files(LeafFiles),
}

impl LeafSource {
    pub(crate) fn fetch(&self, provider: &CryptoProvider) -> Result<Leaf, SecurityError> {
        match self {
            LeafSource::Ca {
                ca,
                app,
                names,
                lifetime,
            } => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                Leaf::issued(&ca.issue(app, &names, lifetime.lifetime())?, provider)
            }
            LeafSource::Files(files) => Leaf::from_pem(
                &read(&files.cert)?,
                &read(&files.key)?,
                provider,
                &format!("{} with {}", files.cert.display(), files.key.display()),
            ),
        }
    }
}

/// The certificate this process presents, on both sides of every handshake.
pub(crate) struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    not_after: Mutex<SystemTime>,
    renewals: AtomicU64,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("not_after", &self.not_after())
            .field("renewals", &self.renewals())
            .finish_non_exhaustive()
    }
}

impl CertStore {
    pub(crate) fn new(leaf: Leaf) -> CertStore {
        CertStore {
            current: RwLock::new(leaf.key),
            not_after: Mutex::new(leaf.not_after),
            renewals: AtomicU64::new(0),
        }
    }

    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn not_after(&self) -> SystemTime {
        *self.not_after.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }

    fn install(&self, leaf: Leaf) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = leaf.key;
        *self.not_after.lock().unwrap_or_else(|p| p.into_inner()) = leaf.not_after;
        self.renewals.fetch_add(1, Ordering::Relaxed);
    }
}

impl rustls::server::ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// How often a process whose certificate comes from files looks for a new one.
const FILE_POLL: Duration = Duration::from_secs(1);

/// Keep `store`'s certificate fresh until the store is dropped: issue a new one
/// `lifetime.renew_before()` ahead of expiry, or reload the files when they change.
pub(crate) async fn renew(
    store: Weak<CertStore>,
    source: LeafSource,
    provider: Arc<CryptoProvider>,
) {
    let mut seen = match &source {
        LeafSource::Files(files) => modified(&files.cert),
        LeafSource::Ca { .. } => None,
    };
    let mut failures = 0u32;
    loop {
        let wait = {
            let Some(store) = store.upgrade() else { return };
            match &source {
                LeafSource::Ca { lifetime, .. } => (store.not_after() - lifetime.renew_before())
                    .duration_since(SystemTime::now())
                    .unwrap_or_default(),
                LeafSource::Files(_) => FILE_POLL,
            }
        };
        let retry = match &source {
            LeafSource::Ca { lifetime, .. } => (lifetime.renew_before() / 10)
                .clamp(Duration::from_millis(100), Duration::from_secs(30)),
            LeafSource::Files(_) => FILE_POLL,
        };
        tokio::time::sleep(if failures > 0 { retry } else { wait }).await;
        let Some(store) = store.upgrade() else { return };
        if let LeafSource::Files(files) = &source {
            let now = modified(&files.cert);
            if now == seen && failures == 0 {
                continue;
            }
            seen = now;
        }
        match source.fetch(&provider) {
            Ok(leaf) => {
                failures = 0;
                tracing::info!(
                    valid_for = ?leaf.not_after.duration_since(SystemTime::now()).unwrap_or_default(),
                    "installed a renewed TLS certificate"
                );
                store.install(leaf);
            }
            Err(e) => {
                failures += 1;
                let left = store
                    .not_after()
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                tracing::warn!(error = %e, current_valid_for = ?left, "could not renew the TLS certificate; retrying");
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
