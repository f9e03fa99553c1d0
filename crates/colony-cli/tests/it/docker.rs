//! `colony up --docker` for real: the fixture app of `tests/e2e` as containers on a
//! private Docker network, with mutual TLS, a request through the published gateway, and a
//! `docker kill` under steady load. Skipped, saying so, only where `docker info` fails.
//! Tests poll with deadlines; none asserts on time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;

use common::{COLONY, Cluster, http, stderr};

const ECHO: &str = "colony_e2e::services::basic::echo";

/// The fixture app's binary.
fn app() -> PathBuf {
    common::binary("colony-e2e")
}

/// `colony up --docker --detach` of `app` in a fresh directory with `toml`.
fn up_docker(name: &str, app: &Path, toml: &str) -> Cluster {
    Cluster::up(
        &format!("docker-{name}"),
        toml,
        app,
        &[],
        &["--docker", "--http", "127.0.0.1:0"],
    )
}

fn docker_engine() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What these tests ask of a cluster beyond the shared harness.
impl Cluster {
    fn healthy(&self, service: &str) -> Vec<Value> {
        self.instances(service, "healthy")
    }

    /// The cluster's name: its network and its containers' label.
    fn name(&self) -> String {
        let state: Value = serde_json::from_slice(
            &std::fs::read(self.dir.join(".colony/docker.json")).expect("docker.json"),
        )
        .expect("docker.json parses");
        state["name"].as_str().expect("a name").to_owned()
    }
}

/// The ids of the networks named exactly `name`, one a line.
fn networks(name: &str) -> String {
    docker(&[
        "network",
        "ls",
        "--quiet",
        "--filter",
        &format!("name=^{name}$"),
    ])
}

fn labelled(name: &str) -> Vec<String> {
    docker(&[
        "ps",
        "--all",
        "--quiet",
        "--filter",
        &format!("label=dev.colony.cluster={name}"),
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

#[test]
fn a_docker_cluster_serves_through_its_gateway_and_replaces_a_killed_container() {
    if !docker_engine() {
        eprintln!(
            "SKIPPED: `docker info` fails, so there is no Docker engine to run `colony up --docker` on"
        );
        return;
    }
    let cluster = up_docker(
        "echo",
        &app(),
        &format!(
            "[cluster]\nheartbeat = \"300ms\"\n\n[defaults]\nmin_instances = 0\n\n\
             [services.\"{ECHO}\"]\nmin_instances = 2\n"
        ),
    );

    // Every instance and the gateway is a container of the cluster, on its network, with
    // mutual TLS.
    let name = cluster.name();
    assert_eq!(
        labelled(&name).len(),
        3,
        "two echo instances and the gateway"
    );
    assert_eq!(networks(&name).lines().count(), 1);
    let control: Value = serde_json::from_slice(
        &std::fs::read(cluster.dir.join(".colony/orchestrator.json")).expect("control"),
    )
    .expect("control JSON");
    assert_eq!(control["tls"], true, "{control}");
    let log = std::fs::read_to_string(cluster.dir.join(".colony/logs/echo-1.log"))
        .expect("the first instance's log");
    assert!(log.contains("mutual TLS on"), "{log}");

    // A request through the gateway, published on 127.0.0.1.
    let url = cluster.status()["gateway"]
        .as_str()
        .expect("a gateway URL")
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let (status, body) = http(
        &url,
        "POST",
        "/colony_e2e/services/basic/echo",
        r#"{"text": "hi"}"#,
    );
    assert_eq!((status, body.trim()), (200, r#""hi""#));

    // Steady load, one request after another on each of two clients.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let (stop, ok, url) = (stop.clone(), ok.clone(), url.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let text = format!("c{c}-{i}");
                    let (status, body) = http(
                        &url,
                        "POST",
                        "/colony_e2e/services/basic/echo",
                        &format!(r#"{{"text": "{text}"}}"#),
                    );
                    if status == 200 && body.trim() == format!("\"{text}\"") {
                        ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failures.push(format!("{status}: {body}"));
                    }
                }
                failures
            })
        })
        .collect();
    let wait_for_requests = |n: u64, what: &str| {
        let target = ok.load(Ordering::SeqCst) + n;
        let deadline = Instant::now() + Duration::from_secs(120);
        while ok.load(Ordering::SeqCst) < target {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_requests(20, "requests before the kill");

    let victim = cluster.healthy(ECHO)[0].clone();
    let container = victim["container"]
        .as_str()
        .expect("a container")
        .to_owned();
    docker(&["kill", &container]);
    cluster.wait_until(
        "the killed container is replaced",
        Duration::from_secs(120),
        |c| {
            let healthy = c.healthy(ECHO);
            healthy.len() == 2 && healthy.iter().all(|i| i["id"] != victim["id"])
        },
    );
    wait_for_requests(20, "requests after the replacement");
    stop.store(true, Ordering::SeqCst);
    let failures: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("a client"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:#?}",
        failures.len(),
        failures.len() as u64 + ok.load(Ordering::SeqCst)
    );
    assert!(
        cluster.has_event("crashed", &victim["id"]),
        "the kill is an event"
    );

    // `colony down` removes the containers and the network.
    let out = cluster.colony(&["down", cluster.path()]);
    assert!(out.status.success(), "colony down: {}", stderr(&out));
    assert!(labelled(&name).is_empty(), "no container is left");
    assert_eq!(networks(&name), "", "the network is gone");
}

#[test]
fn the_store_container_keeps_its_data_on_the_host_through_a_docker_kill() {
    const STORE: &str = "colony::store::serve";
    if !docker_engine() {
        eprintln!("SKIPPED: `docker info` fails, so there is no Docker engine");
        return;
    }
    let cluster = up_docker(
        "store",
        &common::binary("guestbook"),
        "[cluster]\nheartbeat = \"300ms\"\n",
    );
    let url = cluster.status()["gateway"]
        .as_str()
        .expect("a gateway URL")
        .to_owned();
    cluster.wait_until("the store serves", Duration::from_secs(120), |c| {
        !c.healthy(STORE).is_empty()
    });
    // Signs one entry, retrying while the store is away (503): its number.
    let sign = |message: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let body = format!(r#"{{"name": "docker", "message": "{message}"}}"#);
            let (status, answer) = http(&url, "POST", "/sign", &body);
            if status == 200 {
                let entry: Value = serde_json::from_str(&answer).expect("JSON");
                return entry["number"].as_u64().expect("a number");
            }
            assert!(Instant::now() < deadline, "sign: {status} {answer}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let before: Vec<u64> = (0..5).map(|i| sign(&format!("before {i}"))).collect();
    // The store's file is on the host, in the app's .colony/, written by the container.
    assert!(cluster.dir.join(".colony/store/store.redb").is_file());

    let victim = cluster.healthy(STORE)[0].clone();
    docker(&["kill", victim["container"].as_str().expect("a container")]);
    cluster.wait_until(
        "the store's container is replaced",
        Duration::from_secs(120),
        |c| {
            let healthy = c.healthy(STORE);
            !healthy.is_empty() && healthy.iter().all(|i| i["id"] != victim["id"])
        },
    );
    let after = sign("after");
    assert!(before.iter().all(|&n| n < after), "{before:?} then {after}");
    let (status, listed) = http(&url, "GET", "/entries?limit=100", "");
    assert_eq!(status, 200, "{listed}");
    let listed: Value = serde_json::from_str(&listed).expect("JSON");
    let numbers: Vec<u64> = listed
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|e| e["number"].as_u64())
        .collect();
    for n in before.iter().chain([&after]) {
        assert!(numbers.contains(n), "entry {n} is lost: {numbers:?}");
    }
}

#[test]
fn without_a_docker_engine_up_docker_says_what_to_do() {
    let dir = std::env::temp_dir().join(format!("colony-no-docker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    // An engine address where nothing listens.
    let out = Command::new(COLONY)
        .arg("up")
        .arg(&dir)
        .arg("--app-binary")
        .arg(app())
        .args(["--docker", "--detach"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .stdin(Stdio::null())
        .output()
        .expect("colony up runs");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("`colony up --docker` needs"),
        "{}",
        stderr(&out)
    );
    assert!(!Path::new(&dir).join(".colony/orchestrator.pid").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
