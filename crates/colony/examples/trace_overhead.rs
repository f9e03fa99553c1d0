//! What tracing costs a remote call: throughput with every call sampled, with the default
//! share sampled, and with none, in one process, in alternating rounds.
//!
//! ```sh
//! taskset -c 0 cargo run --release -p colony --example trace_overhead   # one CPU, as colony-bench
//! cargo run --release -p colony --example trace_overhead -- --quick
//! ```
//!
//! A host serving `echo` runs on one single-threaded runtime, the client on another, over
//! TCP on 127.0.0.1 (plaintext), as in `colony-bench`. Colony's own subscriber is installed
//! (logs at `info`, so the call spans are enabled); no OTLP endpoint is set, so sampled spans
//! are built but not exported. Metrics are recorded in every mode. Each figure is the
//! median over the rounds of calls completed per second with 64 in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use colony::ServiceError;
use colony::control::telemetry::{DEFAULT_SAMPLE_RATIO, Sampler, set_sampler};
use colony::control::transport::{TcpDialer, TcpListener};
use colony::control::{Host, HostConfig, Peer, Router, serve, with_router};

/// Echoes its argument.
#[colony::microservice]
pub async fn echo(payload: Vec<u8>) -> Result<Vec<u8>, ServiceError> {
    Ok(payload)
}

const SERVICE: &str = concat!(module_path!(), "::echo");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// CPU time this process's threads have used, from `/proc/self/task/*/schedstat`.
fn cpu_time() -> Duration {
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten();
    Duration::from_nanos(
        tasks
            .filter_map(Result::ok)
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum(),
    )
}

/// Calls completed with `in_flight` calls kept in flight for `window` after `warmup`: per
/// second of wall time, and per second of this process's CPU time (client and server both
/// run here), which other load on the machine disturbs less.
async fn throughput(
    router: Arc<Router>,
    in_flight: usize,
    warmup: Duration,
    window: Duration,
) -> (f64, f64, u64) {
    let start = Instant::now() + warmup;
    let end = start + window;
    let cpu_at_start = Arc::new(std::sync::Mutex::new(None));
    {
        let cpu_at_start = cpu_at_start.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            *cpu_at_start.lock().expect("lock") = Some(cpu_time());
        });
    }
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let router = router.clone();
        tasks.spawn(with_router(router, async move {
            let (mut done, mut all) = (0u64, 0u64);
            loop {
                let reply = echo(vec![7u8; 32]).await.expect("echo answers");
                assert_eq!(reply.len(), 32);
                all += 1;
                let now = Instant::now();
                if now >= end {
                    break;
                }
                if now >= start {
                    done += 1;
                }
            }
            (done, all)
        }));
    }
    let (mut done, mut all) = (0, 0);
    while let Some(n) = tasks.join_next().await {
        let (d, a) = n.expect("a task");
        done += d;
        all += a;
    }
    let cpu = cpu_time().saturating_sub(cpu_at_start.lock().expect("lock").unwrap_or_default());
    (
        done as f64 / window.as_secs_f64(),
        done as f64 / cpu.as_secs_f64().max(1e-9),
        all,
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--only N`: measure mode N alone (0 off, 1 all sampled, 2 default), e.g. to profile it.
    let only: Option<usize> = std::env::args()
        .skip_while(|a| a != "--only")
        .nth(1)
        .and_then(|n| n.parse().ok());
    // Many short windows, the modes taking turns, so that drifts of a shared machine
    // (other processes, frequency) fall on every mode alike; the median of each is kept.
    let (rounds, warmup, window) = if quick {
        (5, Duration::from_millis(100), Duration::from_millis(400))
    } else {
        (31, Duration::from_millis(100), Duration::from_millis(500))
    };
    let _telemetry = colony::control::telemetry::init("bench");
    let server = runtime();
    let addr = server.block_on(async {
        let router = Router::builder(Arc::new(TcpDialer))
            .hosted([SERVICE])
            .build()
            .expect("a router");
        let host = Host::new(&[SERVICE], router, HostConfig::default()).expect("a host");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = colony::control::transport::Listener::local_addr(&listener);
        tokio::spawn(serve(listener, host, std::future::pending()));
        addr
    });
    let client = runtime();
    let router = Router::builder(Arc::new(TcpDialer))
        .peer(Peer::parse(&format!("{SERVICE}={addr}")).expect("a peer"))
        .build()
        .expect("a router");
    let modes = [
        ("off (sampled: none)", Sampler::always_off()),
        ("on, 100% sampled", Sampler::always_on()),
        ("on, default sampling", Sampler::ratio(DEFAULT_SAMPLE_RATIO)),
    ];
    let mut figures: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut per_cpu: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut total_calls = 0u64;
    for round in 0..rounds {
        // Rotate the order, so that no mode always runs first.
        for k in 0..modes.len() {
            let i = (k + round) % modes.len();
            if only.is_some_and(|o| o != i) {
                continue;
            }
            set_sampler(modes[i].1);
            let (rps, cpu, all) = client.block_on(throughput(router.clone(), 64, warmup, window));
            total_calls += all;
            figures[i].push(rps);
            per_cpu[i].push(cpu);
        }
    }
    if let Some(i) = only {
        // The total lets `perf stat` figures be divided per call.
        println!(
            "{}: {:.0} calls/s; {total_calls} calls in all",
            modes[i].0,
            median(&mut figures[i])
        );
        return;
    }
    let off = median(&mut figures[0].clone());
    let off_cpu = median(&mut per_cpu[0].clone());
    println!(
        "{:<24} {:>10} {:>8} {:>12} {:>8}",
        "tracing", "calls/s", "vs off", "calls/CPU-s", "vs off"
    );
    for (i, (name, _)) in modes.iter().enumerate() {
        let rps = median(&mut figures[i]);
        let cpu = median(&mut per_cpu[i]);
        println!(
            "{name:<24} {rps:>10.0} {:>+7.1}% {cpu:>12.0} {:>+7.1}%",
            (rps / off - 1.0) * 100.0,
            (cpu / off_cpu - 1.0) * 100.0
        );
    }
}
