//! The fixture app of Colony's end-to-end tests.
//!
//! Its services exercise the call path: echo and errors, a ping-pong chain between two
//! services (the concurrency proof), a fan-out that puts thousands of calls in flight,
//! slow and blocking handlers for deadlines, draining and kills.
//!
//! `cargo test -p colony-e2e` runs the same call suite in-process, over the in-memory
//! transport and over TCP (`src/suite.rs`), then as real processes (`tests/it/processes.rs`).

// Services are `pub` as in a library; in a binary nothing is reachable from outside.
#![allow(unreachable_pub)]

#[cfg(test)]
mod client_suite;
mod services;
#[cfg(test)]
mod suite;

fn main() -> colony::Result<()> {
    colony::main()
}
