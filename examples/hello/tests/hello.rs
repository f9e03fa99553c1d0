//! The hello example in each deployment shape: one process, and two processes calling
//! each other over mutual TLS.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

const APP: &str = env!("CARGO_BIN_EXE_hello");

/// A cluster CA for this test run, as `colony certs init` would make it.
fn ca_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hello-ca-{}", std::process::id()));
        colony::security::Ca::generate("hello")
            .expect("a CA")
            .save(&dir, true)
            .expect("saved");
        dir
    })
}

struct Instance(Child, String);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(services: &str, peers: &[String]) -> Instance {
    let mut cmd = Command::new(APP);
    cmd.args(["serve", "--service", services, "--listen", "127.0.0.1:0"]);
    for p in peers {
        cmd.args(["--peer", p]);
    }
    let mut child = cmd
        .env("COLONY_CA_DIR", ca_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hello starts");
    let mut stdout = child.stdout.take().expect("piped");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    // Keep reading, so that later lines (the metrics URL) find an open pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let line = String::from_utf8_lossy(&line).into_owned();
    let addr = line
        .strip_prefix("colony: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Instance(child, addr)
}

fn call(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(APP)
        .arg("call")
        .args(args)
        .env("COLONY_CA_DIR", ca_dir())
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

#[test]
fn one_process() {
    let (ok, out, err) = call(&["hello::greeter::greet", r#"{"name": "ada  lovelace"}"#]);
    assert!(ok, "{err}");
    assert_eq!(out, r#""Hello, Ada Lovelace! (11 letters)""#);
}

#[test]
fn two_processes() {
    let names = serve("hello::names::normalize,hello::names::count_letters", &[]);
    let greeter = serve(
        "hello::greeter::greet",
        &[format!("hello::names::*={}", names.1)],
    );
    let peer = format!("hello::greeter::greet={}", greeter.1);
    let (ok, out, err) = call(&[
        "hello::greeter::greet",
        r#"{"name": "grace hopper"}"#,
        "--peer",
        &peer,
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, r#""Hello, Grace Hopper! (11 letters)""#);

    // The service's own error crosses both hops as a value.
    let (ok, _, err) = call(&[
        "hello::greeter::greet",
        r#"{"name": "  "}"#,
        "--peer",
        &peer,
    ]);
    assert!(!ok);
    assert!(err.contains("the name is empty"), "{err}");
}

#[test]
fn describe_lists_both_services_with_schemas() {
    let out = Command::new(APP).arg("describe").output().expect("runs");
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let services = doc["services"].as_array().expect("services");
    let greet = services
        .iter()
        .find(|s| s["name"] == "hello::greeter::greet")
        .expect("greet is described");
    assert_eq!(greet["exposed"], true);
    assert_eq!(greet["http"], "GET /hello/{name}");
    assert_eq!(greet["args"][0]["name"], "name");
    assert_eq!(greet["args"][0]["schema"]["type"], "string");
    assert_eq!(services.len(), 3);
}
