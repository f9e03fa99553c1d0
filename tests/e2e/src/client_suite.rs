//! `colony::client` against instances on 127.0.0.1: typed and JSON calls, and the retry at
//! the outermost scope when the instance serving a request dies mid-call.
//!
//! Each instance sits behind a TCP proxy that the test can cut: cutting it is what a
//! `kill -9` looks like from the client (connections drop, new ones are refused).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use colony::client::Client;
use colony::control::Peer;
use colony::testing::Cluster;
use colony::{Error, ErrorKind, ServiceError};
use tokio::sync::watch;

use crate::services::shop::{self, ops};

const NAP: &str = "colony_e2e::services::shop::ops::nap";
const SHOP: &[&str] = &[
    "colony_e2e::services::shop::price",
    "colony_e2e::services::shop::unit_price",
    "colony_e2e::services::shop::whoami",
    "colony_e2e::services::shop::seen",
    "colony_e2e::services::shop::ops::fail",
];

/// A TCP proxy to one instance, which the test can cut.
struct Proxy {
    addr: String,
    cut: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("addr").to_string();
        let (cut, mut is_cut) = watch::channel(false);
        let watch = is_cut.clone();
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = is_cut.changed() => return, // drops the listener: refused from now on
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => return,
                    },
                };
                let upstream = upstream.clone();
                let mut is_cut = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = is_cut.changed() => {} // drops both ends mid-call
                    }
                });
            }
        });
        Proxy { addr, cut }
    }

    fn cut(&self) {
        let _ = self.cut.send(true);
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two instances of `nap`, each behind a proxy, and a client of the proxies.
async fn two_naps() -> (Cluster, Vec<Proxy>, Client) {
    let cluster = Cluster::tcp(&[&[NAP], &[NAP]]).await.expect("starts");
    let mut proxies = Vec::new();
    for addr in cluster.addresses() {
        proxies.push(Proxy::start(addr.clone()).await);
    }
    let peers = proxies.iter().map(|p| Peer {
        pattern: NAP.to_owned(),
        addr: p.addr.clone(),
    });
    let client = Client::plaintext(peers).expect("client");
    (cluster, proxies, client)
}

/// The instance (0 or 1) with a request in flight.
async fn serving(cluster: &Cluster) -> usize {
    let mut found = None;
    wait_until("an instance serves the nap", || {
        found = (0..2).find(|&i| cluster.host(i).is_some_and(|h| h.load().in_flight > 0));
        found.is_some()
    })
    .await;
    found.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_request_is_rerun_on_another_instance_when_its_instance_dies() {
    let (cluster, proxies, client) = two_naps().await;
    let tries = Arc::new(AtomicU32::new(0));
    let request = {
        let client = client.clone();
        let tries = tries.clone();
        tokio::spawn(async move {
            colony::context::with_request_id("typed-1", async {
                client
                    .run(|| {
                        tries.fetch_add(1, Ordering::Relaxed);
                        ops::nap(500)
                    })
                    .await
            })
            .await
        })
    };
    let first = serving(&cluster).await;
    proxies[first].cut();
    let nap = request.await.expect("joins").expect("the retry succeeds");
    assert_eq!(nap.ms, 500);
    assert_eq!(nap.attempt, 1, "the second try says so");
    assert_eq!(
        nap.request_id.as_deref(),
        Some("typed-1"),
        "and keeps the id"
    );
    assert_eq!(tries.load(Ordering::Relaxed), 2);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_request_is_rerun_on_another_instance_when_its_instance_dies() {
    let (cluster, proxies, client) = two_naps().await;
    let request = {
        let client = client.clone();
        tokio::spawn(async move { client.call_json(NAP, serde_json::json!({"ms": 500})).await })
    };
    let first = serving(&cluster).await;
    proxies[first].cut();
    let nap = request.await.expect("joins").expect("the retry succeeds");
    assert_eq!(nap["ms"], 500);
    assert_eq!(nap["attempt"], 1);
    assert!(
        nap["request_id"].as_str().is_some_and(|id| id.len() == 32),
        "{nap}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_own_errors_are_never_retried() {
    let cluster = Cluster::tcp(&[SHOP]).await.expect("starts");
    let peer = Peer::parse(&format!(
        "colony_e2e::services::shop::*={}",
        cluster.addresses()[0]
    ))
    .expect("peer");
    let client = Client::plaintext([peer]).expect("client");
    let mut tries = 0;
    let err = client
        .run(|| {
            tries += 1;
            ops::fail(ErrorKind::Conflict, "taken".into())
        })
        .await
        .expect_err("fails");
    assert_eq!(err, ServiceError::conflict("taken"));
    assert_eq!(tries, 1);

    // A request id is made up when there is none, and reaches the service two calls deep.
    let seen = client.run(shop::whoami).await.expect("ok");
    assert!(seen.request_id.is_some());
    assert_eq!(seen.request_id, seen.inner_request_id);
    assert_eq!(seen.inner_attempt, 0);

    // By name: JSON in, JSON out, and each kind of failure as its own error.
    let quote = client
        .call_json(
            "colony_e2e::services::shop::price",
            serde_json::json!({"sku": "a1", "qty": 2}),
        )
        .await
        .expect("ok");
    assert_eq!(quote["qty"], 2);
    assert_eq!(quote["currency"], "eur");
    let err = client
        .call_json(
            "colony_e2e::services::shop::price",
            serde_json::json!({"qty": 2}),
        )
        .await
        .expect_err("bad arguments");
    assert!(
        matches!(err, Error::Call(colony::CallError::BadArguments { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("missing field `sku`"), "{err}");
    let err = client
        .call_json(
            "colony_e2e::services::shop::price",
            serde_json::json!({"sku": "discontinued"}),
        )
        .await
        .expect_err("not sold");
    assert!(
        matches!(&err, Error::Service(v) if v["kind"] == "not_found"),
        "{err}"
    );
    let err = client
        .call_json("no::such::service", serde_json::json!({}))
        .await
        .expect_err("unknown");
    assert!(
        err.to_string().contains("no service `no::such::service`"),
        "{err}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_instance_left_the_request_fails_clearly() {
    let (cluster, proxies, client) = two_naps().await;
    for p in &proxies {
        p.cut();
    }
    let err = client.run(|| ops::nap(1)).await.expect_err("no instance");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    cluster.shutdown().await;
}
