//! Colony's remote call in other settings: over mutual TLS, with tracing off, on at 100% or
//! at the default sampling, through the HTTP gateway, and through the balancer to one
//! instance or two.
//!
//! Each variant is measured like the plain remote call (the same echo, latency with one
//! call in flight, throughput with 64), so its ratio to that row is the cost of what it
//! adds:
//!
//! - **mTLS**: the host listens through [`MutualTls::bind`] and the client dials with its
//!   [`TlsDialer`]; certificates come from a CA made for the run.
//! - **tracing**: the client's and the server's runtime threads each have a `tracing`
//!   subscriber as their default: Colony's JSON [`LogLayer`] at `info`, writing to
//!   `io::sink`, so every line is formatted in full and then dropped. The sampler is set to
//!   always-off, always-on or Colony's default share before each row.
//! - **gateway**: the HTTP/JSON client of the axum row sends `POST /echo` to Colony's
//!   gateway, which calls [`http_echo`] in a **child process** (this binary, re-run with
//!   `--serve-echo`), so each request crosses two hops as in production.
//! - **balancer**: a service that spins the CPU for [`WORK_MICROS`] µs per call, behind one
//!   instance or two, each instance on its own runtime and CPU (where there are two).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony::ServiceError;
use colony::control::security::{Ca, CallerPolicy, CertLifetime, MutualTls};
use colony::control::telemetry::{LogFormat, LogLayer, Sampler};
use colony::control::transport::{Dialer, Listener, TcpDialer, TcpListener};
use colony::control::{Host, HostConfig, Peer, Router, serve};
use tracing_subscriber::layer::SubscriberExt as _;

use crate::colony_rpc::{self, ColonyClient};
use crate::measure::{self, Client, Result, Scope};

/// The app name in the run's certificates.
const APP: &str = "colony-bench";

/// Microseconds of CPU the balancer rows' service spends per call.
pub(crate) const WORK_MICROS: u64 = 20;

/// [`colony_rpc::echo`] with an HTTP route, for the gateway row: the same JSON body as the
/// axum row's, `{"payload": "…"}`, and the same answer.
#[colony::microservice(exposed, http = "POST /echo")]
pub(crate) async fn http_echo(payload: String) -> std::result::Result<EchoReply, ServiceError> {
    Ok(EchoReply { payload })
}

/// What [`http_echo`] answers.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct EchoReply {
    /// The bytes sent.
    payload: String,
}

/// Spins the CPU for [`WORK_MICROS`] µs, then echoes.
#[colony::microservice]
pub(crate) async fn busy_echo(payload: Vec<u8>) -> std::result::Result<Vec<u8>, ServiceError> {
    let until = Instant::now() + Duration::from_micros(WORK_MICROS);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    Ok(payload)
}

fn full_name(service: &str) -> String {
    format!("{}::{service}", module_path!())
}

/// A host serving `service` on the current runtime, listening through `listener`.
async fn host_on(service: &str, listener: impl Listener, dialer: Arc<dyn Dialer>) -> Result<()> {
    let router = Router::builder(dialer).hosted([service]).build()?;
    let host = Host::new(&[service], router, HostConfig::default())?;
    tokio::spawn(serve(listener, host, std::future::pending()));
    Ok(())
}

/// The certificates of a mutual-TLS row: one CA, an identity for the host and one for the
/// client.
#[derive(Clone)]
pub(crate) struct Tls {
    server: MutualTls,
    client: MutualTls,
}

impl Tls {
    /// A CA for this run, and certificates from it.
    pub(crate) fn new() -> Result<Tls> {
        let ca = Arc::new(Ca::generate(APP)?);
        let service = colony_rpc::SERVICE;
        let server = MutualTls::from_ca(ca.clone(), APP, &[service], CertLifetime::default())?;
        let client = MutualTls::from_ca(ca, APP, &["@client"], CertLifetime::default())?;
        Ok(Tls { server, client })
    }

    /// Start the echo host over mutual TLS on the current runtime; returns its address.
    pub(crate) async fn start_server(self) -> Result<String> {
        let service = colony_rpc::SERVICE;
        let listener = self
            .server
            .bind("127.0.0.1:0", &[service], CallerPolicy::default())
            .await?;
        let addr = listener.local_addr();
        host_on(service, listener, Arc::new(self.server.dialer())).await?;
        Ok(addr)
    }

    /// A client of the echo host at `addr`, over mutual TLS.
    pub(crate) fn client(&self, addr: &str) -> Result<ColonyClient> {
        ColonyClient::remote_with(Arc::new(self.client.dialer()), addr)
    }
}

/// The sampling of a tracing row.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tracing {
    /// A subscriber, and no trace sampled.
    Off,
    /// Every trace sampled.
    All,
    /// Colony's default share.
    Default,
}

impl Tracing {
    /// Make this the sampler of the process.
    pub(crate) fn apply(self) {
        colony::control::telemetry::set_sampler(match self {
            Tracing::Off => Sampler::always_off(),
            Tracing::All => Sampler::always_on(),
            Tracing::Default => Sampler::default(),
        });
    }
}

/// A `tracing` dispatcher like an instance's: Colony's JSON log lines at `info`, written
/// to `io::sink`.
pub(crate) fn log_dispatch() -> tracing::Dispatch {
    let targets: tracing_subscriber::filter::Targets = "info"
        .parse()
        .unwrap_or_else(|_| tracing_subscriber::filter::Targets::new());
    let subscriber = tracing_subscriber::registry()
        .with(targets)
        .with(LogLayer::with_writer(LogFormat::Json, std::io::sink));
    tracing::Dispatch::new(subscriber)
}

/// Start the busy echo host on the current runtime; returns its address.
pub(crate) async fn start_busy_server() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr();
    host_on(&full_name("busy_echo"), listener, Arc::new(TcpDialer)).await?;
    Ok(addr)
}

/// Calls [`busy_echo`] on the instances at `addrs`, through one router.
#[derive(Debug, Clone)]
pub(crate) struct BusyClient {
    router: Arc<Router>,
}

impl BusyClient {
    /// A client balancing over `addrs`.
    pub(crate) fn new(addrs: &[String]) -> Result<BusyClient> {
        let service = full_name("busy_echo");
        let mut builder = Router::builder(Arc::new(TcpDialer));
        for addr in addrs {
            builder = builder.peer(Peer::parse(&format!("{service}={addr}"))?);
        }
        Ok(BusyClient {
            router: builder.build()?,
        })
    }
}

impl Client for BusyClient {
    async fn call(&mut self) -> Result<()> {
        let reply = busy_echo(measure::PAYLOAD.to_vec()).await?;
        measure::check(&reply)
    }

    fn scope(&self) -> Scope {
        Scope::Colony(self.router.clone())
    }
}

/// The gateway row's echo service, running in a child process until dropped.
pub(crate) struct EchoProcess {
    child: Child,
    /// Where the child's host listens.
    pub(crate) addr: String,
}

impl EchoProcess {
    /// Re-run this binary with `--serve-echo`, its thread pinned to `cpu` if any, and wait
    /// for the address it listens on.
    pub(crate) fn start(cpu: Option<usize>) -> Result<EchoProcess> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        command.arg(SERVE_ECHO);
        if let Some(cpu) = cpu {
            command.arg(cpu.to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or("the echo process has no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line.trim().to_owned();
        if addr.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the echo process exited before it listened".into());
        }
        crate::cpu::watch_child(child.id());
        Ok(EchoProcess { child, addr })
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        crate::cpu::forget_child(self.child.id());
        // Closing its stdin tells the child to exit; kill it in case it does not.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The argument that makes this binary the gateway row's echo process.
pub(crate) const SERVE_ECHO: &str = "--serve-echo";

/// The child process: host [`http_echo`] on 127.0.0.1 with one worker thread (on the CPU
/// named by the next argument, if any), print the address, serve until stdin closes.
pub(crate) fn serve_echo_process(cpu: Option<&str>) -> Result<()> {
    let cpu = cpu.map(str::parse::<usize>).transpose()?;
    let rt = crate::runtimes::runtime(crate::cpu::CHILD_THREAD, cpu)?;
    let addr = crate::runtimes::on(&rt, async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr();
        host_on(&full_name("http_echo"), listener, Arc::new(TcpDialer)).await?;
        Ok(addr)
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{addr}")?;
    out.flush()?;
    drop(out);
    // Serve until the parent closes our stdin (or dies).
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink)? > 0 {
        sink.clear();
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Start Colony's gateway on the current runtime, in front of the echo process at
/// `echo_addr`; returns the gateway's address.
pub(crate) async fn start_gateway(echo_addr: String) -> Result<String> {
    let service = full_name("http_echo");
    let router = Router::builder(Arc::new(TcpDialer))
        .peer(Peer::parse(&format!("{service}={echo_addr}"))?)
        .build()?;
    let config = colony::control::gateway::GatewayConfig::default();
    let gateway = colony::control::gateway::Gateway::new(router, config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(colony::control::gateway::serve(
        listener,
        gateway,
        std::future::pending(),
    ));
    Ok(addr)
}
