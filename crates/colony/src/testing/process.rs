//! An app's binary as real processes on 127.0.0.1, for tests that cross a process
//! boundary: instances started with `APP serve`, gateways with `APP gateway`, one-off
//! calls with `APP call`, and the faults a test injects (kill -9, SIGSTOP, SIGTERM).
//!
//! Owns: [`Processes`] (the binary, its environment, and a development CA made for the
//! test run) and [`Process`] (one started process: its address, its log lines as they
//! arrive, signals, exit). Promises: every wait has a deadline and fails with a message
//! that says what did not happen; a [`Process`] is killed when dropped, so a failing test
//! leaves nothing running. Must not touch: the runtime of the test itself (everything
//! here is blocking, usable from plain `#[test]`s).
//!
//! ```no_run
//! use std::time::Duration;
//! use colony::testing::Processes;
//!
//! // In an app's test: `Processes::new(env!("CARGO_BIN_EXE_hello"))`.
//! let app = Processes::new("target/debug/hello").expect("a CA for the run");
//! let pong = app.serve(&["hello::pong"], &[]).expect("starts");
//! let ping = app.serve(&["hello::ping"], &[("hello::pong", pong.addr())]).expect("starts");
//! let out = app.call("hello::ping", r#"{"n": 3}"#, &[("hello::ping", ping.addr())], &[]);
//! assert!(out.status.success());
//! pong.signal("KILL");
//! ping.wait_for_log("connection lost", Duration::from_secs(30)).expect("noticed");
//! ```

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a started process has to print where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// An app's binary, and how tests start it: its environment and the development CA every
/// process of the run trusts.
#[derive(Debug, Clone)]
pub struct Processes {
    exe: PathBuf,
    env: Vec<(OsString, OsString)>,
    ca_dir: Option<Arc<TempDir>>,
}

/// A directory made for the test run, removed when the last [`Processes`] holding it goes.
#[derive(Debug)]
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Processes {
    /// The binary at `exe` (`env!("CARGO_BIN_EXE_NAME")` in a test), with mutual TLS on:
    /// a fresh cluster CA is made for the run in the system's temporary directory, as
    /// `colony certs init` would, and every process finds it through `COLONY_CA_DIR`.
    pub fn new(exe: impl Into<PathBuf>) -> std::io::Result<Processes> {
        let exe = exe.into();
        let app = exe
            .file_stem()
            .map_or_else(|| "app".to_owned(), |s| s.to_string_lossy().into_owned());
        let dir = std::env::temp_dir().join(format!(
            "colony-test-ca-{app}-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        crate::security::Ca::generate(&app)
            .and_then(|ca| ca.save(&dir, true))
            .map_err(std::io::Error::other)?;
        Ok(Processes::plaintext(exe)
            .env("COLONY_TLS", "mtls")
            .env("COLONY_CA_DIR", &dir)
            .with_ca_dir(dir))
    }

    /// The binary at `exe` with TLS off (`COLONY_TLS=off`): for tests about something
    /// else, and faster to start.
    pub fn plaintext(exe: impl Into<PathBuf>) -> Processes {
        Processes {
            exe: exe.into(),
            env: vec![("COLONY_TLS".into(), "off".into())],
            ca_dir: None,
        }
        .env("COLONY_LOG", "info")
    }

    fn with_ca_dir(mut self, dir: PathBuf) -> Processes {
        self.ca_dir = Some(Arc::new(TempDir(dir)));
        self
    }

    /// Set `key` to `value` in the environment of every process started from now on.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Processes {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// The directory of the run's cluster CA (`None` with TLS off).
    pub fn ca_dir(&self) -> Option<&Path> {
        self.ca_dir.as_deref().map(|dir| dir.0.as_path())
    }

    /// The binary.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// A command of the binary with the run's environment and no standard input.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    /// Start an instance hosting `services` (full names) on a free port, with `peers`
    /// (`(NAME, ADDR)`, NAME a service, `module::*` or `*`) for the services it calls.
    pub fn serve(&self, services: &[&str], peers: &[(&str, &str)]) -> std::io::Result<Process> {
        self.serve_on("127.0.0.1:0", services, peers, &[])
    }

    /// Like [`Processes::serve`], listening on `listen`, with extra flags.
    pub fn serve_on(
        &self,
        listen: &str,
        services: &[&str],
        peers: &[(&str, &str)],
        flags: &[&str],
    ) -> std::io::Result<Process> {
        let mut args = vec![
            "serve".to_owned(),
            "--service".to_owned(),
            services.join(","),
            "--listen".to_owned(),
            listen.to_owned(),
        ];
        args.extend(peer_flags(peers));
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        self.start(&args, "colony: listening on ")
    }

    /// Start a gateway (`APP gateway`) on a free port in front of `peers`, with extra flags.
    pub fn gateway(&self, peers: &[(&str, &str)], flags: &[&str]) -> std::io::Result<Process> {
        let mut args = vec![
            "gateway".to_owned(),
            "--http".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        args.extend(peer_flags(peers));
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        self.start(&args, "colony: gateway on http://")
    }

    /// Start the binary with `args` and wait until it prints a line that starts with
    /// `announce` (such as `colony: listening on `); the rest of that line is its address.
    pub fn start(&self, args: &[String], announce: &str) -> std::io::Result<Process> {
        let mut child = self
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
            (Some(out), Some(err)) => (out, err),
            _ => return Err(std::io::Error::other("the child's output is not piped")),
        };
        let (log_tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if log_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (out_tx, out) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep reading to the end, so that the process never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = out_tx.send(line);
            }
        });
        let mut process = Process {
            child,
            addr: String::new(),
            log: Mutex::new(Log {
                lines: log,
                seen: Vec::new(),
            }),
            stdout: out,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match process.stdout.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix(announce) {
                        process.addr = addr.trim().to_owned();
                        return Ok(process);
                    }
                }
                Err(e) => {
                    // Standard output closed: the process is exiting. Once it has, its
                    // stderr is closed too: wait (briefly) for its last lines, which
                    // usually say why it exited.
                    if e == mpsc::RecvTimeoutError::Disconnected {
                        let _ = process.wait_exit(Duration::from_secs(2));
                    }
                    let status = process.child.try_wait().ok().flatten();
                    if status.is_some() {
                        process.drain_log(Duration::from_secs(2));
                    }
                    let log = process.log_lines().join("\n");
                    return Err(std::io::Error::other(format!(
                        "`{} {}` printed no `{announce}…` line within {START_TIMEOUT:?} \
                         (exit: {status:?}); its log:\n{log}",
                        self.exe.display(),
                        args.join(" ")
                    )));
                }
            }
        }
    }

    /// Run `APP call SERVICE JSON` with `peers` and extra flags, and return its output.
    pub fn call(
        &self,
        service: &str,
        json: &str,
        peers: &[(&str, &str)],
        flags: &[&str],
    ) -> Output {
        let result = self
            .command()
            .arg("call")
            .arg(service)
            .arg(json)
            .args(peer_flags(peers))
            .args(flags)
            .env("COLONY_LOG", "warn")
            .output();
        result.unwrap_or_else(|e| Output {
            status: failed_status(),
            stdout: Vec::new(),
            stderr: format!("`{} call` did not start: {e}", self.exe.display()).into_bytes(),
        })
    }
}

fn peer_flags(peers: &[(&str, &str)]) -> Vec<String> {
    peers
        .iter()
        .flat_map(|(name, addr)| ["--peer".to_owned(), format!("{name}={addr}")])
        .collect()
}

#[cfg(unix)]
fn failed_status() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(127 << 8)
}

#[cfg(not(unix))]
fn failed_status() -> ExitStatus {
    use std::os::windows::process::ExitStatusExt;
    ExitStatus::from_raw(127)
}

/// The log lines a process has written so far, and those still to read.
#[derive(Debug)]
struct Log {
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

/// A started process of the app; killed when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    addr: String,
    log: Mutex<Log>,
    stdout: mpsc::Receiver<String>,
}

impl Process {
    /// Where it listens: the instance's address, or the gateway's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line (its standard error) it has written so far.
    pub fn log_lines(&self) -> Vec<String> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        while let Ok(line) = log.lines.try_recv() {
            log.seen.push(line);
        }
        log.seen.clone()
    }

    /// Take every log line still to come until the process's stderr closes, for at most
    /// `within`.
    fn drain_log(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        while let Ok(line) = log
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            log.seen.push(line);
        }
    }

    /// Wait until `count` log lines (counting those already written) contain every one
    /// of `needles`: for a test that waits for the second time something happens.
    pub fn wait_for_lines(
        &self,
        needles: &[&str],
        count: usize,
        within: Duration,
    ) -> Result<(), String> {
        let matches = |line: &String| needles.iter().all(|n| line.contains(n));
        wait_until(
            &format!("{count} log lines with {needles:?}"),
            within,
            || (self.log_lines().iter().filter(|l| matches(l)).count() >= count).then_some(()),
        )
    }

    /// Whether a log line so far contains every one of `needles`.
    pub fn logged(&self, needles: &[&str]) -> bool {
        self.log_lines()
            .iter()
            .any(|line| needles.iter().all(|n| line.contains(n)))
    }

    /// Wait until a log line contains `needle`; the error says what was logged instead.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> Result<String, String> {
        self.wait_for_log_with(&[needle], within)
    }

    /// Wait until one log line contains every one of `needles`, and return it.
    pub fn wait_for_log_with(&self, needles: &[&str], within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(line) = log
            .seen
            .iter()
            .find(|line| needles.iter().all(|n| line.contains(n)))
        {
            return Ok(line.clone());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match log.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = needles.iter().all(|n| line.contains(n));
                    log.seen.push(line.clone());
                    if found {
                        return Ok(line);
                    }
                }
                Err(_) => {
                    let tail: Vec<&str> =
                        log.seen.iter().rev().take(20).map(String::as_str).collect();
                    return Err(format!(
                        "no log line with {needles:?} within {within:?}; the last lines:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ));
                }
            }
        }
    }

    /// The next line it prints on standard output (after its address), within `within`.
    pub fn next_stdout_line(&self, within: Duration) -> Option<String> {
        self.stdout.recv_timeout(within).ok()
    }

    /// Send it a signal by name (`KILL`, `STOP`, `CONT`, `TERM`, `INT`), through the
    /// `kill` command (the workspace allows no unsafe code, so no `libc::kill`).
    pub fn signal(&self, name: &str) -> bool {
        Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Wait for it to exit within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    return Err(format!("pid {} did not exit within {within:?}", self.pid()));
                }
                Err(e) => return Err(format!("pid {}: {e}", self.pid())),
            }
        }
    }

    /// The number of its threads, from `/proc` (Linux).
    pub fn threads(&self) -> Option<usize> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse().ok())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `check` every 20 ms until it returns `Some`, for at most `within`; the error names
/// `what` was awaited. For tests that wait for a state rather than sleep a fixed time.
pub fn wait_until<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(format!("{what}: not within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
