//! The runtimes the peers run on, and which CPU each one's thread may use.
//!
//! Every server gets a dedicated tokio runtime with one worker thread, and the client
//! another, so each side of every peer has the same CPU budget: one thread. Where the
//! threads run matters as much: on a VM, waking a thread on an idle (halted) virtual CPU
//! takes tens of microseconds, while waking one on a busy CPU takes a few, so leaving
//! placement to the OS makes figures jump tenfold between runs. [`Placement`] fixes it;
//! the default, [`Placement::Shared`], measures what a call costs in CPU on both sides
//! without the hypervisor's wake-up time, which a real two-machine call would not pay.

use std::time::Duration;

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use tokio::runtime::Runtime;

use crate::measure::Result;

/// Which CPUs the client's and the servers' threads may run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// The client's thread on one CPU, every server's thread on another: each side has a
    /// CPU of its own, as two machines would, and every message wakes the other CPU.
    Split,
    /// Every thread on one CPU: client and server take turns on it, so a figure reflects
    /// the CPU work a call costs on both sides together, with no cross-CPU wake-ups.
    Shared,
    /// Wherever the OS puts them.
    Os,
}

impl Placement {
    /// Parse `split`, `shared` or `os`.
    pub(crate) fn parse(s: &str) -> Option<Placement> {
        match s {
            "split" => Some(Placement::Split),
            "shared" => Some(Placement::Shared),
            "os" => Some(Placement::Os),
            _ => None,
        }
    }

    /// The CPUs of the client's thread and of the servers' threads, if pinned.
    pub(crate) fn cpus(self) -> (Option<usize>, Option<usize>) {
        let allowed = allowed_cpus();
        let first = allowed.first().copied();
        let second = allowed.get(1).copied().or(first);
        match self {
            Placement::Split => (first, second),
            Placement::Shared => (first, first),
            Placement::Os => (None, None),
        }
    }

    /// A sentence for the output's header.
    pub(crate) fn describe(self) -> String {
        let cpu = |c: Option<usize>| c.map_or_else(|| "any CPU".to_owned(), |c| format!("CPU {c}"));
        let (client, server) = self.cpus();
        match self {
            Placement::Os => "threads placed by the OS (--cpus os)".to_owned(),
            Placement::Split => format!(
                "client thread pinned to {}, every server thread to {} (--cpus split)",
                cpu(client),
                cpu(server)
            ),
            Placement::Shared => format!(
                "client and server threads all pinned to {} (--cpus shared)",
                cpu(client)
            ),
        }
    }
}

/// The CPUs this process may run on, in order.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Pin the calling thread to `cpu`, or say why not.
fn pin(cpu: usize) {
    let mut set = CpuSet::new();
    let pinned = set
        .set(cpu)
        .and_then(|()| sched_setaffinity(Pid::from_raw(0), &set));
    if let Err(e) = pinned {
        eprintln!("colony-bench: could not pin a thread to CPU {cpu}: {e}");
    }
}

/// A tokio runtime with one dedicated worker thread named `name`, pinned to `cpu` if any.
pub(crate) fn runtime(name: &str, cpu: Option<usize>) -> std::io::Result<Runtime> {
    runtime_with(name, cpu, None)
}

/// [`runtime`], whose threads have `dispatch` as their `tracing` subscriber, if any.
pub(crate) fn runtime_with(
    name: &str,
    cpu: Option<usize>,
    dispatch: Option<tracing::Dispatch>,
) -> std::io::Result<Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(1).thread_name(name).enable_all();
    builder.on_thread_start(move || {
        if let Some(cpu) = cpu {
            pin(cpu);
        }
        if let Some(dispatch) = &dispatch {
            // The thread's default for as long as it lives: the guard is never dropped.
            std::mem::forget(tracing::dispatcher::set_default(dispatch));
        }
    });
    builder.build()
}

/// Run `fut` as a task on `rt`'s worker (not on the calling thread) and wait for it.
pub(crate) fn on<T, F>(rt: &Runtime, fut: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    rt.block_on(rt.spawn(fut))?
}

/// What a server starter returns: the address it listens on.
pub(crate) type BoxedStart = std::pin::Pin<Box<dyn Future<Output = Result<String>> + Send>>;

/// A starter that binds a tokio listener on 127.0.0.1 and spawns `serve` on it.
pub(crate) fn tokio_listener<S, SF>(serve: S) -> impl FnOnce() -> BoxedStart + Send + 'static
where
    S: FnOnce(tokio::net::TcpListener) -> SF + Send + 'static,
    SF: Future<Output = ()> + Send + 'static,
{
    move || {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?.to_string();
            tokio::spawn(serve(listener));
            Ok(addr)
        })
    }
}

/// A server on its own one-worker runtime.
pub(crate) struct Server {
    rt: Runtime,
    /// The address it listens on.
    pub(crate) addr: String,
}

impl Server {
    /// Start a runtime named `name` (its thread on `cpu`, if any) and run `start` on it;
    /// `start` spawns the server and returns its address.
    pub(crate) fn start<S, SF>(name: &str, cpu: Option<usize>, start: S) -> Result<Server>
    where
        S: FnOnce() -> SF + Send + 'static,
        SF: Future<Output = Result<String>> + Send + 'static,
    {
        Server::start_with(name, cpu, None, start)
    }

    /// [`Server::start`], with `dispatch` as the `tracing` subscriber of its thread.
    pub(crate) fn start_with<S, SF>(
        name: &str,
        cpu: Option<usize>,
        dispatch: Option<tracing::Dispatch>,
        start: S,
    ) -> Result<Server>
    where
        S: FnOnce() -> SF + Send + 'static,
        SF: Future<Output = Result<String>> + Send + 'static,
    {
        let rt = runtime_with(name, cpu, dispatch)?;
        let addr = on(&rt, async move { start().await })?;
        Ok(Server { rt, addr })
    }

    /// Stop the server and its runtime.
    pub(crate) fn stop(self) {
        self.rt.shutdown_timeout(Duration::from_secs(1));
    }
}

/// The CPU the calling thread is pinned to, when its affinity names exactly one.
pub(crate) fn current_cpu() -> Option<usize> {
    let set = sched_getaffinity(Pid::from_raw(0)).ok()?;
    let mut on = (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false));
    match (on.next(), on.next()) {
        (Some(cpu), None) => Some(cpu),
        _ => None,
    }
}
