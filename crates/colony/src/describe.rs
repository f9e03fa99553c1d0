//! `describe`: a JSON description of every service in the binary.
//!
//! Owns: the document that `APP describe` prints and that the CLI, the gateway and
//! deployment tools read. Promises: it lists every service with its arguments' names and
//! JSON schemas, its result schema and its options, with shared definitions under `$defs`.

use serde_json::{Value, json};

use crate::service;

/// The description of every service, as printed by `APP describe`.
pub fn describe() -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let services: Vec<Value> = service::registry()
        .iter()
        .map(|entry| {
            let schemas = (entry.schemas)(&mut generator);
            let args: Vec<Value> = entry
                .arg_names
                .iter()
                .zip(schemas.args)
                .map(|(name, schema)| json!({ "name": name, "schema": schema }))
                .collect();
            let o = &entry.options;
            json!({
                "name": entry.name,
                "id": entry.id(),
                "exposed": o.exposed,
                "http": o.http,
                "args": args,
                "result": { "ok": schemas.ok, "error": schemas.err },
                "options": {
                    "min_instances": o.min_instances,
                    "max_instances": o.max_instances,
                    "high_watermark": o.high_watermark,
                    "low_watermark": o.low_watermark,
                    "threads": o.threads,
                    "blocking": o.blocking,
                    "timeout_ms": o.timeout_ms,
                },
            })
        })
        .collect();
    let definitions = generator.take_definitions(true);
    json!({
        "app": crate::identity::app_name(),
        "fingerprint": crate::identity::fingerprint(),
        "protocol": crate::wire::PROTOCOL_VERSION,
        "services": services,
        "$defs": definitions,
    })
}
