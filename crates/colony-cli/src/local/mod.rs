//! The local cluster: an orchestrator that starts an app's instances, discovers them,
//! watches their heartbeats, scales them, and survives its own restart.
//!
//! Owns: the instances of one app on this machine and their desired counts, and the tick
//! that drives them (every quarter heartbeat: reap exits → health → autoscale → reconcile
//! counts → push membership). Promises: membership changes are pushed to every instance;
//! an instance that misses its heartbeats for 1.5 intervals is quarantined (taken out of
//! membership), then killed and replaced after 2 more; a crashed instance is replaced;
//! scale-down drains; desired counts, the instances and the event log persist in
//! `.colony/`, so a restarted orchestrator re-adopts running instances instead of starting
//! duplicates. Must not touch: the app's calls (instances call each other directly).
//!
//! The rooms: `state` (what is known and persisted, re-adoption), `supervise` (processes:
//! spawn, reap, kill, drain, reconcile counts), `health` and `autoscale` (pure policies
//! whose decisions the tick applies), `control` (the control port), `client` (the CLI's
//! side of it), `docker` (instances as containers) and `cache` (the `[cache]` memcached).
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

mod autoscale;
mod cache;
pub(crate) mod client;
mod control;
pub(crate) mod docker;
mod health;
pub(crate) mod state;
mod supervise;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use colony::control::discovery::FromOrchestrator;
use colony::control::security::{Ca, ROLE_GATEWAY};
use tokio::sync::mpsc;

use self::cache::LocalCache;
use self::docker::DockerCluster;
use self::state::{Persisted, State, Status};
use self::supervise::{Instance, kill};
use crate::settings::{CacheSettings, ClusterSettings, ServiceSettings};

pub(crate) use self::supervise::pid_alive;

/// The pseudo-service under which the HTTP gateway runs (its certificate names this role).
pub(crate) const GATEWAY: &str = ROLE_GATEWAY;

/// The directory in `.colony/` where the built-in store service (`STORE_SERVICE`, the
/// `store` feature of `colony`) keeps its file, which outlives its instances.
const STORE_DIR: &str = "store";

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
    /// What the autoscaler remembers of each service (when it went below the low
    /// watermark, when it last scaled).
    autoscaler: HashMap<String, autoscale::Memory>,
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

impl Inner {
    fn tick(&mut self) {
        self.watch_cache();
        let now = Instant::now();
        let mut changed = self.reap();
        changed |= self.apply_health(now);
        self.renew_certs(now);
        if !self.stopping {
            self.autoscale(now);
        }
        changed |= self.reconcile();
        if changed {
            self.push_members(false);
            self.persist();
        }
    }

    /// Quarantine and kill as `health` decides; returns whether membership changed.
    fn apply_health(&mut self, now: Instant) -> bool {
        let watched: Vec<health::Watched> = self
            .instances
            .values()
            .map(|i| health::Watched {
                id: i.info.id.clone(),
                state: i.info.state,
                last_seen: i.last_seen,
                since: i.since,
            })
            .collect();
        let mut changed = false;
        for verdict in health::check(watched, self.cluster.heartbeat(), now) {
            match verdict {
                health::Verdict::Quarantine { id, silent } => {
                    let Some(service) = self.instances.get(&id).map(|i| i.info.service.clone())
                    else {
                        continue;
                    };
                    self.set_state(&id, State::Quarantined);
                    self.event(
                        "quarantined",
                        &service,
                        Some(&id),
                        format!("no heartbeat for {} ms", silent.as_millis()),
                    );
                    changed = true;
                }
                health::Verdict::Kill { id, reason } => {
                    let Some(service) = self.instances.get(&id).map(|i| i.info.service.clone())
                    else {
                        continue;
                    };
                    self.kill_with_event(&id, &service, reason);
                }
            }
        }
        changed
    }

    /// Change desired counts as `autoscale` decides, recording each change as an event.
    fn autoscale(&mut self, now: Instant) {
        let settle = self.cluster.heartbeat() * 4;
        let services = self.app.services.clone();
        for service in &services {
            let Some(policy) = self.settings.get(service).map(autoscale::Policy::of) else {
                continue;
            };
            let ours = || {
                self.instances
                    .values()
                    .filter(|i| i.info.service == *service)
            };
            let observed = autoscale::Observed {
                in_flight: ours()
                    .filter(|i| i.info.state == State::Healthy)
                    .map(|i| i.info.load.in_flight)
                    .collect(),
                starting: ours().any(|i| matches!(i.info.state, State::Starting | State::Adopting)),
                desired: self.desired.get(service).copied().unwrap_or(0),
            };
            let memory = self.autoscaler.get(service).copied().unwrap_or_default();
            let decision = autoscale::decide(&observed, &policy, memory, settle, now);
            self.autoscaler.insert(service.clone(), decision.memory);
            if let Some(scale) = decision.scale {
                self.desired.insert(service.clone(), scale.to);
                self.event(scale.kind, service, None, scale.reason);
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
        let previous = Persisted::load(&app.state_dir);
        let bound = control::bind(&app, &cluster, &previous.control_addr).await?;
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
        let (ca, mtls) = bound.tls.unzip();
        let mut inner = Inner {
            app: app.clone(),
            cluster,
            settings,
            desired,
            instances: BTreeMap::new(),
            links: HashMap::new(),
            last_members: BTreeMap::new(),
            next_id: previous.next_id,
            control_addr: bound.addr,
            autoscaler: HashMap::new(),
            next_core: 0,
            stopping: false,
            ca,
            refusals: (Instant::now(), 0, 0),
            cache: None,
            cache_child: None,
        };
        inner.start_cache(previous.cache);
        inner.adopt(previous.instances, previous.fingerprint == app.fingerprint);
        inner.persist();
        let orchestrator = Orchestrator {
            inner: Arc::new(Mutex::new(inner)),
            done: Arc::new(tokio::sync::Notify::new()),
        };
        let listener = control::listener(&orchestrator, bound.tcp, mtls)?;
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
        let _ = std::fs::remove_file(inner.app.state_dir.join(state::CONTROL_FILE));
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
}

#[cfg(test)]
mod tests {
    /// What each pure policy may import: time, the instance states and the settings it
    /// reads. Anything that reaches processes, sockets, files or the orchestrator's state
    /// would make it a loop instead of a function of its inputs.
    const POLICIES: &[(&str, &str, &[&str])] = &[
        (
            "health.rs",
            include_str!("health.rs"),
            &["use std::time::", "use super::state::State;"],
        ),
        (
            "autoscale.rs",
            include_str!("autoscale.rs"),
            &["use std::time::", "use crate::settings::ServiceSettings;"],
        ),
    ];

    #[test]
    fn the_policies_import_nothing_that_acts() {
        for (file, text, allowed) in POLICIES {
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("use "))
            {
                if line == "use super::*;" {
                    continue; // their own unit tests
                }
                assert!(
                    allowed.iter().any(|a| line.starts_with(a)),
                    "local/{file} imports `{line}`; a policy is a pure function of its inputs \
                     (the tick in local/mod.rs applies its decisions)"
                );
            }
        }
    }
}
