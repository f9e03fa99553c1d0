//! Probing a type for its JSON schema: [`SchemaProbe`].
//!
//! Owns: the autoref specialization that generated code uses, [`ViaJsonSchema`] when a
//! type implements `schemars::JsonSchema` and [`ViaAnySchema`] (an unconstrained schema
//! that says how to get a precise one) otherwise. Promises: apps need not derive
//! `JsonSchema` on every type. Must not touch: anything but schemas.

use schemars::{Schema, SchemaGenerator};

/// Probe for a JSON schema: [`ViaJsonSchema`] when the type implements `JsonSchema`,
/// [`ViaAnySchema`] (an unconstrained schema) otherwise. Used by generated code as
/// `(&SchemaProbe::<T>::new()).colony_schema(gen)`.
pub struct SchemaProbe<T: ?Sized>(std::marker::PhantomData<T>);

impl<T: ?Sized> std::fmt::Debug for SchemaProbe<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SchemaProbe")
    }
}

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
