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
//! // One instance hosting `double` (any unique suffix of its full name will do).
//! let cluster = Cluster::in_memory(&[&["double"]]).await.expect("starts");
//! let doubled = cluster.run(double(21)).await;   // encoded, sent, served, decoded
//! assert_eq!(doubled, Ok(42));
//! cluster.shutdown().await;
//! # }
//! ```

// The built-in services (`store`) are written with `#[microservice]`, whose code names
// `::colony`.
#[cfg(feature = "store")]
extern crate self as colony;

// For app authors: the crate root, `context`, `client`, `testing`, `store` and the errors.
pub mod client;
pub mod context;
pub mod error;
#[cfg(feature = "store")]
pub mod store;
pub mod testing;

// The runtime's rooms, private: deployers and tools reach what they need through
// `control`, generated code through `__private`.
mod app;
mod call;
mod config;
mod describe;
mod discovery;
#[cfg(feature = "gateway")]
mod gateway;
mod host;
mod identity;
mod retry;
mod security;
mod service;
mod telemetry;
mod transport;
mod wire;

pub use app::main;
#[doc = include_str!("docs/microservice.md")]
pub use colony_macros::microservice;
pub use error::{CallError, Error, ErrorKind, FailedCall, HttpError, Result, ServiceError};

/// For deployers and tools: hosting services and routing calls by hand, the cluster's
/// security, the orchestrator's protocol, telemetry and the gateway. App authors do not
/// need it.
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

    /// The cluster's security: its CA, certificates, mutual TLS and allow-lists.
    pub mod security {
        pub use crate::security::{
            CA_CERT_FILE, CA_KEY_FILE, Ca, CallerPolicy, CertLifetime, DEFAULT_CA_DIR, HttpsConfig,
            IssuedCert, LeafFiles, ListenerStats, Mode, MutualTls, ROLE_CLIENT, ROLE_CONTROL,
            ROLE_GATEWAY, ROLE_ORCHESTRATOR, Refusal, RefusalReport, SecurityError, Settings,
            TlsDialer, TlsListener, dialer_from_env, https_server_config, name_of,
            names_in_certificate, pattern_matches, spiffe_id, trust_domain,
        };
    }

    /// Streams between instances: how they are dialed and accepted.
    pub mod transport {
        pub use crate::transport::{
            AcceptFuture, Authenticated, BoxStream, ConnectionConfig, DEFAULT_MAX_QUEUED, Dialer,
            Listener, MemoryListener, MemoryNetwork, PeerIdentity, Stream, TcpDialer, TcpListener,
        };
    }

    /// The orchestrator's control protocol (JSON lines) and an instance's link to it.
    pub mod discovery {
        pub use crate::discovery::{
            DEFAULT_HEARTBEAT, FromOrchestrator, LoadSnapshot, MAX_LINE, OrchestratorConfig,
            Registration, ToOrchestrator, read_line, spawn_link, write_message,
        };
        pub use crate::wire::LoadReport;
    }

    /// Logs, traces and metrics of a process.
    pub mod telemetry {
        pub use crate::telemetry::metrics::render as render_metrics;
        pub use crate::telemetry::{
            DEFAULT_SAMPLE_RATIO, LogFormat, LogLayer, Sampler, Telemetry, format_traceparent,
            init, parse_traceparent, sampler, set_sampler, spawn_metrics,
        };
    }

    /// The frame format (`docs/protocol.md`), for tools that speak the protocol
    /// themselves: fuzzers, attack suites, other implementations.
    pub mod wire {
        pub use crate::wire::{
            DEFAULT_MAX_FRAME, Decoder, Frame, HEADER_LEN, Header, Hello, Kind, LENGTH_LEN,
            LoadReport, PROTOCOL_VERSION, WireError, encode,
        };
    }

    /// The HTTP gateway, to serve it from a program of your own.
    #[cfg(feature = "gateway")]
    pub mod gateway {
        pub use crate::gateway::{
            Gateway, GatewayConfig, REQUEST_ID, TIMEOUT, TRACEPARENT, TRACERESPONSE, bind, run,
            serve, serve_with,
        };
    }

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
        BoxFuture, ErrorStatus, Options, SERVICES, SchemaProbe, Schemas, Service, ServiceEntry,
        StatusProbe, ViaAnySchema, ViaHttpError, ViaJsonSchema, ViaNoHttpError, assert_error,
        assert_wire, entry,
    };
    pub use linkme;
    pub use postcard::from_bytes as decode;
    pub use schemars::{Schema, SchemaGenerator};
}
