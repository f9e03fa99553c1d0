//! `colony up` and the hidden `colony orchestrate`: the app as a local cluster, in the
//! foreground or under a background orchestrator.
//!
//! Owns: building and describing the app into the orchestrator's `App` (making the cluster
//! CA the first time), choosing the gateway's port, starting the orchestrator here or as a
//! detached process, and waiting until the cluster is healthy. Must not touch: how the
//! cluster runs once started (`local`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::status::print_table;
use super::{app_name, describe_app, state_dir};
use crate::local::client::{self, Request, Response};
use crate::local::state::{State, Status};
use crate::local::{App, Orchestrator, docker, pid_alive};
use crate::{AppArgs, settings};

/// Build (or take) the binary, describe it, and resolve its settings.
fn prepare(
    args: &AppArgs,
) -> anyhow::Result<(
    App,
    settings::ClusterSettings,
    BTreeMap<String, settings::ServiceSettings>,
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

/// The pid of the orchestrator of the app whose state is in `state_dir`, if it runs.
pub(crate) fn running_orchestrator(state_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(state_dir.join("orchestrator.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    pid_alive(pid).then_some(pid)
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

/// `colony up`.
pub(crate) async fn run(
    args: AppArgs,
    detach: bool,
    http: String,
    docker: bool,
) -> anyhow::Result<()> {
    let dir = state_dir(&args.path);
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
    if detach {
        return detached(&args, &app, docker, &spinner, started).await;
    }
    let expect_gateway = app.gateway.is_some();
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

/// `colony up --detach`: `colony orchestrate` as a process of its own (its output in
/// `.colony/orchestrator.log`), asked for its status until the cluster is healthy.
async fn detached(
    args: &AppArgs,
    app: &App,
    docker: bool,
    spinner: &indicatif::ProgressBar,
    started: Instant,
) -> anyhow::Result<()> {
    let dir = state_dir(&args.path);
    let expect_gateway = app.gateway.is_some();
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
        if let Ok(Response::Status(status)) = client::request(&dir, &Request::Status).await {
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
    Ok(())
}

/// `colony orchestrate` (what `up --detach` starts): the orchestrator in this process,
/// until SIGTERM, Ctrl-C or `colony down`.
pub(crate) async fn orchestrate(args: AppArgs, http: String, docker: bool) -> anyhow::Result<()> {
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
