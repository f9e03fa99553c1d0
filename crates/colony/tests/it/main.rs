//! The integration tests of `colony`, one binary with a module per topic.
//!
//! - `layers`: the module rules of ARCHITECTURE.md hold in the code;
//! - `limits`: a connection's limits against peers that never read or stall mid-frame;
//! - `security`: mutual TLS on real sockets;
//! - `ui`: what the macros accept, and the error each mistake gives.

mod layers;
mod limits;
mod security;
mod ui;
