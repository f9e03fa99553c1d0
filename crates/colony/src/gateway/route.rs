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
        let value = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| format!("path parameter `{key}` is not UTF-8 once percent-decoded"))?;
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
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("query parameter `{s}` is not UTF-8 once percent-decoded"))
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
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(name: &'static str, schema: Value, source: Source) -> ArgSpec {
        let defs = Map::new();
        let (param_schema, optional) = without_null(&schema, &defs);
        ArgSpec {
            name,
            stringy: is_stringy(&param_schema, &defs, 0),
            structured: is_structured(&param_schema, &defs, 0),
            schema,
            param_schema,
            optional,
            source,
        }
    }

    fn route(args: Vec<ArgSpec>) -> Route {
        Route {
            entry: &PROBE,
            method: Method::GET,
            path: "/price/{sku}".into(),
            args,
            ok: json!({}),
        }
    }

    // A stand-in entry for building routes by hand; never called.
    static PROBE: ServiceEntry = crate::service::entry::<Probe>(
        "probe::price",
        &["sku", "qty"],
        crate::service::Options::DEFAULT,
        probe_schemas,
    );

    // The same arguments behind a route that a matcher cannot take apart.
    static ODD: ServiceEntry = crate::service::entry::<Probe>(
        "probe::odd",
        &["sku", "qty"],
        crate::service::Options {
            exposed: true,
            http: Some("GET /price/{sku}-{qty}"),
            ..crate::service::Options::DEFAULT
        },
        probe_schemas,
    );

    // Its default route is `POST /probe/price`: taken again by an explicit route.
    static TWIN: ServiceEntry = crate::service::entry::<Probe>(
        "probe::twin",
        &["sku", "qty"],
        crate::service::Options {
            exposed: true,
            http: Some("POST /probe/price"),
            ..crate::service::Options::DEFAULT
        },
        probe_schemas,
    );

    fn probe_schemas(generator: &mut schemars::SchemaGenerator) -> crate::service::Schemas {
        crate::service::Schemas {
            args: vec![
                generator.subschema_for::<String>(),
                generator.subschema_for::<Option<u32>>(),
            ],
            ok: generator.subschema_for::<u64>(),
            err: schemars::json_schema!({}),
        }
    }

    #[test]
    fn routes_are_read_from_the_entries() {
        let api = Api::from_entries([&PROBE]).expect("routes");
        let route = &api.routes[0];
        assert_eq!(
            (route.method.as_str(), route.path.as_str()),
            ("POST", "/probe/price")
        );
        assert_eq!(route.args[0].source, Source::Body);
        assert!(route.args[0].stringy && !route.args[0].optional);
        assert!(!route.args[1].stringy && route.args[1].optional);
        assert!(matches!(
            api.lookup(&Method::POST, "/probe/price"),
            Lookup::Found(Target::Service(0), _)
        ));
        assert!(matches!(
            api.lookup(&Method::GET, "/probe/price"),
            Lookup::WrongMethod(m) if m == [Method::POST]
        ));
        assert!(matches!(
            api.lookup(&Method::GET, "/nope"),
            Lookup::NotFound
        ));
        assert!(matches!(
            api.lookup(&Method::HEAD, "/openapi.json"),
            Lookup::Found(Target::OpenApi, _)
        ));
    }

    #[test]
    fn colliding_or_unroutable_routes_are_start_up_errors_naming_the_services() {
        let err = Api::from_entries([&PROBE, &TWIN]).expect_err("collide");
        assert!(err.contains("two routes are `POST /probe/price`"), "{err}");
        assert!(
            err.contains("probe::price") && err.contains("probe::twin"),
            "{err}"
        );
        let err = Api::from_entries([&ODD]).expect_err("unroutable");
        assert!(
            err.contains("`/price/{sku}-{qty}` of service `probe::odd`"),
            "{err}"
        );
    }

    struct Probe;
    impl crate::service::Service for Probe {
        type Args = (String, u32);
        type Ok = u64;
        type Err = crate::ServiceError;
        fn entry() -> &'static ServiceEntry {
            &PROBE
        }
        fn run(_: Self::Args) -> crate::service::BoxFuture<Result<u64, crate::ServiceError>> {
            Box::pin(async { Ok(0) })
        }
    }

    #[test]
    fn path_and_query_values_take_their_arguments_types() {
        let r = route(vec![
            spec("sku", json!({"type": "string"}), Source::Path),
            spec("qty", json!({"type": ["integer", "null"]}), Source::Query),
        ]);
        let args = gather_args(&r, &[("sku", "7")], Some("qty=3"), b"").expect("valid");
        assert_eq!(args, json!({"sku": "7", "qty": 3}));
        let args = gather_args(&r, &[("sku", "a%20b")], None, b"").expect("valid");
        assert_eq!(args, json!({"sku": "a b"}));
        // Not a number: kept as a string, so the type check names the field.
        let args = gather_args(&r, &[("sku", "x")], Some("qty=many"), b"").expect("gathered");
        assert_eq!(args["qty"], "many");
        // `null` is not a number; leaving the parameter out is how to say none.
        let args = gather_args(&r, &[("sku", "x")], Some("qty=null"), b"").expect("gathered");
        assert_eq!(args["qty"], "null");
    }

    #[test]
    fn integral_floats_fill_integers() {
        let r = route(vec![spec("qty", json!({"type": "integer"}), Source::Body)]);
        let args = gather_args(&r, &[], None, br#"{"qty": 7.0}"#).expect("valid");
        assert_eq!(args, json!({"qty": 7}));
        let args = gather_args(&r, &[], None, br#"{"qty": 7.5}"#).expect("gathered");
        assert_eq!(args, json!({"qty": 7.5}));
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let r = route(vec![
            spec("sku", json!({"type": "string"}), Source::Path),
            spec("qty", json!({"type": "integer"}), Source::Query),
        ]);
        let err = |q: Option<&str>, body: &[u8]| {
            gather_args(&r, &[("sku", "a")], q, body).expect_err("refused")
        };
        assert!(err(Some("size=2"), b"").contains("unknown query parameter `size`"));
        assert!(err(Some("qty=1&qty=2"), b"").contains("given twice"));
        assert!(err(None, b"{").contains("not valid JSON"));
        assert!(err(None, b"[1]").contains("not an array"));
        assert!(err(None, br#"{"sku": "b"}"#).contains("takes it from the path"));
    }

    #[test]
    fn a_body_alone_is_read_straight_into_the_same_payload_or_error() {
        let r = Route {
            method: Method::POST,
            path: "/probe/price".into(),
            ..route(vec![
                spec("sku", json!({"type": "string"}), Source::Body),
                spec("qty", json!({"type": "integer"}), Source::Query),
            ])
        };
        let by_value = |query: Option<&str>, body: &[u8]| {
            gather_args(&r, &[], query, body).and_then(|args| (PROBE.json_to_args)(args))
        };
        let bodies: [&[u8]; 16] = [
            br#"{"sku": "a", "qty": 7}"#,
            br#"{"qty": 7.0, "sku": "a"}"#,
            br#"{"sku": "a", "qty": 7.5}"#,
            br#"{"sku": "a", "sku": "b", "qty": 1}"#,
            br#"{"sku": "a"}"#,
            br#"{"sku": "a", "qty": 1, "size": 2}"#,
            br#"{"sku": 1, "qty": "x"}"#,
            br#"[1]"#,
            b"\"a\"",
            b"null",
            b"",
            b" \n\x0c",
            b"{",
            br#"{"sku": "a", "qty": 1} {}"#,
            b"\xff",
            br#"{"sku": "\ud800", "qty": 1}"#,
        ];
        for body in bodies {
            let text = String::from_utf8_lossy(body);
            let direct = payload(&r, &[], None, body);
            assert_eq!(direct, by_value(None, body), "{text}");
            assert_eq!(payload(&r, &[], Some(""), body), direct, "{text}");
        }
        // What only the body can get wrong is worded for a body, as before.
        let err = payload(&r, &[], None, b"[1]").expect_err("refused");
        assert_eq!(
            err,
            "the body must be a JSON object of named arguments (`sku`, `qty`), not an array"
        );
        let err = payload(&r, &[], None, b"{").expect_err("refused");
        assert!(err.starts_with("the body is not valid JSON: "), "{err}");
        let err = payload(&r, &[], None, br#"{"sku": "a", "qty": "x"}"#).expect_err("refused");
        assert_eq!(err, "field `qty`: invalid type: string \"x\", expected u32");
        // A query takes the `Value` path, as a path parameter would.
        let body = br#"{"sku": "a"}"#;
        assert_eq!(
            payload(&r, &[], Some("qty=3"), body),
            by_value(Some("qty=3"), body)
        );
        assert!(payload(&r, &[], Some("qty=3"), body).is_ok());
    }

    #[test]
    fn optional_arguments_are_found_in_every_shape_of_option() {
        let defs = Map::new();
        assert!(without_null(&json!({"type": ["string", "null"]}), &defs).1);
        assert!(
            without_null(
                &json!({"anyOf": [{"$ref": "#/x"}, {"type": "null"}]}),
                &defs
            )
            .1
        );
        assert!(!without_null(&json!({"type": "string"}), &defs).1);
        assert_eq!(
            without_null(&json!({"type": ["integer", "null"], "minimum": 0}), &defs).0,
            json!({"type": "integer", "minimum": 0})
        );
    }

    #[test]
    fn string_like_schemas_are_recognized() {
        let defs = Map::new();
        assert!(is_stringy(&json!({"type": "string"}), &defs, 0));
        assert!(is_stringy(&json!({"enum": ["a", "b"]}), &defs, 0));
        assert!(is_stringy(
            &json!({"oneOf": [{"const": "a"}, {"type": "string"}]}),
            &defs,
            0
        ));
        assert!(!is_stringy(&json!({"type": "integer"}), &defs, 0));
        assert!(!is_stringy(&json!({}), &defs, 0));
    }

    #[test]
    fn integer_formats_get_their_bounds() {
        let mut s =
            json!({"properties": {"n": {"type": "integer", "format": "uint32", "minimum": 0}}});
        add_integer_bounds(&mut s);
        assert_eq!(s["properties"]["n"]["maximum"], json!(u32::MAX));
    }

    #[test]
    fn path_parameters_are_listed() {
        assert_eq!(path_params("/a/{x}/b/{y}"), ["x", "y"]);
        assert!(path_params("/a").is_empty());
        assert_eq!(default_path("shop::cart::add"), "/shop/cart/add");
    }
}
