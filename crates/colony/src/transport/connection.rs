//! One multiplexed connection to a peer: [`Connection`], with its reader and writer tasks.
//!
//! Owns: the handshake ([`Connection::establish`]), the shared out-buffer and the writer
//! task that drains it in one write per batch, the reader task that decodes frames and
//! hands each to the parked call it answers or to the [`Handler`] (the host), closing,
//! and cancelling a call whose caller gave up. Promises: no frame is sent after the
//! connection closed; closing fails every parked call with the reason; a malformed frame,
//! or a second handshake, closes this connection alone, with the reason logged; what waits
//! to be written never passes `max_queued` (requests past it fail, replies are dropped),
//! and a peer that reads none of it for `write_timeout`, or stalls mid-frame for
//! `frame_read_timeout`, is disconnected (see [`ConnectionConfig`]). Must not
//! touch: the meaning of payloads (`call` and `host` own that), or how parked calls are
//! kept and timed out (`in_flight` owns that).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::in_flight::{Pending, sweep_deadlines};
use super::{Authenticated, BoxStream, PeerIdentity, lock};
use crate::wire::{self, Decoder, Frame, Header, Hello, Kind, WireError};

/// Limits and timeouts of a connection.
///
/// Together they bound what a peer can make a connection hold: at most `max_frame` (and
/// only as much of it as has arrived) on the way in, at most `max_queued` on the way out,
/// and no longer than `frame_read_timeout` / `write_timeout` for a peer that stops in the
/// middle of a frame or stops reading.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// The largest frame accepted (header and payload); larger ones close the connection.
    /// Default [`wire::DEFAULT_MAX_FRAME`] (16 MiB). The read buffer grows as a frame's
    /// bytes arrive, never to what its header announces ahead of them.
    pub max_frame: usize,
    /// How long the peer has to complete the handshake. Default 5 s.
    pub handshake_timeout: Duration,
    /// The most bytes of frames waiting to be written to the peer (queued, and being
    /// written). Default 64 MiB. A request whose frame would pass it fails at once with
    /// `Unreachable` (nothing was sent; retryable); a reply, pong or cancel that would pass
    /// it is dropped (its caller's deadline ends that call). A frame larger than this can
    /// never be sent, so keep it above `max_frame`.
    pub max_queued: usize,
    /// How long frames may wait to be written while the peer reads nothing: past it, the
    /// connection closes (its queued frames are dropped and its calls fail). Default 30 s.
    /// A peer that reads slowly but steadily is not cut off: each write that makes progress
    /// starts the wait again.
    pub write_timeout: Duration,
    /// How long the rest of a frame may take once its first byte arrived: past it, the
    /// connection closes, with the reason logged. Default 30 s. An idle connection (between
    /// frames) has no such limit.
    pub frame_read_timeout: Duration,
}

/// The default of [`ConnectionConfig::max_queued`]: 64 MiB.
pub const DEFAULT_MAX_QUEUED: usize = 64 * 1024 * 1024;

/// How this build numbers its services, which the handshake maps to the peer's numbers.
/// The caller knows the service table; the transport does not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalIds {
    /// How many services this build has (ids are `0..count`).
    pub(crate) count: usize,
    /// The id of the service `name`, if this build has it.
    pub(crate) id_of: fn(&str) -> Option<u32>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_frame: wire::DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(5),
            max_queued: DEFAULT_MAX_QUEUED,
            write_timeout: Duration::from_secs(30),
            frame_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum HandshakeError {
    /// The stream failed.
    #[error("i/o error during the handshake: {0}")]
    Io(#[from] io::Error),
    /// The peer sent something that is not a Colony handshake.
    #[error("the peer is not speaking Colony's protocol: {0}")]
    Wire(#[from] WireError),
    /// The peer did not finish the handshake in time.
    #[error("the peer did not complete the handshake within {0:?}")]
    Timeout(Duration),
    /// The peer runs another build.
    #[error("build fingerprint mismatch: ours {ours}, theirs {theirs}")]
    Fingerprint {
        /// Ours.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: ours {ours}, theirs {theirs}")]
    Protocol {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
}

/// What a parked call receives: the reply frame, or why none will come.
pub(crate) type Reply = Result<Frame, String>;

/// Serves the requests that arrive on a connection. Implemented by the host.
pub(crate) trait Handler: Send + Sync + 'static {
    /// A request, ping or cancel arrived. Replies go through `conn`.
    fn on_frame(self: Arc<Self>, conn: &Connection, frame: Frame);
    /// The connection closed; abandon work that only it was waiting for.
    fn on_close(&self, conn: &Connection);
}

/// One multiplexed connection to a peer.
#[derive(Clone)]
pub(crate) struct Connection {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    /// A label for logs and errors: the peer's address.
    peer: String,
    /// The peer's handshake: its instance id and the services it hosts (on a dialed,
    /// authenticated stream, only those its credentials name).
    remote: Hello,
    /// Who the peer proved to be, when the stream is [`Authenticated`].
    identity: Option<PeerIdentity>,
    /// The peer's id for each service, by this build's service id (the peer runs the same
    /// build, but it may host, or be believed to host, only some services).
    remote_ids_by_local: Vec<Option<u32>>,
    /// Frames waiting for the writer task; appended by anyone, drained in one write.
    out: Mutex<BytesMut>,
    /// Bytes the writer took out of `out` and has not finished writing: they count
    /// against `max_queued` as well. Stored under `out`'s lock when a batch is taken.
    writing: AtomicUsize,
    /// The most bytes `out` and `writing` may hold together (`ConnectionConfig::max_queued`).
    max_queued: usize,
    /// How long the writer waits for the peer to read anything before closing.
    write_timeout: Duration,
    /// Whether a frame was dropped for want of room (logged once a connection).
    dropped: AtomicBool,
    /// Wakes the writer when `out` gains frames.
    out_ready: Notify,
    /// Parked calls, by the slot their request id names.
    pub(super) pending: Mutex<Pending>,
    /// Wakes the deadline sweeper: a call parked with a deadline earlier than its timer, or
    /// the connection closed.
    pub(super) sweep: Notify,
    /// Whether the deadline sweeper runs (it starts with the first call that has a deadline).
    sweeping: AtomicBool,
    /// Set once the connection is dead; no frame is sent after it.
    pub(super) closed: AtomicBool,
    /// Why it closed, for errors of calls that find it closed.
    close_reason: Mutex<Option<String>>,
    /// The peer asked for no new requests.
    going_away: AtomicBool,
    /// Wakes the reader for shutdown.
    shutdown: Notify,
    /// Set by the writer task when it has written everything and stopped.
    writer_done: AtomicBool,
    /// Signalled when `writer_done` is set.
    writer_exit: Notify,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.shared.peer)
            .field("instance", &self.shared.remote.instance)
            .finish_non_exhaustive()
    }
}

impl Connection {
    // Why this is long: the handshake reads, checks and answers in one sequence, each
    // refusal with its own message, before the shared state the tasks use can be built.
    /// Set up a connection: exchange handshakes, then start its reader and writer tasks.
    ///
    /// The dialing side (`dialer == true`) speaks first. Each side refuses a peer with
    /// another protocol version or build fingerprint.
    pub(crate) async fn establish(
        mut stream: BoxStream,
        peer: String,
        dialer: bool,
        local: &Hello,
        ids: LocalIds,
        config: ConnectionConfig,
        handler: Option<Arc<dyn Handler>>,
    ) -> Result<Connection, HandshakeError> {
        let identity = Authenticated::identity_of(&stream).cloned();
        let decoder = Decoder::new(config.max_frame);
        let mut buf = BytesMut::with_capacity(4096);
        let exchange = async {
            if dialer {
                send_hello(&mut stream, local).await?;
            }
            let frame = read_frame(&mut stream, &decoder, &mut buf).await?;
            let remote = match frame.header.kind {
                Kind::Hello => Hello::from_payload(&frame.payload)?,
                Kind::Fault => {
                    let reason = wire::decode_fault(&frame.payload)
                        .map(|e| e.to_string())
                        .unwrap_or_else(|e| e.to_string());
                    return Err(HandshakeError::Io(io::Error::other(reason)));
                }
                other => {
                    return Err(HandshakeError::Wire(WireError::Payload {
                        what: "handshake",
                        reason: format!("expected a Hello frame first, got {other:?}"),
                    }));
                }
            };
            let verdict = check_peer(local, &remote);
            if !dialer {
                // Answer with our own handshake even when refusing, so that the dialer sees
                // both fingerprints and can say which builds disagree.
                send_hello(&mut stream, local).await?;
            }
            verdict.map(|()| remote)
        };
        let mut remote = tokio::time::timeout(config.handshake_timeout, exchange)
            .await
            .map_err(|_| HandshakeError::Timeout(config.handshake_timeout))??;
        if let (true, Some(identity)) = (dialer, &identity) {
            // A peer serves only the services its credentials name, whatever it claims.
            let (proven, claimed): (Vec<_>, Vec<_>) = std::mem::take(&mut remote.services)
                .into_iter()
                .partition(|(name, _)| identity.is(name));
            if !claimed.is_empty() {
                let claimed: Vec<&str> = claimed.iter().map(|(n, _)| n.as_str()).collect();
                tracing::warn!(
                    %peer,
                    claimed = %claimed.join(","),
                    "the peer claims services its certificate does not name; not calling them there"
                );
            }
            remote.services = proven;
        }

        let mut remote_ids_by_local = vec![None; ids.count];
        for (name, id) in &remote.services {
            if let Some(slot) =
                (ids.id_of)(name).and_then(|local| remote_ids_by_local.get_mut(local as usize))
            {
                *slot = Some(*id);
            }
        }
        let shared = Arc::new(Shared {
            peer,
            remote,
            identity,
            remote_ids_by_local,
            out: Mutex::new(BytesMut::with_capacity(16 * 1024)),
            writing: AtomicUsize::new(0),
            max_queued: config.max_queued,
            write_timeout: config.write_timeout,
            dropped: AtomicBool::new(false),
            out_ready: Notify::new(),
            pending: Mutex::new(Pending::default()),
            sweep: Notify::new(),
            sweeping: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            close_reason: Mutex::new(None),
            going_away: AtomicBool::new(false),
            shutdown: Notify::new(),
            writer_done: AtomicBool::new(false),
            writer_exit: Notify::new(),
        });
        let conn = Connection { shared };
        let (reader, writer) = tokio::io::split(stream);
        tokio::spawn(write_loop(conn.clone(), writer));
        let stall = config.frame_read_timeout;
        tokio::spawn(read_loop(
            conn.clone(),
            reader,
            decoder,
            buf,
            stall,
            handler,
        ));
        Ok(conn)
    }

    /// The peer's address, as dialed or accepted.
    pub(crate) fn peer(&self) -> &str {
        &self.shared.peer
    }

    /// Who the peer proved to be, when its stream was [`Authenticated`].
    pub(crate) fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.shared.identity.as_ref()
    }

    /// The peer's instance id, from its handshake.
    pub(crate) fn remote_instance(&self) -> &str {
        &self.shared.remote.instance
    }

    /// The peer's id for the service whose id in this build is `local`, if it hosts it.
    pub(crate) fn remote_id_of(&self, local: u32) -> Option<u32> {
        self.shared
            .remote_ids_by_local
            .get(local as usize)
            .copied()
            .flatten()
    }

    /// The names of the services the peer hosts.
    pub(crate) fn remote_services(&self) -> impl Iterator<Item = &str> {
        self.shared.remote.services.iter().map(|(n, _)| n.as_str())
    }

    /// Whether the connection can still carry new calls.
    pub(crate) fn is_usable(&self) -> bool {
        !self.shared.closed.load(Ordering::Acquire)
            && !self.shared.going_away.load(Ordering::Acquire)
    }

    /// Whether the connection is dead.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Queue a frame for the writer. Returns false when it was not queued: the connection
    /// is closed, or its out-buffer is full (`max_queued`) and the frame is dropped.
    pub(crate) fn send(&self, header: &Header, payload: &[u8]) -> bool {
        self.send_parts(header, &[payload])
    }

    /// Queue a frame whose payload is the concatenation of `parts`; see [`Connection::send`].
    pub(crate) fn send_parts(&self, header: &Header, parts: &[&[u8]]) -> bool {
        match self.enqueue(header, parts) {
            Queued::Yes => true,
            Queued::Closed => false,
            Queued::Full { .. } => {
                if !self.shared.dropped.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        peer = %self.shared.peer,
                        limit = self.shared.max_queued,
                        "the peer reads slower than it is answered: dropping frames to it \
                         (logged once a connection)"
                    );
                }
                false
            }
        }
    }

    /// Append a frame to the out-buffer, if the connection is open and the buffer has room.
    fn enqueue(&self, header: &Header, parts: &[&[u8]]) -> Queued {
        if self.is_closed() {
            return Queued::Closed;
        }
        let len =
            wire::LENGTH_LEN + wire::HEADER_LEN + parts.iter().map(|p| p.len()).sum::<usize>();
        let was_empty = {
            let mut out = lock(&self.shared.out);
            let queued = out.len() + self.shared.writing.load(Ordering::Relaxed);
            if queued + len > self.shared.max_queued {
                return Queued::Full { queued };
            }
            let was_empty = out.is_empty();
            wire::encode_parts(&mut out, header, parts);
            was_empty
        };
        if was_empty {
            self.shared.out_ready.notify_one();
        }
        Queued::Yes
    }

    /// Bytes waiting to be written to the peer (queued, and being written).
    #[cfg(test)]
    pub(crate) fn queued_len(&self) -> usize {
        let out = lock(&self.shared.out);
        out.len() + self.shared.writing.load(Ordering::Relaxed)
    }

    /// Send a request and park until its reply, the connection's death, or `deadline`.
    ///
    /// Dropping the returned future cancels the call: the peer gets a `Cancel` frame, as it
    /// does when the deadline passes.
    pub(crate) async fn request(
        &self,
        mut header: Header,
        parts: &[&[u8]],
        deadline: Option<Instant>,
    ) -> Result<Frame, RequestError> {
        let (id, rearm) = lock(&self.shared.pending).park(deadline);
        if rearm {
            self.arm_sweeper();
        }
        header.request_id = id;
        let mut guard = Parked {
            conn: self,
            id,
            armed: true,
        };
        let refused = match self.enqueue(&header, parts) {
            Queued::Yes => None,
            Queued::Closed => Some(RequestError::Closed(self.close_reason())),
            Queued::Full { queued } => Some(RequestError::Backlogged {
                queued,
                limit: self.shared.max_queued,
            }),
        };
        if let Some(refused) = refused {
            guard.armed = false;
            lock(&self.shared.pending).abandon(id);
            return Err(refused);
        }
        let reply = std::future::poll_fn(|cx| lock(&self.shared.pending).poll(id, cx)).await;
        // A call that ran out of time stays armed: dropping the guard sends `Cancel`.
        guard.armed = matches!(reply, Err(RequestError::Deadline));
        reply
    }

    /// Wake the deadline sweeper, starting it if this is the first deadline it must keep.
    fn arm_sweeper(&self) {
        if self.shared.sweeping.swap(true, Ordering::AcqRel) {
            self.shared.sweep.notify_one();
        } else {
            tokio::spawn(sweep_deadlines(self.clone()));
        }
    }

    /// Tell the peer to send no new requests here.
    pub(crate) fn go_away(&self) {
        self.send(&Header::new(Kind::GoAway, 0), &[]);
    }

    /// Close the connection, failing every parked call with `reason`.
    pub(crate) fn close(&self, reason: &str) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&self.shared.close_reason).get_or_insert_with(|| reason.to_owned());
        let wakers = lock(&self.shared.pending).fail_all(reason);
        wakers.into_iter().for_each(Waker::wake);
        self.shared.sweep.notify_one();
        self.shared.shutdown.notify_one();
        self.shared.out_ready.notify_one();
    }

    /// Close the connection after writing every frame already queued (replies included),
    /// waiting for that at most `within`.
    pub(crate) async fn close_after_flush(&self, reason: &str, within: Duration) {
        self.close(reason);
        let flushed = async {
            loop {
                let exited = self.shared.writer_exit.notified();
                if self.shared.writer_done.load(Ordering::Acquire) {
                    return;
                }
                exited.await;
            }
        };
        let _ = tokio::time::timeout(within, flushed).await;
    }

    fn close_reason(&self) -> String {
        lock(&self.shared.close_reason)
            .clone()
            .unwrap_or_else(|| "connection closed".to_owned())
    }

    fn complete(&self, frame: Frame) {
        let id = frame.header.request_id;
        // A reply for an unknown id is for a call that was cancelled or timed out: dropped.
        let waker = lock(&self.shared.pending).complete(id, Ok(frame));
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Why a request got no reply frame.
#[derive(Debug)]
pub(crate) enum RequestError {
    /// The connection closed (with the reason) before the reply.
    Closed(String),
    /// The deadline passed.
    Deadline,
    /// Nothing was sent: the connection's out-buffer holds `queued` bytes the peer has not
    /// read yet, and this frame would take it past `limit` (`ConnectionConfig::max_queued`).
    Backlogged {
        /// Bytes waiting to be written.
        queued: usize,
        /// The limit.
        limit: usize,
    },
}

/// Whether [`Connection::enqueue`] queued a frame.
enum Queued {
    Yes,
    /// The connection is closed.
    Closed,
    /// The out-buffer, holding `queued` bytes, has no room for the frame.
    Full {
        queued: usize,
    },
}

/// A parked call; dropping it before its reply unparks it and cancels the remote work.
struct Parked<'a> {
    conn: &'a Connection,
    id: u64,
    armed: bool,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        if self.armed {
            let was_parked = lock(&self.conn.shared.pending).abandon(self.id);
            if was_parked {
                self.conn.send(&Header::new(Kind::Cancel, self.id), &[]);
            }
        }
    }
}

async fn send_hello(stream: &mut BoxStream, hello: &Hello) -> io::Result<()> {
    let mut out = BytesMut::new();
    wire::encode(&mut out, &Header::new(Kind::Hello, 0), &hello.to_payload());
    stream.write_all(&out).await?;
    stream.flush().await
}

async fn read_frame(
    stream: &mut BoxStream,
    decoder: &Decoder,
    buf: &mut BytesMut,
) -> Result<Frame, HandshakeError> {
    loop {
        let decoded = decoder
            .decode(buf)
            .and_then(|frame| reserve_for_next(decoder, buf).map(|()| frame));
        match decoded {
            Ok(Some(frame)) => return Ok(frame),
            Ok(None) => {}
            // A TLS record (handshake 22 or alert 21, version 3.x) where a frame should be.
            Err(_) if matches!(buf.get(..2), Some([21 | 22, 3])) => {
                return Err(HandshakeError::Wire(WireError::Payload {
                    what: "handshake",
                    reason: "the peer speaks TLS and this process does not: turn TLS on here \
                             (unset COLONY_TLS=off, or `security = \"off\"` in colony.toml)"
                        .to_owned(),
                }));
            }
            Err(e) => return Err(e.into()),
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(HandshakeError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection during the handshake",
            )));
        }
    }
}

/// Make room in `buf` for the next read: at least 8 KiB, and for a frame that has begun, as
/// much again as has arrived, up to its announced end. So a peer that announces a large
/// frame and stalls makes the buffer hold about what it sent, not what it announced, while
/// a large frame that does arrive costs amortised doubling, as a `Vec` does.
pub(super) fn reserve_for_next(decoder: &Decoder, buf: &mut BytesMut) -> Result<(), WireError> {
    const MIN_READ: usize = 8192;
    let want = match decoder.pending_len(buf)? {
        Some(total) if total > buf.len() => (total - buf.len()).min(buf.len().max(MIN_READ)),
        _ => 0,
    };
    buf.reserve(want.max(MIN_READ));
    Ok(())
}

fn check_peer(local: &Hello, remote: &Hello) -> Result<(), HandshakeError> {
    if remote.protocol != local.protocol {
        return Err(HandshakeError::Protocol {
            ours: local.protocol,
            theirs: remote.protocol,
        });
    }
    if remote.fingerprint != local.fingerprint {
        return Err(HandshakeError::Fingerprint {
            ours: local.fingerprint.clone(),
            theirs: remote.fingerprint.clone(),
        });
    }
    Ok(())
}

async fn write_loop(conn: Connection, mut writer: tokio::io::WriteHalf<BoxStream>) {
    let shared = &conn.shared;
    let mut spare = BytesMut::with_capacity(16 * 1024);
    let mut yielded = false;
    let failed = loop {
        let batch = {
            let mut out = lock(&shared.out);
            spare.clear();
            let batch = std::mem::replace(&mut *out, std::mem::take(&mut spare));
            shared.writing.store(batch.len(), Ordering::Relaxed);
            batch
        };
        if batch.is_empty() {
            if shared.closed.load(Ordering::Acquire) {
                break false;
            }
            if !yielded {
                // Let tasks that are about to queue a frame do so, so that they share this
                // write instead of each paying for a syscall of its own.
                yielded = true;
                tokio::task::yield_now().await;
                spare = batch;
                continue;
            }
            yielded = false;
            spare = batch;
            shared.out_ready.notified().await;
            continue;
        }
        yielded = false;
        if let Err(reason) = write_batch(&mut writer, &batch, shared.write_timeout).await {
            let reason = format!("write to {} failed: {reason}", shared.peer);
            tracing::warn!(peer = %shared.peer, "closing connection: {reason}");
            conn.close(&reason);
            break true;
        }
        shared.writing.store(0, Ordering::Relaxed);
        // Keep the buffer for the next batch, unless a burst made it large.
        spare = if batch.capacity() > KEEP_BUFFER {
            BytesMut::with_capacity(16 * 1024)
        } else {
            batch
        };
    };
    if failed {
        // Nobody will read what is queued: free it now rather than with the last handle.
        drop(std::mem::take(&mut *lock(&shared.out)));
        shared.writing.store(0, Ordering::Relaxed);
    } else {
        // A peer that reads nothing could hold a TLS close up: bound it too.
        let _ = tokio::time::timeout(shared.write_timeout, writer.shutdown()).await;
    }
    shared.writer_done.store(true, Ordering::Release);
    shared.writer_exit.notify_waiters();
}

/// An out-buffer whose capacity passed this after a burst is given back once written.
const KEEP_BUFFER: usize = 1024 * 1024;

/// Write `batch` whole, failing when the peer reads nothing of it for `timeout`.
///
/// A write the socket takes at once (the usual case) arms no timer.
async fn write_batch(
    writer: &mut tokio::io::WriteHalf<BoxStream>,
    batch: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let mut written = 0;
    while written < batch.len() {
        let mut write = std::pin::pin!(writer.write(&batch[written..]));
        let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
        let wrote = match first {
            Poll::Ready(wrote) => wrote,
            Poll::Pending => tokio::time::timeout(timeout, write).await.map_err(|_| {
                format!(
                    "the peer read nothing for {timeout:?} with {} bytes waiting for it",
                    batch.len() - written
                )
            })?,
        };
        match wrote {
            Ok(0) => return Err("the stream accepts no more bytes".to_owned()),
            Ok(n) => written += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

async fn read_loop(
    conn: Connection,
    mut reader: tokio::io::ReadHalf<BoxStream>,
    decoder: Decoder,
    mut buf: BytesMut,
    frame_read_timeout: Duration,
    handler: Option<Arc<dyn Handler>>,
) {
    // Armed when a frame has begun and not ended: the rest must come before it fires.
    let stall = tokio::time::sleep(Duration::ZERO);
    let mut stall = std::pin::pin!(stall);
    let mut in_frame = false;
    let reason = loop {
        let mut completed = false;
        let decoded = loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    completed = true;
                    dispatch(&conn, frame, &handler);
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = decoded.and_then(|()| reserve_for_next(&decoder, &mut buf)) {
            tracing::warn!(peer = %conn.peer(), error = %e, "closing connection: malformed input");
            break format!("the peer sent a malformed frame: {e}");
        }
        if buf.is_empty() {
            in_frame = false;
        } else if completed || !in_frame {
            // A new frame began with the bytes just read.
            in_frame = true;
            let deadline = tokio::time::Instant::now() + frame_read_timeout;
            stall.as_mut().reset(deadline);
        }
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break "the peer closed the connection".to_owned(),
                Ok(_) => {}
                Err(e) => break format!("read failed: {e}"),
            },
            _ = conn.shared.shutdown.notified() => break conn.close_reason(),
            () = &mut stall, if in_frame => {
                let reason = format!(
                    "the peer sent {} bytes of a frame and not the rest within {frame_read_timeout:?}",
                    buf.len()
                );
                tracing::warn!(peer = %conn.peer(), "closing connection: {reason}");
                break reason;
            }
        }
    };
    conn.close(&reason);
    if let Some(h) = &handler {
        h.on_close(&conn);
    }
}

fn dispatch(conn: &Connection, frame: Frame, handler: &Option<Arc<dyn Handler>>) {
    match frame.header.kind {
        Kind::Response | Kind::Error | Kind::Fault | Kind::Pong => conn.complete(frame),
        Kind::GoAway => conn.shared.going_away.store(true, Ordering::Release),
        Kind::Request | Kind::Cancel | Kind::Ping => match handler {
            Some(h) => h.clone().on_frame(conn, frame),
            None if frame.header.kind == Kind::Ping => {
                conn.send(&Header::new(Kind::Pong, frame.header.request_id), &[]);
            }
            None if frame.header.kind == Kind::Request => {
                let fault = crate::CallError::Protocol {
                    reason: "this connection serves no services".to_owned(),
                };
                let mut h = Header::new(Kind::Fault, frame.header.request_id);
                h.service = frame.header.service;
                conn.send(&h, &wire::encode_fault(&fault));
            }
            None => {}
        },
        Kind::Hello => {
            tracing::warn!(peer = %conn.peer(), "closing connection: a second handshake arrived");
            conn.close("the peer sent a second handshake");
        }
    }
}
