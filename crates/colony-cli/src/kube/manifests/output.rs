//! The objects as text: YAML documents (`-o yaml`, and a dry run without a cluster) or one
//! JSON `v1/List` (`-o json`).
//!
//! Owns: the output formats, which the snapshot tests pin byte for byte. Must not touch:
//! the objects.

use serde_json::{Value, json};

/// Objects as YAML documents, `---`-separated.
pub(crate) fn to_yaml(objects: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(o)?);
    }
    Ok(out)
}

/// Objects as one JSON `v1/List`.
pub(crate) fn to_json(objects: &[Value]) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(
        &json!({"apiVersion": "v1", "kind": "List", "items": objects}),
    )?)
}
