//! What the CLI's integration tests share: the app binaries they drive, `colony up`
//! clusters of them, and HTTP requests to their gateways. Each test binary uses a part.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The workspace's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The executable of the workspace's package `package` (an app), built once per test
/// binary with `cargo build -p package`: on its own, so that cargo does not unify another
/// app's features (the store's, say) into it.
pub(crate) fn binary(package: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(exe) = built.get(package) {
        return exe.clone();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["build", "-p", package, "--message-format=json"])
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "{package} builds");
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["kind"][0] == "bin")
        .filter(|m| {
            m["manifest_path"]
                .as_str()
                .is_some_and(|p| !p.contains("colony-cli"))
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("{package}'s executable"));
    built.insert(package.to_owned(), exe.clone());
    exe
}

/// A fresh, empty directory for one test: `colony-NAME-PID` in the system's temp dir.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("colony-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The `colony` binary under test.
pub(crate) const COLONY: &str = env!("CARGO_BIN_EXE_colony");

/// A process's stderr, as text.
pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Clusters are heavy on a 2-core machine: one at a time in a test binary.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A `colony up --detach` cluster in a directory of its own; `colony down` when dropped.
pub(crate) struct Cluster {
    /// The app's directory: `colony.toml`, and `.colony/` once it runs.
    pub(crate) dir: PathBuf,
    /// The app's binary.
    app: PathBuf,
    /// Environment for the orchestrator, and so for every instance.
    env: Vec<(String, String)>,
    /// More arguments of `colony up` (`--docker`, `--http ADDR`).
    args: Vec<String>,
    _turn: MutexGuard<'static, ()>,
}

impl Cluster {
    /// `colony up --detach` of `app` in a fresh directory named after `name`, with `toml` as
    /// its `colony.toml`, `env` set for the orchestrator and `args` added; it must succeed.
    pub(crate) fn up(
        name: &str,
        toml: &str,
        app: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Cluster {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let dir = std::env::temp_dir().join(format!("colony-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("colony.toml"), toml).expect("colony.toml");
        let cluster = Cluster {
            dir,
            app: app.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            _turn: turn,
        };
        let out = cluster.up_again();
        assert!(out.status.success(), "colony up: {}", stderr(&out));
        cluster
    }

    /// `colony up` once more, as the cluster was first started.
    pub(crate) fn up_again(&self) -> Output {
        Command::new(COLONY)
            .arg("up")
            .arg(&self.dir)
            .arg("--app-binary")
            .arg(&self.app)
            .arg("--detach")
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("colony up runs")
    }

    /// The directory, as `colony` takes it.
    pub(crate) fn path(&self) -> &str {
        self.dir.to_str().expect("utf-8")
    }

    /// `colony ARGS`.
    pub(crate) fn colony(&self, args: &[&str]) -> Output {
        Command::new(COLONY)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("colony runs")
    }

    /// `colony status --json`.
    pub(crate) fn status(&self) -> Value {
        let out = self.colony(&["status", self.path(), "--json"]);
        assert!(out.status.success(), "colony status: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// `colony status --events --json`.
    pub(crate) fn events(&self) -> Vec<Value> {
        let out = self.colony(&["status", self.path(), "--events", "--json"]);
        assert!(
            out.status.success(),
            "colony status --events: {}",
            stderr(&out)
        );
        serde_json::from_slice(&out.stdout).expect("events JSON")
    }

    /// Whether the event log has an event of `kind` about `instance` (an instance's id).
    pub(crate) fn has_event(&self, kind: &str, instance: &Value) -> bool {
        self.events()
            .iter()
            .any(|e| e["kind"] == kind && e["instance"] == *instance)
    }

    /// The instances of `service` in `state` (`healthy`, `starting`, …).
    pub(crate) fn instances(&self, service: &str, state: &str) -> Vec<Value> {
        self.status()["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == service).cloned())
            .unwrap_or_else(|| panic!("{service} in status"))["instances"]
            .as_array()
            .map(|i| i.iter().filter(|i| i["state"] == state).cloned().collect())
            .unwrap_or_default()
    }

    /// Poll `cond` until it holds, failing with the status and events after `within`.
    pub(crate) fn wait_until(
        &self,
        what: &str,
        within: Duration,
        mut cond: impl FnMut(&Cluster) -> bool,
    ) {
        let deadline = Instant::now() + within;
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}; status: {}\nevents: {:#?}",
                self.status(),
                self.events()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.colony(&["down", self.path()]);
    }
}

/// A minimal HTTP/1.1 request to the gateway at `url` (`http://HOST:PORT`): the status
/// code and the body (status 0, and the reason, when the exchange failed).
pub(crate) fn http(url: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://");
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return (0, "the gateway did not accept the connection".to_owned());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, "the request could not be sent".to_owned());
    }
    let mut response = String::new();
    if let Err(e) = stream.read_to_string(&mut response) {
        return (0, format!("the answer could not be read: {e}"));
    }
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
