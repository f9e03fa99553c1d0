//! `colony`: the command that runs, watches and deploys Colony apps.
//!
//! For deployers and tools. It drives the user's own binary through its roles
//! (`APP describe`, `APP serve`, …) and never links the user's code. `colony up` runs an
//! app as a local cluster under an orchestrator (see `local/`).
//!
//! Owns: the command line (its arguments, their help and defaults) and sending each
//! subcommand to its body in `cmd/`. Must not touch: what a command does (`cmd`).

mod certs;
mod cmd;
mod image;
mod kube;
mod local;
mod logs;
mod metrics;
mod package;
mod settings;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
        certs: kube::manifests::Certs,
        /// An OpenShift Route instead of an Ingress for the gateway.
        #[arg(long, value_enum, default_value = "kubernetes")]
        platform: kube::manifests::Platform,
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

// `colony logs`: which lines, from when, and how to print them.
#[derive(clap::Args, Debug)]
struct LogsArgs {
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
    Logs(LogsArgs),
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

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // What went wrong and why, without a backtrace (`RUST_BACKTRACE` is for Colony's
            // developers; `COLONY_BACKTRACE=1` shows one).
            if std::env::var_os("COLONY_BACKTRACE").is_some_and(|v| v == "1") {
                eprintln!("error: {e:?}");
            } else {
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
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
            } => cmd::up::run(app, detach, http, docker).await,
            Cmd::Orchestrate { app, http, docker } => cmd::up::orchestrate(app, http, docker).await,
            Cmd::Status { path, json, events } => cmd::status::run(&path, json, events).await,
            Cmd::Scale { target, path } => cmd::scale::run(&path, &target).await,
            Cmd::Down { path } => cmd::down::run(&path).await,
            Cmd::Services { app, json } => package::print_services(&app, json),
            Cmd::Build {
                app,
                tag,
                base,
                dockerfile_only,
            } => cmd::build::run(&app, tag, base, dockerfile_only),
            Cmd::Deploy { target } => cmd::deploy::run(target).await,
            Cmd::Certs { command } => certs::run(command),
            Cmd::Logs(args) => cmd::logs::run(args).await,
            Cmd::Metrics { path, sum } => metrics::run(&path, sum).await,
        }
    })
}
