//! The local orchestrator: starts instances, discovers them, watches their heartbeats,
//! scales them, and survives its own restart.
//!
//! Owns: the instances of one app on this machine and their desired counts. Promises:
//! membership changes are pushed to every instance; an instance that misses its heartbeats
//! for 1.5 intervals is quarantined (taken out of membership), then killed and replaced
//! after 2 more; a crashed instance is replaced; scale-down drains; desired counts, the
//! instances and the event log persist in `.colony/`, so a restarted orchestrator re-adopts
//! running instances instead of starting duplicates. Must not touch: the app's calls
//! (instances call each other directly).
//!
//! The control port speaks mutual TLS 1.3 with the cluster CA when security is on: the
//! orchestrator presents `@orchestrator`, an instance may register only for the services
//! its certificate names (the gateway as `@gateway`), and status, scaling and stop requests
//! are answered only for the CLI's `@control`. Plaintext and foreign certificates are
//! refused in the handshake, and every refusal is an event with its reason.
//!
//! With `--docker` every instance is a container (see `docker.rs`): the orchestrator stays
//! a host process, listening on the host's address on the cluster's network, and hands each
//! container a certificate it issued, as files.

pub(crate) mod cache;
pub(crate) mod docker;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use colony::discovery::{FromOrchestrator, LoadSnapshot, ToOrchestrator, read_line, write_message};
use colony::security::{
    Ca, CallerPolicy, CertLifetime, MutualTls, ROLE_CONTROL, ROLE_GATEWAY, ROLE_ORCHESTRATOR,
};
use colony::transport::{Authenticated, BoxStream, Dialer, Listener, PeerIdentity};
use serde::{Deserialize, Serialize};
use tokio::io::{BufReader, ReadHalf, WriteHalf};

use self::cache::LocalCache;
use tokio::sync::mpsc;

use self::docker::DockerCluster;
use crate::settings::{CacheSettings, ClusterSettings, ServiceSettings};

/// The pseudo-service under which the HTTP gateway runs (its certificate names this role).
pub(crate) const GATEWAY: &str = ROLE_GATEWAY;

/// The directory in `.colony/` where the built-in store service (`STORE_SERVICE`, the
/// `store` feature of `colony`) keeps its file, which outlives its instances.
const STORE_DIR: &str = "store";

/// The file in `.colony/` that tells the CLI how to reach the orchestrator's control port.
const CONTROL_FILE: &str = "orchestrator.json";

/// How long a peer of the control port has to send its first message.
const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many refusals a second become events; the rest are counted.
const REFUSAL_EVENTS_PER_SECOND: u32 = 5;

/// How long a new instance has to register before it is replaced.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a running instance found after a restart has to register again.
const ADOPT_GRACE: Duration = Duration::from_secs(10);
/// How long a draining instance has to exit before it is killed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(40);

/// The app an orchestrator runs.
#[derive(Debug, Clone)]
pub(crate) struct App {
    /// The app's name, as its binary reports it: the trust domain of its certificates.
    pub(crate) name: String,
    /// The app's binary.
    pub(crate) binary: PathBuf,
    /// The app's directory: instances run there and read its `colony.toml`.
    pub(crate) dir: PathBuf,
    /// `.colony/` of the app: state, events, logs, the cluster CA.
    pub(crate) state_dir: PathBuf,
    /// The app's build fingerprint, from `describe`.
    pub(crate) fingerprint: String,
    /// Services in `describe` order.
    pub(crate) services: Vec<String>,
    /// Where the HTTP gateway should listen, when the app exposes services.
    pub(crate) gateway: Option<String>,
    /// Instances run as containers of this cluster (`colony up --docker`).
    pub(crate) docker: Option<DockerCluster>,
    /// `[cache]` of `colony.toml`: the memcached to run for the store (process mode).
    pub(crate) cache: Option<CacheSettings>,
}

/// The state of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum State {
    /// Started, not yet registered.
    Starting,
    /// Registered and heartbeating: in membership.
    Healthy,
    /// Missed its heartbeats: out of membership, to be killed and replaced.
    Quarantined,
    /// Told to drain: out of membership, finishing its calls.
    Draining,
    /// Found running by a restarted orchestrator; waiting for it to register again.
    Adopting,
}

/// One instance, as `status` reports it and as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InstanceInfo {
    pub(crate) id: String,
    pub(crate) service: String,
    pub(crate) pid: u32,
    pub(crate) addr: Option<String>,
    pub(crate) state: State,
    pub(crate) load: LoadSnapshot,
    pub(crate) log: PathBuf,
    /// Where it serves `/metrics` and `/healthz`, once registered.
    #[serde(default)]
    pub(crate) metrics: Option<String>,
    /// Its container, under `colony up --docker` (`pid` is then the `docker run` process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) container: Option<String>,
}

struct Instance {
    info: InstanceInfo,
    /// When it last registered or heartbeat.
    last_seen: Instant,
    /// When it entered its current state.
    since: Instant,
    /// Our child process, when we started it (not for adopted instances).
    child: Option<tokio::process::Child>,
    /// A kill was sent; the instance is gone once its process is.
    killed: bool,
    /// When the certificate the orchestrator issued it is due for renewal (containers).
    renew_cert_at: Option<Instant>,
}

/// A scaling or health event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Event {
    /// Milliseconds since the Unix epoch.
    pub(crate) time_ms: u64,
    pub(crate) kind: String,
    pub(crate) service: String,
    pub(crate) instance: Option<String>,
    pub(crate) reason: String,
}

/// What persists across orchestrator restarts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    fingerprint: String,
    control_addr: String,
    next_id: u64,
    desired: BTreeMap<String, u32>,
    instances: Vec<InstanceInfo>,
    /// The cluster's memcached, when `[cache]` is on.
    #[serde(default)]
    cache: Option<LocalCache>,
}

/// How the CLI reaches the control port, written to `.colony/orchestrator.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ControlInfo {
    /// Mutual TLS with the cluster CA in `.colony/`, or plaintext (`security = "off"`).
    tls: bool,
    /// The app, whose trust domain the CLI's certificate must belong to.
    app: String,
}

/// A request from the CLI.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Request {
    Status,
    Events,
    Scale { service: String, count: u32 },
    Down,
}

/// The answer to a CLI request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Response {
    Status(Status),
    Events { events: Vec<Event> },
    Ok { message: String },
    Error { message: String },
}

/// `colony status --json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Status {
    pub(crate) orchestrator_pid: u32,
    pub(crate) control_addr: String,
    pub(crate) heartbeat_ms: u64,
    pub(crate) services: Vec<ServiceStatus>,
    /// The HTTP gateway's URL, once it is serving.
    #[serde(default)]
    pub(crate) gateway: Option<String>,
    /// The cache tier's address (`[cache]`), which every instance has as `COLONY_CACHE`.
    #[serde(default)]
    pub(crate) cache: Option<String>,
}

/// One service in `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServiceStatus {
    pub(crate) name: String,
    pub(crate) desired: u32,
    pub(crate) settings: ServiceSettings,
    pub(crate) instances: Vec<InstanceInfo>,
}

struct Inner {
    app: App,
    cluster: ClusterSettings,
    settings: BTreeMap<String, ServiceSettings>,
    desired: BTreeMap<String, u32>,
    instances: BTreeMap<String, Instance>,
    links: HashMap<String, mpsc::UnboundedSender<FromOrchestrator>>,
    last_members: BTreeMap<String, Vec<String>>,
    next_id: u64,
    control_addr: String,
    /// Since when each service's load has been below its low watermark.
    below_since: HashMap<String, Instant>,
    /// When each service last scaled.
    last_scaled: HashMap<String, Instant>,
    /// The next core to pin an instance to.
    next_core: usize,
    stopping: bool,
    /// The cluster CA, when the control port is mutual TLS (it issues containers' leaves).
    ca: Option<Arc<Ca>>,
    /// Refusals in the current second, and those not logged since the last logged one.
    refusals: (Instant, u32, u64),
    /// The cluster's memcached (`[cache]`), and its process when this orchestrator
    /// started it (to reap it).
    cache: Option<LocalCache>,
    cache_child: Option<std::process::Child>,
}

/// A running orchestrator.
#[derive(Clone)]
pub(crate) struct Orchestrator {
    inner: Arc<Mutex<Inner>>,
    done: Arc<tokio::sync::Notify>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether `pid` is a live (not zombie) process.
pub(crate) fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesized command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn kill(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

impl Inner {
    fn event(&mut self, kind: &str, service: &str, instance: Option<&str>, reason: String) {
        let event = Event {
            time_ms: now_ms(),
            kind: kind.to_owned(),
            service: service.to_owned(),
            instance: instance.map(str::to_owned),
            reason,
        };
        tracing::info!(kind, service, instance, reason = %event.reason, "event");
        if let Ok(mut line) = serde_json::to_string(&event) {
            line.push('\n');
            use std::io::Write;
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.app.state_dir.join("events.jsonl"))
                .and_then(|mut f| f.write_all(line.as_bytes()));
        }
    }

    /// Record a refused connection or registration on the control port (rate-limited).
    fn refused(&mut self, peer: &str, kind: &str, reason: &str) {
        let now = Instant::now();
        let (since, count, suppressed) = &mut self.refusals;
        if now.duration_since(*since) >= Duration::from_secs(1) {
            *since = now;
            *count = 0;
        }
        *count += 1;
        if *count > REFUSAL_EVENTS_PER_SECOND {
            *suppressed += 1;
            return;
        }
        let more = std::mem::take(suppressed);
        let more = if more > 0 {
            format!(" ({more} more refusals were not logged)")
        } else {
            String::new()
        };
        tracing::warn!(%peer, refusal = kind, %reason, "refused on the control port");
        self.event(
            "refused",
            ROLE_ORCHESTRATOR,
            None,
            format!("{peer}: {kind}: {reason}{more}"),
        );
    }

    /// Issue (or renew) the certificate of a container, as files under `.colony/certs/ID/`.
    fn issue_leaf(&self, id: &str, service: &str) -> anyhow::Result<Option<PathBuf>> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let lifetime = CertLifetime::default();
        let leaf = ca
            .issue(&self.app.name, &[service], lifetime.lifetime())
            .with_context(|| format!("could not issue a certificate for {id}"))?;
        let dir = docker::write_leaf(&self.app.state_dir, id, &leaf, ca.cert_pem())?;
        Ok(Some(dir))
    }

    /// Start the cluster's memcached when `[cache]` asks for one, or adopt the one a
    /// previous orchestrator started (`previous`, if it still runs). Not under `--docker`
    /// (there is no memcached image to run without a registry), nor when `COLONY_CACHE`
    /// already names a cache.
    fn start_cache(&mut self, previous: Option<LocalCache>) {
        let Some(settings) = self.app.cache.clone() else {
            if let Some(old) = previous.filter(|c| pid_alive(c.pid)) {
                kill(old.pid, "TERM");
            }
            return;
        };
        if self.app.docker.is_some() || std::env::var_os("COLONY_CACHE").is_some() {
            let why = if self.app.docker.is_some() {
                "[cache] runs no memcached under --docker: set COLONY_CACHE to one the \
                 containers can reach"
            } else {
                "[cache] runs no memcached: COLONY_CACHE names the cache already"
            };
            self.event("cache", "memcached", None, why.to_owned());
            return;
        }
        if let Some(old) = previous.filter(|c| pid_alive(c.pid)) {
            self.cache = Some(old);
            return;
        }
        self.spawn_cache(&settings, None);
    }

    /// Start memcached (on `port`, to keep the address instances already have).
    fn spawn_cache(&mut self, settings: &CacheSettings, port: Option<u16>) {
        let logs = self.app.state_dir.join("logs");
        let started = std::fs::create_dir_all(&logs)
            .map_err(anyhow::Error::from)
            .and_then(|()| cache::start(settings, port, &logs.join("cache.log")));
        match started {
            Ok((child, cache)) => {
                self.event(
                    "cache",
                    "memcached",
                    None,
                    format!("memcached on {}", cache.addr),
                );
                self.cache = Some(cache);
                self.cache_child = Some(child);
            }
            Err(e) => {
                eprintln!("colony: {e:#}");
                self.event("cache", "memcached", None, format!("{e:#}"));
            }
        }
    }

    /// Restart the cache on its port if it died.
    fn watch_cache(&mut self) {
        let Some(cache) = &self.cache else { return };
        let dead = match &mut self.cache_child {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => !pid_alive(cache.pid),
        };
        if !dead || self.stopping {
            return;
        }
        let port = cache::port(&cache.addr);
        self.event(
            "cache",
            "memcached",
            None,
            format!("memcached (pid {}) is gone; starting it again", cache.pid),
        );
        self.cache = None;
        self.cache_child = None;
        if let Some(settings) = self.app.cache.clone() {
            self.spawn_cache(&settings, port);
        }
    }

    /// What an instance is told about the cache tier.
    fn cache_env(&self) -> Vec<(&'static str, String)> {
        let Some(cache) = &self.cache else {
            return Vec::new();
        };
        let mut env = vec![("COLONY_CACHE", cache.addr.clone())];
        if let Some(ttl) = self.app.cache.as_ref().and_then(|c| c.ttl_secs) {
            env.push(("COLONY_CACHE_TTL", ttl.to_string()));
        }
        env
    }

    fn persist(&self) {
        let persisted = Persisted {
            fingerprint: self.app.fingerprint.clone(),
            control_addr: self.control_addr.clone(),
            next_id: self.next_id,
            desired: self.desired.clone(),
            instances: self.instances.values().map(|i| i.info.clone()).collect(),
            cache: self.cache.clone(),
        };
        let path = self.app.state_dir.join("state.json");
        let tmp = self.app.state_dir.join("state.json.tmp");
        if let Ok(text) = serde_json::to_vec_pretty(&persisted)
            && std::fs::write(&tmp, text).is_ok()
        {
            let _ = std::fs::rename(tmp, path);
        }
    }

    fn members(&self) -> BTreeMap<String, Vec<String>> {
        let mut members: BTreeMap<String, Vec<String>> = self
            .app
            .services
            .iter()
            .map(|s| (s.clone(), Vec::new()))
            .collect();
        for inst in self
            .instances
            .values()
            .filter(|i| i.info.service != GATEWAY)
        {
            if inst.info.state == State::Healthy
                && let Some(addr) = &inst.info.addr
            {
                members
                    .entry(inst.info.service.clone())
                    .or_default()
                    .push(addr.clone());
            }
        }
        members
    }

    /// Push membership to every linked process if it changed (or to all when `force`).
    fn push_members(&mut self, force: bool) {
        let members = self.members();
        if !force && members == self.last_members {
            return;
        }
        self.last_members = members.clone();
        let message = FromOrchestrator::Members { services: members };
        self.links.retain(|_, tx| tx.send(message.clone()).is_ok());
    }

    fn set_state(&mut self, id: &str, state: State) {
        if let Some(inst) = self.instances.get_mut(id) {
            inst.info.state = state;
            inst.since = Instant::now();
        }
    }

    fn live(&self, service: &str) -> usize {
        self.instances
            .values()
            .filter(|i| {
                i.info.service == service
                    && matches!(
                        i.info.state,
                        State::Starting | State::Healthy | State::Adopting
                    )
            })
            .count()
    }

    fn spawn(&mut self, service: &str) -> anyhow::Result<()> {
        self.next_id += 1;
        let short = service.rsplit("::").next().unwrap_or(service);
        let id = format!("{short}-{}", self.next_id);
        let logs = self.app.state_dir.join("logs");
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("could not create {}", logs.display()))?;
        let log = logs.join(format!("{id}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("could not open {}", log.display()))?;
        let err = out.try_clone()?;
        let settings = self.settings.get(service);
        let pin = settings.is_some_and(|s| s.pin_cores.value);
        if let Some(docker) = self.app.docker.clone() {
            let core = pin.then(|| {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let core = self.next_core % cores;
                self.next_core += 1;
                core
            });
            let certs = self.issue_leaf(&id, service)?;
            let store_dir = (service == crate::settings::STORE_SERVICE)
                .then(|| {
                    let dir = self.app.state_dir.join(STORE_DIR);
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("could not create {}", dir.display()))
                        .map(|()| dir)
                })
                .transpose()?;
            let container = docker.container_name(&id);
            let mut cmd = docker.run_command(&docker::Run {
                id: &id,
                service,
                control_addr: &self.control_addr,
                heartbeat_ms: self.cluster.heartbeat_ms.value,
                threads: settings.and_then(|s| s.threads.value),
                core,
                certs: certs.as_deref(),
                config: Some(self.app.dir.join("colony.toml")).filter(|c| c.is_file()),
                store_dir: store_dir.as_deref(),
            });
            cmd.stdin(std::process::Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0)
                .kill_on_drop(false);
            let child = cmd
                .spawn()
                .context("could not run `docker run`; is the docker CLI installed?")?;
            let renew = certs
                .is_some()
                .then(|| Instant::now() + CertLifetime::default().renew_at_age());
            self.track(id, service, child, log, Some(container), renew);
            return Ok(());
        }
        let mut cmd = if pin {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let core = self.next_core % cores;
            self.next_core += 1;
            let mut c = tokio::process::Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(&self.app.binary);
            c
        } else {
            tokio::process::Command::new(&self.app.binary)
        };
        if service == GATEWAY {
            let http = self
                .app
                .gateway
                .clone()
                .unwrap_or_else(|| "127.0.0.1:0".to_owned());
            cmd.arg("gateway").arg("--http").arg(http);
        } else {
            cmd.arg("serve")
                .arg("--service")
                .arg(service)
                .arg("--listen")
                .arg("127.0.0.1:0");
        }
        if let Some(t) = settings.and_then(|s| s.threads.value) {
            cmd.arg("--threads").arg(t.to_string());
        }
        cmd.env("COLONY_ORCHESTRATOR", &self.control_addr)
            .env(
                "COLONY_ORCHESTRATOR_FILE",
                self.app.state_dir.join("orchestrator.addr"),
            )
            .env("COLONY_INSTANCE", &id)
            .env("COLONY_CA_DIR", &self.app.state_dir)
            .env("COLONY_CONFIG", self.app.dir.join("colony.toml"))
            .env(
                "COLONY_STORE_PATH",
                self.app.state_dir.join(STORE_DIR).join("store.redb"),
            )
            .envs(self.cache_env())
            .current_dir(&self.app.dir)
            .env(
                "COLONY_HEARTBEAT",
                format!("{}ms", self.cluster.heartbeat_ms.value),
            )
            .env_remove("COLONY_PEERS")
            .env_remove("COLONY_LISTEN")
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            // Own process group: a Ctrl-C in the terminal reaches the orchestrator, which
            // drains the instances itself, and instances outlive a killed orchestrator.
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start {}", self.app.binary.display()))?;
        self.track(id, service, child, log, None, None);
        Ok(())
    }

    /// Count a just-started instance (a process, or the `docker run` of `container`) as
    /// starting, and record the event.
    fn track(
        &mut self,
        id: String,
        service: &str,
        child: tokio::process::Child,
        log: PathBuf,
        container: Option<String>,
        renew_cert_at: Option<Instant>,
    ) {
        let pid = child.id().unwrap_or(0);
        let what = match &container {
            Some(container) => format!("container {container}"),
            None => format!("pid {pid}"),
        };
        let info = InstanceInfo {
            id: id.clone(),
            service: service.to_owned(),
            pid,
            addr: None,
            state: State::Starting,
            load: LoadSnapshot::default(),
            log,
            metrics: None,
            container,
        };
        self.instances.insert(
            id.clone(),
            Instance {
                info,
                last_seen: Instant::now(),
                since: Instant::now(),
                child: Some(child),
                killed: false,
                renew_cert_at,
            },
        );
        self.event("started", service, Some(&id), what);
    }

    /// Kill an instance once; returns false when a kill was already sent.
    fn kill_instance(&mut self, id: &str) -> bool {
        let Some(inst) = self.instances.get_mut(id) else {
            return false;
        };
        if inst.killed {
            return false;
        }
        inst.killed = true;
        match (&inst.info.container, &mut inst.child) {
            // Killing `docker run` would leave its container running.
            (Some(container), _) => docker::kill(container, "KILL"),
            (None, Some(child)) => {
                let _ = child.start_kill();
            }
            (None, None) => kill(inst.info.pid, "9"),
        }
        true
    }

    fn kill_with_event(&mut self, id: &str, service: &str, reason: String) {
        if self.kill_instance(id) {
            self.event("killed", service, Some(id), reason);
        }
    }

    fn drain_instance(&mut self, id: &str, reason: String) {
        let Some(inst) = self.instances.get(id) else {
            return;
        };
        let service = inst.info.service.clone();
        self.set_state(id, State::Draining);
        // Out of membership first, so callers stop choosing it; then drain.
        self.push_members(false);
        match self.links.get(id) {
            Some(tx) => {
                let _ = tx.send(FromOrchestrator::Drain);
            }
            None => {
                if let Some(inst) = self.instances.get(id) {
                    match &inst.info.container {
                        Some(container) => docker::kill(container, "TERM"),
                        None => kill(inst.info.pid, "TERM"),
                    }
                }
            }
        }
        self.event("drain", &service, Some(id), reason);
    }

    fn tick(&mut self) {
        self.watch_cache();
        let now = Instant::now();
        let hb = self.cluster.heartbeat();
        let mut changed = false;

        // Processes that ended.
        let ids: Vec<String> = self.instances.keys().cloned().collect();
        for id in &ids {
            let Some(inst) = self.instances.get_mut(id) else {
                continue;
            };
            let exited = match &mut inst.child {
                Some(child) => match child.try_wait() {
                    Ok(Some(status)) => Some(status.to_string()),
                    Ok(None) => None,
                    Err(e) => Some(e.to_string()),
                },
                None => (!pid_alive(inst.info.pid)).then(|| "the process is gone".to_owned()),
            };
            if let Some(status) = exited {
                let inst = self.instances.remove(id);
                self.links.remove(id);
                docker::remove_leaf(&self.app.state_dir, id);
                if let Some(inst) = inst {
                    let kind = if inst.info.state == State::Draining {
                        "exited"
                    } else {
                        "crashed"
                    };
                    self.event(kind, &inst.info.service, Some(id), status);
                }
                changed = true;
            }
        }

        // Heartbeats.
        let ids: Vec<String> = self.instances.keys().cloned().collect();
        for id in &ids {
            let Some(inst) = self.instances.get(id) else {
                continue;
            };
            let (state, silent, age, service) = (
                inst.info.state,
                now - inst.last_seen,
                now - inst.since,
                inst.info.service.clone(),
            );
            match state {
                State::Healthy if silent > hb.mul_f64(1.5) => {
                    self.set_state(id, State::Quarantined);
                    self.event(
                        "quarantined",
                        &service,
                        Some(id),
                        format!("no heartbeat for {} ms", silent.as_millis()),
                    );
                    changed = true;
                }
                State::Quarantined if age > hb * 2 => {
                    self.kill_with_event(
                        id,
                        &service,
                        "quarantined and still silent: replacing it".to_owned(),
                    );
                }
                State::Starting if age > START_TIMEOUT => {
                    self.kill_with_event(
                        id,
                        &service,
                        format!("did not register within {START_TIMEOUT:?}"),
                    );
                }
                State::Adopting if age > (hb * 10).max(ADOPT_GRACE) => {
                    let reason = "running but did not re-register after the orchestrator restarted";
                    self.kill_with_event(id, &service, reason.to_owned());
                }
                State::Draining if age > DRAIN_TIMEOUT => {
                    self.kill_with_event(
                        id,
                        &service,
                        format!("did not finish draining within {DRAIN_TIMEOUT:?}"),
                    );
                }
                _ => {}
            }
        }

        // Certificates the orchestrator issued to containers: renewed ahead of expiry (the
        // instance reloads the rewritten files).
        let due: Vec<(String, String)> = self
            .instances
            .values()
            .filter(|i| i.renew_cert_at.is_some_and(|at| at <= now))
            .map(|i| (i.info.id.clone(), i.info.service.clone()))
            .collect();
        for (id, service) in due {
            let next = match self.issue_leaf(&id, &service) {
                Ok(_) => now + CertLifetime::default().renew_at_age(),
                Err(e) => {
                    self.event("error", &service, Some(&id), format!("{e:#}"));
                    now + Duration::from_secs(60)
                }
            };
            if let Some(inst) = self.instances.get_mut(&id) {
                inst.renew_cert_at = Some(next);
            }
        }

        if !self.stopping {
            self.autoscale(now);
        }

        // Reconcile counts.
        let services = self.units();
        for service in &services {
            let desired = if self.stopping {
                0
            } else {
                self.desired.get(service).copied().unwrap_or(0)
            } as usize;
            let live = self.live(service);
            if live < desired {
                for _ in live..desired {
                    if let Err(e) = self.spawn(service) {
                        self.event("error", service, None, format!("{e:#}"));
                        break;
                    }
                }
                changed = true;
            } else if live > desired {
                let mut candidates: Vec<(u8, u64, String)> = self
                    .instances
                    .values()
                    .filter(|i| i.info.service == *service)
                    .filter_map(|i| {
                        let rank = match i.info.state {
                            State::Starting => 0,
                            State::Adopting => 1,
                            State::Healthy => 2,
                            _ => return None,
                        };
                        Some((rank, i.info.load.in_flight, i.info.id.clone()))
                    })
                    .collect();
                candidates.sort();
                for (_, _, id) in candidates.into_iter().take(live - desired) {
                    let reason = if self.stopping {
                        "the cluster is stopping".to_owned()
                    } else {
                        format!("{live} instances, {desired} desired")
                    };
                    self.drain_instance(&id, reason);
                }
                changed = true;
            }
        }
        if changed {
            self.push_members(false);
            self.persist();
        }
    }

    fn autoscale(&mut self, now: Instant) {
        let services = self.app.services.clone();
        for service in &services {
            let Some(s) = self.settings.get(service).cloned() else {
                continue;
            };
            let healthy: Vec<&Instance> = self
                .instances
                .values()
                .filter(|i| i.info.service == *service && i.info.state == State::Healthy)
                .collect();
            let starting = self.instances.values().any(|i| {
                i.info.service == *service
                    && matches!(i.info.state, State::Starting | State::Adopting)
            });
            if healthy.is_empty() || starting {
                continue;
            }
            let in_flight: u64 = healthy.iter().map(|i| i.info.load.in_flight).sum();
            let ratio = in_flight as f64 / (healthy.len() as f64 * f64::from(s.capacity.value));
            let desired = self.desired.get(service).copied().unwrap_or(0);
            let settle = self.cluster.heartbeat() * 4;
            let recently = self
                .last_scaled
                .get(service)
                .is_some_and(|t| now - *t < settle);
            if ratio > s.high_watermark.value {
                self.below_since.remove(service);
                if desired < s.ceiling() && !recently {
                    self.desired.insert(service.clone(), desired + 1);
                    self.last_scaled.insert(service.clone(), now);
                    self.event(
                        "scale_up",
                        service,
                        None,
                        format!(
                            "load {ratio:.2} ({in_flight} in flight over {} instances × capacity {}) is above the high watermark {}: {} → {}",
                            healthy.len(), s.capacity.value, s.high_watermark.value, desired, desired + 1
                        ),
                    );
                }
            } else if ratio < s.low_watermark.value && desired > s.min_instances.value {
                let since = *self.below_since.entry(service.clone()).or_insert(now);
                let cooldown = Duration::from_millis(s.cooldown_ms.value);
                if now - since >= cooldown && !recently {
                    self.desired.insert(service.clone(), desired - 1);
                    self.last_scaled.insert(service.clone(), now);
                    self.below_since.insert(service.clone(), now);
                    self.event(
                        "scale_down",
                        service,
                        None,
                        format!(
                            "load {ratio:.2} stayed below the low watermark {} for the cool-down of {} ms: {} → {}",
                            s.low_watermark.value, s.cooldown_ms.value, desired, desired - 1
                        ),
                    );
                }
            } else {
                self.below_since.remove(service);
            }
        }
    }

    /// What the orchestrator keeps running: the services, and the gateway if any.
    fn units(&self) -> Vec<String> {
        let mut units = self.app.services.clone();
        if self.app.gateway.is_some() {
            units.push(GATEWAY.to_owned());
        }
        units
    }

    fn status(&self) -> Status {
        let gateway = self
            .instances
            .values()
            .find(|i| i.info.service == GATEWAY && i.info.state == State::Healthy)
            .and_then(|i| i.info.addr.as_ref())
            .map(|a| format!("http://{a}"));
        Status {
            gateway,
            cache: self.cache.as_ref().map(|c| c.addr.clone()),
            orchestrator_pid: std::process::id(),
            control_addr: self.control_addr.clone(),
            heartbeat_ms: self.cluster.heartbeat_ms.value,
            services: self
                .app
                .services
                .iter()
                .filter_map(|name| Some((name, self.settings.get(name)?.clone())))
                .map(|(name, settings)| ServiceStatus {
                    name: name.clone(),
                    desired: self.desired.get(name).copied().unwrap_or(0),
                    settings,
                    instances: self
                        .instances
                        .values()
                        .filter(|i| i.info.service == *name)
                        .map(|i| i.info.clone())
                        .collect(),
                })
                .collect(),
        }
    }
}

fn read_events(state_dir: &Path) -> Vec<Event> {
    std::fs::read_to_string(state_dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

impl Orchestrator {
    /// Start an orchestrator for `app`: bind its control port (the previous one when it
    /// is free), re-adopt instances a previous orchestrator left running, and start the
    /// rest. Runs until [`Orchestrator::stop`] has drained every instance.
    pub(crate) async fn start(
        app: App,
        cluster: ClusterSettings,
        settings: BTreeMap<String, ServiceSettings>,
    ) -> anyhow::Result<Orchestrator> {
        std::fs::create_dir_all(&app.state_dir)
            .with_context(|| format!("could not create {}", app.state_dir.display()))?;
        let previous: Persisted = std::fs::read(app.state_dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        // Containers reach the host at its address on the cluster's network.
        let host = app
            .docker
            .as_ref()
            .map_or_else(|| "127.0.0.1".to_owned(), |d| d.host_ip.clone());
        let same_host = previous
            .control_addr
            .rsplit_once(':')
            .is_some_and(|(h, _)| h == host);
        let tcp = match tokio::net::TcpListener::bind(&previous.control_addr).await {
            Ok(l) if same_host => l,
            _ => tokio::net::TcpListener::bind(format!("{host}:0"))
                .await
                .with_context(|| format!("could not bind a control port on {host}"))?,
        };
        let control_addr = tcp.local_addr()?.to_string();
        // Mutual TLS on the control port whenever the cluster uses it.
        let tls = if cluster.tls.value {
            let ca = Ca::load(&app.state_dir).with_context(|| {
                format!(
                    "the control port needs the cluster CA in {}",
                    app.state_dir.display()
                )
            })?;
            let ca = Arc::new(ca);
            let mtls = MutualTls::from_ca(
                ca.clone(),
                &app.name,
                &[ROLE_ORCHESTRATOR],
                CertLifetime::default(),
            )
            .context("could not issue the orchestrator's certificate")?;
            Some((ca, mtls))
        } else {
            None
        };
        let control = ControlInfo {
            tls: tls.is_some(),
            app: app.name.clone(),
        };
        std::fs::write(
            app.state_dir.join(CONTROL_FILE),
            serde_json::to_vec(&control)?,
        )?;
        std::fs::write(app.state_dir.join("orchestrator.addr"), &control_addr)?;
        std::fs::write(
            app.state_dir.join("orchestrator.pid"),
            std::process::id().to_string(),
        )?;

        let mut desired = BTreeMap::new();
        if app.gateway.is_some() {
            desired.insert(GATEWAY.to_owned(), 1);
        }
        for service in &app.services {
            let min = settings.get(service).map_or(1, |s| s.min_instances.value);
            let ceiling = settings.get(service).map_or(min, ServiceSettings::ceiling);
            let kept = previous.desired.get(service).copied().unwrap_or(min);
            desired.insert(service.clone(), kept.clamp(min, ceiling.max(min)));
        }
        let mut inner = Inner {
            app: app.clone(),
            cluster,
            settings,
            desired,
            instances: BTreeMap::new(),
            links: HashMap::new(),
            last_members: BTreeMap::new(),
            next_id: previous.next_id,
            control_addr,
            below_since: HashMap::new(),
            last_scaled: HashMap::new(),
            next_core: 0,
            stopping: false,
            ca: tls.as_ref().map(|(ca, _)| ca.clone()),
            refusals: (Instant::now(), 0, 0),
            cache: None,
            cache_child: None,
        };
        inner.start_cache(previous.cache);
        let same_build = previous.fingerprint == app.fingerprint;
        for info in previous.instances {
            if !pid_alive(info.pid) {
                inner.event(
                    "gone",
                    &info.service,
                    Some(&info.id),
                    "found dead after an orchestrator restart".to_owned(),
                );
                continue;
            }
            if !same_build
                || info.container.is_some() != app.docker.is_some()
                || !(app.services.contains(&info.service)
                    || (info.service == GATEWAY && app.gateway.is_some()))
            {
                match &info.container {
                    Some(container) => docker::kill(container, "TERM"),
                    None => kill(info.pid, "TERM"),
                }
                inner.event(
                    "replaced",
                    &info.service,
                    Some(&info.id),
                    "it runs an older build of the app".to_owned(),
                );
                continue;
            }
            let id = info.id.clone();
            let mut info = info;
            let state = info.state;
            info.state = if state == State::Draining {
                State::Draining
            } else {
                State::Adopting
            };
            inner.event(
                "adopting",
                &info.service,
                Some(&id),
                format!("pid {} still running", info.pid),
            );
            // A container's certificate is renewed at once: its expiry is unknown here.
            let renew_cert_at = (info.container.is_some() && inner.ca.is_some()).then(Instant::now);
            inner.instances.insert(
                id,
                Instance {
                    info,
                    last_seen: Instant::now(),
                    since: Instant::now(),
                    child: None,
                    killed: false,
                    renew_cert_at,
                },
            );
        }
        inner.persist();
        let orchestrator = Orchestrator {
            inner: Arc::new(Mutex::new(inner)),
            done: Arc::new(tokio::sync::Notify::new()),
        };
        let listener: Box<dyn Listener> = match tls {
            Some((_, mtls)) => {
                let o = orchestrator.clone();
                let report: colony::security::RefusalReport =
                    Arc::new(move |peer, kind, reason| {
                        o.lock().refused(peer, kind.as_str(), reason);
                    });
                // No hosted services: any member of the cluster completes the handshake; what
                // it may do is decided by its identity, per message.
                Box::new(
                    mtls.listener_reporting(tcp, &[], CallerPolicy::new(), Some(report))
                        .context("could not secure the control port")?,
                )
            }
            None => Box::new(colony::transport::TcpListener::from_tokio(tcp)?),
        };
        tokio::spawn(orchestrator.clone().accept_loop(listener));
        tokio::spawn(orchestrator.clone().tick_loop());
        Ok(orchestrator)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current status.
    pub(crate) fn status(&self) -> Status {
        self.lock().status()
    }

    /// Drain every instance and wait until they have exited (or been killed).
    pub(crate) async fn stop(&self) {
        self.lock().stopping = true;
        loop {
            let done = self.done.notified();
            if self.lock().instances.is_empty() {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), done).await;
        }
        let mut inner = self.lock();
        if let Some(cache) = inner.cache.take() {
            kill(cache.pid, "TERM");
            if let Some(mut child) = inner.cache_child.take() {
                let _ = child.wait();
            }
        }
        inner.persist();
        if let Some(docker) = &inner.app.docker {
            docker.remove(&inner.app.state_dir);
        }
        let _ = std::fs::remove_file(inner.app.state_dir.join("orchestrator.pid"));
        let _ = std::fs::remove_file(inner.app.state_dir.join("orchestrator.addr"));
        let _ = std::fs::remove_file(inner.app.state_dir.join(CONTROL_FILE));
    }

    /// Resolves once a stop was requested through the control port (`colony down`).
    pub(crate) async fn stop_requested(&self) {
        loop {
            let done = self.done.notified();
            if self.lock().stopping {
                return;
            }
            done.await;
        }
    }

    async fn tick_loop(self) {
        let hb = self.lock().cluster.heartbeat();
        let mut ticker = tokio::time::interval((hb / 4).max(Duration::from_millis(10)));
        loop {
            ticker.tick().await;
            self.lock().tick();
            self.done.notify_waiters();
        }
    }

    async fn accept_loop(self, mut listener: Box<dyn Listener>) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    tokio::spawn(self.clone().serve_connection(stream, peer));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn serve_connection(self, stream: BoxStream, peer: String) {
        // With TLS, who the peer proved to be in the handshake; nothing without it.
        let identity = Authenticated::identity_of(&stream).cloned();
        let (reader, mut writer) = tokio::io::split(stream);
        let mut reader = BufReader::new(reader);
        // A peer that says nothing is not kept waiting for.
        let Ok(Ok(Some(first))) =
            tokio::time::timeout(FIRST_LINE_TIMEOUT, read_line(&mut reader)).await
        else {
            return;
        };
        if let Ok(ToOrchestrator::Register(registration)) = serde_json::from_str(&first) {
            if let Err(reason) = self.admit(&registration, identity.as_ref()) {
                self.lock().refused(&peer, "wrong_identity", &reason);
                return;
            }
            self.serve_instance(registration, peer, reader, writer)
                .await;
            return;
        }
        let response = match serde_json::from_str::<Request>(&first) {
            Ok(request) => match self.may_control(identity.as_ref()) {
                Ok(()) => self.handle(request),
                Err(reason) => {
                    self.lock().refused(&peer, "not_allowed", &reason);
                    Response::Error { message: reason }
                }
            },
            Err(e) => Response::Error {
                message: format!("not a request this orchestrator understands: {e}"),
            },
        };
        let _ = write_message(&mut writer, &response).await;
    }

    /// Whether a registration may be accepted: with TLS, the peer's certificate names every
    /// service it registers for (the gateway: `@gateway`); and an instance this
    /// orchestrator started registers for the service it was started for.
    fn admit(
        &self,
        registration: &colony::discovery::Registration,
        identity: Option<&PeerIdentity>,
    ) -> Result<(), String> {
        let claimed: Vec<&str> = if registration.services.is_empty() {
            vec![GATEWAY]
        } else {
            registration.services.iter().map(String::as_str).collect()
        };
        let inner = self.lock();
        if inner.ca.is_some() {
            let names = identity.map(|i| i.names.clone()).unwrap_or_default();
            let missing: Vec<&str> = claimed
                .iter()
                .copied()
                .filter(|c| !names.iter().any(|n| n == c))
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "instance `{}` registered for `{}`, which its certificate does not name (it \
                     names {}); only an instance with a certificate for a service may register \
                     for it",
                    registration.instance,
                    missing.join("`, `"),
                    if names.is_empty() {
                        "nothing".to_owned()
                    } else {
                        names.join(", ")
                    }
                ));
            }
        }
        if let Some(inst) = inner.instances.get(&registration.instance)
            && !claimed.contains(&inst.info.service.as_str())
        {
            return Err(format!(
                "instance `{}` was started for `{}` but registered for `{}`",
                registration.instance,
                inst.info.service,
                claimed.join("`, `")
            ));
        }
        Ok(())
    }

    /// Whether a peer may ask for status, scaling or a stop: with TLS, only the CLI.
    fn may_control(&self, identity: Option<&PeerIdentity>) -> Result<(), String> {
        if self.lock().ca.is_none() || identity.is_some_and(|i| i.is(ROLE_CONTROL)) {
            return Ok(());
        }
        Err(format!(
            "only the colony CLI (role {ROLE_CONTROL}) may ask the orchestrator for status, \
             scaling or a stop; this peer's certificate names {}",
            identity.map_or_else(|| "nothing".to_owned(), ToString::to_string)
        ))
    }

    fn handle(&self, request: Request) -> Response {
        let mut inner = self.lock();
        match request {
            Request::Status => Response::Status(inner.status()),
            Request::Events => Response::Events {
                events: read_events(&inner.app.state_dir),
            },
            Request::Scale { service, count } => {
                let Some(s) = inner.settings.get(&service).cloned() else {
                    return Response::Error {
                        message: format!(
                            "`{service}` is not a service of this app; its services are: {}",
                            inner.app.services.join(", ")
                        ),
                    };
                };
                if count < s.min_instances.value || count > s.ceiling() {
                    return Response::Error {
                        message: format!(
                            "cannot scale `{service}` to {count}: allowed values are {} to {} \
                             (min_instances to max_instances{}); change them in colony.toml",
                            s.min_instances.value,
                            s.ceiling(),
                            if s.max_per_host.value.is_some() {
                                ", capped by max_per_host"
                            } else {
                                ""
                            }
                        ),
                    };
                }
                let before = inner.desired.insert(service.clone(), count).unwrap_or(0);
                // The autoscaler takes over from the new count, after a full cool-down.
                inner.last_scaled.insert(service.clone(), Instant::now());
                inner.below_since.insert(service.clone(), Instant::now());
                inner.event(
                    "manual_scale",
                    &service,
                    None,
                    format!("colony scale: {before} → {count}"),
                );
                inner.persist();
                Response::Ok {
                    message: format!("`{service}`: {before} → {count} instances"),
                }
            }
            Request::Down => {
                inner.stopping = true;
                drop(inner);
                self.done.notify_waiters();
                Response::Ok {
                    message: "draining every instance".to_owned(),
                }
            }
        }
    }

    async fn serve_instance(
        self,
        mut registration: colony::discovery::Registration,
        peer: String,
        mut reader: BufReader<ReadHalf<BoxStream>>,
        mut writer: WriteHalf<BoxStream>,
    ) {
        let id = registration.instance.clone();
        let (tx, mut rx) = mpsc::unbounded_channel();
        {
            let mut inner = self.lock();
            let known = inner.instances.contains_key(&id);
            if !known {
                // Not one of ours (a gateway, or an instance started by hand): it gets
                // membership, but is not managed.
                tracing::debug!(%id, "a process registered that this orchestrator did not start");
            }
            if let Some(docker) = &inner.app.docker {
                // A container listens on 0.0.0.0: it is reached at the address its link
                // comes from, and the gateway at its port published on the host.
                let (addr, metrics) = docker.reachable(
                    &registration.addr,
                    registration.metrics.as_deref(),
                    &peer,
                    registration.services.is_empty(),
                );
                registration.addr = addr;
                registration.metrics = metrics;
            }
            if let Some(inst) = inner.instances.get_mut(&id) {
                inst.info.addr = Some(registration.addr.clone());
                inst.info.metrics.clone_from(&registration.metrics);
                if inst.info.container.is_none() {
                    inst.info.pid = registration.pid;
                }
                inst.last_seen = Instant::now();
                let state = inst.info.state;
                let service = inst.info.service.clone();
                if matches!(state, State::Starting | State::Adopting) {
                    inner.set_state(&id, State::Healthy);
                    let what = if state == State::Adopting {
                        "re-adopted"
                    } else {
                        "healthy"
                    };
                    inner.event(
                        what,
                        &service,
                        Some(&id),
                        format!("serving on {}", registration.addr),
                    );
                }
            }
            inner.links.insert(id.clone(), tx.clone());
            let members = inner.members();
            let _ = tx.send(FromOrchestrator::Members { services: members });
            inner.push_members(false);
            inner.persist();
        }
        loop {
            tokio::select! {
                line = read_line(&mut reader) => {
                    let Ok(Some(line)) = line else { break };
                    if let Ok(ToOrchestrator::Heartbeat { load }) = serde_json::from_str(&line) {
                        let mut inner = self.lock();
                        if let Some(inst) = inner.instances.get_mut(&id) {
                            inst.last_seen = Instant::now();
                            inst.info.load = load;
                        }
                    }
                }
                message = rx.recv() => {
                    let Some(message) = message else { break };
                    if write_message(&mut writer, &message).await.is_err() {
                        break;
                    }
                }
            }
        }
        let mut inner = self.lock();
        if inner.links.get(&id).is_some_and(|t| t.same_channel(&tx)) {
            inner.links.remove(&id);
        }
    }
}

/// Send one request to the orchestrator of the app whose state lives in `state_dir`: over
/// mutual TLS as `@control` with the CA in `state_dir` when the orchestrator uses TLS.
pub(crate) async fn request(state_dir: &Path, request: &Request) -> anyhow::Result<Response> {
    let addr_file = state_dir.join("orchestrator.addr");
    let addr = std::fs::read_to_string(&addr_file).with_context(|| {
        format!(
            "no orchestrator is running for this app ({} is missing); start one with `colony up`",
            addr_file.display()
        )
    })?;
    let addr = addr.trim();
    // An orchestrator that wrote no control file predates TLS on the control port.
    let control: Option<ControlInfo> = std::fs::read(state_dir.join(CONTROL_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let stream = match control {
        Some(ControlInfo { tls: true, app }) => {
            let ca = Ca::load(state_dir).with_context(|| {
                format!(
                    "the orchestrator speaks mutual TLS, and its CA in {} cannot be read; run \
                     colony where it can (as the user who ran `colony up`)",
                    state_dir.display()
                )
            })?;
            // Short-lived: it is used for one request.
            let lifetime = CertLifetime::new(Duration::from_secs(600), Duration::from_secs(300))?;
            let tls = MutualTls::from_ca(Arc::new(ca), &app, &[ROLE_CONTROL], lifetime)
                .context("could not issue the CLI's certificate")?;
            tls.dialer()
                .dial(addr, &[ROLE_ORCHESTRATOR])
                .await
                .with_context(|| {
                    format!(
                        "could not reach the orchestrator at {addr} over mutual TLS; is it \
                         running (`colony status`), and was it started with this CA?"
                    )
                })?
        }
        _ => colony::transport::TcpDialer
            .dial(addr, &[])
            .await
            .with_context(|| {
                format!(
                    "the orchestrator at {addr} does not answer; start it again with `colony up`"
                )
            })?,
    };
    let (reader, mut writer) = tokio::io::split(stream);
    write_message(&mut writer, request).await?;
    let mut reader = BufReader::new(reader);
    let line = read_line(&mut reader)
        .await?
        .context("the orchestrator closed the connection without answering")?;
    serde_json::from_str(&line).context("the orchestrator's answer does not parse")
}
