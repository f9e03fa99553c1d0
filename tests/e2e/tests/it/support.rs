//! What the topics share: the fixture app's binary, the full names of its services, and
//! starting an instance of some of them.

use std::time::Duration;

use colony::testing::{Process, Processes};

/// The fixture app's binary.
pub(crate) const APP: &str = env!("CARGO_BIN_EXE_colony-e2e");

/// How long a test waits for a log line.
pub(crate) const LOG_WAIT: Duration = Duration::from_secs(30);

/// The full name of the fixture's service (or pattern of services) `name`.
pub(crate) fn svc(name: &str) -> String {
    format!("colony_e2e::services::{name}")
}

/// `peers` (`(NAME, ADDR)`, NAME under `colony_e2e::services`) with full names, as
/// [`Processes`] takes them, passed to `f`.
pub(crate) fn with_peers<T>(peers: &[(&str, &str)], f: impl FnOnce(&[(&str, &str)]) -> T) -> T {
    let named: Vec<(String, &str)> = peers
        .iter()
        .map(|(name, addr)| (svc(name), *addr))
        .collect();
    let named: Vec<(&str, &str)> = named
        .iter()
        .map(|(name, addr)| (name.as_str(), *addr))
        .collect();
    f(&named)
}

/// Start `APP serve` of `app` on `listen`, hosting `services`, with `peers` for the
/// services it calls (both named under `colony_e2e::services`) and extra flags.
pub(crate) fn serve(
    app: &Processes,
    listen: &str,
    services: &[&str],
    peers: &[(&str, &str)],
    flags: &[&str],
) -> Process {
    let services: Vec<String> = services.iter().map(|s| svc(s)).collect();
    let services: Vec<&str> = services.iter().map(String::as_str).collect();
    with_peers(peers, |peers| app.serve_on(listen, &services, peers, flags))
        .unwrap_or_else(|e| panic!("the fixture app starts: {e}"))
}

/// Wait until a log line of `process` contains every one of `needles`.
pub(crate) fn wait_for_log(process: &Process, needles: &[&str]) {
    if let Err(e) = process.wait_for_log_with(needles, LOG_WAIT) {
        panic!("{e}");
    }
}
