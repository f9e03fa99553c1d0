//! Colony: the echo microservice, called remotely over TCP and co-located.
//!
//! Remote: a `Host` serving [`echo`] on its own runtime, and a client `Router` with that
//! host as the one peer. Every call made inside `with_router` is encoded with postcard,
//! framed, multiplexed on the router's one connection to the peer, and served there as a
//! task. Co-located: a router that hosts [`echo`] itself, so the call runs the body
//! directly; its cost is compared with a plain `async fn` in the same loop.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony::ServiceError;
use colony::control::transport::{TcpDialer, TcpListener};
use colony::control::{Host, HostConfig, Peer, Router, serve};

use crate::measure::{self, Client, Latency, Plan, Scope, median};

/// Echoes its argument.
#[colony::microservice]
pub(crate) async fn echo(payload: Vec<u8>) -> Result<Vec<u8>, ServiceError> {
    Ok(payload)
}

/// The same body as [`echo`], as an ordinary function: the baseline of a co-located call.
async fn plain_echo(payload: Vec<u8>) -> Result<Vec<u8>, ServiceError> {
    Ok(payload)
}

/// The full name of [`echo`].
pub(crate) const SERVICE: &str = concat!(module_path!(), "::echo");

/// Start a host serving [`echo`] on 127.0.0.1 on the current runtime; returns its address.
/// It serves until the runtime stops.
pub(crate) async fn start_server() -> measure::Result<String> {
    let router = Router::builder(Arc::new(TcpDialer))
        .hosted([SERVICE])
        .build()?;
    let host = Host::new(&[SERVICE], router, HostConfig::default())?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = colony::control::transport::Listener::local_addr(&listener);
    tokio::spawn(serve(listener, host, std::future::pending()));
    Ok(addr)
}

/// Calls [`echo`] through a router; clones share the router and so its connection.
#[derive(Debug, Clone)]
pub(crate) struct ColonyClient {
    router: Arc<Router>,
}

impl ColonyClient {
    /// A client whose calls go to the host at `addr`.
    pub(crate) fn remote(addr: &str) -> measure::Result<ColonyClient> {
        ColonyClient::remote_with(Arc::new(TcpDialer), addr)
    }

    /// A client whose calls go to the host at `addr`, through `dialer`.
    pub(crate) fn remote_with(
        dialer: Arc<dyn colony::control::transport::Dialer>,
        addr: &str,
    ) -> measure::Result<ColonyClient> {
        let router = Router::builder(dialer)
            .peer(Peer::parse(&format!("{SERVICE}={addr}"))?)
            .build()?;
        Ok(ColonyClient { router })
    }

    /// A client in the process that hosts [`echo`]: calls run the body directly.
    pub(crate) fn colocated() -> measure::Result<ColonyClient> {
        let router = Router::builder(Arc::new(TcpDialer))
            .hosted([SERVICE])
            .build()?;
        Ok(ColonyClient { router })
    }
}

impl Client for ColonyClient {
    async fn call(&mut self) -> measure::Result<()> {
        let reply = echo(measure::PAYLOAD.to_vec()).await?;
        measure::check(&reply)
    }

    fn scope(&self) -> Scope {
        Scope::Colony(self.router.clone())
    }
}

/// What a co-located call costs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Colocated {
    /// Per-call latency, each call timed on its own (clock reads included).
    pub(crate) latency: Latency,
    /// Nanoseconds per call of [`plain_echo`] in a tight loop (median of the rounds).
    pub(crate) plain_ns: f64,
    /// Nanoseconds per call of [`echo`] in the same loop (median of the rounds).
    pub(crate) colony_ns: f64,
}

impl Colocated {
    /// Colony's overhead over a plain call, ns.
    pub(crate) fn overhead_ns(&self) -> f64 {
        self.colony_ns - self.plain_ns
    }

    /// Calls per second on one thread. A co-located call never waits, so calls cannot
    /// overlap: this is the rate of the tight loop, not of 64 calls in flight.
    pub(crate) fn rps(&self) -> f64 {
        1e9 / self.colony_ns
    }
}

/// Measure co-located calls: per-call latency, then alternating tight loops of
/// [`plain_echo`] and [`echo`] inside the same router scope.
pub(crate) async fn colocated(plan: Plan) -> measure::Result<Colocated> {
    let client = ColonyClient::colocated()?;
    let latency = measure::latency(client.clone(), plan).await?;
    let (mut plain, mut colony) = (Vec::new(), Vec::new());
    client
        .scope()
        .run(async move {
            for _ in 0..plan.colocated_rounds {
                plain.push(per_call_ns(plan.colocated_calls, plain_echo).await?);
                colony.push(per_call_ns(plan.colocated_calls, echo).await?);
            }
            Ok(Colocated {
                latency,
                plain_ns: median(&mut plain),
                colony_ns: median(&mut colony),
            })
        })
        .await
}

/// Nanoseconds per call of `call` over `n` calls, each on a fresh copy of the payload.
async fn per_call_ns<F, Fut>(n: u64, mut call: F) -> measure::Result<f64>
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: Future<Output = Result<Vec<u8>, ServiceError>>,
{
    measure::check(&call(measure::PAYLOAD.to_vec()).await?)?;
    let payload = measure::PAYLOAD.to_vec();
    let started = Instant::now();
    for _ in 0..n {
        let reply = call(black_box(payload.clone())).await;
        let _ = black_box(reply);
    }
    let elapsed: Duration = started.elapsed();
    Ok(elapsed.as_nanos() as f64 / n as f64)
}

/// The median of each figure over several measurements, if there are any.
pub(crate) fn median_colocated(all: &[Colocated]) -> Option<Colocated> {
    let m = |f: fn(&Colocated) -> f64| median(&mut all.iter().map(f).collect::<Vec<_>>());
    (!all.is_empty()).then(|| Colocated {
        latency: Latency {
            p50_us: m(|c| c.latency.p50_us),
            p99_us: m(|c| c.latency.p99_us),
        },
        plain_ns: m(|c| c.plain_ns),
        colony_ns: m(|c| c.colony_ns),
    })
}
