//! The registry of every `#[microservice]` in the binary.
//!
//! Owns: [`ServiceEntry`], the static description that `#[microservice]` emits for each
//! function, and the process-wide table of them. Promises: a service's id is its index in
//! that table, identical in every process started from the same binary (the handshake's
//! build fingerprint guards that). Must not touch: sockets, the runtime, or any state that
//! changes after start-up.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use schemars::{Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CallError;

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

/// The static description of one `#[microservice]` function, emitted by the macro.
///
/// Constructed only by generated code, through [`entry`]. Each one lives in the
/// [`SERVICES`] table.
pub struct ServiceEntry {
    /// `module::path::function`.
    pub name: &'static str,
    /// Argument names, in declaration order.
    pub arg_names: &'static [&'static str],
    /// Options from the attribute.
    pub options: Options,
    /// Decode a postcard request, run the body, encode its result.
    pub handle: fn(bytes::Bytes) -> BoxFuture<Outcome>,
    /// Turn a JSON object of named arguments into a postcard request payload.
    pub json_to_args: fn(serde_json::Value) -> Result<Vec<u8>, String>,
    /// Turn a postcard result payload into JSON (`Ok` when the flag is true, else `Err`).
    pub result_to_json: fn(&[u8], bool) -> Result<serde_json::Value, String>,
    /// Turn a postcard `Ok` payload straight into JSON text (no `serde_json::Value` on the
    /// way), for answers on the hot path.
    pub ok_to_json_bytes: fn(&[u8]) -> Result<Vec<u8>, String>,
    /// JSON schemas of the arguments and results.
    pub schemas: fn(&mut SchemaGenerator) -> Schemas,
    /// The id, found once in the sorted table.
    id: OnceLock<u32>,
}

impl std::fmt::Debug for ServiceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceEntry")
            .field("name", &self.name)
            .field("arg_names", &self.arg_names)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ServiceEntry {
    /// This service's id: its index in the process-wide table.
    pub fn id(&'static self) -> u32 {
        *self.id.get_or_init(|| {
            registry()
                .iter()
                .position(|e| std::ptr::eq(*e, self))
                .map_or(u32::MAX, |i| i as u32)
        })
    }
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

/// Build the entry of service `S`; called in a `static` by generated code.
pub const fn entry<S: Service>(
    name: &'static str,
    arg_names: &'static [&'static str],
    options: Options,
    schemas: fn(&mut SchemaGenerator) -> Schemas,
) -> ServiceEntry
where
    S::Args: NamedArgs,
{
    ServiceEntry {
        name,
        arg_names,
        options,
        handle: handle::<S>,
        json_to_args: json_to_args::<S>,
        result_to_json: result_to_json::<S>,
        ok_to_json_bytes: ok_to_json_bytes::<S>,
        schemas,
        id: OnceLock::new(),
    }
}

/// Compile-time check that an argument or result type can cross a service boundary.
pub const fn assert_wire<T: Wire>() {}

/// Compile-time check that an error type can carry a [`CallError`].
pub const fn assert_error<T: ServiceErrorType>() {}

fn handle<S: Service>(payload: bytes::Bytes) -> BoxFuture<Outcome>
where
    S::Args: NamedArgs,
{
    let args: S::Args = match postcard::from_bytes(&payload) {
        Ok(args) => args,
        Err(e) => {
            let err = CallError::BadArguments {
                service: S::entry().name.to_owned(),
                reason: format!("the request payload does not decode as the arguments: {e}"),
            };
            return Box::pin(std::future::ready(Outcome::Fault(err)));
        }
    };
    let fut = S::run(args);
    Box::pin(async move {
        let result = fut.await;
        encode_result::<S>(&result)
    })
}

/// Encode a typed result into an [`Outcome`].
pub fn encode_result<S: Service>(result: &Result<S::Ok, S::Err>) -> Outcome {
    let encoded = match result {
        Ok(v) => crate::wire::to_vec(v).map(Outcome::Ok),
        Err(e) => crate::wire::to_vec(e).map(Outcome::Err),
    };
    encoded.unwrap_or_else(|e| {
        Outcome::Fault(CallError::Internal {
            service: S::entry().name.to_owned(),
            message: format!("the result could not be encoded: {e}"),
        })
    })
}

fn json_to_args<S: Service>(value: serde_json::Value) -> Result<Vec<u8>, String>
where
    S::Args: NamedArgs,
{
    let args = S::Args::from_named_json(S::entry().arg_names, value)?;
    postcard::to_stdvec(&args).map_err(|e| format!("the arguments could not be encoded: {e}"))
}

fn result_to_json<S: Service>(payload: &[u8], ok: bool) -> Result<serde_json::Value, String> {
    fn convert<T: Wire>(payload: &[u8]) -> Result<serde_json::Value, String> {
        let v: T = postcard::from_bytes(payload)
            .map_err(|e| format!("the reply does not decode as the result type: {e}"))?;
        serde_json::to_value(v).map_err(|e| format!("the reply cannot be shown as JSON: {e}"))
    }
    if ok {
        convert::<S::Ok>(payload)
    } else {
        convert::<S::Err>(payload)
    }
}

fn ok_to_json_bytes<S: Service>(payload: &[u8]) -> Result<Vec<u8>, String> {
    let v: S::Ok = postcard::from_bytes(payload)
        .map_err(|e| format!("the reply does not decode as the result type: {e}"))?;
    let mut out = Vec::with_capacity(payload.len() * 2 + 16);
    serde_json::to_writer(&mut out, &v)
        .map_err(|e| format!("the reply cannot be shown as JSON: {e}"))?;
    Ok(out)
}

/// Argument tuples that can be read from a JSON object of named arguments.
pub trait NamedArgs: Sized {
    /// Read `names[i]` from `value` into the i-th element, with an error that names the
    /// field that is wrong and why.
    fn from_named_json(names: &[&str], value: serde_json::Value) -> Result<Self, String>;
}

fn take_field<T: DeserializeOwned>(
    map: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<T, String> {
    match map.remove(name) {
        Some(v) => serde_json::from_value(v).map_err(|e| format!("field `{name}`: {e}")),
        // A missing field is fine when the type accepts null (an `Option`).
        None => serde_json::from_value(serde_json::Value::Null)
            .map_err(|_| format!("missing field `{name}`")),
    }
}

fn into_object(
    names: &[&str],
    value: serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match value {
        serde_json::Value::Object(map) => Ok(map),
        serde_json::Value::Null if names.is_empty() => Ok(serde_json::Map::new()),
        other => Err(format!(
            "expected a JSON object of named arguments ({}), found {}",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            json_kind(&other)
        )),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn reject_unknown(
    names: &[&str],
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    match map.keys().next() {
        None => Ok(()),
        Some(extra) => Err(format!(
            "unknown field `{extra}`; the arguments are {}",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )),
    }
}

macro_rules! named_args_tuple {
    ($($t:ident $i:tt),*) => {
        impl<$($t: DeserializeOwned),*> NamedArgs for ($($t,)*) {
            #[allow(unused_mut, unused_variables)]
            fn from_named_json(names: &[&str], value: serde_json::Value) -> Result<Self, String> {
                let mut map = into_object(names, value)?;
                let tuple = ($(take_field::<$t>(&mut map, names.get($i).copied().unwrap_or("?"))?,)*);
                reject_unknown(names, &map)?;
                Ok(tuple)
            }
        }
    };
}

named_args_tuple!();
named_args_tuple!(A 0);
named_args_tuple!(A 0, B 1);
named_args_tuple!(A 0, B 1, C 2);
named_args_tuple!(A 0, B 1, C 2, D 3);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4, F 5);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
named_args_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

/// Probe for a JSON schema: [`ViaJsonSchema`] when the type implements `JsonSchema`,
/// [`ViaAnySchema`] (an unconstrained schema) otherwise. Used by generated code as
/// `(&SchemaProbe::<T>::new()).colony_schema(gen)`.
pub struct SchemaProbe<T: ?Sized>(std::marker::PhantomData<T>);

impl<T: ?Sized> SchemaProbe<T> {
    /// A probe for `T`.
    pub const fn new() -> Self {
        SchemaProbe(std::marker::PhantomData)
    }
}

impl<T: ?Sized> Default for SchemaProbe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The schema of a type that implements `schemars::JsonSchema`.
pub trait ViaJsonSchema {
    /// The type's schema.
    fn colony_schema(&self, generator: &mut SchemaGenerator) -> Schema;
}

impl<T: schemars::JsonSchema + ?Sized> ViaJsonSchema for &SchemaProbe<T> {
    fn colony_schema(&self, generator: &mut SchemaGenerator) -> Schema {
        generator.subschema_for::<T>()
    }
}

/// The fallback for a type without `JsonSchema`: any JSON value.
pub trait ViaAnySchema {
    /// An unconstrained schema that says how to get a precise one.
    fn colony_schema(&self, generator: &mut SchemaGenerator) -> Schema;
}

impl<T: ?Sized> ViaAnySchema for SchemaProbe<T> {
    fn colony_schema(&self, _generator: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "description": format!(
                "`{}` has no JSON schema; derive `schemars::JsonSchema` on it for a precise one",
                std::any::type_name::<T>()
            )
        })
    }
}
