//! `colony up` for real: an orchestrator and instances as processes on 127.0.0.1, driven
//! by the fixture app of `tests/e2e`, with real faults (kill -9, SIGSTOP, a killed
//! orchestrator). Tests poll with deadlines; none asserts on time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;

use common::{COLONY, Cluster, http, stderr};

const SLEEP: &str = "colony_e2e::services::work::sleep_ms";
const DRIVE: &str = "colony_e2e::services::load::drive";
/// The store service of the guestbook example.
const STORE: &str = "colony::store::serve";

/// The fixture app's binary, built once.
fn app() -> &'static Path {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    APP.get_or_init(|| common::binary("colony-e2e"))
}

/// The fixture app's cluster, with `toml` as its `colony.toml`.
fn up(name: &str, toml: &str) -> Cluster {
    Cluster::up(name, toml, app(), &[], &[])
}

/// What these tests ask of a cluster beyond the shared harness.
impl Cluster {
    fn service(&self, name: &str) -> Value {
        self.status()["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} in status"))
    }

    fn addr_of(&self, service: &str) -> String {
        self.instances(service, "healthy")[0]["addr"]
            .as_str()
            .expect("an address")
            .to_owned()
    }

    /// Run the load driver: `concurrency` calls of sleep_ms in flight for `duration_ms`.
    fn drive(
        &self,
        concurrency: u32,
        duration_ms: u64,
        sleep_ms: u64,
    ) -> std::thread::JoinHandle<Value> {
        let addr = self.addr_of(DRIVE);
        let ca_dir = self.dir.join(".colony");
        std::thread::spawn(move || {
            let args = format!(
                r#"{{"concurrency": {concurrency}, "duration_ms": {duration_ms}, "sleep_ms": {sleep_ms}}}"#
            );
            let out = Command::new(app())
                .args([
                    "call",
                    DRIVE,
                    &args,
                    "--peer",
                    &format!("{DRIVE}={addr}"),
                    "--timeout",
                    "300s",
                ])
                .env("COLONY_CA_DIR", &ca_dir)
                .stdin(Stdio::null())
                .output()
                .expect("the driver runs");
            assert!(out.status.success(), "driver: {}", stderr(&out));
            serde_json::from_slice(&out.stdout).expect("a report")
        })
    }
}

fn signal(pid: u64, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Only the services a test uses run; heartbeats are fast enough for the tests, slow
/// enough for a loaded 2-core machine.
const FAST: &str = include_str!("../../../../tests/e2e/ramp.colony.toml");

#[test]
fn load_ramp_scales_up_then_back_down_with_no_failed_call() {
    let cluster = up("ramp", FAST);
    assert_eq!(cluster.instances(SLEEP, "healthy").len(), 1);

    // 30 in flight against capacity 10: load 3.0, far past the high watermark.
    let spike = std::time::Instant::now();
    let high = cluster.drive(30, 4_000, 20);
    cluster.wait_until(
        "a second instance takes traffic",
        Duration::from_secs(60),
        |c| {
            let healthy = c.instances(SLEEP, "healthy");
            healthy.len() >= 2
                && healthy
                    .iter()
                    .all(|i| i["load"]["completed"].as_u64().unwrap_or(0) > 0)
        },
    );
    // A figure for BENCHMARKS.md, not an assertion: the machine is shared and noisy.
    eprintln!(
        "load spike → a second instance serving calls: {:?} (heartbeat 300 ms)",
        spike.elapsed()
    );
    let report = high.join().expect("driver");
    assert_eq!(report["failed"], 0, "{report}");

    // Light load, below the low watermark: after the cool-down, back to the minimum.
    let low = cluster.drive(1, 6_000, 20);
    cluster.wait_until(
        "the service is back to its minimum",
        Duration::from_secs(60),
        |c| {
            let s = c.service(SLEEP);
            s["desired"] == 1 && s["instances"].as_array().is_some_and(|i| i.len() == 1)
        },
    );
    let report = low.join().expect("driver");
    assert_eq!(
        report["failed"], 0,
        "no call fails because of a scale-down: {report}"
    );

    let events = cluster.events();
    for kind in ["scale_up", "scale_down"] {
        let e = events
            .iter()
            .find(|e| e["kind"] == kind && e["service"] == SLEEP);
        let e = e.unwrap_or_else(|| panic!("a {kind} event: {events:#?}"));
        assert!(
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("watermark")),
            "{e}"
        );
    }
}

#[test]
fn kill_9_of_an_instance_under_load_is_replaced() {
    let cluster = up("kill", FAST);
    let victim = cluster.instances(SLEEP, "healthy")[0].clone();
    let load = cluster.drive(2, 3_000, 20);
    signal(victim["pid"].as_u64().expect("pid"), "9");
    cluster.wait_until(
        "the killed instance is replaced",
        Duration::from_secs(60),
        |c| {
            let healthy = c.instances(SLEEP, "healthy");
            !healthy.is_empty() && healthy.iter().all(|i| i["id"] != victim["id"])
        },
    );
    let _ = load.join();
    assert!(cluster.has_event("crashed", &victim["id"]));
}

#[test]
fn a_stopped_instance_is_quarantined_routed_around_and_replaced() {
    let cluster = up(
        "sigstop",
        &FAST.replace(
            "sleep_ms\"]\nmin_instances = 1",
            "sleep_ms\"]\nmin_instances = 2",
        ),
    );
    cluster.wait_until("two instances", Duration::from_secs(60), |c| {
        c.instances(SLEEP, "healthy").len() == 2
    });
    let victim = cluster.instances(SLEEP, "healthy")[0].clone();
    let pid = victim["pid"].as_u64().expect("pid");
    signal(pid, "STOP");
    cluster.wait_until(
        "the stopped instance is quarantined",
        Duration::from_secs(30),
        |c| c.has_event("quarantined", &victim["id"]),
    );
    // Callers no longer choose it: a fresh run of calls all succeed.
    let report = cluster.drive(4, 1_000, 5).join().expect("driver");
    assert_eq!(report["failed"], 0, "{report}");
    cluster.wait_until("it is replaced", Duration::from_secs(60), |c| {
        let healthy = c.instances(SLEEP, "healthy");
        healthy.len() == 2 && healthy.iter().all(|i| i["id"] != victim["id"])
    });
    // Usually already killed and replaced; a still-stopped process would linger otherwise.
    let _ = Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status();
}

#[test]
fn a_restarted_orchestrator_re_adopts_its_instances() {
    let cluster = up("restart", FAST);
    let before = cluster.status();
    let ids = |s: &Value| -> Vec<String> {
        let mut ids: Vec<String> = s["services"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
            .filter_map(|i| i["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    };
    let load = cluster.drive(4, 4_000, 20);
    signal(before["orchestrator_pid"].as_u64().expect("pid"), "9");
    let out = cluster.up_again();
    assert!(out.status.success(), "colony up again: {}", stderr(&out));
    let report = load.join().expect("driver");
    assert_eq!(
        report["failed"], 0,
        "calls keep flowing while the orchestrator is down: {report}"
    );
    let after = cluster.status();
    assert_ne!(after["orchestrator_pid"], before["orchestrator_pid"]);
    assert_eq!(
        ids(&after),
        ids(&before),
        "the same instances, no duplicates"
    );
    assert!(cluster.events().iter().any(|e| e["kind"] == "re-adopted"));
}

#[test]
fn bad_input_changes_nothing() {
    // A long cool-down, so that the autoscaler leaves the manual count alone.
    let cluster = up(
        "bad",
        &FAST.replace("cooldown = \"1s\"", "cooldown = \"10m\""),
    );
    let dir = cluster.dir.to_str().expect("utf-8").to_owned();
    let scale = |target: &str| cluster.colony(&["scale", target, "--path", &dir]);

    let out = scale("no::such::service=2");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a service of this app"),
        "{}",
        stderr(&out)
    );

    let out = scale(&format!("{SLEEP}=99"));
    assert!(
        stderr(&out).contains("allowed values are 1 to 3"),
        "{}",
        stderr(&out)
    );

    let out = scale(&format!("{SLEEP}=-1"));
    assert!(
        stderr(&out).contains("not a possible count"),
        "{}",
        stderr(&out)
    );

    assert_eq!(cluster.service(SLEEP)["desired"], 1);

    let out = scale(&format!("{SLEEP}=2"));
    assert!(out.status.success(), "{}", stderr(&out));
    cluster.wait_until("two instances", Duration::from_secs(60), |c| {
        c.instances(SLEEP, "healthy").len() == 2
    });

    // A malformed colony.toml is refused before anything starts.
    let bad = std::env::temp_dir().join(format!("colony-cluster-badtoml-{}", std::process::id()));
    std::fs::create_dir_all(&bad).expect("dir");
    std::fs::write(bad.join("colony.toml"), "[services.\"x\"\nmin_instances = ").expect("write");
    let out = Command::new(COLONY)
        .arg("up")
        .arg(&bad)
        .arg("--app-binary")
        .arg(app())
        .arg("--detach")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("malformed"), "{}", stderr(&out));
    assert!(!bad.join(".colony").exists(), "nothing started");

    std::fs::write(
        bad.join("colony.toml"),
        format!("[services.\"{SLEEP}\"]\nmin_instances = 5\nmax_instances = 2\n"),
    )
    .expect("write");
    let out = Command::new(COLONY)
        .arg("up")
        .arg(&bad)
        .arg("--app-binary")
        .arg(app())
        .output()
        .expect("runs");
    assert!(
        stderr(&out).contains("above max_instances"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&bad);
}

#[test]
fn ten_services_with_two_instances_each() {
    let services = [
        "basic::echo",
        "basic::add",
        "basic::fail",
        "basic::remaining_ms",
        "basic::request_id",
        "chain::ping",
        "chain::pong",
        "work::sleep_ms",
        "work::block_ms",
        "work::fan_out",
    ];
    let toml: String =
        std::iter::once("[defaults]\nmin_instances = 0\n\n".to_owned())
            .chain(services.iter().map(|s| {
                format!("[services.\"colony_e2e::services::{s}\"]\nmin_instances = 2\n\n")
            }))
            .collect();
    let started = Instant::now();
    let cluster = up("ten", &toml);
    let took = started.elapsed();
    for s in services {
        let name = format!("colony_e2e::services::{s}");
        assert_eq!(cluster.instances(&name, "healthy").len(), 2, "{name}");
    }
    // `colony up` also runs the HTTP gateway, in front of the exposed services.
    let url = cluster.status()["gateway"]
        .as_str()
        .expect("a gateway URL")
        .to_owned();
    let (status, body) = http(
        &url,
        "POST",
        "/colony_e2e/services/basic/echo",
        r#"{"text": "through the gateway"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.trim(), r#""through the gateway""#);
    // For the record (not an assertion): how long the whole cluster took to be healthy.
    eprintln!("ten services × 2 instances healthy in {took:?}");
}

/// Send `line` over plain TCP and read whatever comes back until the peer closes.
fn plaintext_exchange(addr: &str, line: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the control port accepts TCP");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let _ = stream.write_all(format!("{line}\n").as_bytes());
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// One request line over mutual TLS as a process whose certificate names `names`; the
/// answer line, or `None` when the orchestrator hangs up.
fn tls_exchange(state: &Path, names: &[&str], line: &str) -> Option<String> {
    use colony::control::security::{Ca, CertLifetime, MutualTls, ROLE_ORCHESTRATOR};
    use colony::control::transport::Dialer;
    use tokio::io::AsyncWriteExt;

    let addr = std::fs::read_to_string(state.join("orchestrator.addr")).expect("address");
    let control: Value =
        serde_json::from_slice(&std::fs::read(state.join("orchestrator.json")).expect("control"))
            .expect("control JSON");
    let app = control["app"].as_str().expect("the app's name").to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let ca = std::sync::Arc::new(Ca::load(state).expect("the cluster CA"));
        let tls = MutualTls::from_ca(ca, &app, names, CertLifetime::default()).expect("a leaf");
        let mut stream = tls
            .dialer()
            .dial(addr.trim(), &[ROLE_ORCHESTRATOR])
            .await
            .expect("the orchestrator admits a member of its cluster, and is the orchestrator");
        stream
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("writes");
        stream.flush().await.expect("flushes");
        let mut reader = tokio::io::BufReader::new(stream);
        tokio::time::timeout(
            Duration::from_secs(30),
            colony::control::discovery::read_line(&mut reader),
        )
        .await
        .expect("an answer or a hang-up within 30s")
        .ok()
        .flatten()
    })
}

#[test]
fn the_control_port_is_mutual_tls_and_admits_only_the_cluster() {
    let cluster = up("control", FAST);
    let state = cluster.dir.join(".colony");
    let addr = std::fs::read_to_string(state.join("orchestrator.addr"))
        .expect("address")
        .trim()
        .to_owned();
    let control: Value =
        serde_json::from_slice(&std::fs::read(state.join("orchestrator.json")).expect("control"))
            .expect("control JSON");
    assert_eq!(control["tls"], true, "{control}");

    // Plaintext: refused in the handshake, nothing answered.
    let answer = plaintext_exchange(&addr, r#"{"type":"status"}"#);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        !text.contains("orchestrator_pid") && !text.contains('{'),
        "a plaintext client got an answer: {text}"
    );

    // A certificate of another cluster's CA, even one naming the CLI's role of this app,
    // presented by openssl (which does not check the orchestrator's).
    let foreign = std::env::temp_dir().join(format!("colony-foreign-{}", std::process::id()));
    std::fs::create_dir_all(&foreign).expect("dir");
    let (cert, key) = (foreign.join("cert.pem"), foreign.join("key.pem"));
    let app = control["app"].as_str().expect("the app's name");
    let leaf = colony::control::security::Ca::generate(app)
        .expect("another CA")
        .issue(
            app,
            &[colony::control::security::ROLE_CONTROL],
            Duration::from_secs(3600),
        )
        .expect("a leaf");
    std::fs::write(&cert, &leaf.cert_pem).expect("cert");
    std::fs::write(&key, &leaf.key_pem).expect("key");
    let mut client = Command::new("timeout")
        .args([
            "30",
            "openssl",
            "s_client",
            "-connect",
            &addr,
            "-tls1_3",
            "-no_ign_eof",
        ])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client runs");
    {
        use std::io::Write;
        let mut stdin = client.stdin.take().expect("stdin");
        let _ = stdin.write_all(b"{\"type\":\"status\"}\n");
    }
    let out = client.wait_with_output().expect("s_client ends");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("orchestrator_pid"),
        "a foreign certificate got an answer: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&foreign);

    // Both refusals are events, with their reasons.
    cluster.wait_until(
        "both refusals are in the event log",
        Duration::from_secs(30),
        |c| {
            let refused: Vec<String> = c
                .events()
                .iter()
                .filter(|e| e["kind"] == "refused")
                .filter_map(|e| e["reason"].as_str().map(str::to_owned))
                .collect();
            refused.iter().any(|r| r.contains("not_tls"))
                && refused.iter().any(|r| r.contains("unknown_issuer"))
        },
    );

    // Members of the cluster that are not the CLI: an instance may not ask for status, nor
    // register for a service its certificate does not name.
    let answer = tls_exchange(&state, &[SLEEP], r#"{"type":"status"}"#).expect("an answer");
    assert!(
        answer.contains("only the colony CLI") && !answer.contains("orchestrator_pid"),
        "{answer}"
    );
    let register = format!(
        r#"{{"type":"register","instance":"intruder-1","pid":1,"addr":"127.0.0.1:1","services":["{DRIVE}"],"fingerprint":"x"}}"#
    );
    assert_eq!(
        tls_exchange(&state, &[SLEEP], &register),
        None,
        "no membership for an impostor"
    );
    cluster.wait_until(
        "the impostor's registration is refused",
        Duration::from_secs(30),
        |c| {
            c.events().iter().any(|e| {
                e["kind"] == "refused"
                    && e["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("intruder-1") && r.contains(DRIVE))
            })
        },
    );
    assert!(
        !cluster.status().to_string().contains("intruder-1"),
        "the impostor is not an instance"
    );

    // The CLI of another cluster (another CA) cannot reach this orchestrator.
    let other = std::env::temp_dir().join(format!("colony-other-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&other);
    let other_state = other.join(".colony");
    colony::control::security::Ca::generate("colony-e2e")
        .expect("a CA")
        .save(&other_state, false)
        .expect("saved");
    for file in ["orchestrator.addr", "orchestrator.json"] {
        std::fs::copy(state.join(file), other_state.join(file)).expect("copied");
    }
    let out = cluster.colony(&["status", other.to_str().expect("utf-8")]);
    assert!(!out.status.success(), "status through a foreign CA");
    assert!(stderr(&out).contains("mutual TLS"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&other);

    // The CLI itself still works.
    assert_eq!(cluster.instances(SLEEP, "healthy").len(), 1);
}

#[test]
fn with_security_off_the_control_port_is_plaintext() {
    let cluster = up("plain", &format!("security = \"off\"\n{FAST}"));
    let state = cluster.dir.join(".colony");
    let control: Value =
        serde_json::from_slice(&std::fs::read(state.join("orchestrator.json")).expect("control"))
            .expect("control JSON");
    assert_eq!(control["tls"], false, "{control}");
    let addr = std::fs::read_to_string(state.join("orchestrator.addr")).expect("address");
    let answer = plaintext_exchange(addr.trim(), r#"{"type":"status"}"#);
    assert!(
        String::from_utf8_lossy(&answer).contains("orchestrator_pid"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The instances registered over the plaintext link.
    assert_eq!(cluster.instances(SLEEP, "healthy").len(), 1);
    assert!(
        !state.join("ca.key").exists(),
        "no CA is made with security off"
    );
}

/// The store example's binary, built once.
fn guestbook() -> &'static Path {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    APP.get_or_init(|| common::binary("guestbook"))
}

/// A number from the `stats` of the memcached at `addr`; `None` when it does not answer.
fn memcached_stat(addr: &str, name: &str) -> Option<u64> {
    use std::io::{BufRead as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(b"stats\r\n").ok()?;
    let prefix = format!("STAT {name} ");
    for line in std::io::BufReader::new(s).lines() {
        let line = line.ok()?;
        if let Some(n) = line.strip_prefix(&prefix) {
            return n.trim().parse().ok();
        }
        if line == "END" {
            return None;
        }
    }
    None
}

/// The guestbook's entries through the gateway, as (number, message) pairs.
fn listed(url: &str) -> Vec<(u64, String)> {
    let (status, body) = http(url, "GET", "/entries?limit=100", "");
    assert_eq!(status, 200, "{body}");
    let entries: Value = serde_json::from_str(&body).expect("entries JSON");
    entries
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| {
            let n = e["number"].as_u64().expect("a number");
            (n, e["message"].as_str().expect("a message").to_owned())
        })
        .collect()
}

/// Sign the guestbook from four threads while the store's instance `victim` is killed
/// with `kill -9` and replaced; then check that every acknowledged signature is in the book,
/// under the number it was acknowledged with. The book.
fn sign_through_a_store_kill(cluster: &Cluster, url: &str) -> Vec<(u64, String)> {
    let url = url.to_owned();
    // Four signers sign until told to stop; a signature the store could not take while it
    // was down is answered 503 and signed again.
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signers: Vec<_> = (0..4)
        .map(|signer| {
            let (url, acked, stop) = (url.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let message = format!("signer {signer}, entry {}", acknowledged.len());
                    let body = format!(r#"{{"name": "s{signer}", "message": "{message}"}}"#);
                    let (status, answer) = http(&url, "POST", "/sign", &body);
                    match status {
                        200 => {
                            let entry: Value = serde_json::from_str(&answer).expect("JSON");
                            let number = entry["number"].as_u64().expect("a number");
                            acknowledged.push((number, message));
                            acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        503 | 504 => std::thread::sleep(Duration::from_millis(20)),
                        other => panic!("sign answered {other}: {answer}"),
                    }
                }
                acknowledged
            })
        })
        .collect();
    let acked_now = || acked.load(std::sync::atomic::Ordering::SeqCst);
    // Once some signatures are in, kill -9 the store's instance; the orchestrator replaces
    // it, and the new instance opens the same file. Signing goes on until 10 more are
    // acknowledged by the new one.
    cluster.wait_until("some signatures are in", Duration::from_secs(60), |_| {
        acked_now() >= 10
    });
    let victim = cluster.instances(STORE, "healthy")[0].clone();
    signal(victim["pid"].as_u64().expect("pid"), "9");
    cluster.wait_until(
        "the store's instance is replaced",
        Duration::from_secs(60),
        |c| {
            let healthy = c.instances(STORE, "healthy");
            !healthy.is_empty() && healthy.iter().all(|i| i["id"] != victim["id"])
        },
    );
    let before = acked_now();
    cluster.wait_until(
        "the new store takes writes",
        Duration::from_secs(60),
        |_| acked_now() >= before + 10,
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut acknowledged: Vec<(u64, String)> = signers
        .into_iter()
        .flat_map(|s| s.join().expect("a signer"))
        .collect();
    assert!(
        cluster.has_event("crashed", &victim["id"]),
        "the kill was seen"
    );

    // Every acknowledged signature is there, under the number it was acknowledged with,
    // and no two signatures share a number.
    acknowledged.sort();
    let numbers: std::collections::BTreeSet<u64> = acknowledged.iter().map(|a| a.0).collect();
    assert_eq!(
        numbers.len(),
        acknowledged.len(),
        "numbers are unique: {acknowledged:?}"
    );
    let book = listed(&url);
    for entry in &acknowledged {
        assert!(
            book.contains(entry),
            "{entry:?} is lost; the book: {book:?}"
        );
    }
    book
}

#[test]
fn the_store_keeps_every_acknowledged_write_through_a_kill_9_and_reads_through_the_cache() {
    // `[cache]`: `colony up` runs a memcached and tells every instance about it.
    const TOML: &str = r#"
[cluster]
heartbeat = "300ms"

[cache]
memory_mb = 32
"#;
    if Command::new("memcached").arg("-h").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs memcached (see .ci/run)"
        );
        eprintln!("skipped: no memcached; `apt-get install memcached`");
        return;
    }
    let cluster = Cluster::up("store", TOML, guestbook(), &[], &[]);
    let status = cluster.status();
    let url = status["gateway"]
        .as_str()
        .expect("a gateway URL")
        .to_owned();
    let cache = status["cache"]
        .as_str()
        .expect("a cache address")
        .to_owned();
    cluster.wait_until("the store serves", Duration::from_secs(60), |c| {
        !c.instances(STORE, "healthy").is_empty()
    });
    // The store's file lives in the app's .colony/, outside any instance.
    assert!(cluster.dir.join(".colony/store/store.redb").is_file());

    let book = sign_through_a_store_kill(&cluster, &url);

    // Entries are read through the cache tier: a second listing hits memcached.
    let hits = memcached_stat(&cache, "get_hits").expect("the cache answers");
    assert_eq!(listed(&url), book);
    let after = memcached_stat(&cache, "get_hits").expect("the cache answers");
    assert!(
        after >= hits + book.len() as u64,
        "a second listing of {} entries read them from the cache: {hits} hits before, {after} after",
        book.len()
    );

    // A dead cache costs speed, not answers; the orchestrator starts it again on the same
    // address.
    let state: Value = serde_json::from_slice(
        &std::fs::read(cluster.dir.join(".colony/state.json")).expect("state.json"),
    )
    .expect("state JSON");
    let pid = state["cache"]["pid"].as_u64().expect("the cache's pid");
    signal(pid, "9");
    assert_eq!(listed(&url), book);
    cluster.wait_until("the cache is back", Duration::from_secs(30), |c| {
        c.events().iter().any(|e| {
            e["kind"] == "cache" && e["reason"].as_str().is_some_and(|r| r.contains("gone"))
        }) && memcached_stat(&cache, "pid").is_some_and(|p| p != pid)
    });
    assert_eq!(listed(&url), book);

    // `colony down` stops it with the instances.
    let new_pid = memcached_stat(&cache, "pid").expect("the new cache's pid");
    let out = cluster.colony(&["down", cluster.dir.to_str().expect("utf-8")]);
    assert!(out.status.success(), "colony down: {}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{new_pid}")).exists() {
        assert!(Instant::now() < deadline, "memcached outlived colony down");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_store_on_postgres_served_by_two_instances_loses_nothing_when_one_is_killed() {
    const TOML: &str = r#"
[cluster]
heartbeat = "300ms"

[services."colony::store::serve"]
min_instances = 2
max_instances = 2
"#;
    let Ok(database) = std::env::var("COLONY_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set COLONY_TEST_POSTGRES_URL (see .ci/run)"
        );
        eprintln!("skipped: COLONY_TEST_POSTGRES_URL is not set");
        return;
    };
    let cluster = Cluster::up(
        "store-postgres",
        TOML,
        guestbook(),
        &[("COLONY_STORE_URL", &database)],
        &[],
    );
    let url = cluster.status()["gateway"]
        .as_str()
        .expect("a gateway URL")
        .to_owned();
    cluster.wait_until("two store instances serve", Duration::from_secs(60), |c| {
        c.instances(STORE, "healthy").len() == 2
    });
    // No file: the values are in the database.
    assert!(!cluster.dir.join(".colony/store/store.redb").exists());
    let book = sign_through_a_store_kill(&cluster, &url);
    assert!(!book.is_empty());
}
