//! The gateway's routes: which HTTP method and path reaches which service, and how the
//! path, query and body of a request become the service's named arguments.
//!
//! Owns: [`Api`] (every route with its argument specs, the JSON Schema definitions they
//! refer to, and the path matcher). Promises: routes are checked when the gateway starts
//! (a duplicate or unmatchable route is an error naming the services, never a panic); a
//! request's arguments are read by name and bad input is a message naming the field.

use std::collections::HashMap;

use hyper::Method;
use serde_json::{Map, Value};

use crate::service::{self, ServiceEntry};

/// A route of the gateway.
#[derive(Debug)]
pub(super) struct Route {
    pub(super) entry: &'static ServiceEntry,
    pub(super) method: Method,
    /// The path as declared, with `{name}` parameters.
    pub(super) path: String,
    /// One spec per argument, in declaration order.
    pub(super) args: Vec<ArgSpec>,
    /// The schema of a successful result.
    pub(super) ok: Value,
}

/// Where an argument is documented to come from; the gateway reads any argument from the
/// query or the body by name, and path arguments from the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Path,
    Query,
    Body,
}

/// One argument of a route.
#[derive(Debug)]
pub(super) struct ArgSpec {
    pub(super) name: &'static str,
    /// Its schema as the service declares it (may allow null).
    pub(super) schema: Value,
    /// Its schema without `null`, for a URL parameter, whose absence means null.
    pub(super) param_schema: Value,
    /// It may be left out: its type accepts null (an `Option`).
    pub(super) optional: bool,
    /// A URL value is taken as a string as it is, not parsed as JSON first.
    pub(super) stringy: bool,
    /// An object or array: a URL value must be JSON.
    pub(super) structured: bool,
    pub(super) source: Source,
}

/// What a request's method and path reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// The HTML page listing the routes.
    Index,
    /// The OpenAPI document.
    OpenApi,
    /// `routes[i]`.
    Service(usize),
}

/// The result of matching a request.
#[derive(Debug)]
pub(super) enum Lookup<'p> {
    Found(Target, Vec<(&'p str, &'p str)>),
    /// The path exists with these other methods.
    WrongMethod(Vec<Method>),
    NotFound,
}

/// Every route of the gateway.
pub(super) struct Api {
    pub(super) routes: Vec<Route>,
    /// Schema definitions that the argument and result schemas refer to
    /// (`#/components/schemas/NAME`).
    pub(super) definitions: Map<String, Value>,
    paths: matchit::Router<Vec<(Method, Target)>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

/// Where schema references point in the gateway's OpenAPI document.
pub(super) const DEFINITIONS_PATH: &str = "/components/schemas";

/// The default route of a service: `POST /` and its name with `::` as `/`.
pub(super) fn default_path(name: &str) -> String {
    format!("/{}", name.replace("::", "/"))
}

impl Api {
    /// The routes of every exposed service in the binary.
    pub(super) fn build() -> Result<Api, String> {
        Api::from_entries(
            service::registry()
                .iter()
                .copied()
                .filter(|e| e.options.exposed),
        )
    }

    /// The routes of `entries`.
    pub(super) fn from_entries(
        entries: impl IntoIterator<Item = &'static ServiceEntry>,
    ) -> Result<Api, String> {
        let mut settings = schemars::generate::SchemaSettings::draft2020_12();
        settings.definitions_path = DEFINITIONS_PATH.into();
        settings.meta_schema = None;
        let mut generator = settings.into_generator();
        let mut routes = Vec::new();
        for entry in entries {
            let schemas = (entry.schemas)(&mut generator);
            let (method, path, explicit) = match entry.options.http {
                Some(http) => {
                    let (method, path) = http.split_once(' ').ok_or_else(|| {
                        format!(
                            "service `{}` has a malformed `http` route {http:?}",
                            entry.name
                        )
                    })?;
                    let method = Method::from_bytes(method.as_bytes()).map_err(|_| {
                        format!(
                            "service `{}` has an unknown method in `http = {http:?}`",
                            entry.name
                        )
                    })?;
                    (method, path.to_owned(), true)
                }
                None => (Method::POST, default_path(entry.name), false),
            };
            let in_path = path_params(&path);
            let body_allowed = !explicit || !matches!(method, Method::GET | Method::DELETE);
            let args = entry
                .arg_names
                .iter()
                .zip(schemas.args)
                .map(|(name, schema)| {
                    let source = if in_path.contains(name) {
                        Source::Path
                    } else if body_allowed {
                        Source::Body
                    } else {
                        Source::Query
                    };
                    ArgSpec {
                        name,
                        schema: Value::from(schema),
                        param_schema: Value::Null,
                        optional: false,
                        stringy: false,
                        structured: false,
                        source,
                    }
                })
                .collect();
            routes.push(Route {
                entry,
                method,
                path,
                args,
                ok: Value::from(schemas.ok),
            });
        }
        let mut definitions = generator.take_definitions(true);
        for def in definitions.values_mut() {
            add_integer_bounds(def);
        }
        for route in &mut routes {
            add_integer_bounds(&mut route.ok);
            for arg in &mut route.args {
                add_integer_bounds(&mut arg.schema);
                let (param_schema, optional) = without_null(&arg.schema, &definitions);
                arg.stringy = is_stringy(&param_schema, &definitions, 0);
                arg.structured = is_structured(&param_schema, &definitions, 0);
                arg.param_schema = param_schema;
                arg.optional = optional;
            }
        }
        let mut api = Api {
            routes,
            definitions,
            paths: matchit::Router::new(),
        };
        api.index()?;
        Ok(api)
    }

    /// Build the path matcher, refusing duplicates and paths it cannot match.
    fn index(&mut self) -> Result<(), String> {
        // Each path with its methods, what they reach, and who owns them (for messages).
        type Owned = (Method, Target, String);
        let mut by_path: Vec<(String, Vec<Owned>)> = vec![
            (
                "/".to_owned(),
                vec![(Method::GET, Target::Index, "the route list".to_owned())],
            ),
            (
                "/openapi.json".to_owned(),
                vec![(
                    Method::GET,
                    Target::OpenApi,
                    "the OpenAPI document".to_owned(),
                )],
            ),
        ];
        for (i, route) in self.routes.iter().enumerate() {
            let owner = format!("service `{}`", route.entry.name);
            let slot = match by_path.iter_mut().find(|(p, _)| *p == route.path) {
                Some((_, slot)) => slot,
                None => {
                    by_path.push((route.path.clone(), Vec::new()));
                    &mut by_path.last_mut().expect("just pushed").1
                }
            };
            if let Some((_, _, other)) = slot.iter().find(|(m, _, _)| *m == route.method) {
                return Err(format!(
                    "two routes are `{} {}`: {other} and {owner}; give one of them another \
                     `http` route",
                    route.method, route.path
                ));
            }
            slot.push((route.method.clone(), Target::Service(i), owner));
        }
        let owners: HashMap<String, String> = by_path
            .iter()
            .map(|(p, slot)| {
                let names: Vec<&str> = slot.iter().map(|(_, _, o)| o.as_str()).collect();
                (p.clone(), names.join(", "))
            })
            .collect();
        for (path, slot) in by_path {
            let methods = slot.into_iter().map(|(m, t, _)| (m, t)).collect();
            self.paths.insert(path.clone(), methods).map_err(|e| {
                let owner = owners.get(&path).map_or("", String::as_str);
                match e {
                    matchit::InsertError::Conflict { with } => format!(
                        "the route `{path}` of {owner} overlaps `{with}` of {}: a request could \
                         match both; change one of their `http` paths",
                        owners.get(&with).map_or("another route", String::as_str)
                    ),
                    other => format!(
                        "the route `{path}` of {owner} cannot be routed: {other} (a parameter \
                         must be a whole path segment, or end one, as in `/items/{{id}}` or \
                         `/v-{{version}}`)"
                    ),
                }
            })?;
        }
        Ok(())
    }

    /// Match a request's method and path.
    pub(super) fn lookup<'p>(&'p self, method: &Method, path: &'p str) -> Lookup<'p> {
        let Ok(found) = self.paths.at(path) else {
            return Lookup::NotFound;
        };
        let wanted = if *method == Method::HEAD {
            // HEAD reads the gateway's own pages like GET.
            found
                .value
                .iter()
                .find(|(m, t)| *m == Method::GET && !matches!(t, Target::Service(_)))
        } else {
            found.value.iter().find(|(m, _)| m == method)
        };
        match wanted {
            Some((_, target)) => Lookup::Found(*target, found.params.iter().collect()),
            None => Lookup::WrongMethod(found.value.iter().map(|(m, _)| m.clone()).collect()),
        }
    }
}

/// The `{name}` parameters of a path.
pub(super) fn path_params(path: &str) -> Vec<&str> {
    let mut params = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        params.push(&after[..close]);
        rest = &after[close + 1..];
    }
    params
}

/// A request's arguments as the postcard payload of its call: [`gather_args`], then the
/// service's `json_to_args`.
///
/// When the body alone holds them (no path parameters, no query), its bytes are read
/// straight into the argument tuple (`json_bytes_to_args`), with no `serde_json::Value`
/// on the way; for a bad request the error is still the one `gather_args` or
/// `json_to_args` words. Fails with a message for the client (the gateway answers 400).
pub(super) fn payload(
    route: &Route,
    path: &[(&str, &str)],
    query: Option<&str>,
    body: &[u8],
) -> Result<Vec<u8>, String> {
    let entry = route.entry;
    let from_body_alone = path.is_empty()
        && query.is_none_or(str::is_empty)
        && route.args.iter().all(|a| a.source != Source::Path);
    if !from_body_alone {
        return (entry.json_to_args)(gather_args(route, path, query, body)?);
    }
    match (entry.json_bytes_to_args)(body) {
        Ok(payload) => Ok(payload),
        // The same value as `gather_args` makes, so the same error, unless the body itself
        // is at fault, which `gather_args` words for a body.
        Err(reason) => {
            gather_args(route, path, query, body)?;
            Err(reason)
        }
    }
}

/// A request's arguments, read by name from its path parameters, query and body.
///
/// Fails with a message for the client (the gateway answers 400 with it).
pub(super) fn gather_args(
    route: &Route,
    path: &[(&str, &str)],
    query: Option<&str>,
    body: &[u8],
) -> Result<Value, String> {
    let names = || {
        let names: Vec<String> = route.args.iter().map(|a| format!("`{}`", a.name)).collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    let mut args = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map,
            Ok(Value::Null) => Map::new(),
            Ok(other) => {
                return Err(format!(
                    "the body must be a JSON object of named arguments ({}), not {}",
                    names(),
                    kind(&other)
                ));
            }
            Err(e) => return Err(format!("the body is not valid JSON: {e}")),
        }
    };
    for (key, _) in &args {
        if route
            .args
            .iter()
            .any(|a| a.name == key && a.source == Source::Path)
        {
            return Err(format!(
                "argument `{key}` is given in the body, but the route `{} {}` takes it from \
                 the path",
                route.method, route.path
            ));
        }
    }
    if let Some(query) = query {
        let in_body: Vec<String> = args.keys().cloned().collect();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode_query(key)?;
            let value = decode_query(value)?;
            let Some(spec) = route.args.iter().find(|a| a.name == key) else {
                return Err(format!(
                    "unknown query parameter `{key}`; the arguments are {}",
                    names()
                ));
            };
            if spec.source == Source::Path {
                return Err(format!(
                    "argument `{key}` is given in the query, but the route `{} {}` takes it \
                     from the path",
                    route.method, route.path
                ));
            }
            if in_body.iter().any(|k| k == &key) {
                return Err(format!(
                    "argument `{key}` is given both in the query and in the body"
                ));
            }
            if args.contains_key(spec.name) {
                return Err(format!("query parameter `{key}` is given twice"));
            }
            args.insert(spec.name.to_owned(), coerce(&value, spec));
        }
    }
    for (key, raw) in path {
        let Some(spec) = route.args.iter().find(|a| a.name == *key) else {
            continue;
        };
        let value = percent_decode(raw).map_err(|why| format!("path parameter `{key}` {why}"))?;
        args.insert(spec.name.to_owned(), coerce(&value, spec));
    }
    let mut args = Value::Object(args);
    service::integral_floats_to_integers(&mut args);
    Ok(args)
}

/// A URL value as the argument's JSON: a string for string arguments, otherwise the value
/// parsed as JSON (`7`, `true`, `[1,2]`), or the string itself when it is not JSON (so
/// that the argument's type check names the field). Never null: a URL leaves an optional
/// argument out by leaving the parameter out.
fn coerce(value: &str, spec: &ArgSpec) -> Value {
    if spec.stringy {
        return Value::String(value.to_owned());
    }
    match serde_json::from_str(value) {
        Ok(Value::Null) | Err(_) => Value::String(value.to_owned()),
        Ok(parsed) => parsed,
    }
}

fn decode_query(s: &str) -> Result<String, String> {
    percent_decode(&s.replace('+', " ")).map_err(|why| format!("query parameter `{s}` {why}"))
}

/// `raw` percent-decoded, strictly: a `%` not followed by two hex digits, and bytes that
/// are not UTF-8 once decoded, are refused (400), never passed through as they came.
fn percent_decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    if let Some(at) = bytes.iter().enumerate().position(|(i, &b)| {
        b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    }) {
        let bad: String = raw[at..].chars().take(3).collect();
        return Err(format!(
            "has `{bad}`, which is not percent-encoding: write a `%` as `%25`, and a byte as `%` \
             and two hex digits"
        ));
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "is not UTF-8 once percent-decoded".to_owned())?;
    if decoded.contains('\0') {
        return Err("contains a NUL character".to_owned());
    }
    Ok(decoded.into_owned())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Follow `$ref`s into `definitions`.
pub(super) fn resolve<'a>(schema: &'a Value, definitions: &'a Map<String, Value>) -> &'a Value {
    let mut current = schema;
    for _ in 0..16 {
        let Some(name) = current
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#"))
            .and_then(|r| r.strip_prefix(DEFINITIONS_PATH))
            .and_then(|r| r.strip_prefix('/'))
        else {
            return current;
        };
        match definitions.get(name) {
            Some(next) => current = next,
            None => return current,
        }
    }
    current
}

fn is_null_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

/// The schema without `null`, and whether it allowed null: `Option<T>` is
/// `{"type": ["T", "null"]}` or `{"anyOf": [T, {"type": "null"}]}`.
pub(super) fn without_null(schema: &Value, definitions: &Map<String, Value>) -> (Value, bool) {
    let resolved = resolve(schema, definitions);
    if let Some(types) = resolved.get("type").and_then(Value::as_array)
        && types.iter().any(|t| t == "null")
    {
        let rest: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        let mut stripped = resolved.clone();
        if let Some(obj) = stripped.as_object_mut() {
            match rest.as_slice() {
                [one] => obj.insert("type".into(), one.clone()),
                _ => obj.insert("type".into(), Value::Array(rest)),
            };
            if let Some(Value::Array(values)) = obj.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
        }
        return (stripped, true);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = resolved.get(key).and_then(Value::as_array)
            && branches.iter().any(is_null_schema)
        {
            let rest: Vec<&Value> = branches.iter().filter(|b| !is_null_schema(b)).collect();
            let stripped = match rest.as_slice() {
                [one] => (*one).clone(),
                _ => {
                    let mut s = resolved.clone();
                    if let Some(obj) = s.as_object_mut() {
                        obj.insert(
                            key.into(),
                            Value::Array(rest.into_iter().cloned().collect()),
                        );
                    }
                    s
                }
            };
            return (stripped, true);
        }
    }
    (schema.clone(), false)
}

/// Whether every value the schema accepts is a string.
fn is_stringy(schema: &Value, definitions: &Map<String, Value>, depth: u8) -> bool {
    if depth > 8 {
        return false;
    }
    let schema = resolve(schema, definitions);
    if let Some(t) = schema.get("type") {
        return t == "string";
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return !values.is_empty() && values.iter().all(Value::is_string);
    }
    if let Some(c) = schema.get("const") {
        return c.is_string();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array) {
            return !branches.is_empty()
                && branches
                    .iter()
                    .all(|b| is_stringy(b, definitions, depth + 1));
        }
    }
    false
}

/// Whether the schema is an object or an array.
fn is_structured(schema: &Value, definitions: &Map<String, Value>, depth: u8) -> bool {
    if depth > 8 {
        return false;
    }
    let schema = resolve(schema, definitions);
    match schema.get("type") {
        Some(Value::String(t)) => t == "object" || t == "array",
        Some(_) => false,
        None => {
            ["anyOf", "oneOf"].iter().any(|key| {
                schema
                    .get(*key)
                    .and_then(Value::as_array)
                    .is_some_and(|b| b.iter().any(|b| is_structured(b, definitions, depth + 1)))
            }) || schema.get("properties").is_some()
        }
    }
}

/// Give integer schemas the bounds of their Rust type (`"format": "uint32"` and so on), so
/// that clients and fuzzers know a `u64` stops at 2^64 - 1.
pub(super) fn add_integer_bounds(schema: &mut Value) {
    match schema {
        Value::Object(obj) => {
            let bounds: Option<(Value, Value)> = match obj.get("format").and_then(Value::as_str) {
                Some("uint8") => Some((0.into(), u8::MAX.into())),
                Some("uint16") => Some((0.into(), u16::MAX.into())),
                Some("uint32") => Some((0.into(), u32::MAX.into())),
                Some("uint64" | "uint") => Some((0.into(), u64::MAX.into())),
                Some("int8") => Some((i8::MIN.into(), i8::MAX.into())),
                Some("int16") => Some((i16::MIN.into(), i16::MAX.into())),
                Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                Some("int64" | "int") => Some((i64::MIN.into(), i64::MAX.into())),
                _ => None,
            };
            if let Some((min, max)) = bounds {
                obj.entry("minimum").or_insert(min);
                obj.entry("maximum").or_insert(max);
            }
            for value in obj.values_mut() {
                add_integer_bounds(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(add_integer_bounds),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
