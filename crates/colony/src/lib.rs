//! Colony turns ordinary async Rust functions into microservices.
//!
//! You write one program. Colony runs it as one process while you develop, or as a set of
//! instances that call each other over the network, and a call from one service to another
//! stays a plain, type-checked function call.
//!
//! This crate is for app authors; it is the only one an app adds. Tools and deployers use
//! [`control`]; generated code uses a hidden module that promises no stability.
//!
//! # A first service
//!
//! Mark an `async fn` with [`#[microservice]`](macro@microservice). Its arguments and
//! result are serde types; its result is a `Result` whose error can carry a failed call
//! ([`ServiceError`] is ready-made):
//!
//! ```
//! use colony::{ServiceError, microservice};
//!
//! /// Price of `qty` units of `sku`, in cents.
//! #[microservice(exposed, http = "GET /quote/{sku}", timeout = "2s")]
//! pub async fn quote(sku: String, qty: u32) -> Result<u64, ServiceError> {
//!     let unit = unit_price(sku).await?; // another service: just a call
//!     Ok(unit * u64::from(qty))
//! }
//!
//! #[microservice]
//! pub async fn unit_price(sku: String) -> Result<u64, ServiceError> {
//!     match sku.as_str() {
//!         "a1" => Ok(250),
//!         _ => Err(ServiceError::not_found(format!("no sku {sku}"))),
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // With no runtime set up (a unit test, say) a service is a plain async function.
//! assert_eq!(quote("a1".into(), 2).await, Ok(500));
//! assert!(quote("zz".into(), 1).await.is_err());
//! # }
//! ```
//!
//! The service's name is its module path and function name, such as
//! `shop::pricing::quote`. It is how instances, `describe`, and the command line refer to it.
//!
//! # The binary
//!
//! Hand `main` to Colony; it picks a role from the command line:
//!
//! ```no_run
//! fn main() -> colony::Result<()> {
//!     colony::main()
//! }
//! ```
//!
//! | role | what runs |
//! |---|---|
//! | `APP` or `APP run` | every service in this process, listening on `--listen` (default 127.0.0.1:7700) |
//! | `APP serve --service A,B --listen ADDR --peer NAME=ADDR` | an instance hosting A and B |
//! | `APP gateway --http ADDR --peer NAME=ADDR` | the HTTP gateway in front of the exposed services (`APP run` serves it too) |
//! | `APP call SERVICE 'JSON' [--peer NAME=ADDR]` | one call, printing its JSON result |
//! | `APP describe` | JSON of every service: arguments, schemas, options |
//!
//! # How a call travels
//!
//! - A call to a service hosted in this process, or made with no runtime, runs the body
//!   directly, with no serialization.
//! - Otherwise its arguments are encoded ([postcard](https://docs.rs/postcard)) into one
//!   frame on a multiplexed connection to an instance that hosts the service, and the
//!   caller's future parks until the reply. No thread waits: a chain of a thousand nested
//!   calls costs a thousand parked futures. The format is in `docs/protocol.md`.
//! - Every call has a deadline: the caller's, else the service's `timeout`, else
//!   [`control::DEFAULT_TIMEOUT`]. The callee sees the time left ([`context::remaining`]),
//!   and a call never waits past it.
//! - Dropping the caller's future cancels the work on the callee.
//! - Every failure is a value: a [`CallError`] converted into the service's error type.
//!   Inner calls never retry; see [`CallError`] for what is safe to retry outside.
//!
//! # State
//!
//! With the `store` feature, `colony::store` gives services typed tables whose values
//! carry versions (compare-and-swap), kept by a built-in store service on disk and read
//! through an optional memcached cache tier: `Store::app().table::<K, V>("name")`. See the
//! `store` module (built with the feature) for where the data lives in each shape.
//!
//! # Testing
//!
//! Plain `#[tokio::test]`s call services directly. [`testing::Cluster`] runs them as
//! instances over an in-memory transport (or TCP), taking the production call path:
//!
//! ```
//! # use colony::{ServiceError, microservice};
//! # #[microservice]
//! # pub async fn double(x: u64) -> Result<u64, ServiceError> { Ok(2 * x) }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use colony::testing::Cluster;
//!
//! // `double`'s full name is its module path and its name.
//! let name = colony::service::registry()
//!     .iter()
//!     .map(|entry| entry.name)
//!     .find(|name| name.ends_with("::double"))
//!     .expect("registered");
//! let cluster = Cluster::in_memory(&[&[name]]).await.expect("starts");
//! let doubled = cluster.run(double(21)).await;   // encoded, sent, served, decoded
//! assert_eq!(doubled, Ok(42));
//! cluster.shutdown().await;
//! # }
//! ```

// The built-in services (`store`) are written with `#[microservice]`, whose code names
// `::colony`.
#[cfg(feature = "store")]
extern crate self as colony;

mod app;
mod call;
pub mod client;
mod config;
pub mod context;
mod describe;
pub mod discovery;
pub mod error;
#[cfg(feature = "gateway")]
pub mod gateway;
mod host;
mod identity;
pub mod retry;
pub mod security;
pub mod service;
#[cfg(feature = "store")]
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod transport;
pub mod wire;

pub use app::main;
#[doc = include_str!("docs/microservice.md")]
pub use colony_macros::microservice;
pub use error::{CallError, Error, ErrorKind, FailedCall, Result, ServiceError};

/// For deployers and tools: hosting services and routing calls by hand.
pub mod control {
    pub use crate::call::{CallOptions, DEFAULT_TIMEOUT, Peer, Reply, Router, RouterBuilder};

    /// Settings read from outside: `colony.toml`'s schema (shared with the CLI) and the one
    /// duration grammar.
    pub mod config {
        pub use crate::config::{
            CacheToml, ClusterToml, ColonyToml, ConfigError, ServiceToml, StoreToml, duration,
            format_duration,
        };
    }
    pub use crate::describe::describe;
    pub use crate::host::{Host, HostConfig, serve};
    pub use crate::identity::{app_name, fingerprint, instance_id};

    /// Run `fut` with `router` routing every call made inside it (but not inside tasks it
    /// spawns, which use the default router).
    pub async fn with_router<F: Future>(
        router: std::sync::Arc<crate::call::Router>,
        fut: F,
    ) -> F::Output {
        let ctx = crate::context::CallContext {
            router: Some(crate::context::Routing::new(router)),
            ..Default::default()
        };
        crate::context::scope(ctx, fut).await
    }

    /// Make `router` the one that calls outside any handler use. Only the first call counts.
    pub fn install_router(router: std::sync::Arc<crate::call::Router>) -> bool {
        crate::call::set_default_router(router)
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
