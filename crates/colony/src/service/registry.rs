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
pub fn registry() -> &'static [&'static ServiceEntry] {
    static SORTED: OnceLock<Vec<&'static ServiceEntry>> = OnceLock::new();
    SORTED.get_or_init(|| {
        let mut all: Vec<&'static ServiceEntry> = SERVICES.iter().collect();
        all.sort_by(|a, b| a.name.cmp(b.name));
        all.dedup_by(|a, b| a.name == b.name);
        all
    })
}

/// Find a service by its full name.
pub fn find(name: &str) -> Option<&'static ServiceEntry> {
    let table = registry();
    table
        .binary_search_by(|e| e.name.cmp(name))
        .ok()
        .map(|i| table[i])
}

/// The message for a service name that is not in this binary.
pub(crate) fn not_found(name: &str) -> String {
    let known: Vec<&str> = registry().iter().map(|e| e.name).collect();
    format!(
        "this binary has no service `{name}`; its services are: {}",
        if known.is_empty() {
            "(none)".to_owned()
        } else {
            known.join(", ")
        }
    )
}

/// Find a service by its id.
pub fn by_id(id: u32) -> Option<&'static ServiceEntry> {
    registry().get(id as usize).copied()
}
