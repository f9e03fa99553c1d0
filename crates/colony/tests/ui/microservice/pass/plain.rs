//! The generated code is warning-free, even for a service nothing in the crate calls.
#![deny(warnings)]

use colony::{ServiceError, microservice};

/// Price of `qty` units of `sku`, in cents.
#[microservice]
pub async fn quote(sku: String, qty: u32) -> Result<u64, ServiceError> {
    Ok(sku.len() as u64 * u64::from(qty))
}

/// Called only through the gateway: an entry point, so no dead-code warning.
#[microservice(exposed)]
async fn only_remote() -> Result<(), ServiceError> {
    Ok(())
}

fn main() {
    let entry = colony::__private::SERVICES
        .iter()
        .find(|e| e.name.ends_with("::quote"))
        .expect("the service is registered");
    assert_eq!(entry.name, concat!(module_path!(), "::quote"));
    assert_eq!(entry.arg_names, ["sku", "qty"]);
    assert!(!entry.options.exposed);
    let schemas = (entry.schemas)(&mut colony::__private::SchemaGenerator::default());
    assert_eq!(schemas.args.len(), 2);
    // `String` implements `JsonSchema`, so its schema is precise, not "any value".
    assert_eq!(
        schemas.args[0].get("type"),
        Some(&serde_json::json!("string")),
        "{schemas:?}"
    );
}
