//! What the orchestrator knows and keeps: the states of instances, what `status` reports,
//! the event log, and what persists in `.colony/` for a restarted orchestrator to re-adopt.
//!
//! Owns: the shapes of `.colony/state.json`, `events.jsonl` and `orchestrator.json`, writing
//! and reading them, and re-adopting the instances a previous orchestrator left running
//! (or stopping those of another build). Promises: `state.json` is replaced atomically
//! (written aside, then renamed); an event is logged and appended as one JSON line. Must
//! not touch: the control port or the instances' processes beyond re-adoption.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use colony::control::discovery::LoadSnapshot;
use serde::{Deserialize, Serialize};

use super::cache::LocalCache;
use super::supervise::{Instance, kill, pid_alive};
use super::{GATEWAY, Inner};
use crate::settings::ServiceSettings;

/// The file in `.colony/` that tells the CLI how to reach the orchestrator's control port.
pub(super) const CONTROL_FILE: &str = "orchestrator.json";

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
pub(super) struct Persisted {
    pub(super) fingerprint: String,
    pub(super) control_addr: String,
    pub(super) next_id: u64,
    pub(super) desired: BTreeMap<String, u32>,
    pub(super) instances: Vec<InstanceInfo>,
    /// The cluster's memcached, when `[cache]` is on.
    #[serde(default)]
    pub(super) cache: Option<LocalCache>,
}

impl Persisted {
    /// What a previous orchestrator left in `state_dir` (nothing, when it left nothing
    /// readable).
    pub(super) fn load(state_dir: &Path) -> Persisted {
        std::fs::read(state_dir.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

/// How the CLI reaches the control port, written to `.colony/orchestrator.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ControlInfo {
    /// Mutual TLS with the cluster CA in `.colony/`, or plaintext (`security = "off"`).
    pub(super) tls: bool,
    /// The app, whose trust domain the CLI's certificate must belong to.
    pub(super) app: String,
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The event log of the cluster whose state is in `state_dir`.
pub(super) fn read_events(state_dir: &Path) -> Vec<Event> {
    std::fs::read_to_string(state_dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

impl Inner {
    pub(super) fn event(
        &mut self,
        kind: &str,
        service: &str,
        instance: Option<&str>,
        reason: String,
    ) {
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

    pub(super) fn persist(&self) {
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

    /// Take over the instances a previous orchestrator left: the dead are forgotten, those
    /// of another build (or mode, or service) stopped, the rest adopted until they register
    /// again. `same_build`: the previous orchestrator ran this build of the app.
    pub(super) fn adopt(&mut self, previous: Vec<InstanceInfo>, same_build: bool) {
        for info in previous {
            if !pid_alive(info.pid) {
                self.event(
                    "gone",
                    &info.service,
                    Some(&info.id),
                    "found dead after an orchestrator restart".to_owned(),
                );
                continue;
            }
            if !same_build
                || info.container.is_some() != self.app.docker.is_some()
                || !(self.app.services.contains(&info.service)
                    || (info.service == GATEWAY && self.app.gateway.is_some()))
            {
                match &info.container {
                    Some(container) => super::docker::kill(container, "TERM"),
                    None => kill(info.pid, "TERM"),
                }
                self.event(
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
            self.event(
                "adopting",
                &info.service,
                Some(&id),
                format!("pid {} still running", info.pid),
            );
            // A container's certificate is renewed at once: its expiry is unknown here.
            let renew_cert_at = (info.container.is_some() && self.ca.is_some()).then(Instant::now);
            self.instances.insert(
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
    }

    pub(super) fn status(&self) -> Status {
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
