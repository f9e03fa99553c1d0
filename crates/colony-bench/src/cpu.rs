//! Where the CPU went, from `/proc` (Linux; elsewhere every figure is simply absent).
//!
//! Two diagnostics that make the figures readable: the CPU time each side of a peer spent
//! per call at full load (from each named thread's `schedstat`, in nanoseconds), and how
//! busy the rest of the machine was during the run (from `/proc/stat`), since other work
//! on a 2-CPU machine skews every figure.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Child processes whose threads [`threads_ns`] counts too (the gateway row's echo
/// process).
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Count the threads of the child process `pid` in [`threads_ns`] until [`forget_child`].
pub(crate) fn watch_child(pid: u32) {
    if let Ok(mut children) = CHILDREN.lock() {
        children.push(pid);
    }
}

/// Stop counting the threads of the child process `pid`.
pub(crate) fn forget_child(pid: u32) {
    if let Ok(mut children) = CHILDREN.lock() {
        children.retain(|&p| p != pid);
    }
}

/// CPU time of each of this process's threads, and of the watched children's, summed by
/// thread name, in ns.
pub(crate) fn threads_ns() -> HashMap<String, u64> {
    let mut by_name = HashMap::new();
    add_threads("/proc/self/task", &mut by_name);
    let children = CHILDREN.lock().map(|c| c.clone()).unwrap_or_default();
    for pid in children {
        add_threads(&format!("/proc/{pid}/task"), &mut by_name);
    }
    by_name
}

/// Add the CPU time of the threads listed under `dir` to `by_name`.
fn add_threads(dir: &str, by_name: &mut HashMap<String, u64>) {
    let Ok(tasks) = std::fs::read_dir(dir) else {
        return;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
        if let Some(ns) = ns {
            *by_name.entry(name.trim().to_owned()).or_insert(0) += ns;
        }
    }
}

/// CPU time per call of the threads named `client` and `server`, in µs, between two
/// [`threads_ns`] samples spanning `calls` calls.
pub(crate) fn per_call_us(
    before: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
    calls: u64,
    client: &str,
    server: &str,
) -> Option<CpuPerCall> {
    let spent = |name: &str| {
        let ns = after.get(name)?.checked_sub(*before.get(name)?)?;
        Some(ns as f64 / 1_000.0 / calls.max(1) as f64)
    };
    Some(CpuPerCall {
        client_us: spent(client)?,
        server_us: spent(server)?,
        child_us: spent(CHILD_THREAD),
    })
}

/// The thread name of the gateway row's echo process (at most 15 bytes, as `/proc` keeps).
pub(crate) const CHILD_THREAD: &str = "bench-child";

/// CPU time spent per call on each side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuPerCall {
    /// The client's thread, µs per call.
    pub(crate) client_us: f64,
    /// The server's thread, µs per call.
    pub(crate) server_us: f64,
    /// A child process's threads, µs per call, for a row that has one.
    pub(crate) child_us: Option<f64>,
}

impl CpuPerCall {
    /// All the CPU a call took, every side together, µs.
    pub(crate) fn total_us(&self) -> f64 {
        self.client_us + self.server_us + self.child_us.unwrap_or(0.0)
    }
}

/// What the machine did while the run went on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Background {
    /// CPUs kept busy on average by other processes.
    pub(crate) others_cpus: f64,
    /// CPUs' worth of time the hypervisor gave to other guests (steal), on average.
    pub(crate) steal_cpus: f64,
}

/// A starting point for [`Background`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watch {
    at: Instant,
    busy: u64,
    steal: u64,
    own: u64,
}

/// Clock ticks per second of `/proc/stat` and `/proc/self/stat` (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

impl Watch {
    /// Start watching, if `/proc` can be read.
    pub(crate) fn start() -> Option<Watch> {
        let (busy, steal) = machine_ticks()?;
        Some(Watch {
            at: Instant::now(),
            busy,
            steal,
            own: own_ticks()?,
        })
    }

    /// The background since [`Watch::start`].
    pub(crate) fn stop(self) -> Option<Background> {
        let (busy, steal) = machine_ticks()?;
        let own = own_ticks()?;
        let secs = self.at.elapsed().as_secs_f64() * TICKS;
        let others = busy.saturating_sub(self.busy) as f64 - own.saturating_sub(self.own) as f64;
        Some(Background {
            others_cpus: others.max(0.0) / secs,
            steal_cpus: steal.saturating_sub(self.steal) as f64 / secs,
        })
    }
}

/// Busy and steal ticks of the whole machine, from the `cpu` line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    let busy = field(0) + field(1) + field(2) + field(5) + field(6);
    Some((busy, field(7)))
}

/// This process's user and system ticks, its finished children's included, from
/// `/proc/self/stat`.
fn own_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; the fields after it are plain numbers.
    let rest = &stat[stat.rfind(')')? + 1..];
    let v: Vec<&str> = rest.split_whitespace().collect();
    // After `)`: state is field 3 of the man page, so utime (14) and stime (15) are 11, 12,
    // and the waited-for children's, cutime (16) and cstime (17), 13 and 14.
    let ticks = |i: usize| v.get(i).and_then(|x| x.parse::<u64>().ok());
    Some(ticks(11)? + ticks(12)? + ticks(13)? + ticks(14)?)
}
