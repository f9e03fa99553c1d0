//! Run an app's services for tests: in one process over the wire ([`Cluster`]), or as
//! real processes of the app's binary ([`Processes`]).
//!
//! Owns: [`Cluster`], a set of instances that each host some services and talk to each
//! other over an in-memory network (or over TCP on 127.0.0.1). Promises: calls made inside
//! [`Cluster::run`] take the same path as in production — encoded, framed, sent, decoded,
//! served as a task — only the bytes stay in memory. Must not touch: the process default
//! router, so tests in one binary do not interfere.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use colony::testing::Cluster;
//!
//! // Two instances, each hosting every service of this binary (there are none here).
//! let cluster = Cluster::in_memory(&[&[], &[]]).await.expect("starts");
//! assert_eq!(cluster.addresses().len(), 2);
//! cluster.shutdown().await;
//! # }
//! ```

mod process;

use std::sync::Arc;

use tokio::sync::watch;

pub use process::{Process, Processes, wait_until};

use crate::call::{Peer, Router};
use crate::host::{Host, HostConfig, serve};
use crate::transport::{Dialer, MemoryNetwork, TcpDialer, TcpListener};

/// Make this process's store (`colony::store`) live in memory, gone with the process,
/// instead of in a file: call it at the start of a test, before the store is first used.
/// Whether the store is now in memory (`false` if it was already open on a file).
#[cfg(feature = "store")]
pub fn store_in_memory() -> bool {
    crate::store::open_in_memory()
}

/// Instances of this binary's services, in this process, talking over a transport.
pub struct Cluster {
    client: Arc<Router>,
    addresses: Vec<String>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    hosts: Vec<Arc<Host>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Start one instance per entry of `layout`, each hosting the services it names, on an
    /// in-memory network with no sockets.
    pub async fn in_memory(layout: &[&[&str]]) -> Result<Cluster, String> {
        let network = MemoryNetwork::new();
        let mut listeners = Vec::new();
        for i in 0..layout.len() {
            listeners.push(network.bind(&format!("mem-{i}")));
        }
        Cluster::start(layout, Arc::new(network), listeners, HostConfig::default()).await
    }

    /// Like [`Cluster::in_memory`], but over TCP on 127.0.0.1.
    pub async fn tcp(layout: &[&[&str]]) -> Result<Cluster, String> {
        let mut listeners = Vec::new();
        for _ in layout {
            listeners.push(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| format!("could not bind 127.0.0.1:0: {e}"))?,
            );
        }
        Cluster::start(
            layout,
            Arc::new(TcpDialer),
            listeners,
            HostConfig::default(),
        )
        .await
    }

    /// Start instances on the given listeners with the given host settings.
    pub async fn start<L: crate::transport::Listener>(
        layout: &[&[&str]],
        dialer: Arc<dyn Dialer>,
        listeners: Vec<L>,
        config: HostConfig,
    ) -> Result<Cluster, String> {
        let addresses: Vec<String> = listeners.iter().map(|l| l.local_addr()).collect();
        let peers: Vec<Peer> = layout
            .iter()
            .zip(&addresses)
            .flat_map(|(services, addr)| {
                services.iter().map(move |s| Peer {
                    pattern: (*s).to_owned(),
                    addr: addr.clone(),
                })
            })
            .collect();
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut hosts = Vec::new();
        for (services, listener) in layout.iter().zip(listeners) {
            let router = Router::builder(dialer.clone())
                .hosted(services.iter().copied())
                .peers(peers.iter().cloned())
                .build()?;
            let host = Host::new(services, router, config.clone())?;
            hosts.push(host.clone());
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(serve(listener, host, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })));
        }
        let client = Router::builder(dialer).peers(peers).build()?;
        Ok(Cluster {
            client,
            addresses,
            stop,
            tasks,
            hosts,
        })
    }

    /// The address of each instance, in layout order.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The host of instance `i`, to read its load.
    pub fn host(&self, i: usize) -> Option<&Arc<Host>> {
        self.hosts.get(i)
    }

    /// Run `fut` as a client of the cluster: the services it calls run on the instances.
    /// The returned future does not borrow the cluster, so it can be spawned.
    pub fn run<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> + use<F> {
        let ctx = crate::context::CallContext {
            router: Some(crate::context::Routing::new(self.client.clone())),
            ..Default::default()
        };
        crate::context::scope(ctx, fut)
    }

    /// Drain every instance and wait for them to stop.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
