//! One service's entry: [`ServiceEntry`] and the type-erased handlers it carries.
//!
//! Owns: [`ServiceEntry`] and [`entry`], which builds one per service for generated code;
//! running a postcard request through the body ([`encode_result`]); turning named JSON
//! arguments into a postcard request ([`json_value_of_args`] and the `Value` and bytes
//! paths) and postcard results into JSON. Promises: the bytes path gives the same payload,
//! or the same error, as the `Value` path; integral floats count as integers, as JSON
//! Schema says. Must not touch: how entries are found (`registry`), or how a JSON object
//! is read into a tuple (`named_args` and `named_json`).

use std::sync::OnceLock;

use schemars::SchemaGenerator;

use super::{BoxFuture, NamedArgs, Options, Outcome, Schemas, Service, Wire, registry};
use crate::error::CallError;

/// The static description of one `#[microservice]` function, emitted by the macro.
///
/// Constructed only by generated code, through [`entry`]. Each one lives in the
/// `SERVICES` table.
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
    /// as `json_value_of_args` and then `json_to_args`, without building the
    /// `serde_json::Value` when the bytes are a valid request.
    pub json_bytes_to_args: fn(&[u8]) -> Result<Vec<u8>, String>,
    /// Turn a postcard result payload into JSON (`Ok` when the flag is true, else `Err`).
    pub result_to_json: fn(&[u8], bool) -> Result<serde_json::Value, String>,
    /// Turn a postcard `Ok` payload straight into JSON text (no `serde_json::Value` on the
    /// way), for answers on the hot path.
    pub ok_to_json_bytes: fn(&[u8]) -> Result<Vec<u8>, String>,
    /// JSON schemas of the arguments and results.
    pub schemas: fn(&mut SchemaGenerator) -> Schemas,
    /// The HTTP status of an encoded error of the service's own type, when that type
    /// implements [`crate::HttpError`].
    pub error_status: fn(&[u8]) -> Option<super::ErrorStatus>,
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

/// Build the entry of service `S`; called in a `static` by generated code.
pub const fn entry<S: Service>(
    name: &'static str,
    arg_names: &'static [&'static str],
    options: Options,
    schemas: fn(&mut SchemaGenerator) -> Schemas,
    error_status: fn(&[u8]) -> Option<super::ErrorStatus>,
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
        error_status,
        id: OnceLock::new(),
    }
}

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
pub(crate) fn encode_result<S: Service>(result: &Result<S::Ok, S::Err>) -> Outcome {
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
pub(crate) fn json_value_of_args(bytes: &[u8]) -> Result<serde_json::Value, String> {
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
