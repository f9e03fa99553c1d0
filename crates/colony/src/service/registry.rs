//! The process-wide table of services.
//!
//! Owns: [`SERVICES`], the slice every `#[microservice]` adds its [`ServiceEntry`] to at
//! link time, and [`registry()`], that slice sorted by name, which gives each service its
//! id. Promises: the table is built once and never changes; ids do not depend on link
//! order; a name that is not in it gets a message listing what is. Must not touch: what an
//! entry does with a request (`entry` owns that).

use std::sync::OnceLock;

use super::ServiceEntry;

/// Every `#[microservice]` linked into this binary, in link order.
#[linkme::distributed_slice]
pub static SERVICES: [ServiceEntry];

/// The table sorted by name, so ids do not depend on link order quirks.
pub(crate) fn registry() -> &'static [&'static ServiceEntry] {
    static SORTED: OnceLock<Vec<&'static ServiceEntry>> = OnceLock::new();
    SORTED.get_or_init(|| {
        let mut all: Vec<&'static ServiceEntry> = SERVICES.iter().collect();
        all.sort_by(|a, b| a.name.cmp(b.name));
        all.dedup_by(|a, b| a.name == b.name);
        all
    })
}

/// Find a service by its full name.
pub(crate) fn find(name: &str) -> Option<&'static ServiceEntry> {
    let table = registry();
    table
        .binary_search_by(|e| e.name.cmp(name))
        .ok()
        .map(|i| table[i])
}

/// Find a service by its full name or by any unique suffix of its path on a `::` boundary
/// (`checkout`, `shop::checkout` or `myapp::shop::checkout`): the names people type. The
/// error says what there is, or which services an ambiguous suffix could mean.
pub(crate) fn resolve(name: &str) -> Result<&'static ServiceEntry, String> {
    let name = name.trim();
    if let Some(entry) = find(name) {
        return Ok(entry);
    }
    let matching: Vec<&'static ServiceEntry> = registry()
        .iter()
        .copied()
        .filter(|e| ends_with_path(e.name, name))
        .collect();
    match matching.as_slice() {
        [entry] => Ok(entry),
        [] => Err(not_found(name)),
        many => Err(ambiguous(name, many.iter().map(|e| e.name))),
    }
}

/// The full module path that `module` names, exactly or as a unique suffix, among the
/// modules of this binary's services (`shop` for `myapp::shop::checkout`).
pub(crate) fn resolve_module(module: &str) -> Result<String, String> {
    let module = module.trim();
    let mut modules: Vec<&str> = Vec::new();
    for entry in registry() {
        // Every module on the service's path: `a`, `a::b` for `a::b::f`.
        let mut end = 0;
        while let Some(at) = entry.name[end..].find("::") {
            end += at;
            let candidate = &entry.name[..end];
            if (candidate == module || ends_with_path(candidate, module))
                && !modules.contains(&candidate)
            {
                modules.push(candidate);
            }
            end += 2;
        }
    }
    match modules.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(format!(
            "this binary has no module `{module}` with services; its services are: {}",
            names()
        )),
        _ if modules.contains(&module) => Ok(module.to_owned()),
        many => Err(ambiguous(module, many.iter().copied())),
    }
}

/// Whether `full` ends with the path `suffix` on a `::` boundary.
fn ends_with_path(full: &str, suffix: &str) -> bool {
    !suffix.is_empty()
        && full
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with("::"))
}

fn ambiguous<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let candidates: Vec<&str> = candidates.collect();
    format!(
        "`{name}` could mean any of {}; write more of the path",
        candidates.join(", ")
    )
}

fn names() -> String {
    let known: Vec<&str> = registry().iter().map(|e| e.name).collect();
    if known.is_empty() {
        "(none)".to_owned()
    } else {
        known.join(", ")
    }
}

/// The message for a service name that is not in this binary.
pub(crate) fn not_found(name: &str) -> String {
    format!(
        "this binary has no service `{name}`; its services are: {}",
        names()
    )
}

/// Find a service by its id.
pub(crate) fn by_id(id: u32) -> Option<&'static ServiceEntry> {
    registry().get(id as usize).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suffix_matches_only_on_a_path_boundary() {
        assert!(ends_with_path("app::shop::checkout", "checkout"));
        assert!(ends_with_path("app::shop::checkout", "shop::checkout"));
        assert!(!ends_with_path("app::shop::checkout", "out"));
        assert!(!ends_with_path(
            "app::shop::checkout",
            "app::shop::checkout"
        ));
        assert!(!ends_with_path("app::shop::checkout", ""));
    }

    #[test]
    fn every_service_resolves_by_its_full_name_and_an_unknown_one_lists_them() {
        for entry in registry() {
            assert_eq!(resolve(entry.name).map(|e| e.name), Ok(entry.name));
        }
        let err = resolve("no::such::service").expect_err("unknown");
        assert!(err.contains("has no service `no::such::service`"), "{err}");
    }
}
