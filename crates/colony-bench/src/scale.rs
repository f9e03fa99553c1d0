//! `--scale`: how long the local orchestrator takes from a load spike to a new instance
//! serving calls.
//!
//! It runs the real thing: `colony up --detach` on the fixture app of `tests/e2e`, with a
//! `colony.toml` that gives `work::sleep_ms` room to grow (capacity 10, one instance to
//! start, up to three) and the default heartbeat. Then the app's own load driver puts 30
//! calls of 20 ms in flight (load 3.0 against a high watermark of 0.8), and the bench polls
//! `colony status --json` until a second instance of `sleep_ms` is healthy and has served
//! calls. That time, from the first call of the spike, is one trial; the cluster is torn
//! down with `colony down` between trials.
//!
//! It needs the two binaries built next to this one:
//! `cargo build --release -p colony-cli -p colony-e2e`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::measure::{Result, median};

const SLEEP: &str = "colony_e2e::services::work::sleep_ms";
const DRIVE: &str = "colony_e2e::services::load::drive";

/// The cluster test's `colony.toml` for a ramp, with a cooldown long enough that one spike
/// gives one scale-up.
fn toml() -> String {
    include_str!("../../../tests/e2e/ramp.colony.toml")
        .replace("cooldown = \"1s\"", "cooldown = \"30s\"")
}

/// The figures of a `--scale` run.
#[derive(Debug)]
pub(crate) struct Scale {
    /// Seconds from the spike to a second instance serving, per trial.
    pub(crate) trials: Vec<f64>,
    /// The heartbeat interval the orchestrator used.
    pub(crate) heartbeat: String,
}

impl Scale {
    /// The report, as text.
    pub(crate) fn text(&self) -> String {
        let mut all = self.trials.clone();
        let each: Vec<String> = self.trials.iter().map(|t| format!("{t:.2} s")).collect();
        format!(
            "colony-bench --scale: a load spike (30 calls of 20 ms in flight, capacity 10, high \
             watermark 0.8) against one instance of {SLEEP} under `colony up` (heartbeat \
             {}), until a second instance is healthy and has served calls\n\
             machine: {}\n\
             trials: {}\n\
             median: {:.2} s (status is polled through `colony status --json` every 20 ms \
             plus the time one status request takes, so each figure is late by up to that \
             much)\n",
            self.heartbeat,
            crate::report::machine(),
            each.join(", "),
            median(&mut all),
        )
    }
}

/// Run `trials` spikes, each on a fresh cluster.
pub(crate) fn run(trials: usize) -> Result<Scale> {
    let bin = binaries()?;
    let mut times = Vec::new();
    for trial in 1..=trials {
        eprintln!("colony-bench --scale: trial {trial} of {trials}");
        times.push(spike(&bin)?.as_secs_f64());
    }
    Ok(Scale {
        trials: times,
        heartbeat: "500 ms, the default".to_owned(),
    })
}

/// The `colony` and fixture app binaries, next to this one.
struct Binaries {
    colony: PathBuf,
    app: PathBuf,
}

fn binaries() -> Result<Binaries> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or("the bench binary has no directory")?;
    let found = Binaries {
        colony: dir.join("colony"),
        app: dir.join("colony-e2e"),
    };
    for path in [&found.colony, &found.app] {
        if !path.is_file() {
            return Err(format!(
                "{} is missing; build it first: cargo build --release -p colony-cli -p colony-e2e",
                path.display()
            )
            .into());
        }
    }
    Ok(found)
}

/// A cluster under `colony up` in a directory of its own, taken down when dropped.
struct Cluster<'a> {
    bin: &'a Binaries,
    dir: PathBuf,
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        let _ = self.colony(&["down"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster<'_> {
    fn colony(&self, args: &[&str]) -> std::io::Result<Output> {
        let mut command = Command::new(&self.bin.colony);
        command.args(args.iter().take(1)).arg(&self.dir);
        command.args(args.iter().skip(1));
        command.stdin(Stdio::null()).output()
    }

    fn status(&self) -> Result<Value> {
        let out = self.colony(&["status", "--json"])?;
        if !out.status.success() {
            return Err(format!("colony status: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    fn healthy(&self, service: &str) -> Result<Vec<Value>> {
        let status = self.status()?;
        let instances = status["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == service))
            .and_then(|s| s["instances"].as_array())
            .map(|i| {
                i.iter()
                    .filter(|i| i["state"] == "healthy")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Ok(instances)
    }

    fn wait_until(&self, what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !cond()? {
            if Instant::now() > deadline {
                return Err(format!("timed out waiting until {what}").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

fn spike(bin: &Binaries) -> Result<Duration> {
    let dir = std::env::temp_dir().join(format!("colony-bench-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("colony.toml"), toml())?;
    let cluster = Cluster { bin, dir };
    let up = Command::new(&bin.colony)
        .arg("up")
        .arg(&cluster.dir)
        .arg("--app-binary")
        .arg(&bin.app)
        .arg("--detach")
        .stdin(Stdio::null())
        .output()?;
    if !up.status.success() {
        return Err(format!("colony up: {}", String::from_utf8_lossy(&up.stderr)).into());
    }
    cluster.wait_until("the driver and one sleep_ms instance are healthy", || {
        Ok(!cluster.healthy(DRIVE)?.is_empty() && cluster.healthy(SLEEP)?.len() == 1)
    })?;
    let driver = cluster.healthy(DRIVE)?;
    let addr = driver[0]["addr"]
        .as_str()
        .ok_or("the driver has no address")?;
    let driving = drive(bin, &cluster.dir, addr);
    let started = Instant::now();
    cluster.wait_until("a second instance serves calls", || {
        let healthy = cluster.healthy(SLEEP)?;
        Ok(healthy.len() >= 2
            && healthy
                .iter()
                .all(|i| i["load"]["completed"].as_u64().unwrap_or(0) > 0))
    })?;
    let took = started.elapsed();
    let report = driving.join().map_err(|_| "the load driver panicked")??;
    if report["failed"] != 0 {
        return Err(format!("calls failed during the spike: {report}").into());
    }
    Ok(took)
}

/// Put the spike on `sleep_ms` through the app's driver at `addr`, for 6 s.
fn drive(
    bin: &Binaries,
    dir: &Path,
    addr: &str,
) -> std::thread::JoinHandle<std::result::Result<Value, String>> {
    let app = bin.app.clone();
    let ca_dir = dir.join(".colony");
    let peer = format!("{DRIVE}={addr}");
    std::thread::spawn(move || {
        let out = Command::new(app)
            .args([
                "call",
                DRIVE,
                r#"{"concurrency": 30, "duration_ms": 6000, "sleep_ms": 20}"#,
                "--peer",
                &peer,
                "--timeout",
                "120s",
            ])
            .env("COLONY_CA_DIR", &ca_dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("the load driver did not start: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "the load driver failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("the driver's report: {e}"))
    })
}
