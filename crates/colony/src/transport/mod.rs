//! Connections: multiplexed, batched, and generic over the byte stream.
//!
//! Owns: the [`Dialer`] and [`Listener`] abstractions, the [`Stream`]s they open, and
//! [`Authenticated`] streams with the [`PeerIdentity`] they carry; the rest lives in
//! submodules by job: `tcp` and `memory` (the two built-in transports), `connection`
//! ([`Connection`], one per peer pair, with its reader and writer tasks) and `in_flight`
//! (the calls parked on a connection and their deadlines). Their public items are
//! re-exported here, so every path stays `transport::…` (and `colony::control::transport::…` outside).
//! Promises: every frame leaves through one writer task that batches whatever is queued
//! into one write; one reader task wakes each parked call by its request id; a connection
//! that sends a malformed or oversized frame is closed alone, with the reason logged; so is
//! one that stalls in the middle of a frame past `frame_read_timeout`, or reads nothing of
//! what waits for it past `write_timeout`; what waits to be written to a peer never passes
//! `max_queued` (see [`ConnectionConfig`] for the defaults).
//! Must not touch: the meaning of payloads (the `call` and `host` modules own that).
//!
//! Anything that is `AsyncRead + AsyncWrite` can carry a connection, so TLS wraps the TCP
//! stream in a [`Dialer`] and [`Listener`] (`crate::security`) without touching the rest.
//! A stream that proved who its peer is comes wrapped in [`Authenticated`]: the connection
//! then keeps the peer's [`PeerIdentity`], believes only the services the peer proved it
//! hosts, and tells the host which of its services the peer may call.

use std::any::Any;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use futures_util::future::BoxFuture;

mod connection;
mod in_flight;
mod memory;
mod tcp;
#[cfg(test)]
mod tests;

pub(crate) use connection::{Connection, HandshakeError};
pub use connection::{ConnectionConfig, DEFAULT_MAX_QUEUED};
pub(crate) use connection::{Handler, LocalIds, RequestError};
pub use memory::{MemoryListener, MemoryNetwork};
pub use tcp::{TcpDialer, TcpListener};

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
    fn dial(&self, addr: &str, expected: &[&str]) -> BoxFuture<'static, io::Result<BoxStream>>;
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
