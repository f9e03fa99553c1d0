//! The call suite, run three ways: direct (no runtime), over the in-memory transport, and
//! over TCP on 127.0.0.1 — all inside this test binary.

use std::time::Duration;

use colony::testing::Cluster;
use colony::{ErrorKind, ServiceError};

use crate::services::{basic, chain, work};

const A: &[&str] = &[
    "colony_e2e::services::basic::echo",
    "colony_e2e::services::basic::add",
    "colony_e2e::services::basic::fail",
    "colony_e2e::services::basic::explode",
    "colony_e2e::services::basic::relay_remaining",
    "colony_e2e::services::basic::relay_request_id",
    "colony_e2e::services::chain::ping",
    "colony_e2e::services::work::fan_out",
    "colony_e2e::services::work::relay_sleep",
];
const B: &[&str] = &[
    "colony_e2e::services::basic::remaining_ms",
    "colony_e2e::services::basic::request_id",
    "colony_e2e::services::chain::pong",
    "colony_e2e::services::work::sleep_ms",
    "colony_e2e::services::work::block_ms",
];

fn is_call_error(err: &ServiceError, kind: ErrorKind, needle: &str) -> bool {
    err.kind() == kind && err.message().contains(needle)
}

/// The cases every mode must pass.
async fn suite(remote: bool) {
    assert_eq!(basic::echo("hi".into()).await, Ok("hi".to_owned()));
    assert_eq!(basic::add(2, None).await, Ok(2));
    assert_eq!(basic::add(2, Some(3)).await, Ok(5));

    let err = basic::fail("no such thing".into())
        .await
        .expect_err("fails");
    assert_eq!(err, ServiceError::not_found("no such thing"));

    assert_eq!(chain::ping(200).await, Ok(200));

    // The outside request id reaches every service in the chain.
    let id = colony::context::with_request_id("req-42", basic::relay_request_id()).await;
    assert_eq!(id, Ok(Some("req-42".to_owned())));
    assert_eq!(basic::relay_request_id().await, Ok(None));

    let many = futures_util::future::join_all((0..500).map(|i| basic::add(i, Some(1)))).await;
    assert!(many.iter().enumerate().all(|(i, r)| *r == Ok(i as i64 + 1)));

    assert_eq!(work::fan_out(1000, 5).await, Ok(1000));

    // The blocking service holds threads of the blocking pool, not the workers.
    let blocked = futures_util::future::join_all((0..4).map(|_| work::block_ms(100)));
    let (blocked, echo) = tokio::join!(blocked, basic::echo("still here".into()));
    assert!(blocked.iter().all(|r| *r == Ok(100)));
    assert_eq!(echo.as_deref(), Ok("still here"));

    if remote {
        // The deadline travels: the callee sees the caller's remaining time.
        let left = basic::relay_remaining()
            .await
            .expect("ok")
            .expect("a deadline");
        assert!(left > 0 && left <= 5_000, "left = {left}");

        // A panic is one call's error, not the instance's end.
        let err = basic::explode().await.expect_err("panics");
        assert!(
            is_call_error(&err, ErrorKind::Internal, "panicked"),
            "{err}"
        );
        assert_eq!(basic::echo("alive".into()).await.as_deref(), Ok("alive"));

        // The deadline bounds the call.
        let late =
            colony::context::with_timeout(Duration::from_millis(200), work::sleep_ms(60_000)).await;
        let err = late.expect_err("times out");
        assert!(
            is_call_error(&err, ErrorKind::DeadlineExceeded, "deadline"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_calls_in_one_process() {
    // No router: every call runs its body here, as under `APP run`, on threads with the
    // default stack.
    suite(false).await;
    // A chain of co-located calls far deeper than a thread's stack could hold if each level
    // nested inside the last: past a few dozen levels, a call starts afresh in a task.
    assert_eq!(chain::ping(5_000).await, Ok(5_000));
}

#[test]
fn direct_calls_without_a_runtime() {
    // A plain unit test: no runtime at all, so the bodies run directly, nested.
    let outcome = futures_util::FutureExt::now_or_never(async {
        (basic::add(2, Some(3)).await, chain::ping(20).await)
    });
    assert_eq!(outcome, Some((Ok(5), Ok(20))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_transport() {
    let cluster = Cluster::in_memory(&[A, B]).await.expect("starts");
    cluster.run(suite(true)).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_on_loopback() {
    let cluster = Cluster::tcp(&[A, B]).await.expect("starts");
    cluster.run(suite(true)).await;
    cluster.shutdown().await;
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_caller_cancels_the_remote_work() {
    let cluster = Cluster::in_memory(&[A, B]).await.expect("starts");
    let callee = cluster.host(1).expect("instance 1").clone();
    let call = tokio::spawn(cluster.run(async { work::relay_sleep(60_000).await }));
    wait_until("the sleep is in flight", || callee.load().in_flight == 1).await;
    call.abort();
    wait_until("the sleep is cancelled", || callee.load().in_flight == 0).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_instance_refuses_clearly() {
    use colony::control::HostConfig;
    use colony::control::transport::MemoryNetwork;
    let network = MemoryNetwork::new();
    let listeners = vec![network.bind("a"), network.bind("b")];
    let mut config = HostConfig::default();
    config.max_in_flight = 10;
    let cluster = Cluster::start(&[A, B], std::sync::Arc::new(network), listeners, config)
        .await
        .expect("starts");
    let results = cluster.run(work::fan_out(50, 200)).await;
    let err = results.expect_err("overloaded");
    assert!(
        is_call_error(&err, ErrorKind::Unavailable, "overloaded"),
        "{err}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instance_is_a_clear_error() {
    // A cluster that hosts only B: A's services have no instance.
    let cluster = Cluster::in_memory(&[B]).await.expect("starts");
    let err = cluster
        .run(basic::echo("x".into()))
        .await
        .expect_err("no instance");
    assert!(
        is_call_error(&err, ErrorKind::Unavailable, "has no instance"),
        "{err}"
    );
    cluster.shutdown().await;
}
