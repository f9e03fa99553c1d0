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

/// How a service's own error answers at the gateway, from its [`crate::HttpError`] impl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorStatus {
    /// The HTTP status (400 to 599).
    pub status: u16,
    /// The problem type, if the error names one.
    pub problem_type: Option<String>,
}

/// Probe for an error type's [`crate::HttpError`] impl: [`ViaHttpError`] when it has one,
/// [`ViaNoHttpError`] (no status: the gateway answers 500) otherwise. Used by generated code
/// as `(&&StatusProbe::<E>::new()).colony_status(&err)`.
pub struct StatusProbe<T: ?Sized>(std::marker::PhantomData<T>);

impl<T: ?Sized> std::fmt::Debug for StatusProbe<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusProbe")
    }
}

impl<T: ?Sized> StatusProbe<T> {
    /// A probe for `T`.
    pub const fn new() -> Self {
        StatusProbe(std::marker::PhantomData)
    }
}

impl<T: ?Sized> Default for StatusProbe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The status of an error type that implements [`crate::HttpError`].
pub trait ViaHttpError<T: ?Sized> {
    /// The error's status, when it is one the gateway can answer.
    fn colony_status(&self, err: &T) -> Option<ErrorStatus>;
}

impl<T: crate::HttpError + ?Sized> ViaHttpError<T> for &StatusProbe<T> {
    fn colony_status(&self, err: &T) -> Option<ErrorStatus> {
        let status = err.http_status();
        (400..=599).contains(&status).then(|| ErrorStatus {
            status,
            problem_type: err.problem_type(),
        })
    }
}

/// The fallback for an error type without [`crate::HttpError`]: no status (500).
pub trait ViaNoHttpError<T: ?Sized> {
    /// Always `None`.
    fn colony_status(&self, err: &T) -> Option<ErrorStatus>;
}

impl<T: ?Sized> ViaNoHttpError<T> for StatusProbe<T> {
    fn colony_status(&self, _err: &T) -> Option<ErrorStatus> {
        None
    }
}
