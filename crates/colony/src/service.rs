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

mod named_json;

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
    /// Turn the bytes of a JSON object of named arguments straight into a postcard request
    /// payload, for request bodies on the hot path: the same payload, or the same error,
    /// as [`json_value_of_args`] and then `json_to_args`, without building the
    /// `serde_json::Value` when the bytes are a valid request.
    pub json_bytes_to_args: fn(&[u8]) -> Result<Vec<u8>, String>,
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
        json_bytes_to_args: json_bytes_to_args::<S>,
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

fn json_bytes_to_args<S: Service>(bytes: &[u8]) -> Result<Vec<u8>, String>
where
    S::Args: NamedArgs,
{
    let names = S::entry().arg_names;
    let args = match S::Args::from_named_json_bytes(names, bytes) {
        Some(args) => args,
        // Not a valid request, or one the direct reading leaves to the `Value` path: that
        // path decides, and names what is wrong.
        None => S::Args::from_named_json(names, json_value_of_args(bytes)?)?,
    };
    // Presized: postcard is rarely longer than the JSON it came from, and a buffer grown
    // from empty would cost more than the reading saves.
    let buffer = Vec::with_capacity(bytes.len() + 16);
    postcard::to_extend(&args, buffer)
        .map_err(|e| format!("the arguments could not be encoded: {e}"))
}

/// The JSON value of the bytes of a JSON object of named arguments, as
/// [`ServiceEntry::json_bytes_to_args`] reads them: nothing but whitespace, or `null`,
/// is an empty object, and integral floats are integers (`7.0` is `7`: JSON Schema counts
/// it as an integer, and a client may write every number as a float), as the gateway has
/// always read a body. Fails with a message that says why the JSON is not valid.
pub fn json_value_of_args(bytes: &[u8]) -> Result<serde_json::Value, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Object(serde_json::Map::new()));
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("the arguments are not valid JSON: {e}"))?;
    if value.is_null() {
        value = serde_json::Value::Object(serde_json::Map::new());
    }
    integral_floats_to_integers(&mut value);
    Ok(value)
}

/// JSON Schema counts `2.0` as an integer, serde does not: make such numbers integers, so
/// that a client that writes every number as a float (JavaScript's can) fills a `u32`.
pub(crate) fn integral_floats_to_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) {
                if f >= i64::MIN as f64 && f < i64::MAX as f64 {
                    *value = Value::from(f as i64);
                } else if f >= 0.0 && f < u64::MAX as f64 {
                    *value = Value::from(f as u64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
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

    /// Read the arguments straight from the bytes of a JSON object of named arguments (as
    /// [`json_value_of_args`] reads them), without a `serde_json::Value` on the way.
    /// `Some` only with exactly the arguments `from_named_json` gives for that value;
    /// `None` for any error, and for the rare input it leaves to `from_named_json` to be
    /// sure (see the `named_json` module): then call that, which decides and words the
    /// error.
    fn from_named_json_bytes(names: &[&str], bytes: &[u8]) -> Option<Self>;
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

            fn from_named_json_bytes(names: &[&str], bytes: &[u8]) -> Option<Self> {
                named_json::read(bytes, named_json::ArgsVisitor::<Self>::new(names))
            }
        }

        impl<'de, $($t: DeserializeOwned),*> serde::de::Visitor<'de>
            for named_json::ArgsVisitor<'_, ($($t,)*)>
        {
            type Value = ($($t,)*);

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of named arguments")
            }

            #[allow(unused_mut, unused_variables, clippy::match_single_binding)]
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut slots: ($(Option<$t>,)*) = Default::default();
                // A key given twice: the last one counts, as in a `serde_json::Value`.
                while let Some(index) = named_json::next_arg(&mut map, self.names)? {
                    match index {
                        $($i => slots.$i = Some(named_json::arg_value::<$t, M>(&mut map)?),)*
                        _ => return Err(serde::de::Error::custom("no such argument")),
                    }
                }
                Ok(($(
                    match slots.$i {
                        Some(value) => value,
                        None => named_json::missing::<$t, M::Error>()?,
                    },
                )*))
            }

            fn visit_unit<Failure: serde::de::Error>(self) -> Result<Self::Value, Failure> {
                Ok(($(named_json::missing::<$t, Failure>()?,)*))
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    fn no_schemas(_: &mut SchemaGenerator) -> Schemas {
        Schemas {
            args: Vec::new(),
            ok: schemars::json_schema!({}),
            err: schemars::json_schema!({}),
        }
    }

    /// A service of these arguments, never run: only its entry's conversions are used.
    macro_rules! test_service {
        ($service:ident, $entry:ident, $args:ty, [$($name:literal),*]) => {
            struct $service;
            static $entry: ServiceEntry = entry::<$service>(
                concat!("test::", stringify!($service)),
                &[$($name),*],
                Options::DEFAULT,
                no_schemas,
            );
            impl Service for $service {
                type Args = $args;
                type Ok = ();
                type Err = crate::ServiceError;
                fn entry() -> &'static ServiceEntry {
                    &$entry
                }
                fn run(_: $args) -> BoxFuture<Result<(), crate::ServiceError>> {
                    Box::pin(async { Ok(()) })
                }
            }
        };
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Line {
        sku: String,
        qty: u32,
        #[serde(default)]
        note: Option<String>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Dot,
        Circle(u16),
        Pair(i32, i32),
        Rect { w: u32, h: u32 },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(untagged)]
    enum Loose {
        Int(i64),
        Float(f64),
        Text(String),
        Point { x: u32, y: u32 },
        Map(BTreeMap<String, i64>),
        List(Vec<Loose>),
        Nothing(()),
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "kind")]
    enum Tagged {
        A { n: u8 },
        B { s: String },
    }

    test_service!(Echo, ECHO, (String,), ["payload"]);
    test_service!(None0, NONE, (), []);
    test_service!(
        Order,
        ORDER,
        (String, u32, Option<i64>, Vec<f64>, Option<Line>),
        ["sku", "qty", "limit", "weights", "line"]
    );
    test_service!(
        Kinds,
        KINDS,
        (Shape, Option<Tagged>, BTreeMap<u32, String>, Option<bool>),
        ["shape", "tagged", "by_id", "flag"]
    );
    test_service!(
        Anything,
        ANYTHING,
        (Loose, Option<serde_json::Value>),
        ["loose", "any"]
    );
    test_service!(
        Wide,
        WIDE,
        (i128, u128, f32, char, Option<()>),
        ["big", "ubig", "small", "letter", "unit"]
    );
    test_service!(Optional, OPTIONAL, (Option<u8>, Option<String>), ["a", "b"]);

    const ENTRIES: [&ServiceEntry; 7] = [&ECHO, &NONE, &ORDER, &KINDS, &ANYTHING, &WIDE, &OPTIONAL];

    /// The `Value` path: what `json_bytes_to_args` must agree with.
    fn by_value(entry: &ServiceEntry, body: &[u8]) -> Result<Vec<u8>, String> {
        (entry.json_to_args)(json_value_of_args(body)?)
    }

    /// Whether the direct reading took these bytes itself (rather than the `Value` path).
    fn direct<S: Service>(body: &str) -> bool
    where
        S::Args: NamedArgs,
    {
        S::Args::from_named_json_bytes(S::entry().arg_names, body.as_bytes()).is_some()
    }

    fn same(entry: &ServiceEntry, body: &str) -> Result<Vec<u8>, String> {
        let direct = (entry.json_bytes_to_args)(body.as_bytes());
        assert_eq!(
            direct,
            by_value(entry, body.as_bytes()),
            "{} on {body}",
            entry.name
        );
        direct
    }

    #[test]
    fn valid_bodies_are_read_directly_into_the_same_payload() {
        // The entry, whether its direct reading takes a body, and a valid body.
        type Case = (&'static ServiceEntry, fn(&str) -> bool, &'static str);
        let bodies: [Case; 14] = [
            (&ECHO, direct::<Echo>, r#"{"payload": "hi \u00e9\n"}"#),
            (&NONE, direct::<None0>, "{}"),
            (&NONE, direct::<None0>, " null "),
            (&NONE, direct::<None0>, ""),
            (&OPTIONAL, direct::<Optional>, " \x0c\n"),
            (&OPTIONAL, direct::<Optional>, r#"{"b": null}"#),
            (
                &ORDER,
                direct::<Order>,
                r#"{"qty": 7.0, "sku": "a", "weights": [1, 2.5, -3.0, 1e2], "line": {"qty": 1, "sku": "b", "extra": [{"deep": [1, {}]}]}}"#,
            ),
            (
                &ORDER,
                direct::<Order>,
                r#"{"sku": "a", "qty": 1, "limit": -0.0, "weights": []}"#,
            ),
            (
                &KINDS,
                direct::<Kinds>,
                r#"{"shape": "Dot", "by_id": {"7": "x", "1": "y"}}"#,
            ),
            (
                &KINDS,
                direct::<Kinds>,
                r#"{"shape": {"Rect": {"h": 2.0, "w": 1}}, "tagged": {"s": "x", "kind": "B"}, "by_id": {}}"#,
            ),
            (
                &KINDS,
                direct::<Kinds>,
                r#"{"shape": {"Pair": [1, -2]}, "by_id": {}, "flag": true}"#,
            ),
            (
                &ANYTHING,
                direct::<Anything>,
                r#"{"loose": [1.0, 1.5, "s", {"y": 2, "x": 1.0}, {"b": 1, "a": 2.0}, null], "any": {"z": 1.0, "a": [1e3, -2.0, 0.5]}}"#,
            ),
            (
                &WIDE,
                direct::<Wide>,
                r#"{"big": -170141183460469231731687303715884105728, "ubig": 12.0, "small": 0.1, "letter": "x", "unit": null}"#,
            ),
            (
                &WIDE,
                direct::<Wide>,
                r#"{"big": 1, "ubig": 2, "small": 3, "letter": "é"}"#,
            ),
        ];
        for (entry, direct, body) in bodies {
            let outcome = same(entry, body);
            // The big `i128` is a float to the `Value` path, so not an integer: an error.
            if !body.contains("1701411834604") {
                assert!(outcome.is_ok(), "{body}: {outcome:?}");
                assert!(direct(body), "{body} was left to the Value path");
            }
        }
    }

    #[test]
    fn bad_bodies_get_the_value_paths_errors() {
        let cases: [(&ServiceEntry, &str, &str); 12] = [
            (
                &ECHO,
                r#"{"payload": 7}"#,
                "field `payload`: invalid type: integer `7`, expected a string",
            ),
            (&ECHO, "{}", "missing field `payload`"),
            (&ECHO, "null", "missing field `payload`"),
            (&ECHO, "", "missing field `payload`"),
            (
                &ECHO,
                r#"{"payload": "a", "size": 2}"#,
                "unknown field `size`; the arguments are `payload`",
            ),
            (
                &ECHO,
                r#"["a"]"#,
                "expected a JSON object of named arguments (`payload`), found an array",
            ),
            (
                &NONE,
                "7",
                "expected a JSON object of named arguments (none), found a number",
            ),
            (
                &NONE,
                r#"{"x": 1}"#,
                "unknown field `x`; the arguments are none",
            ),
            (
                &ECHO,
                r#"{"payload": "a""#,
                "the arguments are not valid JSON: EOF while parsing an object at line 1 column 15",
            ),
            (
                &ECHO,
                r#"{"payload": "a"} x"#,
                "the arguments are not valid JSON: trailing characters at line 1 column 18",
            ),
            (
                &ORDER,
                r#"{"sku": "a", "qty": 7.5}"#,
                "field `qty`: invalid type: floating point `7.5`, expected u32",
            ),
            (
                &ORDER,
                r#"{"qty": 1, "sku": 2, "bogus": 1}"#,
                "field `sku`: invalid type: integer `2`, expected a string",
            ),
        ];
        for (entry, body, expected) in cases {
            assert_eq!(same(entry, body), Err(expected.to_owned()), "{body}");
        }
    }

    #[test]
    fn a_key_given_twice_counts_once_with_its_last_value() {
        // At the top level the direct reading keeps the last value itself.
        let body = r#"{"payload": "first", "payload": "last"}"#;
        assert!(direct::<Echo>(body));
        assert_eq!(
            same(&ECHO, body),
            postcard::to_stdvec(&("last",)).map_err(|e| e.to_string())
        );
        // Even when the first one would not do.
        assert!(same(&ECHO, r#"{"payload": 1, "payload": "last"}"#).is_ok());
        // Inside an argument, a repeated key is left to the `Value` path, which keeps the last.
        let body = r#"{"sku": "a", "qty": 1, "line": {"sku": "x", "qty": 1, "qty": 2}}"#;
        assert!(!direct::<Order>(body));
        let last = r#"{"sku": "a", "qty": 1, "line": {"sku": "x", "qty": 2}}"#;
        assert_eq!(same(&ORDER, body), same(&ORDER, last));
        let body = r#"{"loose": {"x": 1, "y": 2, "x": 3}}"#;
        assert_eq!(
            same(&ANYTHING, body),
            same(&ANYTHING, r#"{"loose": {"x": 3, "y": 2}}"#)
        );
    }

    #[test]
    fn what_the_direct_reading_cannot_match_is_left_to_the_value_path() {
        // A struct variant from an array: text would take it, a `Value` does not.
        assert!(same(&KINDS, r#"{"shape": {"Rect": [1, 2]}, "by_id": {}}"#).is_err());
        // Numeric keys, escaped keys and objects of many keys.
        same(&KINDS, r#"{"shape": "Dot", "by_id": {"-0": "x"}}"#).ok();
        same(&KINDS, r#"{"shape": "Dot", "by_id": {"1.0": "x"}}"#).ok();
        same(&ANYTHING, r#"{"loose": {"\u0078": 1, "y": 2}}"#).ok();
        let many: Vec<String> = (0..100).map(|i| format!("\"k{i}\": {i}")).collect();
        let body = format!(r#"{{"loose": {{{}}}}}"#, many.join(", "));
        assert!(same(&ANYTHING, &body).is_ok());
        assert!(!direct::<Anything>(&body));
        // Lone surrogates are not valid JSON strings to a `Value`.
        assert!(same(&ECHO, r#"{"payload": "\ud800"}"#).is_err());
        // Nesting deeper than `serde_json`'s limit, even in a skipped value.
        let deep = format!(
            r#"{{"sku": "a", "qty": 1, "line": {{"sku": "b", "qty": 1, "x": {}1{}}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(same(&ORDER, &deep).is_err());
    }

    /// A JSON text as a client may write it: keys may repeat, numbers keep their spelling.
    #[derive(Debug, Clone)]
    enum Text {
        Null,
        Bool(bool),
        Number(String),
        Str(String),
        Array(Vec<Text>),
        Object(Vec<(String, Text)>),
    }

    impl Text {
        fn render(&self, out: &mut String) {
            match self {
                Text::Null => out.push_str("null"),
                Text::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                Text::Number(n) => out.push_str(n),
                Text::Str(s) => out.push_str(&serde_json::Value::from(s.as_str()).to_string()),
                Text::Array(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        item.render(out);
                    }
                    out.push(']');
                }
                Text::Object(entries) => {
                    out.push('{');
                    for (i, (key, value)) in entries.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&serde_json::Value::from(key.as_str()).to_string());
                        out.push(':');
                        value.render(out);
                    }
                    out.push('}');
                }
            }
        }
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u8>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            (-300i32..300).prop_map(|n| format!("{n}.0")),
            (-300i32..300).prop_map(|n| format!("{n}.5")),
            Just("-0".to_owned()),
            Just("-0.0".to_owned()),
            Just("1e2".to_owned()),
            Just("2.5E-1".to_owned()),
            Just("18446744073709551616".to_owned()),
            Just("9223372036854775808.0".to_owned()),
            Just("1e300".to_owned()),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("x".to_owned()),
            Just("y".to_owned()),
            Just("n".to_owned()),
            Just("s".to_owned()),
            Just("kind".to_owned()),
            Just("A".to_owned()),
            Just("B".to_owned()),
            Just("Rect".to_owned()),
            Just("w".to_owned()),
            Just("h".to_owned()),
            Just("sku".to_owned()),
            Just("qty".to_owned()),
            Just("7".to_owned()),
            "[a-c0-9é]{0,3}",
        ]
    }

    fn text() -> impl Strategy<Value = Text> {
        let leaf = prop_oneof![
            Just(Text::Null),
            any::<bool>().prop_map(Text::Bool),
            number().prop_map(Text::Number),
            prop_oneof![
                Just("Dot".to_owned()),
                Just("x".to_owned()),
                "[a-zé\"\\\\]{0,4}"
            ]
            .prop_map(Text::Str),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Text::Array),
                prop::collection::vec((key(), inner), 0..4).prop_map(Text::Object),
            ]
        })
    }

    fn small() -> impl Strategy<Value = Text> {
        prop_oneof![
            (0u8..20).prop_map(|n| Text::Number(n.to_string())),
            (0u8..20).prop_map(|n| Text::Number(format!("{n}.0"))),
            number().prop_map(Text::Number),
        ]
    }

    fn word() -> impl Strategy<Value = Text> {
        "[a-zé\"\\\\]{0,4}".prop_map(Text::Str)
    }

    fn object(entries: Vec<(&'static str, BoxedStrategy<Text>)>) -> BoxedStrategy<Text> {
        let entries: Vec<_> = entries
            .into_iter()
            .map(|(k, v)| (prop::bool::weighted(0.95), Just(k.to_owned()), v))
            .collect();
        let extra = prop_oneof![
            4 => Just(Vec::new()),
            1 => prop::collection::vec((key(), text()), 1..3),
        ];
        (entries, extra)
            .prop_map(|(entries, extra)| {
                let mut all: Vec<(String, Text)> = entries
                    .into_iter()
                    .filter(|e| e.0)
                    .map(|e| (e.1, e.2))
                    .collect();
                all.extend(extra);
                all
            })
            .prop_shuffle()
            .prop_map(Text::Object)
            .boxed()
    }

    /// A value that an argument of this name is likely to take (or nearly).
    fn plausible(name: &str) -> BoxedStrategy<Text> {
        let numbers = || prop::collection::vec(small(), 0..4).prop_map(Text::Array);
        match name {
            "payload" | "sku" | "b" => word().boxed(),
            "qty" | "big" | "ubig" | "small" | "a" | "limit" => small().boxed(),
            "weights" => numbers().boxed(),
            "line" => object(vec![
                ("sku", word().boxed()),
                ("qty", small().boxed()),
                ("note", prop_oneof![Just(Text::Null), word()].boxed()),
            ]),
            "shape" => prop_oneof![
                Just(Text::Str("Dot".to_owned())),
                small().prop_map(|n| Text::Object(vec![("Circle".to_owned(), n)])),
                numbers().prop_map(|n| Text::Object(vec![("Pair".to_owned(), n)])),
                object(vec![("w", small().boxed()), ("h", small().boxed())])
                    .prop_map(|o| Text::Object(vec![("Rect".to_owned(), o)])),
            ]
            .boxed(),
            "tagged" => prop_oneof![
                object(vec![
                    ("kind", Just(Text::Str("A".to_owned())).boxed()),
                    ("n", small().boxed())
                ]),
                object(vec![
                    ("kind", Just(Text::Str("B".to_owned())).boxed()),
                    ("s", word().boxed())
                ]),
            ]
            .boxed(),
            "by_id" => prop::collection::vec(
                (
                    prop_oneof![
                        Just("7"),
                        Just("12"),
                        Just("-0"),
                        Just("1.0"),
                        Just("01"),
                        Just("-3")
                    ],
                    word(),
                ),
                0..3,
            )
            .prop_map(|e| Text::Object(e.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
            .boxed(),
            "flag" => prop_oneof![any::<bool>().prop_map(Text::Bool), Just(Text::Null)].boxed(),
            "letter" => "[a-zé]{1,2}".prop_map(Text::Str).boxed(),
            "unit" => Just(Text::Null).boxed(),
            _ => text().boxed(),
        }
    }

    /// A body for `entry`: mostly its own arguments with likely values, sometimes other
    /// keys, repeated keys, or any JSON at all.
    fn body(entry: &'static ServiceEntry) -> impl Strategy<Value = Text> {
        let args = entry
            .arg_names
            .iter()
            .map(|&n| (n, prop_oneof![9 => plausible(n), 1 => text()].boxed()))
            .collect();
        prop_oneof![
            8 => object(args),
            1 => text(),
        ]
    }

    fn any_entry_and_body() -> impl Strategy<Value = (&'static ServiceEntry, String, usize)> {
        prop::sample::select(ENTRIES.to_vec()).prop_flat_map(|entry| {
            (Just(entry), body(entry), any::<usize>()).prop_map(|(entry, body, cut)| {
                let mut text = String::new();
                body.render(&mut text);
                (entry, text, cut)
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn the_bytes_give_what_the_value_gives((entry, body, cut) in any_entry_and_body()) {
            let direct = (entry.json_bytes_to_args)(body.as_bytes());
            prop_assert_eq!(&direct, &by_value(entry, body.as_bytes()), "{} on {}", entry.name, body);
            // Cut short, or with a byte changed: nearly always invalid, the same error.
            let at = cut % (body.len() + 1);
            if body.is_char_boundary(at) {
                let short = &body.as_bytes()[..at];
                prop_assert_eq!((entry.json_bytes_to_args)(short), by_value(entry, short));
                let mut changed = body.clone().into_bytes();
                if let Some(b) = changed.get_mut(at) {
                    *b = b"{}[],:\"0 -.e"[cut % 12];
                }
                prop_assert_eq!((entry.json_bytes_to_args)(&changed), by_value(entry, &changed));
            }
        }
    }
}
