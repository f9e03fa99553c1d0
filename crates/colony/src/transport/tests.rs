//! Tests of a connection's parked calls: deadlines, cancels, closing, and the slab's
//! request ids.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::connection::{Connection, ConnectionConfig, Handler, LocalIds, RequestError};
use super::in_flight::{Pending, SlotState};
use super::{Dialer, Listener, MemoryNetwork, lock};
use crate::wire::{self, Frame, Header, Hello, Kind};

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
