//! Connections: multiplexed, batched, and generic over the byte stream.
//!
//! Owns: [`Connection`] (one per peer pair, carrying any number of concurrent calls), the
//! [`Dialer`] and [`Listener`] abstractions, and their TCP and in-memory implementations.
//! Promises: every frame leaves through one writer task that batches whatever is queued
//! into one write; one reader task wakes each parked call by its request id; a connection
//! that sends a malformed or oversized frame is closed alone, with the reason logged.
//! Must not touch: the meaning of payloads (the `call` and `host` modules own that).
//!
//! Anything that is `AsyncRead + AsyncWrite` can carry a connection, so TLS wraps the TCP
//! stream in a [`Dialer`] and [`Listener`] (`crate::security`) without touching the rest.
//! A stream that proved who its peer is comes wrapped in [`Authenticated`]: the connection
//! then keeps the peer's [`PeerIdentity`], believes only the services the peer proved it
//! hosts, and tells the host which of its services the peer may call.

use std::any::Any;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Notify, mpsc};

use crate::service::BoxFuture;
use crate::wire::{self, Decoder, Frame, Header, Hello, Kind, WireError};

/// A byte stream that can carry a connection.
///
/// It is [`Any`] so that a connection can find out whether the stream is [`Authenticated`].
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + Any {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + Any> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

/// Opens byte streams to peers by address.
pub trait Dialer: Send + Sync + 'static {
    /// Open a stream to `addr`, where the caller expects the services named in `expected`.
    ///
    /// A dialer that authenticates its peers (TLS) refuses a peer that does not prove it
    /// hosts every service in `expected`; others ignore it.
    fn dial(&self, addr: &str, expected: &[&str]) -> BoxFuture<io::Result<BoxStream>>;
}

/// Who the peer of a connection proved to be, as its transport authenticated it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerIdentity {
    /// The names the peer's credentials carry: the services it hosts, or a role such as
    /// `@client`. A dialer believes the peer hosts only these services.
    pub names: Vec<String>,
    /// The services of this side that the peer may call (from allow-lists); `None`: all.
    pub may_call: Option<Vec<String>>,
}

impl PeerIdentity {
    /// A peer that proved `names`, allowed to call every service of this side.
    pub fn new(names: Vec<String>) -> PeerIdentity {
        PeerIdentity {
            names,
            may_call: None,
        }
    }

    /// Restrict the services of this side that the peer may call.
    pub fn may_call_only(mut self, services: Vec<String>) -> PeerIdentity {
        self.may_call = Some(services);
        self
    }

    /// Whether the peer proved the name `name`.
    pub fn is(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.names.is_empty() {
            return f.write_str("(no identity)");
        }
        f.write_str(&self.names.join(", "))
    }
}

/// A stream whose peer proved who it is; [`Dialer`]s and [`Listener`]s that authenticate
/// return their streams wrapped in it.
pub struct Authenticated {
    stream: BoxStream,
    identity: PeerIdentity,
}

impl std::fmt::Debug for Authenticated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticated")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Authenticated {
    /// Wrap `stream`, whose peer proved `identity`.
    pub fn new(stream: BoxStream, identity: PeerIdentity) -> Authenticated {
        Authenticated { stream, identity }
    }

    /// Who the peer is.
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// The identity of the peer behind `stream`, if the stream is authenticated.
    pub fn identity_of(stream: &BoxStream) -> Option<&PeerIdentity> {
        let any: &dyn Any = &**stream;
        any.downcast_ref::<Authenticated>().map(|a| &a.identity)
    }
}

impl AsyncRead for Authenticated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Authenticated {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What [`Listener::accept`] returns.
pub type AcceptFuture<'a> =
    std::pin::Pin<Box<dyn Future<Output = io::Result<(BoxStream, String)>> + Send + 'a>>;

/// Accepts byte streams from peers.
pub trait Listener: Send + 'static {
    /// Wait for the next stream, with a label for its peer.
    fn accept(&mut self) -> AcceptFuture<'_>;
    /// The address peers dial to reach this listener.
    fn local_addr(&self) -> String;
}

impl<L: Listener + ?Sized> Listener for Box<L> {
    fn accept(&mut self) -> AcceptFuture<'_> {
        (**self).accept()
    }

    fn local_addr(&self) -> String {
        (**self).local_addr()
    }
}

/// Dials over TCP with `TCP_NODELAY`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, addr: &str, _expected: &[&str]) -> BoxFuture<io::Result<BoxStream>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

/// Accepts TCP connections, setting `TCP_NODELAY` on each.
pub struct TcpListener {
    inner: tokio::net::TcpListener,
    addr: String,
}

impl TcpListener {
    /// Bind `addr` (use port 0 for any free port).
    pub async fn bind(addr: &str) -> io::Result<TcpListener> {
        let inner = tokio::net::TcpListener::bind(addr).await?;
        let addr = inner.local_addr()?.to_string();
        Ok(TcpListener { inner, addr })
    }

    /// Wrap a listener bound elsewhere.
    pub fn from_tokio(inner: tokio::net::TcpListener) -> io::Result<TcpListener> {
        let addr = inner.local_addr()?.to_string();
        Ok(TcpListener { inner, addr })
    }
}

impl Listener for TcpListener {
    fn accept(&mut self) -> AcceptFuture<'_> {
        Box::pin(async move {
            let (stream, peer) = self.inner.accept().await?;
            stream.set_nodelay(true)?;
            Ok((Box::new(stream) as BoxStream, peer.to_string()))
        })
    }

    fn local_addr(&self) -> String {
        self.addr.clone()
    }
}

/// An in-memory network: listeners bound by name, dialed without sockets. For tests.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    listeners: Arc<Mutex<HashMap<String, mpsc::Sender<tokio::io::DuplexStream>>>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNetwork").finish_non_exhaustive()
    }
}

impl MemoryNetwork {
    /// A new, empty network.
    pub fn new() -> MemoryNetwork {
        MemoryNetwork::default()
    }

    /// Listen on `name`; a later bind of the same name replaces this one.
    pub fn bind(&self, name: &str) -> MemoryListener {
        let (tx, rx) = mpsc::channel(64);
        lock(&self.listeners).insert(name.to_owned(), tx);
        MemoryListener {
            name: name.to_owned(),
            incoming: rx,
            dialed: AtomicU64::new(0),
        }
    }

    /// Remove `name`, so that dialing it fails as a refused connection would.
    pub fn unbind(&self, name: &str) {
        lock(&self.listeners).remove(name);
    }
}

impl Dialer for MemoryNetwork {
    fn dial(&self, addr: &str, _expected: &[&str]) -> BoxFuture<io::Result<BoxStream>> {
        let target = lock(&self.listeners).get(addr).cloned();
        Box::pin(async move {
            let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, "no listener");
            let target = target.ok_or_else(refused)?;
            let (ours, theirs) = tokio::io::duplex(256 * 1024);
            target.send(theirs).await.map_err(|_| refused())?;
            Ok(Box::new(ours) as BoxStream)
        })
    }
}

/// The listening end of a [`MemoryNetwork`] name.
pub struct MemoryListener {
    name: String,
    incoming: mpsc::Receiver<tokio::io::DuplexStream>,
    dialed: AtomicU64,
}

impl Listener for MemoryListener {
    fn accept(&mut self) -> AcceptFuture<'_> {
        let n = self.dialed.fetch_add(1, Ordering::Relaxed);
        let label = format!("{}#{n}", self.name);
        Box::pin(async move {
            match self.incoming.recv().await {
                Some(stream) => Ok((Box::new(stream) as BoxStream, label)),
                None => Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "network closed",
                )),
            }
        })
    }

    fn local_addr(&self) -> String {
        self.name.clone()
    }
}

/// Limits and timeouts of a connection.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// The largest frame accepted (header and payload); larger ones close the connection.
    pub max_frame: usize,
    /// How long the peer has to complete the handshake.
    pub handshake_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_frame: wire::DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
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
pub struct Connection {
    shared: Arc<Shared>,
}

struct Shared {
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
    /// Wakes the writer when `out` gains frames.
    out_ready: Notify,
    /// Parked calls, by the slot their request id names.
    pending: Mutex<Pending>,
    /// Wakes the deadline sweeper: a call parked with a deadline earlier than its timer, or
    /// the connection closed.
    sweep: Notify,
    /// Whether the deadline sweeper runs (it starts with the first call that has a deadline).
    sweeping: AtomicBool,
    /// Set once the connection is dead; no frame is sent after it.
    closed: AtomicBool,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    /// Set up a connection: exchange handshakes, then start its reader and writer tasks.
    ///
    /// The dialing side (`dialer == true`) speaks first. Each side refuses a peer with
    /// another protocol version or build fingerprint.
    pub(crate) async fn establish(
        mut stream: BoxStream,
        peer: String,
        dialer: bool,
        local: &Hello,
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

        let mut remote_ids_by_local = vec![None; crate::service::registry().len()];
        for (name, id) in &remote.services {
            if let Some(entry) = crate::service::find(name) {
                remote_ids_by_local[entry.id() as usize] = Some(*id);
            }
        }
        let shared = Arc::new(Shared {
            peer,
            remote,
            identity,
            remote_ids_by_local,
            out: Mutex::new(BytesMut::with_capacity(16 * 1024)),
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
        tokio::spawn(read_loop(conn.clone(), reader, decoder, buf, handler));
        Ok(conn)
    }

    /// The peer's address, as dialed or accepted.
    pub fn peer(&self) -> &str {
        &self.shared.peer
    }

    /// Who the peer proved to be, when its stream was [`Authenticated`].
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.shared.identity.as_ref()
    }

    /// The peer's instance id, from its handshake.
    pub fn remote_instance(&self) -> &str {
        &self.shared.remote.instance
    }

    /// The peer's id for service `name`, if it hosts it.
    pub fn remote_service_id(&self, name: &str) -> Option<u32> {
        // The peer runs this build (the handshake checked), so it names services alike.
        crate::service::find(name).and_then(|entry| self.remote_id_of(entry.id()))
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
    pub fn remote_services(&self) -> impl Iterator<Item = &str> {
        self.shared.remote.services.iter().map(|(n, _)| n.as_str())
    }

    /// Whether the connection can still carry new calls.
    pub fn is_usable(&self) -> bool {
        !self.shared.closed.load(Ordering::Acquire)
            && !self.shared.going_away.load(Ordering::Acquire)
    }

    /// Whether the connection is dead.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Queue a frame for the writer. Returns false when the connection is closed.
    pub(crate) fn send(&self, header: &Header, payload: &[u8]) -> bool {
        self.send_parts(header, &[payload])
    }

    /// Queue a frame whose payload is the concatenation of `parts`.
    pub(crate) fn send_parts(&self, header: &Header, parts: &[&[u8]]) -> bool {
        if self.is_closed() {
            return false;
        }
        let was_empty = {
            let mut out = lock(&self.shared.out);
            let was_empty = out.is_empty();
            wire::encode_parts(&mut out, header, parts);
            was_empty
        };
        if was_empty {
            self.shared.out_ready.notify_one();
        }
        true
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
        if !self.send_parts(&header, parts) {
            guard.armed = false;
            lock(&self.shared.pending).abandon(id);
            return Err(RequestError::Closed(self.close_reason()));
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
    pub fn close(&self, reason: &str) {
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

/// The calls parked on a connection: a slab of slots, so that parking and completing a
/// call costs no allocation once the connection has warmed up.
///
/// A request id is the slot's index in its low 32 bits and the slot's generation in its
/// high 32 bits, so that a late reply to an abandoned call never completes the slot's next
/// call.
///
/// Deadlines take no timer per call: one sweeper task per connection sleeps until the
/// earliest deadline it knows of (`next_sweep`), fails the calls whose deadline has passed,
/// and sleeps again. A call parked with an earlier deadline wakes it to re-arm.
#[derive(Default)]
struct Pending {
    slots: Vec<Slot>,
    /// Indices of free slots.
    free: Vec<u32>,
    /// When the sweeper's timer fires; `None` while it waits for a deadline to keep.
    next_sweep: Option<Instant>,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    /// When the call runs out of time.
    deadline: Option<Instant>,
    state: SlotState,
}

#[derive(Default)]
enum SlotState {
    #[default]
    Free,
    /// A call waits; the waker of its last poll.
    Waiting(Option<Waker>),
    /// Its reply came (or the connection died); the call takes it at its next poll.
    Done(Reply),
    /// Its deadline passed with no reply.
    Expired,
}

impl Pending {
    /// Take a slot for a new call that must end by `deadline`. Returns the call's request
    /// id, and whether the sweeper must re-arm for this deadline.
    fn park(&mut self, deadline: Option<Instant>) -> (u64, bool) {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.deadline = deadline;
        slot.state = SlotState::Waiting(None);
        let id = (u64::from(slot.generation) << 32) | u64::from(index);
        let rearm = deadline.is_some_and(|d| self.next_sweep.is_none_or(|next| d < next));
        if rearm {
            self.next_sweep = deadline;
        }
        (id, rearm)
    }

    fn slot(&mut self, id: u64) -> Option<&mut Slot> {
        let slot = self.slots.get_mut((id & 0xffff_ffff) as usize)?;
        (u64::from(slot.generation) == id >> 32).then_some(slot)
    }

    fn release(&mut self, id: u64) {
        if let Some(slot) = self.slot(id)
            && !matches!(slot.state, SlotState::Free)
        {
            slot.state = SlotState::Free;
            self.free.push((id & 0xffff_ffff) as u32);
        }
    }

    /// Poll call `id` for its reply.
    fn poll(&mut self, id: u64, cx: &mut Context<'_>) -> Poll<Result<Frame, RequestError>> {
        let abandoned = || RequestError::Closed("the call was abandoned".to_owned());
        let Some(slot) = self.slot(id) else {
            return Poll::Ready(Err(abandoned()));
        };
        match &mut slot.state {
            SlotState::Waiting(waker) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            // Left in place, so that the caller's guard sees it and cancels the call.
            SlotState::Expired => Poll::Ready(Err(RequestError::Deadline)),
            SlotState::Done(_) => {
                let SlotState::Done(reply) = std::mem::take(&mut slot.state) else {
                    unreachable!("matched Done above");
                };
                self.release(id);
                Poll::Ready(reply.map_err(RequestError::Closed))
            }
            SlotState::Free => Poll::Ready(Err(abandoned())),
        }
    }

    /// Give call `id` its reply; returns the waker to wake once the lock is released.
    fn complete(&mut self, id: u64, reply: Reply) -> Option<Waker> {
        let slot = self.slot(id)?;
        match std::mem::replace(&mut slot.state, SlotState::Done(reply)) {
            SlotState::Waiting(waker) => waker,
            other => {
                // Not waiting (a duplicate or late reply): leave the slot as it was.
                slot.state = other;
                None
            }
        }
    }

    /// Forget call `id` (its caller gave up). Returns whether the peer may still be working
    /// on it: the call was waiting, or its deadline passed before any reply.
    fn abandon(&mut self, id: u64) -> bool {
        let working = self
            .slot(id)
            .is_some_and(|s| matches!(s.state, SlotState::Waiting(_) | SlotState::Expired));
        self.release(id);
        working
    }

    /// Expire the waiting calls whose deadline is not after `now`, and set the next sweep
    /// to the earliest deadline left. Returns the wakers of the expired calls.
    fn expire(&mut self, now: Instant) -> Vec<Waker> {
        let mut wakers = Vec::new();
        let mut next: Option<Instant> = None;
        for slot in &mut self.slots {
            let (SlotState::Waiting(waker), Some(deadline)) = (&mut slot.state, slot.deadline)
            else {
                continue;
            };
            if deadline <= now {
                wakers.extend(waker.take());
                slot.state = SlotState::Expired;
            } else if next.is_none_or(|n| deadline < n) {
                next = Some(deadline);
            }
        }
        self.next_sweep = next;
        wakers
    }

    /// Fail every waiting call with `reason`; returns their wakers.
    fn fail_all(&mut self, reason: &str) -> Vec<Waker> {
        let mut wakers = Vec::new();
        for slot in &mut self.slots {
            if let SlotState::Waiting(waker) = &mut slot.state {
                wakers.extend(waker.take());
                slot.state = SlotState::Done(Err(reason.to_owned()));
            }
        }
        self.next_sweep = None;
        wakers
    }
}

/// Fail the calls on `conn` whose deadline passes, until the connection closes.
async fn sweep_deadlines(conn: Connection) {
    let shared = &conn.shared;
    loop {
        let woken = shared.sweep.notified();
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        let next = lock(&shared.pending).next_sweep;
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = woken => continue,
                }
            }
            None => {
                woken.await;
                continue;
            }
        }
        let wakers = lock(&shared.pending).expire(Instant::now());
        wakers.into_iter().for_each(Waker::wake);
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

fn reserve_for_next(decoder: &Decoder, buf: &mut BytesMut) -> Result<(), WireError> {
    let want = decoder.pending_len(buf)?.unwrap_or(0).max(buf.len() + 8192);
    buf.reserve(want - buf.len());
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
    loop {
        let batch = {
            let mut out = lock(&shared.out);
            spare.clear();
            std::mem::replace(&mut *out, std::mem::take(&mut spare))
        };
        if batch.is_empty() {
            if shared.closed.load(Ordering::Acquire) {
                break;
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
        if let Err(e) = writer.write_all(&batch).await {
            conn.close(&format!("write to {} failed: {e}", shared.peer));
            break;
        }
        spare = batch;
    }
    let _ = writer.shutdown().await;
    shared.writer_done.store(true, Ordering::Release);
    shared.writer_exit.notify_waiters();
}

async fn read_loop(
    conn: Connection,
    mut reader: tokio::io::ReadHalf<BoxStream>,
    decoder: Decoder,
    mut buf: BytesMut,
    handler: Option<Arc<dyn Handler>>,
) {
    let reason = loop {
        let decoded = loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => dispatch(&conn, frame, &handler),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = decoded.and_then(|()| reserve_for_next(&decoder, &mut buf)) {
            tracing::warn!(peer = %conn.peer(), error = %e, "closing connection: malformed input");
            break format!("the peer sent a malformed frame: {e}");
        }
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break "the peer closed the connection".to_owned(),
                Ok(_) => {}
                Err(e) => break format!("read failed: {e}"),
            },
            _ = conn.shared.shutdown.notified() => break conn.close_reason(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
            let conn = Connection::establish(stream, peer, false, &hello("b"), config, {
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
}
