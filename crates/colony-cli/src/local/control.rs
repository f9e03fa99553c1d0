//! The control port: the orchestrator's one listener, for instances' links and for the
//! CLI's requests, one JSON object per line.
//!
//! Owns: binding it (the previous port when free), mutual TLS as `@orchestrator` with the
//! cluster CA (refusals in the handshake become rate-limited `refused` events), who may do
//! what after the handshake (a `register` must claim only services its certificate names,
//! the gateway as `@gateway`, and an instance this orchestrator started must register for
//! the service it was started for; `status`, `events`, `scale` and `down` only for the
//! CLI's `@control`), each instance's link (registration, heartbeats and their load, and
//! the membership and drain orders pushed down it), and answering the CLI. Must not touch:
//! when instances start, stop or scale (it records what it hears; the tick decides).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use colony::control::discovery::{FromOrchestrator, ToOrchestrator, read_line, write_message};
use colony::control::security::{
    Ca, CallerPolicy, CertLifetime, MutualTls, ROLE_CONTROL, ROLE_ORCHESTRATOR,
};
use colony::control::transport::{Authenticated, BoxStream, Listener, PeerIdentity};
use serde::{Deserialize, Serialize};
use tokio::io::{BufReader, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::autoscale::Memory;
use super::state::{CONTROL_FILE, ControlInfo, Event, State, Status, read_events};
use super::{App, GATEWAY, Inner, Orchestrator};
use crate::settings::ClusterSettings;

/// How long a peer of the control port has to send its first message.
const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many refusals a second become events; the rest are counted.
const REFUSAL_EVENTS_PER_SECOND: u32 = 5;

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

/// The control port, bound: the previous orchestrator's port when it is free and on the
/// same host address, else any. With TLS, the CA (to issue containers' leaves) and the
/// orchestrator's own mutual TLS. Writes where it is (`orchestrator.addr`), how to speak to
/// it (`orchestrator.json`) and the orchestrator's pid to `.colony/`.
pub(super) struct Bound {
    pub(super) tcp: tokio::net::TcpListener,
    pub(super) addr: String,
    pub(super) tls: Option<(Arc<Ca>, MutualTls)>,
}

pub(super) async fn bind(
    app: &App,
    cluster: &ClusterSettings,
    previous_addr: &str,
) -> anyhow::Result<Bound> {
    // Containers reach the host at its address on the cluster's network.
    let host = app
        .docker
        .as_ref()
        .map_or_else(|| "127.0.0.1".to_owned(), |d| d.host_ip.clone());
    let same_host = previous_addr
        .rsplit_once(':')
        .is_some_and(|(h, _)| h == host);
    let tcp = match tokio::net::TcpListener::bind(previous_addr).await {
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
    Ok(Bound {
        tcp,
        addr: control_addr,
        tls,
    })
}

/// The control port's listener: mutual TLS reporting refusals to `orchestrator`, or plain
/// TCP when security is off.
pub(super) fn listener(
    orchestrator: &Orchestrator,
    tcp: tokio::net::TcpListener,
    tls: Option<MutualTls>,
) -> anyhow::Result<Box<dyn Listener>> {
    Ok(match tls {
        Some(mtls) => {
            let o = orchestrator.clone();
            let report: colony::control::security::RefusalReport =
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
        None => Box::new(colony::control::transport::TcpListener::from_tokio(tcp)?),
    })
}

impl Inner {
    /// Record a refused connection or registration on the control port (rate-limited).
    pub(super) fn refused(&mut self, peer: &str, kind: &str, reason: &str) {
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

    /// Each service's healthy instances' addresses: what every instance is told.
    pub(super) fn members(&self) -> BTreeMap<String, Vec<String>> {
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
    pub(super) fn push_members(&mut self, force: bool) {
        let members = self.members();
        if !force && members == self.last_members {
            return;
        }
        self.last_members = members.clone();
        let message = FromOrchestrator::Members { services: members };
        self.links.retain(|_, tx| tx.send(message.clone()).is_ok());
    }
}

impl Orchestrator {
    pub(super) async fn accept_loop(self, mut listener: Box<dyn Listener>) {
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
        registration: &colony::control::discovery::Registration,
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
                inner
                    .autoscaler
                    .insert(service.clone(), Memory::scaled_by_hand(Instant::now()));
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
        mut registration: colony::control::discovery::Registration,
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
