//! Colony turns ordinary async Rust functions into microservices.
#![doc = "tour goes here"]

mod app;
mod call;
pub mod context;
mod describe;
pub mod error;
mod host;
mod identity;
pub mod service;
pub mod testing;
pub mod transport;
pub mod wire;

pub use colony_macros::microservice;
pub use error::{CallError, Error, ErrorKind, Result, ServiceError};
pub use app::main;

/// For deployers and tools: hosting services and routing calls by hand.
pub mod control {
    pub use crate::call::{CallOptions, DEFAULT_TIMEOUT, Peer, Reply, Router, RouterBuilder};
    pub use crate::describe::describe;
    pub use crate::host::{Host, HostConfig, serve};
    pub use crate::identity::{fingerprint, instance_id};

    /// Run `fut` with `router` routing every call made inside it (but not inside tasks it
    /// spawns, which use the default router).
    pub async fn with_router<F: Future>(router: std::sync::Arc<crate::call::Router>, fut: F) -> F::Output {
        let ctx = crate::context::CallContext {
            router: Some(router),
            ..Default::default()
        };
        crate::context::scope(ctx, fut).await
    }

    /// Make `router` the one that calls outside any handler use. Only the first call counts.
    pub fn install_router(router: std::sync::Arc<crate::call::Router>) -> bool {
        crate::context::set_default_router(router)
    }
}

/// Items used by code that `#[microservice]` generates. Not a public API: it may change in
/// any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::call::invoke;
    pub use crate::service::{
        BoxFuture, Options, SERVICES, SchemaProbe, Schemas, Service, ServiceEntry, ViaAnySchema,
        ViaJsonSchema, assert_error, assert_wire, entry,
    };
    pub use linkme;
    pub use schemars::{Schema, SchemaGenerator};
}
