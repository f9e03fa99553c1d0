//! Configuration: everything a process reads from outside its code.
//!
//! Owns: the one duration grammar ([`duration`], from `colony-duration`, also used by the
//! macros and the CLI), the environment (read once, into the typed [`Env`], in
//! `env.rs`), and the schema of `colony.toml` ([`ColonyToml`], in `file.rs`), which the
//! runtime and the CLI share. Promises: a value that is wrong is reported with the name of
//! the variable or key that holds it and how to write it; nothing else in the runtime reads
//! `COLONY_*` variables (the command-line flags' environment fallbacks are read by `clap`
//! in `app`, where the flags are).
//!
//! Must not touch: anything that acts on a setting. This module only reads and checks;
//! the modules that act are handed typed values.

mod env;
mod file;

use std::time::Duration;

pub(crate) use env::{Env, env};
pub use file::{CacheToml, ClusterToml, ColonyToml, ConfigError, ServiceToml, StoreToml};

/// Parse a duration in Colony's one grammar (`250ms`, `5s`, `1.5m`, `1h30m`, `1d`): the
/// form `clap` value parsers and every reader of a setting take.
pub fn duration(text: &str) -> Result<Duration, String> {
    colony_duration::parse(text).map_err(|e| e.to_string())
}

/// Write a duration the way [`duration`] reads it back (`30s`, `1m30s`, `250ms`).
pub fn format_duration(value: Duration) -> String {
    colony_duration::format(value)
}
