//! Tests of a connection's parked calls: deadlines, cancels, closing, and the slab's
//! request ids; and of its limits: the out-buffer's bound and write timeout against a
//! real socket that never reads, and a read buffer that grows only with what arrived.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::FutureExt as _;
use tokio::io::AsyncWriteExt as _;

use super::connection::{
    Connection, ConnectionConfig, Handler, LocalIds, RequestError, reserve_for_next,
};
use super::in_flight::{Pending, SlotState};
use super::{Dialer, Listener, MemoryNetwork, lock};
use crate::wire::{self, Decoder, Frame, Header, Hello, Kind};

/// A peer that takes requests and never answers; it records the cancels it gets.
#[derive(Default)]
struct Silent {
    cancelled: Mutex<Vec<u64>>,
}

impl Handler for Silent {
    fn on_frame(self: Arc<Self>, _conn: &Connection, frame: Frame) {
        if frame.header.kind == Kind::Cancel {
            lock(&self.cancelled).push(frame.header.request_id);
        }
    }

    fn on_close(&self, _conn: &Connection) {}
}

fn ids() -> LocalIds {
    LocalIds {
        count: 0,
        id_of: |_| None,
    }
}

fn hello(instance: &str) -> Hello {
    Hello {
        protocol: wire::PROTOCOL_VERSION,
        fingerprint: "test".to_owned(),
        instance: instance.to_owned(),
        services: Vec::new(),
    }
}

async fn pair() -> (Connection, Arc<Silent>) {
    let net = MemoryNetwork::new();
    let mut listener = net.bind("silent");
    let silent = Arc::new(Silent::default());
    let handler = silent.clone();
    tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.expect("a dialer");
        let config = ConnectionConfig::default();
        let conn = Connection::establish(stream, peer, false, &hello("b"), ids(), config, {
            Some(handler as Arc<dyn Handler>)
        })
        .await
        .expect("handshake");
        // Keep the accepting side open for the test's lifetime.
        std::future::pending::<()>().await;
        drop(conn);
    });
    let stream = net.dial("silent", &[]).await.expect("dial");
    let conn = Connection::establish(
        stream,
        "silent".to_owned(),
        true,
        &hello("a"),
        ids(),
        ConnectionConfig::default(),
        None,
    )
    .await
    .expect("handshake");
    (conn, silent)
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_call_past_its_deadline_fails_and_is_cancelled_while_later_ones_wait() {
    let (conn, silent) = pair().await;
    let header = Header::new(Kind::Request, 0);
    // A call with a far deadline parks first, so the sweeper is armed for it; a call
    // with a near deadline must re-arm it.
    let far = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(600);
            conn.request(header, &[b"far"], Some(deadline)).await
        })
    };
    wait_until("the far call is parked", || {
        lock(&conn.shared.pending).next_sweep.is_some()
    })
    .await;
    let near_deadline = Some(Instant::now() + Duration::from_millis(50));
    let near = tokio::time::timeout(
        Duration::from_secs(10),
        conn.request(header, &[b"near"], near_deadline),
    )
    .await
    .expect("the sweeper re-armed for the nearer deadline");
    assert!(matches!(near, Err(RequestError::Deadline)), "{near:?}");
    assert!(!far.is_finished(), "the far call still waits");
    wait_until("the peer got a cancel for the near call", || {
        lock(&silent.cancelled).len() == 1
    })
    .await;

    // Dropping a waiting call cancels it too.
    far.abort();
    wait_until("the peer got a cancel for the far call", || {
        lock(&silent.cancelled).len() == 2
    })
    .await;

    // A closed connection fails what is parked, with its reason.
    let parked = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.request(header, &[b"x"], None).await })
    };
    wait_until("the call is parked", || {
        lock(&conn.shared.pending)
            .slots
            .iter()
            .any(|s| matches!(s.state, SlotState::Waiting(_)))
    })
    .await;
    conn.close("closed by the test");
    let err = parked.await.expect("the task");
    assert!(
        matches!(&err, Err(RequestError::Closed(r)) if r == "closed by the test"),
        "{err:?}"
    );
}

#[test]
fn a_late_reply_never_completes_the_next_call_in_its_slot() {
    let mut pending = Pending::default();
    let (first, _) = pending.park(None);
    assert!(pending.abandon(first));
    let (second, _) = pending.park(None);
    assert_eq!(
        first & 0xffff_ffff,
        second & 0xffff_ffff,
        "the slot is reused"
    );
    assert_ne!(first, second, "under a new generation");
    let late = Frame {
        header: Header::new(Kind::Response, first),
        payload: bytes::Bytes::new(),
    };
    assert!(pending.complete(first, Ok(late)).is_none());
    assert!(matches!(
        pending.slot(second).map(|s| &s.state),
        Some(SlotState::Waiting(_))
    ));
}

#[tokio::test]
async fn requests_to_a_peer_that_never_reads_fail_at_the_bound_and_it_is_cut_off() {
    // A real socket whose far end answers the handshake and then never reads.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    let deaf = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("a dialer");
        let mut out = BytesMut::new();
        wire::encode(
            &mut out,
            &Header::new(Kind::Hello, 0),
            &hello("b").to_payload(),
        );
        stream.write_all(&out).await.expect("sends its hello");
        std::future::pending::<()>().await;
        drop(stream);
    });
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let config = ConnectionConfig {
        max_queued: 256 * 1024,
        write_timeout: Duration::from_millis(300),
        ..ConnectionConfig::default()
    };
    let conn = Connection::establish(
        Box::new(stream),
        addr.to_string(),
        true,
        &hello("a"),
        ids(),
        config,
        None,
    )
    .await
    .expect("handshake");

    // Queue requests without waiting for replies (each is cancelled as it is dropped,
    // which queues a Cancel too) until one finds no room.
    let payload = vec![7u8; 16 * 1024];
    let header = Header::new(Kind::Request, 0);
    let mut backlogged = None;
    for _ in 0..100_000 {
        let sent = conn.request(header, &[&payload], None).now_or_never();
        assert!(
            conn.queued_len() <= config.max_queued,
            "{}",
            conn.queued_len()
        );
        if let Some(Err(e @ RequestError::Backlogged { .. })) = sent {
            backlogged = Some(e);
            break;
        }
        // Let the writer move what it can into the socket, so the kernel's buffers fill too.
        tokio::task::yield_now().await;
    }
    let Some(RequestError::Backlogged { queued, limit }) = backlogged else {
        panic!("no request was refused for want of room")
    };
    assert_eq!(limit, config.max_queued);
    assert!(
        queued + payload.len() > limit && queued <= limit,
        "{queued}"
    );

    // The peer reads nothing: past the write timeout the connection closes, freeing the
    // buffer, and says why.
    wait_until("the connection closes", || conn.is_closed()).await;
    wait_until("the out-buffer is freed", || conn.queued_len() == 0).await;
    let after = conn.request(header, &[b"late"], None).await;
    assert!(
        matches!(&after, Err(RequestError::Closed(r)) if r.contains("read nothing")),
        "{after:?}"
    );
    deaf.abort();
}

#[test]
fn a_large_frame_reserves_only_as_its_bytes_arrive() {
    let decoder = Decoder::new(wire::DEFAULT_MAX_FRAME);
    let total = wire::DEFAULT_MAX_FRAME;
    let mut whole = BytesMut::new();
    let payload = vec![1u8; total - wire::LENGTH_LEN - wire::HEADER_LEN];
    wire::encode(&mut whole, &Header::new(Kind::Response, 1), &payload);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&whole[..1024]);
    reserve_for_next(&decoder, &mut buf).expect("a valid start");
    assert!(
        buf.capacity() < 64 * 1024,
        "a 16 MiB frame of which 1 KiB arrived holds {} bytes",
        buf.capacity()
    );
    // As its bytes come, the buffer grows, never far past the frame's end.
    let mut reserves = 0;
    while buf.len() < whole.len() {
        let room = (buf.capacity() - buf.len()).min(whole.len() - buf.len());
        let at = buf.len();
        buf.extend_from_slice(&whole[at..at + room]);
        reserve_for_next(&decoder, &mut buf).expect("valid");
        reserves += 1;
    }
    assert!(buf.capacity() <= 2 * total, "{}", buf.capacity());
    assert!(reserves < 64, "{reserves} reserves: growth doubles");
    let frame = decoder.decode(&mut buf).expect("valid").expect("whole");
    assert_eq!(frame.payload.len(), payload.len());
}
