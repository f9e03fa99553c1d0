//! Mutual TLS on real sockets (127.0.0.1): every refusal, identities and allow-lists,
//! certificate rotation under load, and `openssl s_client` without a client certificate.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use colony::CallError;
use colony::control::security::{
    Ca, CallerPolicy, CertLifetime, IssuedCert, ListenerStats, MutualTls, Refusal,
};
use colony::control::transport::Dialer;
use colony::control::{Host, HostConfig, Peer, Router, serve, with_router};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

mod svc {
    use std::sync::atomic::{AtomicU64, Ordering};

    use colony::{ServiceError, microservice};

    /// Bodies of `vault` that ran.
    pub(crate) static VAULT_CALLS: AtomicU64 = AtomicU64::new(0);
    /// Bodies of `decoy` that ran.
    pub(crate) static DECOY_CALLS: AtomicU64 = AtomicU64::new(0);
    /// Bodies of `guarded` that ran.
    pub(crate) static GUARDED_CALLS: AtomicU64 = AtomicU64::new(0);

    /// Behind an allow-list, for the refusal cases.
    #[microservice]
    pub(crate) async fn vault(x: u64) -> Result<u64, ServiceError> {
        VAULT_CALLS.fetch_add(1, Ordering::SeqCst);
        Ok(x + 1)
    }

    /// Hosted where callers expect another service.
    #[microservice]
    pub(crate) async fn decoy(x: u64) -> Result<u64, ServiceError> {
        DECOY_CALLS.fetch_add(1, Ordering::SeqCst);
        Ok(x)
    }

    /// Behind an allow-list, on an instance shared with `open`.
    #[microservice]
    pub(crate) async fn guarded(x: u64) -> Result<u64, ServiceError> {
        GUARDED_CALLS.fetch_add(1, Ordering::SeqCst);
        Ok(x + 1)
    }

    /// Open to every member of the cluster.
    #[microservice]
    pub(crate) async fn open(x: u64) -> Result<u64, ServiceError> {
        Ok(x * 2)
    }

    /// A caller that allow-lists admit.
    #[microservice]
    pub(crate) async fn friend(x: u64) -> Result<u64, ServiceError> {
        Ok(x)
    }

    /// A caller that allow-lists do not admit.
    #[microservice]
    pub(crate) async fn stranger(x: u64) -> Result<u64, ServiceError> {
        Ok(x)
    }
}

const APP: &str = "sectest";
const TRIES: usize = 100;

fn name(service: &str) -> String {
    format!("it::security::svc::{service}")
}

/// An instance serving over mutual TLS until dropped.
struct Instance {
    addr: String,
    stats: Arc<ListenerStats>,
    tls: MutualTls,
    stop: watch::Sender<bool>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn instance(
    ca: &Arc<Ca>,
    services: &[&str],
    callers: CallerPolicy,
    lifetime: CertLifetime,
) -> Instance {
    let names: Vec<String> = services.iter().map(|s| name(s)).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let tls = MutualTls::from_ca(ca.clone(), APP, &names, lifetime).expect("a certificate");
    let listener = tls
        .bind("127.0.0.1:0", &names, callers)
        .await
        .expect("listens");
    let addr = colony::control::transport::Listener::local_addr(&listener);
    let stats = listener.stats();
    let router = Router::builder(Arc::new(tls.dialer()))
        .hosted(names.iter().copied())
        .build()
        .expect("router");
    let host = Host::new(&names, router, HostConfig::default()).expect("host");
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(serve(listener, host, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    Instance {
        addr,
        stats,
        tls,
        stop,
    }
}

/// A router that calls `peers` as a process whose certificate names `me`.
fn client(
    ca: &Arc<Ca>,
    me: &str,
    peers: &[(&str, &str)],
    lifetime: CertLifetime,
) -> (Arc<Router>, MutualTls) {
    let me = if me.starts_with('@') {
        me.to_owned()
    } else {
        name(me)
    };
    let tls = MutualTls::from_ca(ca.clone(), APP, &[&me], lifetime).expect("a certificate");
    let router = Router::builder(Arc::new(tls.dialer()))
        .peers(peers.iter().map(|(service, addr)| Peer {
            pattern: name(service),
            addr: (*addr).to_owned(),
        }))
        .build()
        .expect("router");
    (router, tls)
}

/// Trusts any server: these tests probe the server's checks, not the client's.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A raw TLS client: `version` only, presenting `cert` (or nothing).
fn raw_client(
    version: &'static rustls::SupportedProtocolVersion,
    cert: Option<&IssuedCert>,
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let mut config = match cert {
        Some(cert) => {
            let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("pem");
            let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    };
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A Colony handshake frame, as a client would send first.
fn hello_frame() -> Vec<u8> {
    let hello = colony::control::wire::Hello {
        protocol: colony::control::wire::PROTOCOL_VERSION,
        fingerprint: colony::control::fingerprint().to_owned(),
        instance: "intruder".to_owned(),
        services: Vec::new(),
    };
    let mut out = bytes::BytesMut::new();
    colony::control::wire::encode(
        &mut out,
        &colony::control::wire::Header::new(colony::control::wire::Kind::Hello, 0),
        &hello.to_payload(),
    );
    out.to_vec()
}

/// Connect, optionally over TLS with `config`, send a Colony handshake, and return what
/// came back as application data (nothing, when the instance refused us).
async fn attempt(addr: &str, config: Option<Arc<ClientConfig>>) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let mut reply = Vec::new();
    let read = async {
        match config {
            None => {
                let mut tcp = tcp;
                tcp.write_all(&hello_frame()).await?;
                tcp.read_to_end(&mut reply).await?;
                // A TLS alert record (content type 21) is not application data.
                if reply.first() == Some(&21) {
                    reply.clear();
                }
            }
            Some(config) => {
                let name = ServerName::try_from("colony.invalid").expect("name");
                let mut tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                tls.write_all(&hello_frame()).await?;
                tls.flush().await?;
                tls.read_to_end(&mut reply).await?;
            }
        }
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("refused within 10s");
    reply
}

async fn wait_for(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_happens_before_any_application_byte() {
    let ca = Arc::new(Ca::generate(APP).expect("ca"));
    let foreign = Ca::generate(APP).expect("another ca");
    let callers = CallerPolicy::new().allow(name("vault"), [name("friend")]);
    let server = instance(&ca, &["vault"], callers, CertLifetime::default()).await;
    let calls_before = svc::VAULT_CALLS.load(Ordering::SeqCst);
    let hour = Duration::from_secs(3600);
    let friend = name("friend");
    let stranger = name("stranger");

    let valid = ca.issue(APP, &[&friend], hour).expect("valid");
    let from_foreign = foreign.issue(APP, &[&friend], hour).expect("foreign");
    let now = SystemTime::now();
    let expired = ca
        .issue_valid(APP, &[&friend], now - 2 * hour, now - hour)
        .expect("expired");
    let not_allowed = ca.issue(APP, &[&stranger], hour).expect("stranger");
    let tls13 = &rustls::version::TLS13;
    let cases: Vec<(&str, Option<Arc<ClientConfig>>, Refusal)> = vec![
        ("plaintext", None, Refusal::NotTls),
        (
            "TLS 1.2",
            Some(raw_client(&rustls::version::TLS12, Some(&valid))),
            Refusal::OldProtocol,
        ),
        (
            "no client certificate",
            Some(raw_client(tls13, None)),
            Refusal::NoCertificate,
        ),
        (
            "a foreign CA",
            Some(raw_client(tls13, Some(&from_foreign))),
            Refusal::UnknownIssuer,
        ),
        (
            "an expired certificate",
            Some(raw_client(tls13, Some(&expired))),
            Refusal::Expired,
        ),
        (
            "a caller the allow-list forbids",
            Some(raw_client(tls13, Some(&not_allowed))),
            Refusal::NotAllowed,
        ),
    ];
    for (case, config, refusal) in cases {
        for _ in 0..TRIES {
            let reply = attempt(&server.addr, config.clone()).await;
            assert!(
                reply.is_empty(),
                "{case}: the instance answered {} bytes",
                reply.len()
            );
        }
        let stats = server.stats.clone();
        wait_for(case, || stats.refused(refusal) >= TRIES as u64).await;
        assert_eq!(stats.refused(refusal), TRIES as u64, "{case}");
        assert_eq!(
            stats.accepted(),
            0,
            "{case}: no stream reached the Colony handshake"
        );
    }
    assert_eq!(server.stats.refused_total(), 6 * TRIES as u64);
    assert_eq!(
        svc::VAULT_CALLS.load(Ordering::SeqCst),
        calls_before,
        "no handler ran"
    );

    // The same instance serves a caller that belongs: the refusals were not a broken setup.
    let (router, _tls) = client(
        &ca,
        "friend",
        &[("vault", &server.addr)],
        CertLifetime::default(),
    );
    assert_eq!(with_router(router, svc::vault(41)).await, Ok(42));
    assert_eq!(server.stats.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_refuses_an_instance_that_is_not_the_service_it_meant() {
    let ca = Arc::new(Ca::generate(APP).expect("ca"));
    // This instance hosts `decoy`, but the caller believes `vault` lives at its address.
    let server = instance(
        &ca,
        &["decoy"],
        CallerPolicy::new(),
        CertLifetime::default(),
    )
    .await;
    let (router, tls) = client(
        &ca,
        "friend",
        &[("vault", &server.addr)],
        CertLifetime::default(),
    );
    let dialer = tls.dialer();
    let vault = name("vault");
    for _ in 0..TRIES {
        let err = dialer
            .dial(&server.addr, &[&vault])
            .await
            .err()
            .expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("does not host service"), "{err}");
    }
    let err = with_router(router, svc::vault(1))
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("does not host service") && text.contains(&name("decoy")),
        "{text}"
    );
    assert_eq!(svc::DECOY_CALLS.load(Ordering::SeqCst), 0, "no handler ran");

    // And an instance of the right service is accepted by the same dialer.
    let stream = dialer.dial(&server.addr, &[&name("decoy")]).await;
    assert!(stream.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_forbids_single_services_of_a_shared_instance() {
    let ca = Arc::new(Ca::generate(APP).expect("ca"));
    let callers = CallerPolicy::new().allow(name("guarded"), [name("friend")]);
    let server = instance(&ca, &["guarded", "open"], callers, CertLifetime::default()).await;
    let peers = [
        ("guarded", server.addr.as_str()),
        ("open", server.addr.as_str()),
    ];
    let (stranger, _s) = client(&ca, "stranger", &peers, CertLifetime::default());
    let (friend, _f) = client(&ca, "friend", &peers, CertLifetime::default());

    // `open` admits the stranger, so its connection is accepted; `guarded` does not.
    assert_eq!(with_router(stranger.clone(), svc::open(2)).await, Ok(4));
    let err = with_router(stranger, svc::guarded(1))
        .await
        .expect_err("forbidden");
    assert!(err.to_string().contains("allow-list"), "{err}");
    assert_eq!(
        svc::GUARDED_CALLS.load(Ordering::SeqCst),
        0,
        "the guarded body did not run"
    );
    assert_eq!(with_router(friend, svc::guarded(1)).await, Ok(2));
    let forbidden = CallError::Forbidden {
        service: name("guarded"),
        caller: name("stranger"),
    };
    assert!(!forbidden.is_retryable() && !forbidden.may_have_run());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_under_load_without_a_failed_call() {
    // 4-second certificates renewed 2 seconds before expiry: a renewal every ~2 seconds on
    // each side, while calls run on one long-lived connection and on fresh ones.
    let lifetime =
        CertLifetime::new(Duration::from_secs(4), Duration::from_secs(2)).expect("lifetime");
    let ca = Arc::new(Ca::generate(APP).expect("ca"));
    let server = instance(&ca, &["open"], CallerPolicy::new(), lifetime).await;
    let (router, client_tls) = client(&ca, "friend", &[("open", &server.addr)], lifetime);
    let run_for = Duration::from_secs(8);
    let started = Instant::now();
    let ok = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (router, ok) = (router.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < run_for {
                let result = with_router(router.clone(), svc::open(3)).await;
                assert_eq!(result, Ok(6), "a call on the long-lived connection failed");
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let fresh = {
        let (ca, addr, ok) = (ca.clone(), server.addr.clone(), ok.clone());
        tokio::spawn(async move {
            let mut connections = 0;
            while started.elapsed() < run_for {
                // A new process's router: a new connection, a new handshake.
                let router = Router::builder(Arc::new(client_tls.dialer()))
                    .peer(Peer {
                        pattern: name("open"),
                        addr: addr.clone(),
                    })
                    .build()
                    .expect("router");
                let result = with_router(router, svc::open(5)).await;
                assert_eq!(result, Ok(10), "a call on a fresh connection failed");
                ok.fetch_add(1, Ordering::Relaxed);
                connections += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(ca);
            connections
        })
    };
    for task in tasks {
        task.await.expect("no call failed");
    }
    let connections = fresh.await.expect("no call failed");
    assert!(connections >= 20, "{connections} fresh connections");
    assert!(ok.load(Ordering::Relaxed) > 100);
    assert!(
        server.tls.renewals() >= 3,
        "server renewed {} times",
        server.tls.renewals()
    );
    assert_eq!(server.stats.refused_total(), 0);
    // One connection per fresh router, plus the long-lived one, which never had to be set
    // up again although it outlived the certificates of both its ends.
    assert_eq!(server.stats.accepted(), connections as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_without_a_client_certificate_fails_the_handshake() {
    let ca = Arc::new(Ca::generate(APP).expect("ca"));
    let server = instance(&ca, &["open"], CallerPolicy::new(), CertLifetime::default()).await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("openssl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("ca file");
    let addr = server.addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("openssl")
            .args([
                "s_client", "-connect", &addr, "-tls1_3", "-ign_eof", "-CAfile",
            ])
            .arg(&ca_file)
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await
    .expect("joins")
    .expect("`openssl` runs; install it (apt-get install -y openssl)");
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "s_client succeeded:\n{all}");
    assert!(all.contains("alert certificate required"), "{all}");
    let stats = server.stats.clone();
    wait_for("the refusal", || stats.refused(Refusal::NoCertificate) == 1).await;
    assert_eq!(server.stats.accepted(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// What a control-link listener saw on one connection: the first line, if any.
async fn first_line(listener: &mut colony::control::security::TlsListener) -> Option<String> {
    use colony::control::transport::Listener;
    let (stream, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("the instance dials within 30s")
        .expect("accepts");
    let mut reader = tokio::io::BufReader::new(stream);
    tokio::time::timeout(
        Duration::from_secs(30),
        colony::control::discovery::read_line(&mut reader),
    )
    .await
    .expect("the line, or the end of the stream, within 30s")
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_registers_only_with_the_orchestrator_of_its_cluster() {
    use colony::control::discovery::{OrchestratorConfig, Registration, spawn_link};
    use colony::control::security::{ROLE_GATEWAY, ROLE_ORCHESTRATOR};

    let ca = Arc::new(Ca::generate(APP).expect("a CA"));
    let me = name("open");
    let tls = MutualTls::from_ca(ca.clone(), APP, &[&me], CertLifetime::default()).expect("leaf");
    let link = |addr: String| {
        let router = Router::builder(Arc::new(tls.dialer()))
            .build()
            .expect("router");
        let mut config = OrchestratorConfig::new(addr);
        config.heartbeat = Duration::from_millis(50);
        let registration = Registration {
            instance: "open-1".to_owned(),
            pid: std::process::id(),
            addr: "127.0.0.1:1".to_owned(),
            services: vec![me.clone()],
            fingerprint: "test".to_owned(),
            metrics: None,
        };
        spawn_link(
            config,
            registration,
            None,
            router,
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(tls.dialer()),
        )
    };

    // A member of the cluster that is not the orchestrator (here: a gateway's certificate)
    // gets no registration: the instance hangs up after the handshake, every time.
    let impostor = MutualTls::from_ca(ca.clone(), APP, &[ROLE_GATEWAY], CertLifetime::default())
        .expect("leaf");
    let mut listener = impostor
        .bind("127.0.0.1:0", &[], CallerPolicy::new())
        .await
        .expect("listens");
    let task = link(colony::control::transport::Listener::local_addr(&listener));
    for _ in 0..2 {
        assert_eq!(
            first_line(&mut listener).await,
            None,
            "not a byte for an impostor"
        );
    }
    task.abort();

    // The orchestrator: the registration arrives, and heartbeats follow.
    let orchestrator = MutualTls::from_ca(
        ca.clone(),
        APP,
        &[ROLE_ORCHESTRATOR],
        CertLifetime::default(),
    )
    .expect("leaf");
    let mut listener = orchestrator
        .bind("127.0.0.1:0", &[], CallerPolicy::new())
        .await
        .expect("listens");
    let task = link(colony::control::transport::Listener::local_addr(&listener));
    let line = first_line(&mut listener).await.expect("a registration");
    assert!(line.contains(r#""type":"register""#), "{line}");
    assert!(line.contains(&me), "{line}");
    task.abort();
}
