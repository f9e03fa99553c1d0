//! The in-memory transport: a [`MemoryNetwork`] of named listeners, dialed without sockets.
//!
//! Owns: the table of listeners by name and the duplex pipes that stand in for sockets.
//! Promises: dialing a name that nobody listens on fails as a refused connection would, so
//! tests see the same errors as over TCP. Must not touch: frames or handshakes; it is for
//! tests and `colony::testing`, never for production traffic.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::{AcceptFuture, BoxStream, Dialer, Listener, lock};
use futures_util::future::BoxFuture;

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
    fn dial(&self, addr: &str, _expected: &[&str]) -> BoxFuture<'static, io::Result<BoxStream>> {
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
#[derive(Debug)]
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
