//! The roles of a Colony binary: `run`, `serve`, `gateway`, `call` and `describe`.
//!
//! Owns: the command line and environment of the user's binary, building its tokio runtime,
//! and wiring a [`Host`] and a [`Router`] for the chosen role. Promises: bad flags and bad
//! JSON get a message that says what was wrong and how to fix it; SIGTERM and Ctrl-C drain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use crate::call::{CallOptions, Peer, Reply, Router};
use crate::error::{Error, Result};
use crate::host::{Host, HostConfig, serve};
use crate::service::{self};
use crate::transport::ConnectionConfig;

#[derive(Parser, Debug)]
#[command(
    about = "A Colony app: its services run in this process, or as instances that call each other.",
    after_help = "Environment: COLONY_PEERS (NAME=ADDR,...), COLONY_LISTEN, COLONY_THREADS, \
                  COLONY_MAX_IN_FLIGHT, COLONY_MAX_FRAME, COLONY_LOG (an EnvFilter, e.g. `info,colony=debug`), \
                  COLONY_LOG_FORMAT (json, text), COLONY_METRICS_ADDR, COLONY_TRACE_SAMPLE (0 to 1); \
                  tracing: OTEL_EXPORTER_OTLP_ENDPOINT (feature `otlp`), OTEL_TRACES_SAMPLER[_ARG], OTEL_SERVICE_NAME; \
                  security: COLONY_TLS (off), COLONY_CA_DIR (default ./.colony), COLONY_APP, \
                  COLONY_CERT_LIFETIME, COLONY_CERT_RENEW_BEFORE, COLONY_TLS_CERT/KEY/CA, COLONY_CONFIG."
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// Every service in this process (the default role).
    Run(RunArgs),
    /// Host the named services as one instance.
    Serve(ServeArgs),
    /// Serve the HTTP gateway in front of the exposed services of the peers.
    #[cfg(feature = "gateway")]
    Gateway(GatewayArgs),
    /// Call a service with JSON arguments and print its JSON result.
    Call(CallArgs),
    /// Print JSON describing every service: arguments, schemas and options.
    Describe,
}

#[derive(Args, Debug)]
struct Common {
    /// A peer hosting services: NAME=ADDR, where NAME is a service, `module::*`, or `*`.
    #[arg(
        long = "peer",
        value_name = "NAME=ADDR",
        env = "COLONY_PEERS",
        value_delimiter = ','
    )]
    peers: Vec<String>,
    /// Tokio worker threads (default: the largest `threads` of the hosted services, else one per core).
    #[arg(long, env = "COLONY_THREADS")]
    threads: Option<usize>,
    /// The largest frame accepted, in bytes.
    #[arg(long, env = "COLONY_MAX_FRAME", default_value_t = crate::wire::DEFAULT_MAX_FRAME)]
    max_frame: usize,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Where to accept calls from other processes.
    #[arg(long, env = "COLONY_LISTEN", default_value = "127.0.0.1:7700")]
    listen: String,
    #[command(flatten)]
    common: Common,
    /// Requests in flight past which new ones are refused as overloaded.
    #[arg(long, env = "COLONY_MAX_IN_FLIGHT", default_value_t = 65_536)]
    max_in_flight: u64,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// Where an instance serves its metrics and health.
#[derive(Args, Debug, Clone)]
struct MetricsArgs {
    /// Where to serve `/metrics` (Prometheus) and `/healthz`; port 0 picks a free port,
    /// `off` serves nothing. The URL is printed on stdout.
    #[arg(
        long = "metrics",
        value_name = "ADDR",
        env = "COLONY_METRICS_ADDR",
        default_value = "127.0.0.1:0"
    )]
    metrics: String,
}

/// The gateway's command-line flags, shared by `APP gateway` and `APP run`.
#[cfg(feature = "gateway")]
#[derive(clap::Args, Debug, Clone)]
struct HttpArgs {
    /// Where the HTTP gateway listens; port 0 picks a free port. The URL is printed on stdout.
    #[arg(
        long = "http",
        value_name = "ADDR",
        env = "COLONY_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    http: String,
    /// How long a client may take to send a request's headers.
    #[arg(long, env = "COLONY_HTTP_HEADER_TIMEOUT", value_parser = crate::config::duration, default_value = "10s")]
    http_header_timeout: Duration,
    /// How long a client may take to send a request's body once its head is in.
    #[arg(long, env = "COLONY_HTTP_BODY_TIMEOUT", value_parser = crate::config::duration, default_value = "10s")]
    http_body_timeout: Duration,
    /// The largest request body, in bytes.
    #[arg(long, env = "COLONY_HTTP_MAX_BODY", default_value_t = 1 << 20)]
    http_max_body: usize,
    /// HTTP requests in flight past which new ones get 503.
    #[arg(long, env = "COLONY_HTTP_MAX_CONCURRENT", default_value_t = 4096)]
    http_max_concurrent: usize,
    /// Tries per request, the first included, when instances fail (1: no retries).
    #[arg(long, env = "COLONY_HTTP_MAX_ATTEMPTS", default_value_t = 4)]
    http_max_attempts: u16,
    /// Retries allowed per request on average (the retry budget), e.g. 0.2 for 20% extra load.
    #[arg(long, env = "COLONY_HTTP_RETRY_BUDGET", default_value_t = 0.2)]
    http_retry_budget: f64,
}

#[cfg(feature = "gateway")]
impl HttpArgs {
    /// The settings these flags describe.
    fn config(&self) -> crate::Result<crate::gateway::GatewayConfig> {
        if self.http_max_body == 0 || self.http_max_concurrent == 0 {
            return Err(crate::Error::Usage(
                "--http-max-body and --http-max-concurrent must be at least 1".to_owned(),
            ));
        }
        if !(self.http_retry_budget.is_finite() && self.http_retry_budget >= 0.0) {
            return Err(crate::Error::Usage(
                "--http-retry-budget must be a number of at least 0, such as 0.2".to_owned(),
            ));
        }
        Ok(crate::gateway::GatewayConfig {
            header_read_timeout: self.http_header_timeout,
            body_read_timeout: self.http_body_timeout,
            max_body: self.http_max_body,
            max_concurrent: self.http_max_concurrent,
            retry: crate::retry::RetryPolicy::default()
                .with_max_attempts(self.http_max_attempts)
                .with_budget_ratio(self.http_retry_budget),
            ..crate::gateway::GatewayConfig::default()
        })
    }
}

#[cfg(feature = "gateway")]
/// Bind the gateway for a role of the binary (`run`, `gateway`), print its URL, and serve
/// it in a task until `shutdown`; the task ends once the requests in flight are done.
async fn spawn_gateway(
    args: &HttpArgs,
    router: Arc<Router>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<tokio::task::JoinHandle<()>> {
    let (listener, gateway) = crate::gateway::bind(router, &args.http, args.config()?).await?;
    announce_gateway(&listener);
    Ok(tokio::spawn(crate::gateway::serve(
        listener, gateway, shutdown,
    )))
}

/// Print where the gateway listens, for whoever started this process.
#[cfg(feature = "gateway")]
fn announce_gateway(listener: &tokio::net::TcpListener) {
    if let Ok(local) = listener.local_addr() {
        announce(&format!("colony: gateway on http://{local}"));
    }
}

/// Serve `/metrics` and `/healthz` where `--metrics` says, and print where.
async fn spawn_metrics(args: &MetricsArgs) -> Result<Option<std::net::SocketAddr>> {
    let local = crate::telemetry::spawn_metrics(&args.metrics).await?;
    if let Some(local) = local {
        announce(&format!("colony: metrics on http://{local}/metrics"));
    }
    Ok(local)
}

/// The gateway's flags; a build without the `gateway` feature has none.
#[cfg(not(feature = "gateway"))]
#[derive(Args, Debug, Clone)]
struct HttpArgs {}

#[cfg(feature = "gateway")]
#[derive(Args, Debug)]
struct GatewayArgs {
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// The services to host, comma-separated full names.
    #[arg(long = "service", value_delimiter = ',', required = true)]
    services: Vec<String>,
    /// Where to accept calls; port 0 picks a free port. The address is printed on stdout.
    #[arg(long, env = "COLONY_LISTEN", default_value = "127.0.0.1:0")]
    listen: String,
    #[command(flatten)]
    common: Common,
    /// Requests in flight past which new ones are refused as overloaded.
    #[arg(long, env = "COLONY_MAX_IN_FLIGHT", default_value_t = 65_536)]
    max_in_flight: u64,
    /// How long SIGTERM waits for requests in flight before exiting anyway.
    #[arg(long, value_parser = crate::config::duration, default_value = "30s")]
    drain_timeout: Duration,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[derive(Args, Debug)]
struct CallArgs {
    /// The service's full name, e.g. `shop::pricing::quote`.
    service: String,
    /// The arguments as a JSON object of named arguments, e.g. '{"sku": "a1", "qty": 2}'.
    #[arg(default_value = "{}")]
    args: String,
    #[command(flatten)]
    common: Common,
    /// The call's deadline, e.g. `500ms`, `5s`.
    #[arg(long, value_parser = crate::config::duration)]
    timeout: Option<Duration>,
}

/// Run the role named on the command line. This is what `colony::main` does.
pub fn main() -> Result<()> {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `run` is the default role: `app` and `app --listen X` mean `app run ...`.
    let first = argv.get(1).and_then(|a| a.to_str()).unwrap_or("");
    if argv.len() == 1
        || (first.starts_with('-') && !matches!(first, "-h" | "--help" | "-V" | "--version"))
    {
        argv.insert(1, "run".into());
    }
    let mut cli = Cli::parse_from(argv);
    // `--service checkout` names `myapp::shop::checkout` when that is the only match.
    if let Role::Serve(args) = &mut cli.role {
        args.services = args
            .services
            .iter()
            .map(|name| service::resolve(name).map(|e| e.name.to_owned()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Usage(format!("--service: {e}")))?;
    }
    if let Some(problem) = crate::config::env().check() {
        return Err(Error::Usage(problem));
    }
    let _telemetry = crate::telemetry::init(&process_services(&cli.role));
    match cli.role {
        Role::Describe => {
            let doc = crate::describe::describe();
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).unwrap_or_else(|e| e.to_string())
            );
            Ok(())
        }
        Role::Run(args) => {
            development_ca()?;
            let all: Vec<String> = service::registry()
                .iter()
                .map(|e| e.name.to_owned())
                .collect();
            let threads = args.common.threads.or_else(|| max_threads(&all));
            runtime(threads)?.block_on(host_role(
                all,
                args.listen,
                args.common,
                args.max_in_flight,
                Duration::from_secs(30),
                Some(args.http),
                args.metrics,
            ))
        }
        Role::Serve(args) => {
            let threads = args.common.threads.or_else(|| max_threads(&args.services));
            runtime(threads)?.block_on(host_role(
                args.services,
                args.listen,
                args.common,
                args.max_in_flight,
                args.drain_timeout,
                None,
                args.metrics,
            ))
        }
        #[cfg(feature = "gateway")]
        Role::Gateway(args) => runtime(args.common.threads)?.block_on(gateway_role(args)),
        Role::Call(args) => runtime(args.common.threads)?.block_on(call_role(args)),
    }
}

/// What this process runs, for telemetry: the hosted services, or the role.
fn process_services(role: &Role) -> String {
    match role {
        Role::Serve(args) => args.services.join(","),
        #[cfg(feature = "gateway")]
        Role::Gateway(_) => crate::security::ROLE_GATEWAY.to_owned(),
        Role::Run(_) | Role::Call(_) | Role::Describe => String::new(),
    }
}

/// `APP run` is for development: with TLS on and no CA where this process looks for one
/// (and no certificate handed to it), make one there, as `colony certs init` would, and
/// say so. `APP serve` (production) never does: it refuses to start without a CA.
fn development_ca() -> Result<()> {
    let settings = crate::security::Settings::from_env(&is_service)?;
    if !matches!(settings.mode, crate::security::Mode::Mutual)
        || settings.leaf.is_some()
        || crate::security::Ca::exists_in(&settings.ca_dir)
    {
        return Ok(());
    }
    crate::security::Ca::generate(&settings.app)?.save(&settings.ca_dir, false)?;
    tracing::info!(dir = %settings.ca_dir.display(), "created a development CA");
    eprintln!(
        "colony: no cluster CA in {} yet, so this made one for development (`colony certs \
         init` does the same); keep it out of version control",
        settings.ca_dir.display()
    );
    Ok(())
}

/// Whether `name` is a service of this binary.
fn is_service(name: &str) -> bool {
    service::find(name).is_some()
}

fn max_threads(services: &[String]) -> Option<usize> {
    services
        .iter()
        .filter_map(|n| service::find(n))
        .filter_map(|e| e.options.threads)
        .max()
        .map(|t| t as usize)
}

fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("colony-worker");
    if let Some(t) = threads {
        if t == 0 {
            return Err(Error::Usage(
                "--threads must be at least 1 (COLONY_THREADS)".to_owned(),
            ));
        }
        builder.worker_threads(t);
    }
    builder
        .build()
        .map_err(|e| Error::io("could not start the tokio runtime", e))
}

fn parse_peers(common: &Common) -> Result<Vec<Peer>> {
    common
        .peers
        .iter()
        .map(|p| {
            Peer::parse(p)
                .and_then(|peer| {
                    peer.resolved()
                        .map_err(|e| format!("--peer {p} (COLONY_PEERS): {e}"))
                })
                .map_err(Error::Usage)
        })
        .collect()
}

async fn host_role(
    services: Vec<String>,
    listen: String,
    common: Common,
    max_in_flight: u64,
    drain_timeout: Duration,
    http: Option<HttpArgs>,
    metrics: MetricsArgs,
) -> Result<()> {
    let connection = ConnectionConfig {
        max_frame: common.max_frame,
        ..ConnectionConfig::default()
    };
    let transport = crate::security::Transport::for_host(&services, &is_service)?;
    // The store's instance opens its file now: one it cannot open stops it at start, with
    // the reason, rather than failing every call.
    #[cfg(feature = "store")]
    if services.iter().any(|s| s == crate::store::SERVICE) {
        crate::store::open().await.map_err(Error::Usage)?;
    }
    let router = role_router(&transport, &services, &common, connection)?;
    let config = HostConfig {
        max_in_flight,
        drain_timeout,
        connection,
    };
    let names: Vec<&str> = services.iter().map(String::as_str).collect();
    let host = Host::new(&names, router.clone(), config).map_err(Error::Usage)?;
    let listener = transport.listen(&listen, &names).await?;
    let addr = crate::transport::Listener::local_addr(&listener);
    announce(&format!("colony: listening on {addr}"));
    let metrics = spawn_metrics(&metrics).await?;
    tracing::info!(%addr, services = %names.join(","), instance = crate::identity::instance_id(), "serving");
    // `run` also serves the HTTP gateway, which runs the exposed services right here.
    #[cfg(feature = "gateway")]
    let gateway = match http {
        Some(http) => Some(spawn_gateway(&http, router.clone(), shutdown_signal()).await?),
        None => None,
    };
    #[cfg(not(feature = "gateway"))]
    let _ = http;
    // Under an orchestrator (`colony up`): register, heartbeat, take membership pushes.
    let shutdown = link_to_orchestrator(
        addr.clone(),
        services.clone(),
        metrics,
        Some(host.clone()),
        router,
        &transport,
    );
    serve(listener, host, shutdown).await;
    #[cfg(feature = "gateway")]
    if let Some(gateway) = gateway {
        let _ = gateway.await;
    }
    tracing::info!("drained; exiting");
    Ok(())
}

/// `APP gateway`: the HTTP gateway alone, calling the exposed services on the peers.
#[cfg(feature = "gateway")]
async fn gateway_role(args: GatewayArgs) -> Result<()> {
    let peers = parse_peers(&args.common)?;
    // Under an orchestrator the peers come from its membership pushes.
    if peers.is_empty() && crate::config::env().orchestrator.is_none() {
        tracing::warn!(
            "the gateway has no peers, so every request will get 503; pass --peer NAME=ADDR \
             (or COLONY_PEERS) for the instances of the exposed services"
        );
    }
    let transport = crate::security::Transport::for_caller(
        &[crate::security::ROLE_GATEWAY],
        !peers.is_empty(),
        &is_service,
    )?;
    let connection = ConnectionConfig {
        max_frame: args.common.max_frame,
        ..ConnectionConfig::default()
    };
    let router = role_router(&transport, &[], &args.common, connection)?;
    let config = args.http.config()?;
    let (listener, gateway) = crate::gateway::bind(router.clone(), &args.http.http, config).await?;
    announce_gateway(&listener);
    let metrics = spawn_metrics(&args.metrics).await?;
    // Under an orchestrator (`colony up`): take membership pushes, and report the URL.
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let shutdown = link_to_orchestrator(addr, Vec::new(), metrics, None, router, &transport);
    crate::gateway::serve(listener, gateway, shutdown).await;
    tracing::info!("gateway drained; exiting");
    Ok(())
}

/// The router of a role that hosts `hosted` and calls the peers of `common`, made the
/// process default, following the peers on Kubernetes when asked.
fn role_router(
    transport: &crate::security::Transport,
    hosted: &[String],
    common: &Common,
    connection: ConnectionConfig,
) -> Result<Arc<Router>> {
    let peers = parse_peers(common)?;
    let router = Router::builder(transport.dialer())
        .hosted(hosted.iter().cloned())
        .peers(peers.clone())
        .connection(connection)
        .build()
        .map_err(Error::Usage)?;
    crate::call::set_default_router(router.clone());
    kubernetes_discovery(&router, &peers)?;
    Ok(router)
}

/// Under an orchestrator (`colony up`): register this process (`addr`, hosting `services`
/// on `host`, or none for the gateway), heartbeat, and take membership pushes into
/// `router`. Returns what the serving loop waits for: a signal, or the orchestrator's
/// order to drain.
fn link_to_orchestrator(
    addr: String,
    services: Vec<String>,
    metrics: Option<std::net::SocketAddr>,
    host: Option<Arc<Host>>,
    router: Arc<Router>,
    transport: &crate::security::Transport,
) -> impl Future<Output = ()> + Send + 'static {
    let drain = Arc::new(tokio::sync::Notify::new());
    if let Some(orchestrator) = crate::discovery::OrchestratorConfig::from_env() {
        let registration = crate::discovery::Registration {
            instance: crate::identity::instance_id().to_owned(),
            pid: std::process::id(),
            addr,
            services,
            fingerprint: crate::identity::fingerprint().to_owned(),
            metrics: metrics.map(|a| a.to_string()),
        };
        crate::discovery::spawn_link(
            orchestrator,
            registration,
            host,
            router,
            drain.clone(),
            transport.dialer(),
        );
    }
    async move {
        tokio::select! {
            () = shutdown_signal() => {}
            () = drain.notified() => {}
        }
    }
}

/// With `COLONY_DISCOVERY=kubernetes`, keep re-resolving the peers' DNS names (their
/// headless Services) every `COLONY_DNS_REFRESH` (default 5s).
#[cfg_attr(not(feature = "kubernetes"), allow(unused_variables))]
fn kubernetes_discovery(router: &Arc<Router>, peers: &[Peer]) -> Result<()> {
    let env = crate::config::env();
    match env.discovery.as_deref() {
        None | Some("static") => Ok(()),
        #[cfg(feature = "kubernetes")]
        Some("kubernetes") => {
            let refresh = env.dns_refresh.unwrap_or(Duration::from_secs(5));
            crate::discovery::spawn_kubernetes(router.clone(), peers.to_vec(), refresh)
                .map_err(Error::Usage)?;
            Ok(())
        }
        Some(other) => Err(Error::Usage(format!(
            "COLONY_DISCOVERY={other} is not known here; use `static` (--peer / COLONY_PEERS){}",
            if cfg!(feature = "kubernetes") {
                " or `kubernetes`"
            } else {
                ", or build colony with its `kubernetes` feature for `kubernetes`"
            }
        ))),
    }
}

/// Print a machine-readable line (`colony: listening on ADDR`) for whoever started this
/// process. A closed stdout is not this process's problem: the line is dropped.
fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn call_role(args: CallArgs) -> Result<()> {
    let entry = service::resolve(&args.service).map_err(Error::Usage)?;
    let json: serde_json::Value = serde_json::from_str(&args.args).map_err(|e| {
        Error::Usage(format!(
            "the arguments are not valid JSON ({e}); pass an object such as '{{\"name\": \"Ada\"}}'"
        ))
    })?;
    let payload = (entry.json_to_args)(json).map_err(|reason| {
        Error::Call(crate::CallError::BadArguments {
            service: entry.name.to_owned(),
            reason,
        })
    })?;
    let peers = parse_peers(&args.common)?;
    // A service a peer hosts is called there, as a client; any other runs in this process,
    // which then hosts every service no peer hosts (for the calls it makes in turn).
    let remote = peers.iter().any(|p| p.matches(entry.name));
    let hosted: Vec<&str> = if remote {
        Vec::new()
    } else {
        service::registry()
            .iter()
            .filter(|e| !peers.iter().any(|p| p.matches(e.name)))
            .map(|e| e.name)
            .collect()
    };
    let transport =
        crate::security::Transport::for_caller(&hosted, !peers.is_empty(), &is_service)?;
    let router = Router::builder(transport.dialer())
        .hosted(hosted.iter().copied())
        .peers(peers)
        .build()
        .map_err(Error::Usage)?;
    crate::call::set_default_router(router.clone());
    let _host = Host::new(&hosted, router.clone(), HostConfig::default()).map_err(Error::Usage)?;
    if !remote {
        tracing::debug!(
            service = entry.name,
            "no --peer hosts it: the call runs in this process"
        );
    }
    let mut options = CallOptions::inherit();
    if let Some(t) = args.timeout {
        options = options.with_deadline(Instant::now() + t);
    }
    let (ok, bytes) = match router.dispatch(entry, &payload, options).await? {
        Reply::Ok(b) => (true, b.to_vec()),
        Reply::Err(b) => (false, b.to_vec()),
    };
    let value = (entry.result_to_json)(&bytes, ok)
        .map_err(|reason| Error::Call(crate::CallError::Protocol { reason }))?;
    if ok {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_else(|e| e.to_string())
        );
        Ok(())
    } else {
        Err(Error::Service(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
