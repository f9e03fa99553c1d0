//! # colony-bench — Colony against the usual ways of calling a service
//!
//! ```sh
//! cargo run --release -p colony-bench            # full run, about a minute
//! cargo run --release -p colony-bench -- --quick # under a minute, noisier
//! cargo run --release -p colony-bench -- --json  # the figures as a JSON array
//! ```
//!
//! Side by side, in one run, on 127.0.0.1, each peer echoes the same 32-byte payload:
//!
//! - **raw TCP (floor)**: tokio sockets and length-prefixed frames, nothing else;
//! - **tonic gRPC**: a unary call over one HTTP/2 channel shared by all calls;
//! - **axum HTTP/JSON**: `POST /echo` with a JSON body, through hyper-util's pooled
//!   HTTP/1.1 keep-alive client;
//! - **Colony remote**: a `#[microservice]` call sent through a `Router` to a `Host`;
//! - **Colony co-located**: the same call when this process hosts the service.
//!
//! For each it measures latency with one call in flight (p50 and p99 from an
//! hdrhistogram of individually timed calls) and throughput with 64 calls in flight
//! (completed calls per second over a fixed window, after a warm-up). The floor's
//! throughput is pipelined: 64 frames outstanding on one connection, written and read in
//! batches, the most one connection can do. The co-located call is also timed in a tight
//! loop against a plain `async fn` with the same body, and the difference reported in ns.
//!
//! Every server runs on its own dedicated tokio runtime with one worker thread, and the
//! client on another one-worker runtime in the same process, so each side of every peer
//! gets the same CPU budget: one thread. By default all these threads are pinned to one
//! CPU (`--cpus shared`): on a VM, waking a thread on another, idle, virtual CPU costs
//! tens of microseconds, which would swamp what is measured (see `runtimes`). Peers are
//! measured one after another, in rounds (each figure is the median over the rounds); a
//! server's runtime is shut down before the next peer starts. Alongside, the CPU time
//! each side spends per call at full load is read from `/proc`.
//!
//! The output is a table with each figure's ratio to the floor, and the targets of the
//! issue with PASS or MISS. `BENCHMARKS.md` at the repository root records a run.

mod colony_rpc;
mod cpu;
mod grpc;
mod http_json;
mod measure;
mod raw_tcp;
mod report;
mod runtimes;
mod scale;
mod store;
mod variants;

use std::process::ExitCode;

use tokio::runtime::Runtime;

use crate::colony_rpc::Colocated;
use crate::measure::{Client, Plan, Result};
use crate::report::{Report, Row, names};
use crate::runtimes::{Placement, Server, on, runtime, runtime_with, tokio_listener};

const USAGE: &str = "usage: colony-bench [--quick] [--json] [--only TEXT] [--cpus split|shared|os]
       colony-bench --scale [--quick]
       colony-bench --store [--quick]

  --quick        one short round (well under a minute), noisier figures
  --json         print the figures as a JSON array of {name, p50_us, p99_us, rps}
  --only TEXT    measure only the peers whose name contains TEXT (case-insensitive),
                 e.g. to profile one of them; ratios need the floor
  --cpus MODE    shared (default): every thread pinned to one CPU, so client and server
                 take turns on it; split: the client's thread on one CPU, the servers'
                 on another; os: no pinning
  --scale        instead: the time from a load spike to a new instance serving, under
                 `colony up` (3 trials, 1 with --quick); needs
                 `cargo build --release -p colony-cli -p colony-e2e` first
  --store        instead: the store's writes and reads per second (group commit) against
                 redb with a commit per write, files in the temporary directory";

/// What the command line asked for.
#[derive(Debug)]
struct Options {
    quick: bool,
    scale: bool,
    store: bool,
    json: bool,
    only: Option<String>,
    placement: Placement,
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some(variants::SERVE_ECHO) {
        let cpu = args.nth(1);
        return match variants::serve_echo_process(cpu.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("colony-bench {}: {e}", variants::SERVE_ECHO);
                ExitCode::FAILURE
            }
        };
    }
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("colony-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if options.scale {
        return match scale::run(if options.quick { 1 } else { 3 }) {
            Ok(report) => {
                print!("{}", report.text());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("colony-bench --scale: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if options.store {
        return match store::run(options.quick) {
            Ok(report) => {
                print!("{}", report.text());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("colony-bench --store: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&options) {
        Ok(report) => {
            if options.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("colony-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The options, or `None` for `--help`.
fn parse_args(
    mut args: impl Iterator<Item = String>,
) -> std::result::Result<Option<Options>, String> {
    let mut options = Options {
        quick: false,
        scale: false,
        store: false,
        json: false,
        only: None,
        placement: Placement::Shared,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--scale" => options.scale = true,
            "--store" => options.store = true,
            "--json" => options.json = true,
            "--only" => {
                let text = args.next().ok_or("--only needs a value")?;
                options.only = Some(text.to_lowercase());
            }
            "--cpus" => {
                let mode = args.next().ok_or("--cpus needs a value")?;
                options.placement = Placement::parse(&mode)
                    .ok_or_else(|| format!("--cpus is split, shared or os, not `{mode}`"))?;
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some(options))
}

/// Measure every peer (or those `--only` selects), in rounds; keep the median of each
/// figure over the rounds.
fn run(options: &Options) -> Result<Report> {
    let plan = if options.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let background = cpu::Watch::start();
    let (client_cpu, server_cpu) = options.placement.cpus();
    let client = runtime(measure::CLIENT_THREAD, client_cpu)?;
    let mut rounds = Vec::new();
    let mut colocated = Vec::new();
    for round in 1..=plan.rounds {
        eprintln!("colony-bench: round {round} of {}", plan.rounds);
        let (rows, c) = run_round(&client, plan, options.only.as_deref(), server_cpu)?;
        rounds.push(rows);
        colocated.extend(c);
    }
    Ok(Report {
        rows: report::medians(&rounds),
        colocated: colony_rpc::median_colocated(&colocated),
        rounds,
        plan,
        quick: options.quick,
        placement: options.placement,
        background: background.and_then(cpu::Watch::stop),
    })
}

/// One round: every selected peer, one after another.
fn run_round(
    client: &Runtime,
    plan: Plan,
    only: Option<&str>,
    server_cpu: Option<usize>,
) -> Result<(Vec<Row>, Option<Colocated>)> {
    let started = std::time::Instant::now();
    let wanted = |name: &str| {
        let yes = only.is_none_or(|o| name.to_lowercase().contains(o));
        if yes {
            let at = started.elapsed().as_secs_f64();
            eprintln!("colony-bench:   measuring {name}… (round time {at:.1} s)");
        }
        yes
    };
    let mut rows = Vec::new();
    if wanted(names::FLOOR) {
        const THREAD: &str = "bench-raw-tcp";
        let server = Server::start(THREAD, server_cpu, tokio_listener(raw_tcp::serve))?;
        let addr = server.addr.clone();
        rows.push(on(client, async move {
            let raw = raw_tcp::RawClient::connect(&addr).await?;
            let latency = measure::latency(raw, plan).await?;
            let throughput = raw_tcp::pipelined_throughput(&addr, plan, THREAD).await?;
            Ok(row(names::FLOOR, latency, throughput))
        })?);
        server.stop();
    }
    if wanted(names::TONIC) {
        const THREAD: &str = "bench-tonic";
        let server = Server::start(THREAD, server_cpu, tokio_listener(grpc::serve))?;
        let addr = server.addr.clone();
        rows.push(peer(client, plan, names::TONIC, THREAD, async move {
            grpc::GrpcClient::connect(&addr).await
        })?);
        server.stop();
    }
    if wanted(names::AXUM) {
        const THREAD: &str = "bench-axum";
        let server = Server::start(THREAD, server_cpu, tokio_listener(http_json::serve))?;
        let addr = server.addr.clone();
        rows.push(peer(client, plan, names::AXUM, THREAD, async move {
            http_json::HttpClient::new(&addr)
        })?);
        server.stop();
    }
    if wanted(names::COLONY_REMOTE) {
        const THREAD: &str = "bench-colony";
        let server = Server::start(THREAD, server_cpu, colony_rpc::start_server)?;
        let addr = server.addr.clone();
        rows.push(peer(
            client,
            plan,
            names::COLONY_REMOTE,
            THREAD,
            async move { colony_rpc::ColonyClient::remote(&addr) },
        )?);
        server.stop();
    }
    let mut colocated = None;
    if wanted(names::COLONY_COLOCATED) {
        let c = on(client, colony_rpc::colocated(plan))?;
        let throughput = measure::Throughput {
            rps: c.rps(),
            cpu: None,
        };
        rows.push(row(names::COLONY_COLOCATED, c.latency, throughput));
        colocated = Some(c);
    }
    rows.extend(variant_rows(client, plan, &wanted, server_cpu)?);
    Ok((rows, colocated))
}

/// The rows of [`variants`]: mTLS, tracing, the gateway and the balancer.
fn variant_rows(
    client: &Runtime,
    plan: Plan,
    wanted: &dyn Fn(&str) -> bool,
    server_cpu: Option<usize>,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    if wanted(names::COLONY_MTLS) {
        const THREAD: &str = "bench-tls";
        let tls = on(client, async { variants::Tls::new() })?;
        let start = tls.clone();
        let server = Server::start(THREAD, server_cpu, move || start.start_server())?;
        let tls_client = tls.client(&server.addr)?;
        rows.push(peer(
            client,
            plan,
            names::COLONY_MTLS,
            THREAD,
            async move { Ok(tls_client) },
        )?);
        server.stop();
    }
    for (name, tracing) in [
        (names::TRACING_OFF, variants::Tracing::Off),
        (names::TRACING_DEFAULT, variants::Tracing::Default),
        (names::TRACING_ALL, variants::Tracing::All),
    ] {
        if !wanted(name) {
            continue;
        }
        const THREAD: &str = "bench-traced";
        tracing.apply();
        let dispatch = variants::log_dispatch();
        let traced_client = runtime_with(
            measure::CLIENT_THREAD,
            client_cpu_of(client),
            Some(dispatch.clone()),
        )?;
        let server =
            Server::start_with(THREAD, server_cpu, Some(dispatch), colony_rpc::start_server)?;
        let addr = server.addr.clone();
        let row = peer(&traced_client, plan, name, THREAD, async move {
            colony_rpc::ColonyClient::remote(&addr)
        });
        server.stop();
        traced_client.shutdown_timeout(std::time::Duration::from_secs(1));
        variants::Tracing::Default.apply();
        rows.push(row?);
    }
    if wanted(names::GATEWAY) {
        const THREAD: &str = "bench-gateway";
        let echo = variants::EchoProcess::start(server_cpu)?;
        let echo_addr = echo.addr.clone();
        let server = Server::start(THREAD, server_cpu, move || {
            variants::start_gateway(echo_addr)
        })?;
        let addr = server.addr.clone();
        rows.push(peer(client, plan, names::GATEWAY, THREAD, async move {
            http_json::HttpClient::new(&addr)
        })?);
        server.stop();
        drop(echo);
    }
    for (name, instances) in [(names::BALANCE_ONE, 1), (names::BALANCE_TWO, 2)] {
        if !wanted(name) {
            continue;
        }
        // Each instance on a CPU of its own, where there are enough.
        let cpus = runtimes::allowed_cpus();
        let mut servers = Vec::new();
        for i in 0..instances {
            let cpu = (!cpus.is_empty()).then(|| cpus[(i + 1) % cpus.len()]);
            servers.push(Server::start(
                "bench-busy",
                cpu,
                variants::start_busy_server,
            )?);
        }
        let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
        let row = peer(client, plan, name, "bench-busy", async move {
            variants::BusyClient::new(&addrs)
        });
        servers.into_iter().for_each(Server::stop);
        rows.push(row?);
    }
    Ok(rows)
}

/// The CPU the client runtime's thread is pinned to, if any.
fn client_cpu_of(client: &Runtime) -> Option<usize> {
    on(client, async { Ok(runtimes::current_cpu()) })
        .ok()
        .flatten()
}

fn row(name: &str, latency: measure::Latency, throughput: measure::Throughput) -> Row {
    Row {
        name: name.to_owned(),
        p50_us: latency.p50_us,
        p99_us: latency.p99_us,
        rps: throughput.rps.round(),
        cpu: throughput.cpu,
    }
}

/// Latency and throughput of a peer whose client `connect` makes, and whose server runs
/// on the thread named `server_thread`.
fn peer<C, F>(
    client: &Runtime,
    plan: Plan,
    name: &'static str,
    server_thread: &'static str,
    connect: F,
) -> Result<Row>
where
    C: Client + Clone,
    F: Future<Output = Result<C>> + Send + 'static,
{
    on(client, async move {
        let c = connect.await?;
        let latency = measure::latency(c.clone(), plan).await?;
        let throughput = measure::throughput(c, plan, server_thread).await?;
        Ok(row(name, latency, throughput))
    })
}
