//! `colony`: the command that runs, watches and deploys Colony apps.
//!
//! For deployers and tools. It drives the user's own binary through its roles
//! (`APP describe`, `APP serve`, …) and never links the user's code. `colony up` runs an
//! app as a local cluster under an orchestrator (see `orchestrator.rs`).

mod certs;
mod deploy;
mod docker;
mod image;
mod kube_apply;
mod local_cache;
mod logs;
mod metrics;
mod orchestrator;
mod package;
mod settings;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::orchestrator::{App, Orchestrator, Request, Response, State, Status};

#[derive(Parser, Debug)]
#[command(version, about = "Run, watch and deploy Colony apps.")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Debug, Clone)]
struct AppArgs {
    /// The app's cargo package (default: the current directory).
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Use this already built binary instead of building the package.
    #[arg(long, value_name = "FILE")]
    app_binary: Option<PathBuf>,
    /// The binary to build, when the package has several.
    #[arg(long)]
    bin: Option<String>,
}

#[derive(Subcommand, Debug)]
enum DeployTarget {
    /// Kubernetes: Deployments, Services, HPAs, PDBs, the gateway, NetworkPolicies, the
    /// store's StatefulSet and the cache's DaemonSet.
    K8s {
        #[command(flatten)]
        app: AppArgs,
        /// The namespace (default: the app's name).
        #[arg(long)]
        namespace: Option<String>,
        /// The kubeconfig context (default: its current context; KUBECONFIG is honoured).
        #[arg(long)]
        context: Option<String>,
        /// The image (default: APP:FINGERPRINT, as `colony build` tags it).
        #[arg(long)]
        image: Option<String>,
        /// Change nothing: with -o, print the manifests (needs no cluster); without, have the
        /// API server check them (dryRun=All), or print them when there is no cluster.
        #[arg(long)]
        dry_run: bool,
        /// Print the manifests in this format instead of applying them (with --dry-run).
        #[arg(short = 'o', long = "output", value_enum, requires = "dry_run")]
        output: Option<OutputFormat>,
        /// Who issues the pods' certificates: the CA as a Secret in every pod, or cert-manager.
        #[arg(long, value_enum, default_value = "secret")]
        certs: deploy::Certs,
        /// An OpenShift Route instead of an Ingress for the gateway.
        #[arg(long, value_enum, default_value = "kubernetes")]
        platform: deploy::Platform,
        /// Give the gateway's Service `type: LoadBalancer`.
        #[arg(long)]
        load_balancer: bool,
        /// After applying, delete the app's objects (labelled app.kubernetes.io/managed-by=colony
        /// and app.kubernetes.io/name=APP, in its namespace) that it no longer declares.
        #[arg(long)]
        prune: bool,
        /// Wait for the rollout, showing progress.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, e.g. `90s`, `5m`.
        #[arg(long, value_name = "DUR", default_value = "5m", value_parser = logs::parse_since)]
        timeout: Duration,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Yaml,
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build the app and run it as a local cluster: min_instances of each service, with
    /// discovery, health checks and autoscaling.
    Up {
        #[command(flatten)]
        app: AppArgs,
        /// Return once the cluster is healthy, leaving the orchestrator in the background.
        #[arg(long)]
        detach: bool,
        /// Where the HTTP gateway listens (when the app exposes services); a taken port falls
        /// back to a free one.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        http: String,
        /// Run every instance and the gateway as a container (the `colony build` image) on a
        /// private Docker network of the cluster's own.
        #[arg(long)]
        docker: bool,
    },
    /// Show each service's settings and instances.
    Status {
        /// The app's package directory.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Print the event log: every scaling decision and health change, with its reason.
        #[arg(long)]
        events: bool,
    },
    /// Set the number of instances of a service: `colony scale shop::pricing::quote=3`.
    Scale {
        /// SERVICE=N
        target: String,
        /// The app's package directory.
        #[arg(long, default_value = ".")]
        path: PathBuf,
    },
    /// Drain and stop every instance, and the orchestrator.
    Down {
        /// The app's package directory.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Build one container image for the app (every service runs from it).
    Build {
        #[command(flatten)]
        app: AppArgs,
        /// The image tag (default: APP:FINGERPRINT).
        #[arg(long)]
        tag: Option<String>,
        /// A base image for the binary, instead of `scratch` plus its shared libraries.
        #[arg(long, value_name = "IMAGE")]
        base: Option<String>,
        /// Write the build context and Dockerfile to DIR instead of building, for other builders.
        #[arg(long, value_name = "DIR")]
        dockerfile_only: Option<PathBuf>,
    },
    /// Deploy the app.
    Deploy {
        #[command(subcommand)]
        target: DeployTarget,
    },
    /// List the services of a built app: name, route and arguments.
    Services {
        /// The app's binary (e.g. target/debug/hello).
        app: PathBuf,
        /// Print the app's full JSON description instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the instances' log lines, merged in time order (kept for crashed ones too).
    Logs {
        /// The app's package directory.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Only this service's lines (a full name, or `module::*`).
        #[arg(long)]
        service: Option<String>,
        /// Only the lines of this trace id (`trace_id` in the lines; `traceresponse` at the gateway).
        #[arg(long, value_name = "ID")]
        trace: Option<String>,
        /// Only the lines of this request id (`x-request-id` at the gateway).
        #[arg(long, value_name = "ID")]
        request: Option<String>,
        /// Only lines at this level or more severe: error, warn, info, debug, trace.
        #[arg(long, value_parser = logs::parse_level)]
        level: Option<logs::Level>,
        /// Only lines from this long ago or later, e.g. `5m`, `2h`.
        #[arg(long, value_name = "DUR", value_parser = logs::parse_since)]
        since: Option<Duration>,
        /// Keep printing lines as the instances write them.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print the Prometheus metrics of every instance, labelled by instance.
    Metrics {
        /// The app's package directory.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Add the instances' samples up instead of labelling each.
        #[arg(long)]
        sum: bool,
    },
    /// The cluster CA that mutual TLS between instances relies on.
    Certs {
        #[command(subcommand)]
        command: certs::CertsCmd,
    },
    /// Run the orchestrator in this process (used by `up --detach`).
    #[command(hide = true)]
    Orchestrate {
        #[command(flatten)]
        app: AppArgs,
        /// Where the HTTP gateway listens.
        #[arg(long, default_value = "127.0.0.1:0")]
        http: String,
        /// Instances as containers.
        #[arg(long)]
        docker: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the tokio runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Cmd::Up {
                app,
                detach,
                http,
                docker,
            } => up(app, detach, http, docker).await,
            Cmd::Orchestrate { app, http, docker } => orchestrate(app, http, docker).await,
            Cmd::Status { path, json, events } => status(&path, json, events).await,
            Cmd::Scale { target, path } => scale(&path, &target).await,
            Cmd::Down { path } => down(&path).await,
            Cmd::Services { app, json } => package::print_services(&app, json),
            Cmd::Build {
                app,
                tag,
                base,
                dockerfile_only,
            } => build(&app, tag, base, dockerfile_only),
            Cmd::Deploy { target } => deploy_cmd(target).await,
            Cmd::Certs { command } => certs::run(command),
            Cmd::Logs {
                path,
                service,
                trace,
                request,
                level,
                since,
                follow,
                json,
            } => {
                let options = logs::Options {
                    service,
                    trace: trace.map(|t| t.trim().to_ascii_lowercase()),
                    request,
                    level,
                    since,
                    follow,
                    json,
                };
                tokio::task::spawn_blocking(move || logs::run(&path, &options)).await?
            }
            Cmd::Metrics { path, sum } => metrics::run(&path, sum).await,
        }
    })
}

fn state_dir(path: &Path) -> PathBuf {
    path.join(".colony")
}

/// Build (or take) the binary, describe it, and resolve its settings.
fn prepare(
    args: &AppArgs,
) -> anyhow::Result<(
    App,
    settings::ClusterSettings,
    std::collections::BTreeMap<String, settings::ServiceSettings>,
)> {
    let (binary, path, describe) = describe_app(args)?;
    let (cluster, settings) = settings::resolve(&describe, &path, &|k| std::env::var(k).ok())?;
    let services: Vec<String> = describe["services"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if services.is_empty() {
        bail!(
            "{} has no #[microservice] functions; nothing to run",
            binary.display()
        );
    }
    let exposed = describe["services"]
        .as_array()
        .is_some_and(|s| s.iter().any(|s| s["exposed"] == true));
    let state_dir = state_dir(&path);
    if cluster.tls.value && !colony::control::security::Ca::exists_in(&state_dir) {
        // Every hop is mutual TLS: the cluster needs a CA, so make one the first time.
        let name = binary
            .file_stem()
            .map_or_else(|| "app".to_owned(), |s| s.to_string_lossy().into_owned());
        let ca = colony::control::security::Ca::generate(&name)
            .context("could not create the cluster CA")?;
        ca.save(&state_dir, false)
            .with_context(|| format!("could not save the cluster CA in {}", state_dir.display()))?;
        eprintln!(
            "created a cluster CA in {} (fingerprint {})",
            state_dir.display(),
            ca.fingerprint()
        );
    }
    let app = App {
        name: app_name(&describe, &binary),
        binary,
        dir: path.clone(),
        state_dir,
        fingerprint: describe["fingerprint"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        services,
        gateway: exposed.then(|| "127.0.0.1:0".to_owned()),
        docker: None,
        cache: settings::storage(&describe, &path)?.cache,
    };
    Ok((app, cluster, settings))
}

fn running_orchestrator(state_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(state_dir.join("orchestrator.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    orchestrator::pid_alive(pid).then_some(pid)
}

fn healthy(status: &Status, gateway: bool) -> bool {
    (!gateway || status.gateway.is_some())
        && status.services.iter().all(|s| {
            s.instances
                .iter()
                .filter(|i| i.state == State::Healthy)
                .count()
                >= s.desired as usize
        })
}

fn progress_line(status: &Status) -> String {
    let total: u32 = status.services.iter().map(|s| s.desired).sum();
    let ready: usize = status
        .services
        .iter()
        .map(|s| {
            s.instances
                .iter()
                .filter(|i| i.state == State::Healthy)
                .count()
                .min(s.desired as usize)
        })
        .sum();
    format!("{ready}/{total} instances healthy")
}

/// `--docker`: the image, network and gateway port of the app's container cluster.
fn with_docker(app: &mut App) -> anyhow::Result<()> {
    app.docker = Some(docker::DockerCluster::prepare(
        &app.name,
        &app.fingerprint,
        &app.binary,
        &app.state_dir,
        app.gateway.as_deref(),
    )?);
    Ok(())
}

async fn up(args: AppArgs, detach: bool, http: String, docker: bool) -> anyhow::Result<()> {
    let path = args.path.clone();
    let dir = state_dir(&path);
    if let Some(pid) = running_orchestrator(&dir) {
        bail!(
            "a cluster of this app is already running (orchestrator pid {pid}); see `colony status`, \
             or stop it with `colony down`"
        );
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner.set_message(if args.app_binary.is_some() {
        "describing the app"
    } else {
        "building the app (release)"
    });
    let (mut app, cluster, settings) = prepare(&args)?;
    app.gateway = app.gateway.map(|_| free_or_any(&http));
    if docker {
        spinner.set_message("preparing the containers' image and network");
        with_docker(&mut app)?;
        if let (Some(d), Some(gateway)) = (&app.docker, &mut app.gateway) {
            *gateway = format!("127.0.0.1:{}", d.http_port.unwrap_or(0));
        }
    }
    let started = Instant::now();
    let expect_gateway = app.gateway.is_some();
    if detach {
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("orchestrator.log"))?;
        let exe = std::env::current_exe().context("could not find the colony binary")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("orchestrate")
            .arg(&args.path)
            .arg("--app-binary")
            .arg(&app.binary)
            .arg("--http")
            .arg(app.gateway.as_deref().unwrap_or("127.0.0.1:0"))
            .args(docker.then_some("--docker"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().context("could not start the orchestrator")?;
        spinner.set_message("starting instances");
        let status = loop {
            if let Ok(Some(exit)) = child.try_wait() {
                bail!(
                    "the orchestrator exited ({exit}); see {}",
                    dir.join("orchestrator.log").display()
                );
            }
            if let Ok(Response::Status(status)) =
                orchestrator::request(&dir, &Request::Status).await
            {
                spinner.set_message(progress_line(&status));
                if healthy(&status, expect_gateway) {
                    break status;
                }
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!(
                    "the cluster did not become healthy within 2 minutes; see `colony status --events`"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        spinner.finish_and_clear();
        print_table(&status);
        println!(
            "healthy in {:.1}s; the orchestrator runs in the background (pid {}). `colony down` stops it.",
            started.elapsed().as_secs_f64(),
            status.orchestrator_pid
        );
        return Ok(());
    }
    let orchestrator = Orchestrator::start(app, cluster, settings).await?;
    spinner.set_message("starting instances");
    loop {
        let status = orchestrator.status();
        spinner.set_message(progress_line(&status));
        if healthy(&status, expect_gateway) {
            spinner.finish_and_clear();
            print_table(&status);
            println!(
                "healthy in {:.1}s. Ctrl-C stops the cluster.",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = orchestrator.stop_requested() => {}
    }
    eprintln!("draining every instance…");
    orchestrator.stop().await;
    eprintln!("stopped.");
    Ok(())
}

async fn orchestrate(args: AppArgs, http: String, docker: bool) -> anyhow::Result<()> {
    // Logs (refusals on the control port among them) go to .colony/orchestrator.log.
    let _telemetry = colony::control::telemetry::init(colony::control::security::ROLE_ORCHESTRATOR);
    let (mut app, cluster, settings) = prepare(&args)?;
    app.gateway = app.gateway.map(|_| http);
    if docker {
        with_docker(&mut app)?;
    }
    let orchestrator = Orchestrator::start(app, cluster, settings).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        () = orchestrator.stop_requested() => {}
    }
    orchestrator.stop().await;
    Ok(())
}

/// `addr` when it is free now, else any free port: `colony up` never fails on a taken port.
fn free_or_any(addr: &str) -> String {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => addr.to_owned(),
        Err(_) => "127.0.0.1:0".to_owned(),
    }
}

fn print_table(status: &Status) {
    let mut table = comfy_table::Table::new();
    table.set_header(["SERVICE", "INSTANCES", "ADDRESSES"]);
    for s in &status.services {
        let healthy: Vec<&str> = s
            .instances
            .iter()
            .filter(|i| i.state == State::Healthy)
            .filter_map(|i| i.addr.as_deref())
            .collect();
        table.add_row([
            s.name.clone(),
            format!("{}/{}", healthy.len(), s.desired),
            healthy.join(" "),
        ]);
    }
    println!("{table}");
    if let Some(url) = &status.gateway {
        println!("gateway: {url}  (routes and examples at {url}/, OpenAPI at {url}/openapi.json)");
    }
    if let Some(cache) = &status.cache {
        println!("cache: memcached on {cache}  (COLONY_CACHE of every instance)");
    }
}

fn source(s: settings::Source) -> &'static str {
    match s {
        settings::Source::Default => "default",
        settings::Source::Attribute => "attribute",
        settings::Source::ColonyToml => "colony.toml",
        settings::Source::Env => "env",
    }
}

async fn status(path: &Path, json: bool, events: bool) -> anyhow::Result<()> {
    let dir = state_dir(path);
    if events {
        let Response::Events { events } = orchestrator::request(&dir, &Request::Events).await?
        else {
            bail!("the orchestrator gave an unexpected answer");
        };
        if json {
            println!("{}", serde_json::to_string_pretty(&events)?);
        } else {
            for e in events {
                println!(
                    "{} {:<12} {:<32} {:<14} {}",
                    e.time_ms,
                    e.kind,
                    e.service,
                    e.instance.as_deref().unwrap_or("-"),
                    e.reason
                );
            }
        }
        return Ok(());
    }
    let Response::Status(status) = orchestrator::request(&dir, &Request::Status).await? else {
        bail!("the orchestrator gave an unexpected answer");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    println!(
        "orchestrator pid {} on {}",
        status.orchestrator_pid, status.control_addr
    );
    for s in &status.services {
        let st = &s.settings;
        println!(
            "\n{}  desired {}  min {} ({})  max {} ({})  high {} ({})  low {} ({})  cooldown {}ms ({})  capacity {} ({})",
            s.name,
            s.desired,
            st.min_instances.value,
            source(st.min_instances.source),
            st.max_instances.value,
            source(st.max_instances.source),
            st.high_watermark.value,
            source(st.high_watermark.source),
            st.low_watermark.value,
            source(st.low_watermark.source),
            st.cooldown_ms.value,
            source(st.cooldown_ms.source),
            st.capacity.value,
            source(st.capacity.source),
        );
        for i in &s.instances {
            println!(
                "  {:<16} pid {:<8} {:<22} {:<12} in flight {:<5} busy {:>3.0}%  done {}  errors {}",
                i.id,
                i.pid,
                i.addr.as_deref().unwrap_or("-"),
                format!("{:?}", i.state).to_lowercase(),
                i.load.in_flight,
                i.load.busy_ratio * 100.0,
                i.load.completed,
                i.load.errors
            );
        }
    }
    Ok(())
}

async fn scale(path: &Path, target: &str) -> anyhow::Result<()> {
    let (service, count) = target.split_once('=').with_context(|| {
        format!("`{target}` is not SERVICE=N; write it like `shop::pricing::quote=3`")
    })?;
    let count: u32 = count.trim().parse().with_context(|| {
        format!("`{count}` is not a possible count of instances; use a whole number from 0 up")
    })?;
    match orchestrator::request(
        &state_dir(path),
        &Request::Scale {
            service: service.trim().to_owned(),
            count,
        },
    )
    .await?
    {
        Response::Ok { message } => {
            println!("{message}");
            Ok(())
        }
        Response::Error { message } => bail!(message),
        _ => bail!("the orchestrator gave an unexpected answer"),
    }
}

async fn down(path: &Path) -> anyhow::Result<()> {
    let dir = state_dir(path);
    let pid = running_orchestrator(&dir);
    let answer = match orchestrator::request(&dir, &Request::Down).await {
        Err(e) if pid.is_none() => {
            // No orchestrator: still remove what a Docker cluster left behind.
            if let Some(name) = docker::remove_leftovers(&dir) {
                println!("removed the containers and network of {name}.");
                return Ok(());
            }
            return Err(e);
        }
        answer => answer?,
    };
    match answer {
        Response::Ok { .. } => {}
        Response::Error { message } => bail!(message),
        _ => bail!("the orchestrator gave an unexpected answer"),
    }
    if let Some(pid) = pid {
        let deadline = Instant::now() + Duration::from_secs(60);
        while orchestrator::pid_alive(pid) {
            if Instant::now() > deadline {
                bail!("the orchestrator (pid {pid}) did not stop within 60s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!("stopped.");
    Ok(())
}

/// The app's binary, directory and description, without starting anything.
fn describe_app(args: &AppArgs) -> anyhow::Result<(PathBuf, PathBuf, serde_json::Value)> {
    let path = args
        .path
        .canonicalize()
        .with_context(|| format!("{} does not exist", args.path.display()))?;
    let binary = match &args.app_binary {
        Some(b) => b
            .canonicalize()
            .with_context(|| format!("the app binary {} does not exist", b.display()))?,
        None => package::build(&path, args.bin.as_deref())?,
    };
    let describe = package::describe(&binary)?;
    Ok((binary, path, describe))
}

fn app_name(describe: &serde_json::Value, binary: &Path) -> String {
    describe["app"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| {
            binary
                .file_stem()
                .map_or_else(|| "app".to_owned(), |s| s.to_string_lossy().into_owned())
        })
}

fn build(
    args: &AppArgs,
    tag: Option<String>,
    base: Option<String>,
    dockerfile_only: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (binary, _, describe) = describe_app(args)?;
    let build = image::Build {
        app: app_name(&describe, &binary),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        fingerprint: describe["fingerprint"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned(),
        binary,
        base,
    };
    if let Some(dir) = dockerfile_only {
        std::fs::create_dir_all(&dir)?;
        image::write_context(&build, &dir)?;
        println!(
            "wrote the build context to {} (docker build {0})",
            dir.display()
        );
        return Ok(());
    }
    let tag = tag.unwrap_or_else(|| image::default_tag(&build));
    image::build_image(&build, &tag)?;
    println!("built {tag}");
    Ok(())
}

async fn deploy_cmd(target: DeployTarget) -> anyhow::Result<()> {
    let DeployTarget::K8s {
        app,
        namespace,
        context,
        image,
        dry_run,
        output,
        certs,
        platform,
        load_balancer,
        prune,
        wait,
        timeout,
    } = target;
    let (binary, path, describe) = describe_app(&app)?;
    let (cluster, settings) = settings::resolve(&describe, &path, &|k| std::env::var(k).ok())?;
    let groups = settings::groups(&path)?;
    let storage = settings::storage(&describe, &path)?;
    let name = app_name(&describe, &binary);
    let ca = if cluster.tls.value {
        let dir = state_dir(&path);
        if !colony::control::security::Ca::exists_in(&dir) {
            let ca = colony::control::security::Ca::generate(&name)
                .context("could not create the cluster CA")?;
            ca.save(&dir, false)?;
            eprintln!("created a cluster CA in {}", dir.display());
        }
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .with_context(|| format!("could not read {}", dir.join(f).display()))
        };
        Some((read("ca.pem")?, read("ca.key")?))
    } else {
        None
    };
    let opts = deploy::Options {
        namespace: namespace.unwrap_or_else(|| deploy::dns_label(&name)),
        image: image.unwrap_or_else(|| {
            format!(
                "{name}:{}",
                describe["fingerprint"].as_str().unwrap_or("latest")
            )
        }),
        app: name,
        platform,
        load_balancer,
        ca,
        certs,
        cert_lifetime: deploy::cert_lifetime(&path, &|k| std::env::var(k).ok())?,
        store: storage.store,
        cache: storage.cache,
    };
    let objects = deploy::manifests(&describe, &settings, &groups, &opts)?;
    match output {
        Some(OutputFormat::Yaml) => print!("{}", deploy::to_yaml(&objects)?),
        Some(OutputFormat::Json) => println!("{}", deploy::to_json(&objects)?),
        None => {
            let options = kube_apply::ApplyOptions {
                app: opts.app.clone(),
                namespace: opts.namespace.clone(),
                prune,
                wait: wait.then_some(timeout),
                dry_run,
            };
            kube_apply::run(&objects, context.as_deref(), &options).await?;
        }
    }
    Ok(())
}
