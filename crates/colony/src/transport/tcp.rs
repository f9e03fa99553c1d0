//! The TCP transport: [`TcpDialer`] and [`TcpListener`].
//!
//! Owns: opening and accepting plain TCP streams. Promises: every stream it hands out has
//! `TCP_NODELAY` set, since a connection batches its own writes and Nagle's algorithm
//! would only delay them. Must not touch: frames, handshakes or encryption (TLS wraps these
//! streams in `crate::security`).

use std::io;

use super::{AcceptFuture, BoxStream, Dialer, Listener};
use futures_util::future::BoxFuture;

/// Dials over TCP with `TCP_NODELAY`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, addr: &str, _expected: &[&str]) -> BoxFuture<'static, io::Result<BoxStream>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

/// Accepts TCP connections, setting `TCP_NODELAY` on each.
#[derive(Debug)]
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
