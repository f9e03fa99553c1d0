//! The gateway's documents: an OpenAPI 3.1 description of its routes, and an HTML page
//! that lists them with an example request each.
//!
//! Owns: turning [`Api`] into those documents. Promises: the OpenAPI document describes
//! exactly what the gateway accepts (path, query and body arguments, which are required,
//! their JSON Schemas from the services' types) and answers (the result's schema, or a
//! problem document), so that generated clients and fuzzers such as schemathesis agree
//! with the gateway.

use std::fmt::Write;

use hyper::Method;
use serde_json::{Map, Value, json};

use super::route::{Api, Route, Source, resolve};

/// The OpenAPI 3.1 document of `api`.
pub(super) fn document(api: &Api) -> Value {
    let mut paths = Map::new();
    for route in &api.routes {
        let item = paths.entry(route.path.clone()).or_insert_with(|| json!({}));
        if let Some(item) = item.as_object_mut() {
            item.insert(route.method.as_str().to_lowercase(), operation(route));
        }
    }
    let mut schemas = api.definitions.clone();
    schemas.insert("Problem".into(), problem_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": format!("{} gateway", app_name()),
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The services of this app that are exposed over HTTP, served by \
                Colony's gateway. Every request may carry `x-request-id` (kept through every \
                service the request reaches, and returned) and `x-colony-timeout` (its \
                deadline, such as `250ms` or `2s`; the default is the service's). Errors are \
                `application/problem+json`.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                "Problem": {
                    "description": "The request failed; `detail` says why.",
                    "headers": request_id_header(),
                    "content": {
                        "application/problem+json": {
                            "schema": { "$ref": "#/components/schemas/Problem" }
                        }
                    }
                }
            }
        },
    })
}

fn app_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "app".to_owned())
}

fn request_id_header() -> Value {
    json!({
        "x-request-id": {
            "description": "The request's id: the one it came with, or a fresh one.",
            "required": true,
            "schema": { "type": "string" }
        }
    })
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "An error, as RFC 9457 problem details.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": { "type": "string" },
            "title": { "type": "string" },
            "status": { "type": "integer", "minimum": 400, "maximum": 599 },
            "detail": { "type": "string", "description": "What went wrong, and what to do." },
            "instance": { "type": "string", "description": "The request's path." },
            "service": { "type": "string", "description": "The service that was called." },
            "error": { "description": "The service's own error value, when it is not a `ServiceError`." }
        }
    })
}

fn operation(route: &Route) -> Value {
    let name = route.entry.name;
    let mut parameters = Vec::new();
    let mut properties = Map::new();
    let mut required = Vec::new();
    for arg in &route.args {
        match arg.source {
            Source::Path => parameters.push(json!({
                "name": arg.name,
                "in": "path",
                "required": true,
                "schema": arg.param_schema,
            })),
            Source::Query => {
                let mut p = json!({
                    "name": arg.name,
                    "in": "query",
                    "required": !arg.optional,
                });
                if arg.structured {
                    p["content"] = json!({ "application/json": { "schema": arg.param_schema } });
                } else {
                    p["schema"] = arg.param_schema.clone();
                }
                parameters.push(p);
            }
            Source::Body => {
                properties.insert(arg.name.to_owned(), arg.schema.clone());
                if !arg.optional {
                    required.push(Value::from(arg.name));
                }
            }
        }
    }
    let module = name.rsplit_once("::").map_or(name, |(m, _)| m);
    let mut op = json!({
        "operationId": name.replace("::", "."),
        "summary": format!("`{name}`"),
        "tags": [module],
        "responses": {
            "200": {
                "description": "The service's result.",
                "headers": request_id_header(),
                "content": { "application/json": { "schema": route.ok } }
            },
            "400": { "$ref": "#/components/responses/Problem" },
            "413": { "$ref": "#/components/responses/Problem" },
            "500": { "$ref": "#/components/responses/Problem" },
            "503": { "$ref": "#/components/responses/Problem" },
            "504": { "$ref": "#/components/responses/Problem" },
            "default": { "$ref": "#/components/responses/Problem" }
        }
    });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if route.args.iter().any(|a| a.source == Source::Body) {
        let any_required = !required.is_empty();
        let mut schema = json!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        });
        if any_required {
            schema["required"] = Value::Array(required);
        }
        op["requestBody"] = json!({
            "required": any_required,
            "content": { "application/json": { "schema": schema } }
        });
    }
    op
}

/// An example value of `schema`, for the HTML page.
fn example(schema: &Value, definitions: &Map<String, Value>, depth: u8) -> Value {
    if depth > 6 {
        return Value::Null;
    }
    let schema = resolve(schema, definitions);
    if let Some(e) = schema.get("examples").and_then(|e| e.get(0)) {
        return e.clone();
    }
    if let Some(e) = schema.get("default").or_else(|| schema.get("const")) {
        return e.clone();
    }
    if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array)
            && let Some(first) = branches
                .iter()
                .find(|b| b.get("type").and_then(Value::as_str) != Some("null"))
                .or_else(|| branches.first())
        {
            return example(first, definitions, depth + 1);
        }
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => return json!("…"),
    };
    match ty {
        "string" => json!("text"),
        "integer" => json!(
            schema
                .get("minimum")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .max(1)
        ),
        "number" => json!(1.5),
        "boolean" => json!(true),
        "null" => Value::Null,
        "array" => match schema.get("items") {
            Some(items) => json!([example(items, definitions, depth + 1)]),
            None => json!([]),
        },
        _ => {
            let mut obj = Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    obj.insert(k.clone(), example(v, definitions, depth + 1));
                }
            }
            Value::Object(obj)
        }
    }
}

/// An example request for `route`: a `curl` command line with `HOST` as the address.
pub(super) fn example_request(route: &Route, definitions: &Map<String, Value>) -> String {
    let mut path = route.path.clone();
    let mut query = Vec::new();
    let mut body = Map::new();
    for arg in &route.args {
        let value = example(&arg.param_schema, definitions, 0);
        let text = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match arg.source {
            Source::Path => path = path.replace(&format!("{{{}}}", arg.name), &url_encode(&text)),
            Source::Query => query.push(format!("{}={}", arg.name, url_encode(&text))),
            Source::Body => {
                body.insert(arg.name.to_owned(), value);
            }
        }
    }
    let mut url = format!("http://HOST{path}");
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    let mut cmd = String::from("curl");
    if route.method != Method::GET {
        let _ = write!(cmd, " -X {}", route.method);
    }
    let _ = write!(cmd, " '{url}'");
    if route.args.iter().any(|a| a.source == Source::Body) {
        let json = Value::Object(body).to_string().replace('\'', "'\\''");
        let _ = write!(cmd, " -H 'content-type: application/json' -d '{json}'");
    }
    cmd
}

fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML page listing every route with an example request, with `HOST` in the examples
/// standing for the gateway's address.
pub(super) fn index_page(api: &Api) -> String {
    let title = escape_html(&format!("{} gateway", app_name()));
    let mut rows = String::new();
    for route in &api.routes {
        let args: Vec<String> = route
            .args
            .iter()
            .map(|a| {
                let place = match a.source {
                    Source::Path => "path",
                    Source::Query => "query",
                    Source::Body => "body",
                };
                let optional = if a.optional { ", optional" } else { "" };
                format!("<code>{}</code> ({place}{optional})", escape_html(a.name))
            })
            .collect();
        let _ = writeln!(
            rows,
            "<tr><td><code>{method}</code></td><td><code>{path}</code></td>\
             <td><code>{service}</code></td><td>{args}</td><td><pre>{example}</pre></td></tr>",
            method = route.method,
            path = escape_html(&route.path),
            service = escape_html(route.entry.name),
            args = if args.is_empty() {
                "none".to_owned()
            } else {
                args.join("<br>")
            },
            example = escape_html(&example_request(route, &api.definitions)),
        );
    }
    if api.routes.is_empty() {
        rows.push_str(
            "<tr><td colspan=\"5\">No service is exposed: mark one \
             <code>#[microservice(exposed)]</code>.</td></tr>\n",
        );
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.4em;\
         text-align:left;vertical-align:top}}pre{{margin:0;white-space:pre-wrap}}</style>\
         </head><body>\n<h1>{title}</h1>\n\
         <p>The exposed services of this app. The machine-readable description is \
         <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3.1). Send \
         <code>x-colony-timeout: 2s</code> to set a request's deadline; errors are \
         <code>application/problem+json</code>.</p>\n\
         <table><tr><th>method</th><th>path</th><th>service</th><th>arguments</th>\
         <th>example</th></tr>\n{rows}</table>\n</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_follow_the_schema() {
        let defs = Map::new();
        let s = json!({
            "type": "object",
            "properties": {
                "sku": {"type": "string"},
                "qty": {"type": "integer", "minimum": 0},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
                "note": {"type": ["string", "null"]}
            }
        });
        assert_eq!(
            example(&s, &defs, 0),
            json!({"sku": "text", "qty": 1, "tags": ["a"], "note": "text"})
        );
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<a href='x'>&"),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
    }
}
