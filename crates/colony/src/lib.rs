//! Colony turns ordinary async Rust functions into microservices.
#![doc = "tour goes here"]

pub mod error;
pub mod service;
mod call;
mod context;

pub use colony_macros::microservice;
pub use error::{CallError, Error, ErrorKind, Result, ServiceError};

/// Items used by code that `#[microservice]` generates. Not a public API: it may change in
/// any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::call::invoke;
    pub use crate::service::{
        BoxFuture, Options, SERVICES, SchemaProbe, Schemas, Service, ServiceEntry, ViaAnySchema,
        ViaJsonSchema, assert_error, assert_wire, entry,
    };
    pub use linkme;
    pub use schemars::{Schema, SchemaGenerator};
}
