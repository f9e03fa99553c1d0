//! Procedural macros for Colony.
use proc_macro::TokenStream;

/// Placeholder.
#[proc_macro_attribute]
pub fn microservice(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}
