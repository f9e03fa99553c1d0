//! Real processes on 127.0.0.1: the fixture app started as instances that call each other
//! over mutual TLS (the default), and real faults (kill -9, SIGTERM) in the middle of calls.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use colony::testing::{Process, Processes};

use crate::support::{APP, serve, svc, wait_for_log, with_peers};

/// The fixture app with a cluster CA made for this test run, as `colony certs init` would
/// make it; every process of these tests finds it through `COLONY_CA_DIR`.
fn app() -> &'static Processes {
    static APP_TLS: OnceLock<Processes> = OnceLock::new();
    APP_TLS.get_or_init(|| Processes::new(APP).expect("a CA for the run"))
}

/// An instance hosting `services`, with `peers` for the services it calls.
fn start(services: &[&str], peers: &[(&str, &str)], threads: usize) -> Process {
    start_on("127.0.0.1:0", services, peers, threads)
}

fn start_on(listen: &str, services: &[&str], peers: &[(&str, &str)], threads: usize) -> Process {
    serve(
        app(),
        listen,
        services,
        peers,
        &["--threads", &threads.to_string()],
    )
}

/// Run `APP call SERVICE JSON --peer SERVICE=ADDR` and return its output.
fn call(service: &str, json: &str, addr: &str, extra: &[&str]) -> Output {
    call_with(app(), service, json, addr, extra)
}

/// [`call`] from `app`: another environment.
fn call_with(app: &Processes, service: &str, json: &str, addr: &str, extra: &[&str]) -> Output {
    with_peers(&[(service, addr)], |peers| {
        app.call(&svc(service), json, peers, extra)
    })
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// A hosts `chain::ping` and `basic::relay_remaining`; B hosts `chain::pong` and
/// `basic::remaining_ms`; each knows the other's address.
fn mutual(threads: usize) -> (Process, Process) {
    // B must know A's address before A starts: reserve a free port for A.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a_addr = probe.local_addr().expect("addr").to_string();
    drop(probe);
    let b = start(
        &["chain::pong", "basic::remaining_ms"],
        &[("chain::ping", &a_addr)],
        threads,
    );
    let a = start_on(
        &a_addr,
        &["chain::ping", "basic::relay_remaining"],
        &[("chain::pong", b.addr()), ("basic::remaining_ms", b.addr())],
        threads,
    );
    (a, b)
}

#[test]
fn two_processes_call_each_other() {
    let (a, _b) = mutual(2);
    let out = call("chain::ping", r#"{"depth": 10}"#, a.addr(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "10");

    // The caller's deadline reaches the callee two processes away.
    let out = call(
        "basic::relay_remaining",
        "{}",
        a.addr(),
        &["--timeout", "3s"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let left: u64 = stdout(&out).parse().expect("a number of ms");
    assert!(left > 0 && left <= 3_000, "left = {left}");
}

#[test]
fn a_thousand_nested_calls_across_two_processes_with_four_threads_each() {
    let (a, b) = mutual(4);
    let out = call(
        "chain::ping",
        r#"{"depth": 1000}"#,
        a.addr(),
        &["--timeout", "60s"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1000");
    // 1000 calls were parked at once, yet neither process grew a thread per call.
    for inst in [&a, &b] {
        let threads = inst.threads().expect("a Threads line in /proc");
        assert!(
            threads <= 4 + 4,
            "{threads} threads: calls must park futures, not threads"
        );
    }
}

#[test]
fn ten_thousand_calls_in_flight_against_one_instance() {
    let b = start(&["work::sleep_ms"], &[], 2);
    let a = start(&["work::fan_out"], &[("work::sleep_ms", b.addr())], 2);
    let out = call(
        "work::fan_out",
        r#"{"n": 10000, "ms": 500}"#,
        a.addr(),
        &["--timeout", "120s"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "10000");
}

#[test]
fn kill_9_of_the_callee_mid_call_fails_the_caller_before_its_deadline() {
    let b = start(&["work::sleep_ms"], &[], 2);
    let a = start(&["work::relay_sleep"], &[("work::sleep_ms", b.addr())], 2);
    let addr = a.addr().to_owned();
    let caller = std::thread::spawn(move || {
        call(
            "work::relay_sleep",
            r#"{"ms": 600000}"#,
            &addr,
            &["--timeout", "60s"],
        )
    });
    wait_for_log(&b, &["sleep started"]);
    assert!(b.signal("KILL"));
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
    let mut b = start(&["work::sleep_ms"], &[], 2);
    let addr = b.addr().to_owned();
    let caller = std::thread::spawn(move || call("work::sleep_ms", r#"{"ms": 1500}"#, &addr, &[]));
    wait_for_log(&b, &["sleep started"]);
    assert!(b.signal("TERM"));
    let out = caller.join().expect("caller thread");
    assert!(
        out.status.success(),
        "the call in flight completes: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "1500");
    let status = b
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "exits cleanly after draining: {status:?}");
}

#[test]
fn bad_input_gets_a_clear_answer() {
    let b = start(&["basic::add", "basic::fail"], &[], 2);

    let out = call("basic::add", r#"{"a": "seven"}"#, b.addr(), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("field `a`"), "{}", stderr(&out));

    let out = call("basic::add", r#"{"b": 1}"#, b.addr(), &[]);
    assert!(
        stderr(&out).contains("missing field `a`"),
        "{}",
        stderr(&out)
    );

    let out = call("basic::add", r#"{"a": 1, "c": 2}"#, b.addr(), &[]);
    assert!(
        stderr(&out).contains("unknown field `c`"),
        "{}",
        stderr(&out)
    );

    let out = call("basic::add", "not json", b.addr(), &[]);
    assert!(stderr(&out).contains("not valid JSON"), "{}", stderr(&out));

    // A peer that does not host the service says so, naming it.
    let out = call("basic::echo", r#"{"text": "x"}"#, b.addr(), &[]);
    assert!(
        stderr(&out).contains("does not host service"),
        "{}",
        stderr(&out)
    );

    // The service's own error comes back as its JSON.
    let out = call("basic::fail", r#"{"message": "gone"}"#, b.addr(), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("gone"), "{}", stderr(&out));

    // Still serving after all of that.
    let out = call("basic::add", r#"{"a": 1, "b": 2}"#, b.addr(), &[]);
    assert_eq!(stdout(&out), "3");
}

#[test]
fn a_peer_from_another_build_is_refused_naming_both_fingerprints() {
    let b = start(&["basic::echo"], &[], 2);
    let other = app().clone().env("COLONY_FINGERPRINT", "another-build");
    let out = call_with(&other, "basic::echo", r#"{"text": "x"}"#, b.addr(), &[]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("another-build"), "{err}");
    assert!(err.contains("different builds"), "{err}");
}

#[test]
fn malformed_and_oversized_frames_close_only_their_connection() {
    use std::io::Write;
    let b = start(&["basic::echo"], &[], 2);
    // Garbage instead of a handshake.
    let mut garbage = std::net::TcpStream::connect(b.addr()).expect("connects");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("writes");
    // A frame announcing 1 GiB.
    let mut huge = std::net::TcpStream::connect(b.addr()).expect("connects");
    huge.write_all(&(1u32 << 30).to_be_bytes()).expect("writes");
    for mut s in [garbage, huge] {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest); // closed by the instance
    }
    wait_for_log(&b, &["refused connection"]);
    let out = call("basic::echo", r#"{"text": "fine"}"#, b.addr(), &[]);
    assert_eq!(stdout(&out), "\"fine\"");
}

#[test]
fn without_a_cluster_ca_an_instance_stops_at_once_and_says_what_to_do() {
    let ca_dir = app().ca_dir().expect("a CA for the run");
    let out = app()
        .command()
        .args([
            "serve",
            "--service",
            &svc("basic::echo"),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("COLONY_CA_DIR", ca_dir.join("missing"))
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
    let plaintext = Processes::plaintext(APP);
    let b = serve(&plaintext, "127.0.0.1:0", &["basic::echo"], &[], &[]);
    wait_for_log(&b, &["TLS IS OFF"]);
    // A plaintext caller needs no CA.
    let out = call_with(
        &plaintext,
        "basic::echo",
        r#"{"text": "clear"}"#,
        b.addr(),
        &[],
    );
    assert_eq!(stdout(&out), "\"clear\"", "{}", stderr(&out));
    // A caller with TLS on is refused by the plaintext instance's protocol check, and
    // says so instead of hanging.
    let out = call("basic::echo", r#"{"text": "x"}"#, b.addr(), &[]);
    assert!(!out.status.success());
}

#[test]
fn an_instance_refuses_a_plaintext_caller_and_logs_why() {
    let b = start(&["basic::echo"], &[], 2);
    let plaintext = Processes::plaintext(APP);
    let out = call_with(&plaintext, "basic::echo", r#"{"text": "x"}"#, b.addr(), &[]);
    assert!(!out.status.success(), "{}", stdout(&out));
    wait_for_log(&b, &["does not speak TLS"]);
    // Still serving callers that belong.
    let out = call("basic::echo", r#"{"text": "fine"}"#, b.addr(), &[]);
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
    let a = start_on(&format!("127.0.0.2:{port}"), &["work::sleep_ms"], &[], 2);
    let b = start_on(&format!("127.0.0.3:{port}"), &["work::sleep_ms"], &[], 2);

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

    let kubernetes = app()
        .clone()
        .env("COLONY_DISCOVERY", "kubernetes")
        .env("COLONY_DNS_SERVER", format!("127.0.0.1:{dns_port}"))
        .env("COLONY_DNS_REFRESH", "100ms");
    let caller = serve(
        &kubernetes,
        "127.0.0.1:0",
        &["work::fan_out"],
        &[("work::sleep_ms", &format!("{name}:{port}"))],
        &[],
    );

    // Both pods serve: calls are balanced over every address behind the name.
    let out = call(
        "work::fan_out",
        r#"{"n": 200, "ms": 1}"#,
        caller.addr(),
        &[],
    );
    assert!(
        out.status.success(),
        "{}\ncaller's log:\n{}",
        stderr(&out),
        caller.log_lines().join("\n")
    );
    assert_eq!(stdout(&out), "200");
    wait_for_log(&a, &["sleep started"]);
    wait_for_log(&b, &["sleep started"]);

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
        let out = call("work::fan_out", r#"{"n": 50, "ms": 1}"#, caller.addr(), &[]);
        clean = if out.status.success() { clean + 1 } else { 0 };
    }
    let _ = dns.kill();
    let _ = dns.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
