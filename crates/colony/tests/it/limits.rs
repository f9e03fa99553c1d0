//! A connection's limits against hostile peers, on real sockets (127.0.0.1) to a real
//! `Host`: a peer that sends and never reads is disconnected after the write timeout while
//! the instance's memory stays within its out-buffer bound; a peer that announces a large
//! frame and stalls is disconnected after the frame-read timeout; and a well-behaved client
//! of the same instance is served throughout.
//!
//! Memory is read from `/proc/self/status` (this test binary is the instance), so the
//! bounds asserted leave room for the other tests of this binary running alongside.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use colony::ErrorKind;
use colony::control::transport::{ConnectionConfig, Listener, TcpDialer, TcpListener};
use colony::control::wire::{self, Decoder, Header, Hello, Kind};
use colony::control::{Host, HostConfig, Peer, Router, serve, with_router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

mod svc {
    use colony::{ServiceError, microservice};

    /// What the well-behaved client calls, and the hostile peer floods with requests.
    #[microservice]
    pub(crate) async fn double(x: u64) -> Result<u64, ServiceError> {
        Ok(x * 2)
    }

    /// Takes a large argument, so that few calls fill a connection's out-buffer.
    #[microservice]
    pub(crate) async fn weigh(bytes: Vec<u8>) -> Result<u64, ServiceError> {
        Ok(bytes.len() as u64)
    }
}

/// These tests read the process's memory, so they run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DOUBLE: &str = "it::limits::svc::double";
const WEIGH: &str = "it::limits::svc::weigh";
const MIB: usize = 1024 * 1024;

/// An instance serving `double` over TCP until dropped.
struct Instance {
    addr: String,
    stop: watch::Sender<bool>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn instance(connection: ConnectionConfig) -> Instance {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr();
    let router = Router::builder(Arc::new(TcpDialer))
        .hosted([DOUBLE])
        .build()
        .expect("router");
    let mut config = HostConfig::default();
    config.connection = connection;
    let host = Host::new(&[DOUBLE], router, config).expect("host");
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(serve(listener, host, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    Instance { addr, stop }
}

/// A connection config with the limits under test shortened.
fn config(
    max_queued: usize,
    write_timeout: Duration,
    frame_read_timeout: Duration,
) -> ConnectionConfig {
    let mut config = ConnectionConfig::default();
    config.max_queued = max_queued;
    config.write_timeout = write_timeout;
    config.frame_read_timeout = frame_read_timeout;
    config
}

/// Call `double` as a well-behaved client would, on a connection of its own.
async fn served(addr: &str) {
    let router = Router::builder(Arc::new(TcpDialer))
        .peers([Peer {
            pattern: DOUBLE.to_owned(),
            addr: addr.to_owned(),
        }])
        .build()
        .expect("router");
    assert_eq!(with_router(router, svc::double(21)).await, Ok(42));
}

/// A raw socket that has done the handshake; returns it with the instance's id for
/// `double`.
async fn handshake(addr: &str) -> (TcpStream, u32) {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let hello = Hello {
        protocol: wire::PROTOCOL_VERSION,
        fingerprint: colony::control::fingerprint().to_owned(),
        instance: "hostile".to_owned(),
        services: Vec::new(),
    };
    let mut out = BytesMut::new();
    wire::encode(&mut out, &Header::new(Kind::Hello, 0), &hello.to_payload());
    stream.write_all(&out).await.expect("sends hello");
    let decoder = Decoder::new(wire::DEFAULT_MAX_FRAME);
    let mut buf = BytesMut::new();
    let frame = loop {
        if let Some(frame) = decoder.decode(&mut buf).expect("a frame") {
            break frame;
        }
        assert!(stream.read_buf(&mut buf).await.expect("reads") > 0, "hello");
    };
    let theirs = Hello::from_payload(&frame.payload).expect("a hello");
    let id = theirs
        .services
        .iter()
        .find(|(name, _)| name == DOUBLE)
        .map(|(_, id)| *id)
        .expect("the instance hosts double");
    (stream, id)
}

/// This process's resident memory, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Write `chunk` to `stream` again and again, never reading, until `limit` bytes are sent
/// or a write fails (the instance closed the connection). Returns the bytes sent and
/// whether a write failed.
fn flood(
    mut stream: TcpStream,
    chunk: BytesMut,
    limit: usize,
    sent: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<bool> {
    tokio::spawn(async move {
        while (sent.load(Ordering::Relaxed) as usize) < limit {
            if stream.write_all(&chunk).await.is_err() {
                return true;
            }
            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        // Hold the connection (still not reading) until the test drops the task.
        std::future::pending::<()>().await;
        false
    })
}

/// About `size` bytes of frames of `kind` (for `service`, with `payload`).
fn frames(kind: Kind, service: u32, payload: &[u8], size: usize) -> BytesMut {
    let mut chunk = BytesMut::with_capacity(size + 256);
    let mut id = 1;
    while chunk.len() < size {
        let mut header = Header::new(kind, id);
        header.service = service;
        wire::encode(&mut chunk, &header, payload);
        id += 1;
    }
    chunk
}

/// Poll `done` until it holds, sampling memory meanwhile; returns the most memory seen.
async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> usize {
    let deadline = Instant::now() + within;
    let mut peak = rss();
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
        peak = peak.max(rss());
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_from_a_peer_that_never_reads_keep_memory_within_the_out_buffer_bound() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A write timeout far off: this test watches the bound alone.
    let inst = instance(config(
        MIB,
        Duration::from_secs(3600),
        Duration::from_secs(30),
    ))
    .await;
    let (stream, _) = handshake(&inst.addr).await;
    let before = rss();
    // Each Ping asks for a Pong of about its size: unbounded, 256 MiB of them would
    // queue about 256 MiB of answers.
    let total = 256 * MIB;
    let sent = Arc::new(AtomicU64::new(0));
    let flooding = flood(stream, frames(Kind::Ping, 0, &[], MIB), total, sent.clone());
    served(&inst.addr).await;
    let peak = until(
        "256 MiB of pings are sent",
        Duration::from_secs(300),
        || sent.load(Ordering::Relaxed) as usize >= total,
    )
    .await;
    served(&inst.addr).await;
    assert!(
        !flooding.is_finished(),
        "the connection stays open within its timeout"
    );
    flooding.abort();
    let grew = peak.saturating_sub(before);
    assert!(
        grew < 64 * MIB,
        "memory grew by {} MiB while a peer sent 256 MiB of pings and read nothing",
        grew / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_sends_requests_and_never_reads_is_disconnected_after_the_write_timeout() {
    let _one = ONE_AT_A_TIME.lock().await;
    let inst = instance(config(MIB, Duration::from_secs(1), Duration::from_secs(30))).await;
    let (stream, service) = handshake(&inst.addr).await;
    let before = rss();
    // No request id, then the argument tuple (21,).
    let requests = frames(Kind::Request, service, &[0, 21], MIB);
    let sent = Arc::new(AtomicU64::new(0));
    let flooding = flood(stream, requests, usize::MAX, sent.clone());
    served(&inst.addr).await;
    let peak = until(
        "the instance closes the connection",
        Duration::from_secs(120),
        || flooding.is_finished(),
    )
    .await;
    assert!(flooding.await.expect("the flood"), "a write failed: closed");
    served(&inst.addr).await;
    let grew = peak.saturating_sub(before);
    assert!(
        grew < 64 * MIB,
        "memory grew by {} MiB while {} MiB of requests went unanswered",
        grew / MIB,
        sent.load(Ordering::Relaxed) as usize / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_announce_a_large_frame_and_stall_are_disconnected() {
    let _one = ONE_AT_A_TIME.lock().await;
    let inst = instance(config(
        64 * MIB,
        Duration::from_secs(30),
        Duration::from_secs(1),
    ))
    .await;
    let before = rss();
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let (mut stream, _) = handshake(&inst.addr).await;
        // A frame of almost 16 MiB, announced; then 1 KiB of it, and nothing more.
        let mut start = BytesMut::new();
        start.extend_from_slice(&((wire::DEFAULT_MAX_FRAME - 64) as u32).to_be_bytes());
        start.extend_from_slice(&[0; 1024]);
        stream.write_all(&start).await.expect("sends");
        stalled.push(stream);
    }
    served(&inst.addr).await;
    let grew = rss().saturating_sub(before);
    assert!(
        grew < 64 * MIB,
        "memory grew by {} MiB for 20 stalled frames",
        grew / MIB
    );
    for mut stream in stalled {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut byte = [0; 1];
        // The instance sends nothing on this connection: a read ends only when it closes.
        let read = tokio::time::timeout_at(deadline.into(), stream.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "the stalled connection was closed: {read:?}"
        );
    }
    served(&inst.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_peer_never_reads_is_refused_at_the_bound_with_nothing_sent() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A peer that answers the handshake as a host of `weigh`, then never reads.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address").to_string();
    let deaf = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("a caller");
        let hello = Hello {
            protocol: wire::PROTOCOL_VERSION,
            fingerprint: colony::control::fingerprint().to_owned(),
            instance: "deaf".to_owned(),
            services: vec![(WEIGH.to_owned(), 0)],
        };
        let mut out = BytesMut::new();
        wire::encode(&mut out, &Header::new(Kind::Hello, 0), &hello.to_payload());
        stream.write_all(&out).await.expect("sends its hello");
        std::future::pending::<()>().await;
        drop(stream);
    });
    let router = Router::builder(Arc::new(TcpDialer))
        .peers([Peer {
            pattern: WEIGH.to_owned(),
            addr: addr.clone(),
        }])
        .connection(config(
            1024 * 1024,
            Duration::from_secs(3600),
            Duration::from_secs(30),
        ))
        .build()
        .expect("router");
    // Calls park until their deadline; keep adding them until the out-buffer is full.
    let mut calls = tokio::task::JoinSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let refused = 'calls: loop {
        for _ in 0..16 {
            calls.spawn(with_router(router.clone(), svc::weigh(vec![1; 64 * 1024])));
        }
        // Every call waits for a reply that never comes, until one finds no room.
        if let Some(done) = calls.try_join_next() {
            match done.expect("a call") {
                // A service's caller sees the `CallError` as a `ServiceError` of its kind.
                Err(e) if e.kind() == ErrorKind::Unavailable => break 'calls e.to_string(),
                other => panic!("a call to a peer that reads nothing: {other:?}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} calls and none refused",
            calls.len()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert!(
        refused.contains("could not be reached: nothing was sent"),
        "{refused}"
    );
    calls.abort_all();
    deaf.abort();
}
