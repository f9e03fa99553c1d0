//! The measuring loops every peer shares: latency with one call in flight, throughput with
//! many, and the plan (how many calls, for how long) that `--quick` shortens.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::cpu::{self, CpuPerCall};

/// Any error a peer's setup or call can fail with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A result with a [`BoxError`].
pub(crate) type Result<T> = std::result::Result<T, BoxError>;

/// The 32 bytes every peer sends and expects back, in every protocol.
pub(crate) const PAYLOAD: &[u8; 32] = b"colony-bench echo payload 32 B.!";

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Rounds of every peer; each figure reported is the median over the rounds.
    pub(crate) rounds: u32,
    /// Calls made before the latency samples, to warm connections, caches and branch
    /// predictors.
    pub(crate) warmup_calls: u32,
    /// Latency samples: calls timed one by one, one in flight.
    pub(crate) latency_calls: u32,
    /// A cap on the time the latency samples may take, for slow peers.
    pub(crate) latency_max: Duration,
    /// Throughput: time spent at full load before counting.
    pub(crate) warmup: Duration,
    /// Throughput: the window in which completed calls are counted.
    pub(crate) window: Duration,
    /// Calls in flight for the throughput figure.
    pub(crate) in_flight: usize,
    /// Co-located: calls per timed loop.
    pub(crate) colocated_calls: u64,
    /// Co-located: timed loops of each kind (the median is kept).
    pub(crate) colocated_rounds: u32,
}

impl Plan {
    /// The full run: about a minute.
    pub(crate) fn full() -> Plan {
        Plan {
            rounds: 3,
            warmup_calls: 2_000,
            latency_calls: 20_000,
            latency_max: Duration::from_secs(3),
            warmup: Duration::from_millis(500),
            window: Duration::from_secs(2),
            in_flight: 64,
            colocated_calls: 2_000_000,
            colocated_rounds: 5,
        }
    }

    /// `--quick`: well under a minute, noisier.
    pub(crate) fn quick() -> Plan {
        Plan {
            rounds: 1,
            warmup_calls: 1_000,
            latency_calls: 5_000,
            latency_max: Duration::from_secs(3),
            warmup: Duration::from_millis(300),
            window: Duration::from_secs(1),
            in_flight: 64,
            colocated_calls: 500_000,
            colocated_rounds: 5,
        }
    }
}

/// A client of one peer: makes one echo call at a time.
pub(crate) trait Client: Send + 'static {
    /// One echo call of [`PAYLOAD`]; fails unless the same bytes come back.
    fn call(&mut self) -> impl Future<Output = Result<()>> + Send;

    /// The context every task calling through this client must run in.
    fn scope(&self) -> Scope {
        Scope::None
    }
}

/// The context a client's calls need.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// None.
    None,
    /// Colony: the router that routes the calls.
    Colony(std::sync::Arc<colony::control::Router>),
}

impl Scope {
    /// Run `fut` in this context.
    pub(crate) async fn run<F: Future>(self, fut: F) -> F::Output {
        match self {
            Scope::None => fut.await,
            Scope::Colony(router) => colony::control::with_router(router, fut).await,
        }
    }
}

/// The median of `xs` (the upper one of an even count); NaN when empty.
pub(crate) fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Fails unless `reply` is [`PAYLOAD`].
pub(crate) fn check(reply: &[u8]) -> Result<()> {
    if reply == PAYLOAD {
        Ok(())
    } else {
        Err(format!("the echo came back as {} other bytes", reply.len()).into())
    }
}

/// A histogram of nanoseconds, from 1 ns to 100 s at 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("the bounds are valid")
}

/// Record `elapsed` in `hist`, saturating at its highest trackable value.
pub(crate) fn record(hist: &mut Histogram<u64>, elapsed: Duration) {
    let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    hist.saturating_record(ns.max(1));
}

/// Median and 99th percentile, in microseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency {
    /// Median, µs.
    pub(crate) p50_us: f64,
    /// 99th percentile, µs.
    pub(crate) p99_us: f64,
}

impl Latency {
    /// The percentiles of a histogram of nanoseconds.
    pub(crate) fn of(hist: &Histogram<u64>) -> Latency {
        Latency {
            p50_us: hist.value_at_quantile(0.50) as f64 / 1_000.0,
            p99_us: hist.value_at_quantile(0.99) as f64 / 1_000.0,
        }
    }
}

/// Latency with one call in flight: warm up, then time each call on its own.
pub(crate) async fn latency<C: Client>(mut client: C, plan: Plan) -> Result<Latency> {
    let scope = client.scope();
    let measured = scope.run(async move {
        for _ in 0..plan.warmup_calls {
            client.call().await?;
        }
        let mut hist = histogram();
        let started = Instant::now();
        for i in 0..plan.latency_calls {
            let t = Instant::now();
            client.call().await?;
            record(&mut hist, t.elapsed());
            if i % 1024 == 1023 && started.elapsed() > plan.latency_max {
                break;
            }
        }
        Ok(Latency::of(&hist))
    });
    measured.await
}

/// The name of the client runtime's thread.
pub(crate) const CLIENT_THREAD: &str = "bench-client";

/// Calls per second at full load, and the CPU each side spent per call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throughput {
    /// Completed calls per second in the window.
    pub(crate) rps: f64,
    /// CPU time per call of the client's and the server's thread, when `/proc` tells.
    pub(crate) cpu: Option<CpuPerCall>,
}

/// The counting window of a throughput measurement, with a thread of its own that samples
/// the CPU time of every thread when the window opens and when it closes.
pub(crate) struct Window {
    /// When counting starts (after the warm-up).
    pub(crate) start: Instant,
    /// When counting stops.
    pub(crate) end: Instant,
    plan: Plan,
    samples: tokio::sync::oneshot::Receiver<[HashMap<String, u64>; 2]>,
}

impl Window {
    /// A window opening after `plan.warmup` from now.
    pub(crate) fn new(plan: Plan) -> Window {
        let start = Instant::now() + plan.warmup;
        let end = start + plan.window;
        let (tx, samples) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            std::thread::sleep(start.saturating_duration_since(Instant::now()));
            let before = cpu::threads_ns();
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
            let _ = tx.send([before, cpu::threads_ns()]);
        });
        Window {
            start,
            end,
            plan,
            samples,
        }
    }

    /// The figures, given the calls that completed in the window and the server's thread.
    pub(crate) async fn finish(self, calls: u64, server_thread: &str) -> Throughput {
        let cpu = match self.samples.await {
            Ok([before, after]) => {
                cpu::per_call_us(&before, &after, calls, CLIENT_THREAD, server_thread)
            }
            Err(_) => None,
        };
        Throughput {
            rps: calls as f64 / self.plan.window.as_secs_f64(),
            cpu,
        }
    }
}

/// Throughput with `plan.in_flight` calls in flight: as many tasks, each with its own clone
/// of `client`, call back to back; the calls that complete inside the window are counted.
///
/// Each task reads the clock itself rather than waiting for a stop signal, so a peer whose
/// calls never yield cannot starve the timer.
pub(crate) async fn throughput<C: Client + Clone>(
    client: C,
    plan: Plan,
    server_thread: &str,
) -> Result<Throughput> {
    let window = Window::new(plan);
    let (start, end) = (window.start, window.end);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..plan.in_flight {
        let mut c = client.clone();
        tasks.spawn(client.scope().run(async move {
            let mut done = 0u64;
            loop {
                c.call().await?;
                let now = Instant::now();
                if now >= end {
                    break;
                }
                if now >= start {
                    done += 1;
                }
            }
            Ok::<u64, BoxError>(done)
        }));
    }
    let mut done = 0u64;
    while let Some(joined) = tasks.join_next().await {
        done += joined??;
    }
    Ok(window.finish(done, server_thread).await)
}
