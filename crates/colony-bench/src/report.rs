//! Printing the figures: the header (machine and method), the table with ratios to the
//! floor, the co-located overhead, the targets, and the `--json` form.

use serde::Serialize;

use crate::colony_rpc::Colocated;
use crate::cpu::{Background, CpuPerCall};
use crate::measure::{Plan, median};
use crate::runtimes::Placement;

/// One peer's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// The peer.
    pub(crate) name: String,
    /// Median latency with one call in flight, µs.
    pub(crate) p50_us: f64,
    /// 99th-percentile latency with one call in flight, µs.
    pub(crate) p99_us: f64,
    /// Requests per second with 64 calls in flight.
    pub(crate) rps: f64,
    /// CPU per call on each side at 64 in flight (not in the JSON).
    #[serde(skip)]
    pub(crate) cpu: Option<CpuPerCall>,
}

/// Everything one run measured.
#[derive(Debug)]
pub(crate) struct Report {
    /// The floor, tonic, axum, Colony remote, Colony co-located — in that order (those
    /// measured): the median of each figure over the rounds.
    pub(crate) rows: Vec<Row>,
    /// Each round's rows.
    pub(crate) rounds: Vec<Vec<Row>>,
    /// Where the threads ran.
    pub(crate) placement: Placement,
    /// The co-located comparison with a plain `async fn`, if measured.
    pub(crate) colocated: Option<Colocated>,
    /// What was run.
    pub(crate) plan: Plan,
    /// Whether `--quick` was given.
    pub(crate) quick: bool,
    /// How busy the rest of the machine was.
    pub(crate) background: Option<Background>,
}

/// Row names, shared by the runner and the targets.
pub(crate) mod names {
    /// Raw TCP.
    pub(crate) const FLOOR: &str = "raw TCP (floor)";
    /// tonic.
    pub(crate) const TONIC: &str = "tonic gRPC";
    /// axum.
    pub(crate) const AXUM: &str = "axum HTTP/JSON";
    /// Colony over TCP.
    pub(crate) const COLONY_REMOTE: &str = "Colony remote";
    /// Colony in-process.
    pub(crate) const COLONY_COLOCATED: &str = "Colony co-located";
    /// Colony over mutual TLS.
    pub(crate) const COLONY_MTLS: &str = "Colony remote mTLS";
    /// Colony with a subscriber and no trace sampled.
    pub(crate) const TRACING_OFF: &str = "Colony tracing off";
    /// Colony with every trace sampled.
    pub(crate) const TRACING_ALL: &str = "Colony tracing 100%";
    /// Colony at the default sampling.
    pub(crate) const TRACING_DEFAULT: &str = "Colony tracing default";
    /// HTTP/JSON through Colony's gateway to a service in another process.
    pub(crate) const GATEWAY: &str = "Colony gateway HTTP/JSON";
    /// The balancer in front of one busy instance.
    pub(crate) const BALANCE_ONE: &str = "balancer, 1 busy instance";
    /// The balancer in front of two busy instances.
    pub(crate) const BALANCE_TWO: &str = "balancer, 2 busy instances";
}

/// One row per peer, in the order of the first round, each figure the median over the
/// rounds.
pub(crate) fn medians(rounds: &[Vec<Row>]) -> Vec<Row> {
    let Some(first) = rounds.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|r| {
            let all: Vec<&Row> = rounds
                .iter()
                .flatten()
                .filter(|x| x.name == r.name)
                .collect();
            let m = |f: &dyn Fn(&Row) -> Option<f64>| {
                let mut xs: Vec<f64> = all.iter().filter_map(|r| f(r)).collect();
                (!xs.is_empty()).then(|| median(&mut xs))
            };
            let client = m(&|r| r.cpu.map(|c| c.client_us));
            let server = m(&|r| r.cpu.map(|c| c.server_us));
            let child = m(&|r| r.cpu.and_then(|c| c.child_us));
            Row {
                name: r.name.clone(),
                p50_us: m(&|r| Some(r.p50_us)).unwrap_or(f64::NAN),
                p99_us: m(&|r| Some(r.p99_us)).unwrap_or(f64::NAN),
                rps: m(&|r| Some(r.rps)).unwrap_or(f64::NAN),
                cpu: client.zip(server).map(|(client_us, server_us)| CpuPerCall {
                    client_us,
                    server_us,
                    child_us: child,
                }),
            }
        })
        .collect()
}

impl Report {
    fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// The `--json` output: an array of `{name, p50_us, p99_us, rps}`.
    pub(crate) fn json(&self) -> String {
        serde_json::to_string_pretty(&self.rows).unwrap_or_else(|e| format!("\"{e}\""))
    }

    // Why this is long: the report is printed in the order it is read, section by section.
    /// The human-readable output: header, Markdown table, co-located detail, targets.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        let p = &self.plan;
        out.push_str(&format!(
            "colony-bench{}: echo of a 32-byte payload on 127.0.0.1\n",
            if self.quick { " --quick" } else { "" }
        ));
        out.push_str(&format!("machine: {}\n", machine()));
        out.push_str(
            "method:  one process; each server on its own dedicated 1-worker tokio runtime, \
             the client on another\n         1-worker runtime, so every peer gets the same \
             CPU budget (one thread each side); peers run one after another.\n",
        );
        out.push_str(&format!("         {}.\n", self.placement.describe()));
        out.push_str(&format!(
            "         latency: {} calls one at a time after {} warm-up calls (hdrhistogram); \
             throughput: {} calls in flight,\n         counted over {:.1} s after {:.1} s \
             of warm-up. The floor's throughput is pipelined on one connection.\n\
             {}",
            p.latency_calls,
            p.warmup_calls,
            p.in_flight,
            p.window.as_secs_f64(),
            p.warmup.as_secs_f64(),
            if p.rounds > 1 {
                format!(
                    "         Every peer is measured in {} rounds, interleaved; each figure is \
                     the median over them.\n",
                    p.rounds
                )
            } else {
                String::new()
            }
        ));
        if let Some(b) = &self.background {
            out.push_str(&format!(
                "load:    other processes kept {:.2} CPUs busy on average during the run; \
                 hypervisor steal {:.2} CPUs{}\n",
                b.others_cpus,
                b.steal_cpus,
                if b.others_cpus > 0.2 || b.steal_cpus > 0.2 {
                    " — the figures are skewed; rerun on a quiet machine"
                } else {
                    ""
                }
            ));
        }
        if cfg!(debug_assertions) {
            out.push_str("WARNING: debug build; run with --release for meaningful figures\n");
        }
        out.push('\n');
        out.push_str(&self.table());
        let cpu: Vec<_> = self
            .rows
            .iter()
            .filter_map(|r| r.cpu.map(|c| (r, c)))
            .collect();
        if !cpu.is_empty() {
            out.push_str(&format!(
                "\nCPU time per call at {} in flight (µs, from each thread's schedstat):\n",
                p.in_flight
            ));
            for (r, c) in cpu {
                let child = c
                    .child_us
                    .map(|us| format!("  child process {us:>6.2}"))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "  {:<26} client {:>6.2}  server {:>6.2}{child}  total {:>6.2}\n",
                    r.name,
                    c.client_us,
                    c.server_us,
                    c.total_us()
                ));
            }
        }
        if self.rounds.len() > 1 {
            out.push_str("\neach round (p50 µs, rps@64):\n");
            for r in &self.rows {
                let each: Vec<String> = self
                    .rounds
                    .iter()
                    .flatten()
                    .filter(|x| x.name == r.name)
                    .map(|x| format!("{} µs, {:.0}", micros(x.p50_us), x.rps))
                    .collect();
                out.push_str(&format!("  {:<26} {}\n", r.name, each.join(" | ")));
            }
        }
        if let Some(c) = &self.colocated {
            out.push_str(&format!(
                "\nco-located call, tight loop (median of {} rounds of {} calls): plain async fn \
             {:.1} ns, Colony {:.1} ns, overhead {:.1} ns per call.\n\
             (Its rps is 1 ÷ that time on one thread: a co-located call never waits, so 64 \
             cannot be in flight; its p50/p99 time each call alone, clock reads included.)\n",
                p.colocated_rounds,
                p.colocated_calls,
                c.plain_ns,
                c.colony_ns,
                c.overhead_ns()
            ));
        }
        out.push_str("\ntargets:\n");
        for t in self.targets() {
            let verdict = match t.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "n/a ",
            };
            out.push_str(&format!("  [{verdict}] {} — {}\n", t.what, t.measured));
        }
        out
    }

    /// The Markdown table with ratios to the floor.
    pub(crate) fn table(&self) -> String {
        let floor = self.row(names::FLOOR);
        let mut out = String::from(
            "| name | p50 µs | p99 µs | rps@64 | p50 ÷ floor | rps ÷ floor |\n\
             |---|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.rows {
            let (lat, thr) = match floor {
                Some(f) => (r.p50_us / f.p50_us, r.rps / f.rps),
                None => (f64::NAN, f64::NAN),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {:.0} | {} | {} |\n",
                r.name,
                micros(r.p50_us),
                micros(r.p99_us),
                r.rps,
                ratio(lat),
                ratio(thr)
            ));
        }
        out
    }

    /// The targets, each checked (`None` when a figure it needs was not measured).
    pub(crate) fn targets(&self) -> Vec<Target> {
        let floor = self.row(names::FLOOR);
        let tonic = self.row(names::TONIC);
        let remote = self.row(names::COLONY_REMOTE);
        let unmeasured = || "not measured in this run".to_owned();
        let latency = floor.zip(remote).map(|(f, r)| (r.p50_us / f.p50_us, f, r));
        let vs_tonic = tonic.zip(remote).map(|(t, r)| (r.rps / t.rps, t, r));
        let vs_floor = floor.zip(remote).map(|(f, r)| (r.rps / f.rps, f, r));
        let overhead = self.colocated.map(|c| c.overhead_ns());
        vec![
            Target {
                what: "Colony remote p50 ≤ 1.3× floor p50",
                measured: latency.map_or_else(unmeasured, |(x, f, r)| {
                    let (r, f) = (micros(r.p50_us), micros(f.p50_us));
                    format!("{r} µs vs {f} µs: {x:.2}×")
                }),
                pass: latency.map(|(x, ..)| x <= 1.3),
            },
            Target {
                what: "Colony rps@64 ≥ 10× tonic's",
                measured: vs_tonic.map_or_else(unmeasured, |(x, t, r)| {
                    format!("{:.0} vs {:.0}: {x:.2}×", r.rps, t.rps)
                }),
                pass: vs_tonic.map(|(x, ..)| x >= 10.0),
            },
            Target {
                what: "Colony rps@64 ≥ 0.15× the floor's batched rps",
                measured: vs_floor.map_or_else(unmeasured, |(x, f, r)| {
                    format!("{:.0} vs {:.0}: {x:.3}×", r.rps, f.rps)
                }),
                pass: vs_floor.map(|(x, ..)| x >= 0.15),
            },
            Target {
                what: "co-located overhead < 100 ns",
                measured: overhead.map_or_else(unmeasured, |ns| format!("{ns:.1} ns")),
                pass: overhead.map(|ns| ns < 100.0),
            },
            self.rps_at_least(names::COLONY_MTLS, names::COLONY_REMOTE, 0.70, true),
            self.p50_at_most(names::COLONY_MTLS, names::COLONY_REMOTE, 1.3),
            self.rps_at_least(names::TRACING_ALL, names::TRACING_OFF, 0.90, true),
            self.rps_at_least(names::TRACING_DEFAULT, names::TRACING_OFF, 0.98, true),
            self.rps_at_least(names::GATEWAY, names::AXUM, 0.85, true),
            self.rps_at_least(names::BALANCE_TWO, names::BALANCE_ONE, 1.5, false),
        ]
    }

    /// The target "`row`'s rps@64 is at least `share` of `base`'s". With `cpu_too`, the
    /// figures also give the same ratio by CPU time per call (every side, child processes
    /// included), which other work on the machine disturbs less than rps.
    fn rps_at_least(
        &self,
        row: &'static str,
        base: &'static str,
        share: f64,
        cpu_too: bool,
    ) -> Target {
        let pair = self.row(row).zip(self.row(base));
        Target {
            what: leak(format!("{row} rps@64 ≥ {share}× {base}'s")),
            measured: pair.map_or_else(
                || "not measured in this run".to_owned(),
                |(r, b)| {
                    let mut m = format!("{:.0} vs {:.0}: {:.3}×", r.rps, b.rps, r.rps / b.rps);
                    if cpu_too && let Some((rc, bc)) = r.cpu.zip(b.cpu) {
                        let (rt, bt) = (rc.total_us(), bc.total_us());
                        m.push_str(&format!(
                            " (by CPU per call, every side: {rt:.2} vs {bt:.2} µs: {:.3}×)",
                            bt / rt
                        ));
                    }
                    m
                },
            ),
            pass: pair.map(|(r, b)| r.rps >= share * b.rps),
        }
    }

    /// The target "`row`'s p50 is at most `factor` × `base`'s".
    fn p50_at_most(&self, row: &'static str, base: &'static str, factor: f64) -> Target {
        let pair = self.row(row).zip(self.row(base));
        Target {
            what: leak(format!("{row} p50 ≤ {factor}× {base}'s")),
            measured: pair.map_or_else(
                || "not measured in this run".to_owned(),
                |(r, b)| {
                    format!(
                        "{} µs vs {} µs: {:.2}×",
                        micros(r.p50_us),
                        micros(b.p50_us),
                        r.p50_us / b.p50_us
                    )
                },
            ),
            pass: pair.map(|(r, b)| r.p50_us <= factor * b.p50_us),
        }
    }
}

/// One target of the issue.
#[derive(Debug)]
pub(crate) struct Target {
    /// The target, in words.
    pub(crate) what: &'static str,
    /// The figures it was judged on.
    pub(crate) measured: String,
    /// Whether it was met; `None` when not measured.
    pub(crate) pass: Option<bool>,
}

/// A target's words, made once per run.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Microseconds with enough digits for sub-µs figures.
fn micros(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.3}")
    } else {
        format!("{us:.1}")
    }
}

/// A ratio with three significant digits or so; `–` when there is nothing to divide by.
fn ratio(x: f64) -> String {
    if !x.is_finite() {
        "–".to_owned()
    } else if x >= 10.0 {
        format!("{x:.1}×")
    } else if x >= 0.1 {
        format!("{x:.2}×")
    } else {
        format!("{x:.4}×")
    }
}

/// "N CPUs, MODEL", from the OS and /proc/cpuinfo.
pub(crate) fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpus} CPUs (nproc), {model}, {}", std::env::consts::ARCH)
}
