//! The services of the binary: what `#[microservice]` emits for each, and the table of them.
//!
//! Owns: the traits and types that generated code fills in ([`Service`], [`Options`],
//! [`Schemas`], [`Outcome`], the [`Wire`] and [`ServiceErrorType`] bounds); the rest
//! lives in submodules by job: `registry` (the process-wide table, [`registry()`],
//! [`find`], [`by_id`]), `entry` ([`ServiceEntry`], the type-erased handlers one service
//! gets, and postcard ⇄ JSON conversion of its results), `named_args` ([`NamedArgs`]: a
//! JSON object of named arguments into an argument tuple), `named_json` (the same, straight
//! from the bytes) and `schema` (probing a type for its JSON schema). Their public items
//! are re-exported here, so every path stays `service::…` inside the crate. Promises: a service's
//! id is its index in the table, identical in every process started from the same binary
//! (the handshake's build fingerprint guards that). Must not touch: sockets, the runtime,
//! or any state that changes after start-up.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use schemars::Schema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CallError;

mod entry;
mod named_args;
mod named_json;
mod registry;
mod schema;
#[cfg(test)]
mod tests;

#[cfg(feature = "gateway")]
pub(crate) use entry::integral_floats_to_integers;
#[cfg(test)]
use entry::json_value_of_args;
pub use entry::{ServiceEntry, entry};
pub(crate) use named_args::NamedArgs;
pub use registry::SERVICES;
pub(crate) use registry::not_found;
pub(crate) use registry::{by_id, find, registry, resolve, resolve_module};
pub use schema::{
    ErrorStatus, SchemaProbe, StatusProbe, ViaAnySchema, ViaHttpError, ViaJsonSchema,
    ViaNoHttpError,
};

/// A boxed, sendable future: what a service body becomes so that services may call each
/// other in cycles (`a` calls `b` calls `a`) without an infinitely sized future type.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Types that may cross a service boundary: serde in both directions, sendable, owned.
///
/// Implemented for every type that qualifies; it exists to give a clear compile error.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross a service boundary",
    label = "this type is sent between processes",
    note = "arguments and results of a #[microservice] travel as messages between processes, \
            so they must be owned and implement `serde::Serialize` and `serde::de::DeserializeOwned`",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to the type, or pass an owned type \
            (`String` instead of `&str`)"
)]
pub trait Wire: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Wire for T {}

/// The error type of a service, which must absorb Colony's own call failures.
#[diagnostic::on_unimplemented(
    message = "the error type `{Self}` cannot carry a failed call",
    label = "this error type needs `From<colony::CallError>`",
    note = "a call to a service can fail in ways its body never sees (no instance, deadline passed, \
            instance died), so the error type must be buildable from a `colony::CallError`",
    note = "use `colony::ServiceError`, or implement `From<colony::CallError>` for your error type; \
            it must also implement serde's `Serialize` and `Deserialize`"
)]
pub trait ServiceErrorType: Wire + From<CallError> {}
impl<T: Wire + From<CallError>> ServiceErrorType for T {}

/// Tuning options given in `#[microservice(...)]`, reported by `describe`.
///
/// Every field is optional: `None` means "use Colony's default" so that `describe`
/// can tell a setting the author chose from a default.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[non_exhaustive]
pub struct Options {
    /// Reachable from outside the cluster through the gateway.
    pub exposed: bool,
    /// An explicit HTTP route, `"METHOD /path/{param}"`.
    pub http: Option<&'static str>,
    /// Instances kept running even when idle.
    pub min_instances: Option<u32>,
    /// Instances the autoscaler never goes past.
    pub max_instances: Option<u32>,
    /// Load ratio (in flight ÷ capacity) above which the autoscaler adds an instance.
    pub high_watermark: Option<f64>,
    /// Load ratio below which the autoscaler removes an instance after a cool-down.
    pub low_watermark: Option<f64>,
    /// Tokio worker threads of an instance that hosts this service.
    pub threads: Option<u32>,
    /// The body blocks its thread, so it runs on the blocking pool.
    pub blocking: bool,
    /// The default deadline of a call, in milliseconds, when the caller has none.
    pub timeout_ms: Option<u64>,
}

impl Options {
    /// Options with every field unset: what `#[microservice]` with no arguments means.
    pub const DEFAULT: Options = Options {
        exposed: false,
        http: None,
        min_instances: None,
        max_instances: None,
        high_watermark: None,
        low_watermark: None,
        threads: None,
        blocking: false,
        timeout_ms: None,
    };

    /// The default deadline as a [`Duration`].
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }
}

/// JSON schemas of one service's arguments and results.
#[derive(Debug, Clone)]
pub struct Schemas {
    /// One schema per argument, in declaration order.
    pub args: Vec<Schema>,
    /// The schema of a successful result.
    pub ok: Schema,
    /// The schema of the error type.
    pub err: Schema,
}

/// What running a service on an encoded request produced.
#[derive(Debug)]
pub enum Outcome {
    /// The body returned `Ok`; the postcard encoding of the value.
    Ok(Vec<u8>),
    /// The body returned `Err`; the postcard encoding of the user's error value.
    Err(Vec<u8>),
    /// Colony could not run the body, or the body panicked.
    Fault(CallError),
}

/// Implemented by generated code for each `#[microservice]` function.
pub trait Service: Send + Sync + 'static {
    /// The arguments as a tuple, in declaration order.
    type Args: Wire;
    /// The success type.
    type Ok: Wire;
    /// The error type.
    type Err: ServiceErrorType;
    /// The static entry of this service.
    fn entry() -> &'static ServiceEntry;
    /// Run the body on its arguments.
    fn run(args: Self::Args) -> BoxFuture<Result<Self::Ok, Self::Err>>;
}

/// Compile-time check that an argument or result type can cross a service boundary.
pub const fn assert_wire<T: Wire>() {}

/// Compile-time check that an error type can carry a [`CallError`].
pub const fn assert_error<T: ServiceErrorType>() {}
