//! Discovery: learning which instances host each service, and reporting this instance.
//!
//! Owns: the orchestrator link of an instance (register, heartbeat with a load report,
//! receive membership pushes and drain orders) and the messages of that control protocol,
//! which the `colony` CLI's orchestrator speaks too. Promises: membership is pushed, never
//! polled on the call path; while the orchestrator is unreachable the router keeps the last
//! membership it received, and the link reconnects and registers again on its own.
//! Must not touch: how calls are sent (the router applies membership).
//!
//! The control protocol is one JSON object per line, each line at most [`MAX_LINE`] bytes,
//! over mutual TLS 1.3 when security is on (the instance's own [`Dialer`], which checks
//! that the peer's certificate names [`ROLE_ORCHESTRATOR`]), over plain TCP when it is off.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Notify;

use crate::call::Router;
use crate::host::Host;
use crate::security::ROLE_ORCHESTRATOR;
use crate::transport::Dialer;

/// The longest line either side of the control protocol accepts.
pub const MAX_LINE: usize = 1024 * 1024;

/// The default interval between heartbeats; `COLONY_HEARTBEAT` overrides it.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);

/// What an instance tells the orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToOrchestrator {
    /// The first message on a link: who this instance is.
    Register(Registration),
    /// Sent every heartbeat interval.
    Heartbeat {
        /// The instance's load since its previous heartbeat.
        load: LoadSnapshot,
    },
}

/// What the orchestrator tells an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FromOrchestrator {
    /// The healthy instances of each service, replacing what the instance knew.
    Members {
        /// Service name → addresses of its healthy instances.
        services: BTreeMap<String, Vec<String>>,
    },
    /// Stop taking calls, finish those in flight, then exit.
    Drain,
}

/// An instance's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The instance id (`COLONY_INSTANCE`).
    pub instance: String,
    /// Its process id.
    pub pid: u32,
    /// Where it accepts calls; empty for a process that hosts no service (a gateway).
    pub addr: String,
    /// The services it hosts.
    pub services: Vec<String>,
    /// Its build fingerprint.
    pub fingerprint: String,
    /// Where it serves `/metrics` and `/healthz` (`host:port`), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

/// Load as reported in a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LoadSnapshot {
    /// Requests in flight now.
    pub in_flight: u64,
    /// The instance's hard limit of requests in flight.
    pub capacity: u64,
    /// Requests completed since start.
    pub completed: u64,
    /// Requests that failed since start.
    pub errors: u64,
    /// Fraction of the last interval with at least one request in flight, 0 to 1.
    pub busy_ratio: f64,
}

/// Where an instance finds its orchestrator.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OrchestratorConfig {
    /// The orchestrator's control address.
    pub addr: String,
    /// A file holding the current address, re-read on every reconnect, so that an
    /// orchestrator restarted on another port is found again.
    pub addr_file: Option<PathBuf>,
    /// The interval between heartbeats.
    pub heartbeat: Duration,
}

impl OrchestratorConfig {
    /// The orchestrator at `addr`, with no address file and the default heartbeat.
    pub fn new(addr: impl Into<String>) -> OrchestratorConfig {
        OrchestratorConfig {
            addr: addr.into(),
            addr_file: None,
            heartbeat: DEFAULT_HEARTBEAT,
        }
    }

    /// From `COLONY_ORCHESTRATOR`, `COLONY_ORCHESTRATOR_FILE` and `COLONY_HEARTBEAT`
    /// (milliseconds, or a duration such as `500ms`); `None` when no orchestrator is set.
    pub fn from_env() -> Option<OrchestratorConfig> {
        let env = crate::config::env();
        Some(OrchestratorConfig {
            addr: env.orchestrator.clone()?,
            addr_file: env.orchestrator_file.clone(),
            heartbeat: env.heartbeat.unwrap_or(DEFAULT_HEARTBEAT),
        })
    }

    fn current_addr(&self) -> String {
        self.addr_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.addr.clone())
    }
}

/// Read one line of at most [`MAX_LINE`] bytes; `None` at the end of the stream.
pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok((!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned()));
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if line.len() + chunk.len() > MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a control message is longer than {MAX_LINE} bytes"),
            ));
        }
        line.extend_from_slice(chunk);
        let used = done.unwrap_or(buf.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
    }
}

/// Keep this instance registered with its orchestrator until the process ends: register,
/// heartbeat with its load, apply membership pushes to `router`, and signal `drain` when
/// told to drain. Reconnects with back-off whenever the link breaks.
///
/// The link is opened with `dialer`, the process's own (the one its router uses): with
/// mutual TLS it presents this process's certificate and refuses a peer whose certificate
/// does not name [`ROLE_ORCHESTRATOR`], so an instance registers only with the real
/// orchestrator of its cluster.
pub fn spawn_link(
    config: OrchestratorConfig,
    registration: Registration,
    host: Option<Arc<Host>>,
    router: Arc<Router>,
    drain: Arc<Notify>,
    dialer: Arc<dyn Dialer>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        loop {
            let addr = config.current_addr();
            match link_once(
                &addr,
                dialer.as_ref(),
                &config,
                &registration,
                host.as_deref(),
                &router,
                &drain,
            )
            .await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "orchestrator link down; keeping the last membership");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    })
}

async fn link_once(
    addr: &str,
    dialer: &dyn Dialer,
    config: &OrchestratorConfig,
    registration: &Registration,
    host: Option<&Host>,
    router: &Router,
    drain: &Notify,
) -> std::io::Result<()> {
    let stream = dialer.dial(addr, &[ROLE_ORCHESTRATOR]).await?;
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(reader);
    write_message(&mut writer, &ToOrchestrator::Register(registration.clone())).await?;
    tracing::debug!(%addr, "registered with the orchestrator");
    let mut ticker = tokio::time::interval(config.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_busy = host.map_or(0, |h| h.load().busy_micros);
    let mut last_tick = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let load = host.map(|h| {
                    let report = h.load();
                    let elapsed = last_tick.elapsed().as_micros().max(1) as f64;
                    let busy = report.busy_micros.saturating_sub(last_busy) as f64;
                    last_busy = report.busy_micros;
                    LoadSnapshot {
                        in_flight: report.in_flight,
                        capacity: report.capacity,
                        completed: report.completed,
                        errors: report.errors,
                        busy_ratio: (busy / elapsed).clamp(0.0, 1.0),
                    }
                }).unwrap_or_default();
                last_tick = std::time::Instant::now();
                write_message(&mut writer, &ToOrchestrator::Heartbeat { load }).await?;
            }
            line = read_line(&mut reader) => {
                let Some(line) = line? else {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the orchestrator closed the link"));
                };
                match serde_json::from_str::<FromOrchestrator>(&line) {
                    Ok(FromOrchestrator::Members { services }) => apply_members(router, &services),
                    Ok(FromOrchestrator::Drain) => {
                        tracing::info!("the orchestrator asked this instance to drain");
                        drain.notify_one();
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring a control message that does not parse"),
                }
            }
        }
    }
}

/// Replace the router's instances of every service named in `services`.
pub(crate) fn apply_members(router: &Router, services: &BTreeMap<String, Vec<String>>) {
    for (service, addrs) in services {
        if let Err(e) = router.set_instances(service, addrs) {
            tracing::debug!(error = %e, "ignoring membership of a service this build lacks");
        }
    }
}

/// Write one control message as a JSON line, and flush it.
pub async fn write_message<W: tokio::io::AsyncWrite + Unpin, M: Serialize>(
    writer: &mut W,
    message: &M,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line).await?;
    // A TLS stream may hold the record until flushed.
    writer.flush().await
}

/// Discovery on Kubernetes: each peer whose address is a DNS name (a service's headless
/// Service, `shop-pricing-headless.shop.svc.cluster.local:7700`) is resolved to every ready
/// pod behind it, again every `refresh`, and the router's instances follow as pods come and
/// go. `COLONY_DNS_SERVER=IP:PORT` picks the DNS server (default: the system's).
#[cfg(feature = "kubernetes")]
pub(crate) fn spawn_kubernetes(
    router: Arc<Router>,
    peers: Vec<crate::call::Peer>,
    refresh: Duration,
) -> Result<tokio::task::JoinHandle<()>, String> {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;

    let provider = TokioRuntimeProvider::default();
    let mut builder = match &crate::config::env().dns_server {
        Some(server) => {
            let addr: std::net::SocketAddr = server.trim().parse().map_err(|_| {
                format!("COLONY_DNS_SERVER={server} is not IP:PORT, such as 10.96.0.10:53")
            })?;
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            hickory_resolver::Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                provider,
            )
        }
        None => hickory_resolver::Resolver::builder(provider)
            .map_err(|e| format!("could not read the system's DNS configuration: {e}"))?,
    };
    // Pods come and go faster than DNS caches like: ask every time.
    builder.options_mut().cache_size = 0;
    // Pods have IPv4 addresses in most clusters: ask for A records, and AAAA only without them.
    builder.options_mut().ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4thenIpv6;
    let resolver = builder
        .build()
        .map_err(|e| format!("could not build a DNS resolver: {e}"))?;
    let named: Vec<(crate::call::Peer, String, u16)> = peers
        .into_iter()
        .filter_map(|p| {
            let (host, port) = p.addr.rsplit_once(':')?;
            let port: u16 = port.parse().ok()?;
            (host.parse::<std::net::IpAddr>().is_err()).then(|| (p.clone(), host.to_owned(), port))
        })
        .collect();
    Ok(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(refresh);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut failed = false;
            for (peer, host, port) in &named {
                let fqdn = format!("{}.", host.trim_end_matches('.'));
                let addrs: Vec<String> = match resolver.lookup_ip(fqdn.as_str()).await {
                    Ok(ips) => ips
                        .iter()
                        .map(|ip| std::net::SocketAddr::new(ip, *port).to_string())
                        .collect(),
                    Err(e) if e.is_no_records_found() => {
                        tracing::debug!(%host, error = %e, "no DNS records");
                        Vec::new()
                    }
                    Err(e) => {
                        tracing::debug!(%host, error = %e, "DNS lookup failed; keeping the last instances");
                        failed = true;
                        continue;
                    }
                };
                for entry in crate::service::registry()
                    .iter()
                    .filter(|e| peer.matches(e.name))
                {
                    members
                        .entry(entry.name.to_owned())
                        .or_default()
                        .extend(addrs.iter().cloned());
                }
            }
            if !failed {
                apply_members(&router, &members);
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json() {
        let m = FromOrchestrator::Members {
            services: BTreeMap::from([("a::b".to_owned(), vec!["127.0.0.1:1".to_owned()])]),
        };
        let s = serde_json::to_string(&m).expect("serializes");
        assert_eq!(
            s,
            r#"{"type":"members","services":{"a::b":["127.0.0.1:1"]}}"#
        );
        assert_eq!(
            serde_json::from_str::<FromOrchestrator>(&s).expect("parses"),
            m
        );
        assert_eq!(
            serde_json::from_str::<FromOrchestrator>(r#"{"type":"drain"}"#).expect("parses"),
            FromOrchestrator::Drain
        );
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let long = vec![b'x'; MAX_LINE + 10];
        let mut reader = BufReader::new(&long[..]);
        assert!(read_line(&mut reader).await.is_err());
        let mut ok = BufReader::new(&b"one\ntwo"[..]);
        assert_eq!(
            read_line(&mut ok).await.expect("reads").as_deref(),
            Some("one")
        );
        assert_eq!(
            read_line(&mut ok).await.expect("reads").as_deref(),
            Some("two")
        );
        assert_eq!(read_line(&mut ok).await.expect("reads"), None);
    }
}
