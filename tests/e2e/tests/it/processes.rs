//! Real processes on 127.0.0.1: the fixture app started as instances that call each other
//! over mutual TLS (the default), and real faults (kill -9, SIGTERM) in the middle of calls.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

const APP: &str = env!("CARGO_BIN_EXE_colony-e2e");

/// A cluster CA for this test run, as `colony certs init` would make it; every process of
/// these tests finds it through `COLONY_CA_DIR`.
fn ca_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-ca-{}", std::process::id()));
        colony::control::security::Ca::generate("colony-e2e")
            .expect("a CA")
            .save(&dir, true)
            .expect("saved");
        dir
    })
}

fn svc(name: &str) -> String {
    format!("colony_e2e::services::{name}")
}

/// An instance of the fixture app; killed when dropped.
struct Instance {
    child: Child,
    addr: String,
    /// Lines the instance writes to stderr (its log), as they arrive.
    log: mpsc::Receiver<String>,
}

impl Instance {
    fn start(services: &[&str], peers: &[(&str, &str)], threads: usize) -> Instance {
        Instance::start_on("127.0.0.1:0", services, peers, threads)
    }

    fn start_on(
        listen: &str,
        services: &[&str],
        peers: &[(&str, &str)],
        threads: usize,
    ) -> Instance {
        let services: Vec<String> = services.iter().map(|s| svc(s)).collect();
        let mut cmd = Command::new(APP);
        cmd.arg("serve")
            .arg("--service")
            .arg(services.join(","))
            .arg("--listen")
            .arg(listen)
            .arg("--threads")
            .arg(threads.to_string());
        for (pattern, addr) in peers {
            cmd.arg("--peer").arg(format!("{}={addr}", svc(pattern)));
        }
        Instance::start_command(cmd)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Wait until the log has a line containing `needle`.
    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(_) => panic!("no log line with `{needle}` within 30s"),
            }
        }
    }

    /// The number of threads of the process, from /proc.
    fn threads(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc");
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("a Threads line")
    }

    fn signal(&self, sig: i32) {
        // Through the `kill` command: the workspace forbids unsafe code, so no libc::kill.
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the instance did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `APP call SERVICE JSON --peer SERVICE=ADDR` and return its output.
fn call(service: &str, json: &str, addr: &str, extra: &[&str]) -> Output {
    Command::new(APP)
        .arg("call")
        .arg(svc(service))
        .arg(json)
        .arg("--peer")
        .arg(format!("{}={addr}", svc(service)))
        .args(extra)
        .env("COLONY_CA_DIR", ca_dir())
        .env("COLONY_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("the call runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// A hosts `chain::ping` and `basic::relay_remaining`; B hosts `chain::pong` and
/// `basic::remaining_ms`; each knows the other's address.
fn mutual(threads: usize) -> (Instance, Instance) {
    // B must know A's address before A starts: reserve a free port for A.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a_addr = probe.local_addr().expect("addr").to_string();
    drop(probe);
    let b = Instance::start(
        &["chain::pong", "basic::remaining_ms"],
        &[("chain::ping", &a_addr)],
        threads,
    );
    let a = Instance::start_on(
        &a_addr,
        &["chain::ping", "basic::relay_remaining"],
        &[("chain::pong", &b.addr), ("basic::remaining_ms", &b.addr)],
        threads,
    );
    (a, b)
}

#[test]
fn two_processes_call_each_other() {
    let (a, _b) = mutual(2);
    let out = call("chain::ping", r#"{"depth": 10}"#, &a.addr, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "10");

    // The caller's deadline reaches the callee two processes away.
    let out = call(
        "basic::relay_remaining",
        "{}",
        &a.addr,
        &["--timeout", "3s"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let left: u64 = stdout(&out).parse().expect("a number of ms");
    assert!(left > 0 && left <= 3_000, "left = {left}");
}

impl Instance {
    fn start_command(mut cmd: Command) -> Instance {
        cmd.env("COLONY_LOG", "info")
            .env("COLONY_CA_DIR", ca_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the fixture app starts");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (log_tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = log_tx.send(line);
            }
        });
        let mut first = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
            first.push(byte[0]);
        }
        // Keep reading, so that later lines (the metrics URL) find an open pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let first = String::from_utf8_lossy(&first).into_owned();
        let addr = first
            .strip_prefix("colony: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
            .to_owned();
        Instance { child, addr, log }
    }
}

#[test]
fn a_thousand_nested_calls_across_two_processes_with_four_threads_each() {
    let (a, b) = mutual(4);
    let out = call(
        "chain::ping",
        r#"{"depth": 1000}"#,
        &a.addr,
        &["--timeout", "60s"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1000");
    // 1000 calls were parked at once, yet neither process grew a thread per call.
    for inst in [&a, &b] {
        let threads = inst.threads();
        assert!(
            threads <= 4 + 4,
            "{threads} threads: calls must park futures, not threads"
        );
    }
}

#[test]
fn ten_thousand_calls_in_flight_against_one_instance() {
    let b = Instance::start(&["work::sleep_ms"], &[], 2);
    let a = Instance::start(&["work::fan_out"], &[("work::sleep_ms", &b.addr)], 2);
    let out = call(
        "work::fan_out",
        r#"{"n": 10000, "ms": 500}"#,
        &a.addr,
        &["--timeout", "120s"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "10000");
}

#[test]
fn kill_9_of_the_callee_mid_call_fails_the_caller_before_its_deadline() {
    let b = Instance::start(&["work::sleep_ms"], &[], 2);
    let a = Instance::start(&["work::relay_sleep"], &[("work::sleep_ms", &b.addr)], 2);
    let addr = a.addr.clone();
    let caller = std::thread::spawn(move || {
        call(
            "work::relay_sleep",
            r#"{"ms": 600000}"#,
            &addr,
            &["--timeout", "60s"],
        )
    });
    b.wait_for_log("sleep started");
    b.signal(9);
    let out = caller.join().expect("caller thread");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("connection to its instance was lost"), "{err}");
    assert!(
        !err.contains("deadline"),
        "failed by the kill, not the deadline: {err}"
    );
    drop(a);
}

#[test]
fn sigterm_drains_work_in_flight_then_exits() {
    let mut b = Instance::start(&["work::sleep_ms"], &[], 2);
    let addr = b.addr.clone();
    let caller = std::thread::spawn(move || call("work::sleep_ms", r#"{"ms": 1500}"#, &addr, &[]));
    b.wait_for_log("sleep started");
    b.signal(15);
    let out = caller.join().expect("caller thread");
    assert!(
        out.status.success(),
        "the call in flight completes: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "1500");
    let status = b.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exits cleanly after draining: {status:?}");
}

#[test]
fn bad_input_gets_a_clear_answer() {
    let b = Instance::start(&["basic::add", "basic::fail"], &[], 2);

    let out = call("basic::add", r#"{"a": "seven"}"#, &b.addr, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("field `a`"), "{}", stderr(&out));

    let out = call("basic::add", r#"{"b": 1}"#, &b.addr, &[]);
    assert!(
        stderr(&out).contains("missing field `a`"),
        "{}",
        stderr(&out)
    );

    let out = call("basic::add", r#"{"a": 1, "c": 2}"#, &b.addr, &[]);
    assert!(
        stderr(&out).contains("unknown field `c`"),
        "{}",
        stderr(&out)
    );

    let out = call("basic::add", "not json", &b.addr, &[]);
    assert!(stderr(&out).contains("not valid JSON"), "{}", stderr(&out));

    // A peer that does not host the service says so, naming it.
    let out = call("basic::echo", r#"{"text": "x"}"#, &b.addr, &[]);
    assert!(
        stderr(&out).contains("does not host service"),
        "{}",
        stderr(&out)
    );

    // The service's own error comes back as its JSON.
    let out = call("basic::fail", r#"{"message": "gone"}"#, &b.addr, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("gone"), "{}", stderr(&out));

    // Still serving after all of that.
    let out = call("basic::add", r#"{"a": 1, "b": 2}"#, &b.addr, &[]);
    assert_eq!(stdout(&out), "3");
}

#[test]
fn a_peer_from_another_build_is_refused_naming_both_fingerprints() {
    let b = Instance::start(&["basic::echo"], &[], 2);
    let out = Command::new(APP)
        .args(["call", &svc("basic::echo"), r#"{"text": "x"}"#])
        .args(["--peer", &format!("{}={}", svc("basic::echo"), b.addr)])
        .env("COLONY_FINGERPRINT", "another-build")
        .env("COLONY_CA_DIR", ca_dir())
        .output()
        .expect("runs");
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("another-build"), "{err}");
    assert!(err.contains("different builds"), "{err}");
}

#[test]
fn malformed_and_oversized_frames_close_only_their_connection() {
    use std::io::Write;
    let b = Instance::start(&["basic::echo"], &[], 2);
    // Garbage instead of a handshake.
    let mut garbage = std::net::TcpStream::connect(&b.addr).expect("connects");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("writes");
    // A frame announcing 1 GiB.
    let mut huge = std::net::TcpStream::connect(&b.addr).expect("connects");
    huge.write_all(&(1u32 << 30).to_be_bytes()).expect("writes");
    for mut s in [garbage, huge] {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest); // closed by the instance
    }
    b.wait_for_log("refused connection");
    let out = call("basic::echo", r#"{"text": "fine"}"#, &b.addr, &[]);
    assert_eq!(stdout(&out), "\"fine\"");
}

#[test]
fn without_a_cluster_ca_an_instance_stops_at_once_and_says_what_to_do() {
    let out = Command::new(APP)
        .args([
            "serve",
            "--service",
            &svc("basic::echo"),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("COLONY_CA_DIR", ca_dir().join("missing"))
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no cluster CA")
            && err.contains("colony certs init")
            && err.contains("COLONY_TLS=off"),
        "{err}"
    );
}

#[test]
fn with_tls_off_instances_talk_plaintext_after_a_loud_warning() {
    let mut cmd = Command::new(APP);
    cmd.args([
        "serve",
        "--service",
        &svc("basic::echo"),
        "--listen",
        "127.0.0.1:0",
    ])
    .env("COLONY_TLS", "off");
    let b = Instance::start_command(cmd);
    b.wait_for_log("TLS IS OFF");
    // Start_command set COLONY_CA_DIR; a plaintext caller needs no CA.
    let out = Command::new(APP)
        .args(["call", &svc("basic::echo"), r#"{"text": "clear"}"#])
        .args(["--peer", &format!("{}={}", svc("basic::echo"), b.addr)])
        .env("COLONY_TLS", "off")
        .output()
        .expect("runs");
    assert_eq!(stdout(&out), "\"clear\"", "{}", stderr(&out));
    // A caller with TLS on is refused by the plaintext instance's protocol check, and
    // says so instead of hanging.
    let out = call("basic::echo", r#"{"text": "x"}"#, &b.addr, &[]);
    assert!(!out.status.success());
}

#[test]
fn an_instance_refuses_a_plaintext_caller_and_logs_why() {
    let b = Instance::start(&["basic::echo"], &[], 2);
    let out = Command::new(APP)
        .args(["call", &svc("basic::echo"), r#"{"text": "x"}"#])
        .args(["--peer", &format!("{}={}", svc("basic::echo"), b.addr)])
        .env("COLONY_TLS", "off")
        .output()
        .expect("runs");
    assert!(!out.status.success(), "{}", stdout(&out));
    b.wait_for_log("does not speak TLS");
    // Still serving callers that belong.
    let out = call("basic::echo", r#"{"text": "fine"}"#, &b.addr, &[]);
    assert_eq!(stdout(&out), "\"fine\"", "{}", stderr(&out));
}

/// Discovery on Kubernetes, against a real DNS server (dnsmasq) that answers for a headless
/// Service's name with the address of each "pod": two instances on one port of two
/// loopback addresses. The caller re-resolves the name and follows the pods as they change.
#[test]
fn kubernetes_discovery_follows_the_pods_behind_a_headless_name() {
    assert!(
        Command::new("dnsmasq").arg("--version").output().is_ok(),
        "dnsmasq is installed (apt-get install dnsmasq-base; .ci/run does it)"
    );
    let port = std::net::TcpListener::bind("127.0.0.2:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let a = Instance::start_on(&format!("127.0.0.2:{port}"), &["work::sleep_ms"], &[], 2);
    let b = Instance::start_on(&format!("127.0.0.3:{port}"), &["work::sleep_ms"], &[], 2);

    let name = "sleep-headless.test.svc.cluster.local";
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.2 {name}\n127.0.0.3 {name}\n")).expect("hosts");
    let dns_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    let mut dns = Command::new("dnsmasq")
        .args([
            "-k",
            "--conf-file=/dev/null",
            "--no-hosts",
            "--no-resolv",
            "--bind-interfaces",
        ])
        .args(["--listen-address=127.0.0.1", "--pid-file", "--local-ttl=0"])
        .arg(format!("--port={dns_port}"))
        .arg(format!("--addn-hosts={}", hosts.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq starts");

    let mut cmd = Command::new(APP);
    cmd.args([
        "serve",
        "--service",
        &svc("work::fan_out"),
        "--listen",
        "127.0.0.1:0",
    ])
    .args([
        "--peer",
        &format!("{}={name}:{port}", svc("work::sleep_ms")),
    ])
    .env("COLONY_DISCOVERY", "kubernetes")
    .env("COLONY_DNS_SERVER", format!("127.0.0.1:{dns_port}"))
    .env("COLONY_DNS_REFRESH", "100ms");
    let caller = Instance::start_command(cmd);

    // Both pods serve: calls are balanced over every address behind the name.
    let out = call("work::fan_out", r#"{"n": 200, "ms": 1}"#, &caller.addr, &[]);
    assert!(
        out.status.success(),
        "{}\ncaller's log:\n{}",
        stderr(&out),
        caller.log.try_iter().collect::<Vec<_>>().join("\n")
    );
    assert_eq!(stdout(&out), "200");
    a.wait_for_log("sleep started");
    b.wait_for_log("sleep started");

    // One pod goes away, and with it its DNS record: the caller follows.
    std::fs::write(&hosts, format!("127.0.0.3 {name}\n")).expect("hosts");
    let _ = Command::new("kill")
        .args(["-HUP", &dns.id().to_string()])
        .status();
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut clean = 0;
    while clean < 3 {
        assert!(
            Instant::now() < deadline,
            "the caller never settled on the remaining pod"
        );
        let out = call("work::fan_out", r#"{"n": 50, "ms": 1}"#, &caller.addr, &[]);
        clean = if out.status.success() { clean + 1 } else { 0 };
    }
    let _ = dns.kill();
    let _ = dns.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
