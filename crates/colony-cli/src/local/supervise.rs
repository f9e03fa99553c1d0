//! Supervision: starting instances (processes, or `docker run` under `--docker`), noticing
//! that they exited, killing and draining them, and keeping each service at its desired
//! count.
//!
//! Owns: the instances' processes: `APP serve --service S` (or `APP gateway`) in its own
//! process group with its output in `.colony/logs/ID.log`, the environment that tells it
//! where the orchestrator, the CA, the store and the cache are, pinning to cores, the
//! certificates issued to containers and their renewal, and which instance goes first on a
//! scale-down (starting, then adopting, then the least busy healthy one). Promises: a kill
//! is sent once; a scale-down takes the instance out of membership before it drains. Must
//! not touch: when an instance is unhealthy (`health`) or how many there should be
//! (`autoscale`, `colony scale`).

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use colony::control::discovery::{FromOrchestrator, LoadSnapshot};
use colony::control::security::CertLifetime;

use super::state::{InstanceInfo, State};
use super::{GATEWAY, Inner, STORE_DIR, docker};

/// One instance, as the orchestrator tracks it.
pub(super) struct Instance {
    pub(super) info: InstanceInfo,
    /// When it last registered or heartbeat.
    pub(super) last_seen: Instant,
    /// When it entered its current state.
    pub(super) since: Instant,
    /// Our child process, when we started it (not for adopted instances).
    pub(super) child: Option<tokio::process::Child>,
    /// A kill was sent; the instance is gone once its process is.
    pub(super) killed: bool,
    /// When the certificate the orchestrator issued it is due for renewal (containers).
    pub(super) renew_cert_at: Option<Instant>,
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

/// Send `signal` (a name or number, as `kill` takes it) to `pid`, without waiting.
pub(super) fn kill(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// An instance about to start: its id, log file (and the output handles on it), threads and
/// core.
struct Started {
    id: String,
    log: PathBuf,
    output: (File, File),
    threads: Option<u32>,
    core: Option<usize>,
}

impl Inner {
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

    pub(super) fn set_state(&mut self, id: &str, state: State) {
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

    /// The next core to pin an instance to, round robin.
    fn next_core(&mut self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let core = self.next_core % cores;
        self.next_core += 1;
        core
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
        let threads = settings.and_then(|s| s.threads.value);
        let pin = settings.is_some_and(|s| s.pin_cores.value);
        let core = pin.then(|| self.next_core());
        let started = Started {
            id,
            log,
            output: (out, err),
            threads,
            core,
        };
        if self.app.docker.is_some() {
            self.spawn_container(service, started)
        } else {
            self.spawn_process(service, started)
        }
    }

    /// `docker run` of one instance, as a child whose output is the instance's log.
    fn spawn_container(&mut self, service: &str, started: Started) -> anyhow::Result<()> {
        let Some(docker) = self.app.docker.clone() else {
            return Ok(());
        };
        let Started {
            id,
            log,
            output: (out, err),
            threads,
            core,
        } = started;
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
            threads,
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
        Ok(())
    }

    /// The app's binary as one instance (or the gateway), a child in its own process group.
    fn spawn_process(&mut self, service: &str, started: Started) -> anyhow::Result<()> {
        let (out, err) = started.output;
        let mut cmd = if let Some(core) = started.core {
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
        if let Some(t) = started.threads {
            cmd.arg("--threads").arg(t.to_string());
        }
        cmd.env("COLONY_ORCHESTRATOR", &self.control_addr)
            .env(
                "COLONY_ORCHESTRATOR_FILE",
                self.app.state_dir.join("orchestrator.addr"),
            )
            .env("COLONY_INSTANCE", &started.id)
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
        self.track(started.id, service, child, started.log, None, None);
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

    /// Kill an instance (once), recording why.
    pub(super) fn kill_with_event(&mut self, id: &str, service: &str, reason: String) {
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

    /// Forget the instances whose process ended (`exited` after a drain, else `crashed`);
    /// returns whether any did.
    pub(super) fn reap(&mut self) -> bool {
        let mut changed = false;
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
        changed
    }

    /// Certificates the orchestrator issued to containers: renewed ahead of expiry (the
    /// instance reloads the rewritten files).
    pub(super) fn renew_certs(&mut self, now: Instant) {
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
    }

    /// Start or drain instances until each unit runs its desired count (none when the
    /// cluster is stopping); returns whether anything changed.
    pub(super) fn reconcile(&mut self) -> bool {
        let mut changed = false;
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
        changed
    }
}
