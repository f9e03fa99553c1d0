//! Mutual TLS 1.3 over TCP, as a [`Dialer`] and a [`Listener`].
//!
//! Owns: [`MutualTls`] (this process's identity, trust and rustls settings),
//! [`TlsDialer`], [`TlsListener`] and its [`ListenerStats`]. Promises: TLS 1.3 only, a
//! certificate on both sides, no session resumption (every connection is verified in full);
//! a dialer refuses an instance whose certificate does not name the services it meant to
//! reach before writing a byte to it; a listener finishes each handshake in its own task
//! (a slow or silent peer cannot hold up others), logs every refusal with its reason, and
//! hands the host only verified streams, tagged with the caller's identity and the hosted
//! services it may call. Must not touch: frames (the `transport` module owns those).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::SecurityError;
use super::ca::{Ca, read};
use super::names::{CallerPolicy, names_in_certificate};
use super::rotation::{CertLifetime, CertStore, LeafFiles, LeafSource, renew};
use super::verify::{ClientVerifier, Refusal, ServerVerifier, classify};
use crate::transport::{AcceptFuture, Authenticated, BoxStream, Dialer, Listener, PeerIdentity};
use futures_util::future::BoxFuture;

/// How long a peer has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The server name rustls wants for a dial. Instances are identified by their SPIFFE ids,
/// not by DNS names, so this is a constant that the verifiers ignore (and SNI is off).
const SERVER_NAME: &str = "colony.invalid";

/// This process's mutual TLS: who it is (its certificate, renewed in the background), whom
/// it trusts (the cluster CA), and the rustls settings built from them. Cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use colony::control::security::{Ca, CallerPolicy, CertLifetime, MutualTls};
///
/// let ca = Arc::new(Ca::generate("shop").expect("a CA"));
/// let tls = MutualTls::from_ca(ca, "shop", &["shop::pricing::quote"], CertLifetime::default())
///     .expect("a certificate");
/// let listener = tls
///     .bind("127.0.0.1:0", &["shop::pricing::quote"], CallerPolicy::new())
///     .await
///     .expect("listening");
/// let dialer = tls.dialer(); // give it to `Router::builder`
/// # drop((listener, dialer));
/// # }
/// ```
#[derive(Clone)]
pub struct MutualTls {
    inner: Arc<Inner>,
}

struct Inner {
    /// The app, whose trust domain every accepted identity must belong to.
    app: String,
    /// What this process's certificate names.
    names: Vec<String>,
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    store: Arc<CertStore>,
    client: Arc<ClientConfig>,
    /// Keeps the certificate fresh; stopped when the last clone goes.
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

impl std::fmt::Debug for MutualTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutualTls")
            .field("app", &self.inner.app)
            .field("names", &self.inner.names)
            .field("not_after", &self.not_after())
            .finish_non_exhaustive()
    }
}

impl MutualTls {
    /// Issue this process's certificate for `names` with `ca`, and renew it with `ca`
    /// before it expires. Call it inside a tokio runtime (renewal is a task).
    ///
    /// For development and single-host clusters: the process holds the CA key. With an
    /// orchestrator the key stays with the orchestrator, and instances use
    /// [`MutualTls::from_files`].
    pub fn from_ca(
        ca: Arc<Ca>,
        app: &str,
        names: &[&str],
        lifetime: CertLifetime,
    ) -> Result<MutualTls, SecurityError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.cert_der().clone())
            .map_err(|e| SecurityError::BadCa {
                reason: format!("the CA certificate cannot be a trust anchor: {e}"),
            })?;
        let source = LeafSource::Ca {
            ca,
            app: app.to_owned(),
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            lifetime,
        };
        MutualTls::start(app, roots, source)
    }

    /// Use the certificate and key an issuer wrote to files, trusting the CA in
    /// `files.ca`, and reload them whenever the issuer rewrites them. Call it inside a
    /// tokio runtime.
    pub fn from_files(app: &str, files: &LeafFiles) -> Result<MutualTls, SecurityError> {
        let ca_pem = read(&files.ca)?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| SecurityError::BadCa {
                reason: format!("{} is not PEM: {e}", files.ca.display()),
            })?;
            roots.add(cert).map_err(|e| SecurityError::BadCa {
                reason: format!("{}: not a usable CA certificate: {e}", files.ca.display()),
            })?;
        }
        if roots.is_empty() {
            return Err(SecurityError::BadCa {
                reason: format!("{} holds no certificate", files.ca.display()),
            });
        }
        MutualTls::start(app, roots, LeafSource::Files(files.clone()))
    }

    fn start(
        app: &str,
        roots: RootCertStore,
        source: LeafSource,
    ) -> Result<MutualTls, SecurityError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SecurityError::Config {
            reason: "mutual TLS must be set up inside a tokio runtime (it renews certificates in \
                     a task)"
                .to_owned(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let leaf = source.fetch(&provider)?;
        let names = names_in_certificate(app, &leaf.key.cert[0]);
        if names.is_empty() {
            return Err(SecurityError::BadCertificate {
                what: "this process's certificate".to_owned(),
                reason: format!(
                    "it names no identity of app `{app}` (a URI SAN spiffe://{}/...); issue it \
                     for this app, or set COLONY_APP",
                    super::names::trust_domain(app)
                ),
            });
        }
        let roots = Arc::new(roots);
        let store = Arc::new(CertStore::new(leaf));
        let verifier = Arc::new(ServerVerifier {
            app: app.to_owned(),
            roots: roots.clone(),
            provider: provider.clone(),
        });
        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(SecurityError::rustls)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(store.clone());
        // Resumption would skip verifying the peer's (possibly since expired) certificate.
        client.resumption = rustls::client::Resumption::disabled();
        client.enable_sni = false;
        let renewal = runtime.spawn(renew(Arc::downgrade(&store), source, provider.clone()));
        Ok(MutualTls {
            inner: Arc::new(Inner {
                app: app.to_owned(),
                names,
                provider,
                roots,
                store,
                client: Arc::new(client),
                renewal,
            }),
        })
    }

    /// The app whose identities this process trusts.
    pub fn app(&self) -> &str {
        &self.inner.app
    }

    /// What this process's certificate names: its services, or its role.
    pub fn names(&self) -> &[String] {
        &self.inner.names
    }

    /// When the current certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.inner.store.not_after()
    }

    /// How many times the certificate was renewed.
    pub fn renewals(&self) -> u64 {
        self.inner.store.renewals()
    }

    /// A dialer that opens mutual-TLS connections as this process.
    pub fn dialer(&self) -> TlsDialer {
        TlsDialer {
            tls: self.clone(),
            connector: TlsConnector::from(self.inner.client.clone()),
        }
    }

    /// Listen on `addr` for callers of `hosted`, admitting those `callers` allows.
    pub async fn bind(
        &self,
        addr: &str,
        hosted: &[&str],
        callers: CallerPolicy,
    ) -> Result<TlsListener, SecurityError> {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| SecurityError::Listen {
                addr: addr.to_owned(),
                source: e,
            })?;
        self.listener(tcp, hosted, callers)
    }

    /// Accept mutual-TLS connections on `tcp` for callers of `hosted`, admitting those
    /// `callers` allows. Call it inside a tokio runtime.
    pub fn listener(
        &self,
        tcp: tokio::net::TcpListener,
        hosted: &[&str],
        callers: CallerPolicy,
    ) -> Result<TlsListener, SecurityError> {
        self.listener_reporting(tcp, hosted, callers, None)
    }

    /// Like [`MutualTls::listener`], and also hand every refused connection to `report`
    /// (besides logging it), for a process that keeps its own record of refusals, such as
    /// the orchestrator's event log. `report` runs on the handshake's task: keep it short.
    pub fn listener_reporting(
        &self,
        tcp: tokio::net::TcpListener,
        hosted: &[&str],
        callers: CallerPolicy,
        report: Option<RefusalReport>,
    ) -> Result<TlsListener, SecurityError> {
        let addr = tcp
            .local_addr()
            .map_err(|e| SecurityError::Listen {
                addr: "the listener".to_owned(),
                source: e,
            })?
            .to_string();
        let webpki = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.inner.roots.clone(),
            self.inner.provider.clone(),
        )
        .build()
        .map_err(|e| SecurityError::BadCa {
            reason: format!("cannot verify callers with it: {e}"),
        })?;
        let hosted: Vec<String> = hosted.iter().map(|s| (*s).to_owned()).collect();
        let verifier = Arc::new(ClientVerifier {
            inner: webpki,
            app: self.inner.app.clone(),
            hosted: hosted.clone(),
            callers: callers.clone(),
        });
        let mut server = ServerConfig::builder_with_provider(self.inner.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(SecurityError::rustls)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.inner.store.clone());
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        let stats = Arc::new(ListenerStats::default());
        let (tx, incoming) = mpsc::channel(128);
        let admission = Arc::new(Admission {
            app: self.inner.app.clone(),
            hosted,
            callers,
            stats: stats.clone(),
            report,
        });
        let task = tokio::runtime::Handle::try_current()
            .map_err(|_| SecurityError::Config {
                reason: "a TLS listener must be created inside a tokio runtime".to_owned(),
            })?
            .spawn(accept_loop(
                tcp,
                TlsAcceptor::from(Arc::new(server)),
                admission,
                tx,
            ));
        Ok(TlsListener {
            incoming,
            addr,
            stats,
            task,
            _tls: self.clone(),
        })
    }
}

/// Opens mutual-TLS connections: TCP with `TCP_NODELAY`, then TLS 1.3 presenting this
/// process's certificate, then a check that the instance's certificate names every service
/// the caller expects there.
#[derive(Clone)]
pub struct TlsDialer {
    tls: MutualTls,
    connector: TlsConnector,
}

impl std::fmt::Debug for TlsDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsDialer")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Dialer for TlsDialer {
    fn dial(&self, addr: &str, expected: &[&str]) -> BoxFuture<'static, io::Result<BoxStream>> {
        let addr = addr.to_owned();
        let expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        let connector = self.connector.clone();
        let app = self.tls.inner.app.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(SERVER_NAME)
                .map_err(|e| io::Error::other(format!("bad server name: {e}")))?;
            let tls = connector.connect(name, tcp).await.map_err(|e| {
                let (kind, reason) = classify(&e);
                tracing::warn!(%addr, refusal = %kind, %reason, "refused the instance");
                io::Error::new(e.kind(), format!("TLS with {addr} failed: {reason}"))
            })?;
            let names = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|leaf| names_in_certificate(&app, leaf))
                .unwrap_or_default();
            let missing: Vec<&str> = expected
                .iter()
                .filter(|e| !names.contains(e))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                let reason = if missing.iter().all(|m| m.starts_with('@')) {
                    format!(
                        "refused the peer at {addr}: it is not the `{}` (its certificate names \
                         {}); check the address it was given (COLONY_ORCHESTRATOR)",
                        missing.join("`, `"),
                        names.join(", ")
                    )
                } else {
                    format!(
                        "refused the instance at {addr}: it does not host service `{}` (its \
                         certificate names {}); check the peer addresses (--peer, COLONY_PEERS)",
                        missing.join("`, `"),
                        names.join(", ")
                    )
                };
                tracing::warn!(%addr, refusal = %Refusal::WrongIdentity, %reason, "refused the instance");
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, reason));
            }
            let stream = Authenticated::new(Box::new(tls), PeerIdentity::new(names));
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

/// Counts of what a [`TlsListener`] accepted and refused, by reason.
#[derive(Debug, Default)]
pub struct ListenerStats {
    accepted: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
}

impl ListenerStats {
    /// Connections that passed the handshake and were handed to the host.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections refused for `reason`.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason.index()].load(Ordering::Relaxed)
    }

    /// Connections refused for any reason.
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Accepts mutual-TLS connections, completing each handshake in its own task.
pub struct TlsListener {
    incoming: mpsc::Receiver<(BoxStream, String)>,
    addr: String,
    stats: Arc<ListenerStats>,
    task: tokio::task::JoinHandle<()>,
    /// Keeps the certificate renewing for as long as the listener lives.
    _tls: MutualTls,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("addr", &self.addr)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// What it accepted and refused so far; the counts keep updating.
    pub fn stats(&self) -> Arc<ListenerStats> {
        self.stats.clone()
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener for TlsListener {
    fn accept(&mut self) -> AcceptFuture<'_> {
        Box::pin(async move {
            self.incoming.recv().await.ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotConnected, "the TLS listener stopped")
            })
        })
    }

    fn local_addr(&self) -> String {
        self.addr.clone()
    }
}

/// Receives each connection a [`TlsListener`] refused: the peer's address, the kind of
/// refusal, and a sentence that says why and what to do.
pub type RefusalReport = Arc<dyn Fn(&str, Refusal, &str) + Send + Sync>;

/// What the accept loop needs to admit a caller after its handshake.
struct Admission {
    app: String,
    hosted: Vec<String>,
    callers: CallerPolicy,
    stats: Arc<ListenerStats>,
    report: Option<RefusalReport>,
}

impl Admission {
    /// The caller's identity, with the hosted services it may call when that is not all.
    fn identity(&self, names: Vec<String>) -> PeerIdentity {
        let may_call: Vec<String> = self
            .hosted
            .iter()
            .filter(|s| self.callers.permits(s, &names))
            .cloned()
            .collect();
        let all = may_call.len() == self.hosted.len();
        let identity = PeerIdentity::new(names);
        if all {
            identity
        } else {
            identity.may_call_only(may_call)
        }
    }

    fn refuse(&self, peer: &str, kind: Refusal, reason: &str) {
        self.stats.refused[kind.index()].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, refusal = %kind, %reason, "refused connection");
        if let Some(report) = &self.report {
            report(peer, kind, reason);
        }
    }
}

async fn accept_loop(
    tcp: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    admission: Arc<Admission>,
    tx: mpsc::Sender<(BoxStream, String)>,
) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Typically out of file descriptors: give the process a moment.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let (acceptor, admission, tx) = (acceptor.clone(), admission.clone(), tx.clone());
        tokio::spawn(async move {
            let peer = peer.to_string();
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    let (kind, reason) = classify(&e);
                    return admission.refuse(&peer, kind, &reason);
                }
                Err(_) => {
                    let reason = format!(
                        "the peer did not complete the TLS handshake within {HANDSHAKE_TIMEOUT:?}"
                    );
                    return admission.refuse(&peer, Refusal::Timeout, &reason);
                }
            };
            let names = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|leaf| names_in_certificate(&admission.app, leaf))
                .unwrap_or_default();
            let identity = admission.identity(names);
            tracing::debug!(%peer, caller = %identity, "accepted a TLS connection");
            admission.stats.accepted.fetch_add(1, Ordering::Relaxed);
            let stream = Box::new(Authenticated::new(Box::new(tls), identity)) as BoxStream;
            let _ = tx.send((stream, peer)).await;
        });
    }
}
