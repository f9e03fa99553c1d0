//! Parse and validate a `#[microservice]` function into a [`Service`].
//!
//! Owns: the intermediate form ([`Service`], [`Arg`]), collecting every mistake of one
//! function ([`Errors`]) and the order the checks run in; the rules live in submodules by
//! job: `signature` (the function: async, no generics, owned arguments with plain names,
//! `Result<T, E>`), `options` (the attribute's options and their values) and `http` (the
//! `http = "METHOD /path/{param}"` route against the arguments). Promises: every rule that
//! can be checked from the tokens is reported at the span of the mistake with the reason
//! the rule exists, and one build reports all of a function's independent mistakes; a
//! [`Service`] that comes out of here expands to code whose only remaining errors are
//! about trait implementations (serde, `From<CallError>`), which rustc reports through the
//! runtime's `#[diagnostic::on_unimplemented]` notes. Must not touch: code generation.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::ext::IdentExt as _;
use syn::{Attribute, Block, Error, Ident, Item, Result, Signature, Token, Type, Visibility};

mod http;
mod options;
mod signature;

pub(crate) use options::Options;

/// A validated `#[microservice]` function.
pub(crate) struct Service {
    /// Doc comments and other attributes: they stay on the wrapper the user calls.
    pub(crate) attrs: Vec<Attribute>,
    /// The wrapper keeps the visibility the user chose.
    pub(crate) vis: Visibility,
    /// The user's signature, so the wrapper looks exactly like what they wrote.
    pub(crate) sig: Signature,
    /// The name without `r#`, used in the service's full name and the marker type.
    pub(crate) name: String,
    /// Arguments in declaration order.
    pub(crate) args: Vec<Arg>,
    /// The span of the argument list, where errors about the argument tuple point.
    pub(crate) args_span: Span,
    /// `T` in `Result<T, E>`.
    pub(crate) ok: Type,
    /// `E` in `Result<T, E>`.
    pub(crate) err: Type,
    /// The body, moved into a boxed future.
    pub(crate) block: Box<Block>,
    /// Settings from the attribute.
    pub(crate) options: Options,
}

/// One argument of a service.
pub(crate) struct Arg {
    /// Attributes on the argument, kept on the body's copy of it.
    pub(crate) attrs: Vec<Attribute>,
    /// `mut` belongs to the body, not to the signature callers see.
    pub(crate) mutability: Option<Token![mut]>,
    /// The name as written, for the body and the wrapper.
    pub(crate) ident: Ident,
    /// The name without `r#`: what the JSON gateway and `describe` show.
    pub(crate) name: String,
    /// The argument's type.
    pub(crate) ty: Type,
}

/// Collects every independent mistake so that one build reports all of them.
#[derive(Default)]
pub(super) struct Errors(Option<Error>);

impl Errors {
    pub(super) fn push(&mut self, err: Error) {
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    /// An error covering all of `tokens` (a span alone would show only the first token on
    /// stable Rust).
    pub(super) fn at(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(Error::new_spanned(tokens, message));
    }

    pub(super) fn at_span(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(Error::new(span, message));
    }

    pub(super) fn finish(self) -> Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

impl Service {
    /// Parse the attribute's arguments and the item it is on, and check every rule.
    pub(crate) fn parse(attr: TokenStream, item: TokenStream) -> Result<Service> {
        let item: Item = syn::parse2(item)?;
        let Item::Fn(func) = item else {
            return Err(Error::new_spanned(
                item_head(&item),
                "#[microservice] goes on an `async fn`: a service is a function that other \
                 services call by name",
            ));
        };
        let mut errors = Errors::default();
        if let Err(err) = func.modifiers.require_empty() {
            errors.at_span(
                err.span(),
                "a #[microservice] cannot have this modifier: it is a free function called by name",
            );
        }
        signature::check(&func.sig, &mut errors);
        let args = signature::parse_args(&func.sig, &mut errors);
        let (ok, err) = match signature::parse_output(&func.sig, &mut errors) {
            Some(types) => types,
            None => (unit(), unit()),
        };
        let options = match Options::parse(attr, &func.sig.ident, &args, &mut errors) {
            Ok(options) => options,
            Err(err) => {
                errors.push(err);
                Options::default()
            }
        };
        errors.finish()?;
        Ok(Service {
            attrs: func.attrs,
            vis: func.vis,
            name: func.sig.ident.unraw().to_string(),
            args_span: func.sig.paren_token.span.join(),
            sig: func.sig,
            args,
            ok,
            err,
            block: func.block,
            options,
        })
    }
}

fn unit() -> Type {
    syn::parse_quote!(())
}

/// An item's keyword and name, where an error about the whole item points.
fn item_head(item: &Item) -> TokenStream {
    match item {
        Item::Struct(syn::ItemStruct {
            struct_token,
            ident,
            ..
        }) => quote!(#struct_token #ident),
        Item::Enum(syn::ItemEnum {
            enum_token, ident, ..
        }) => quote!(#enum_token #ident),
        Item::Trait(syn::ItemTrait {
            trait_token, ident, ..
        }) => quote!(#trait_token #ident),
        Item::Mod(syn::ItemMod {
            mod_token, ident, ..
        }) => quote!(#mod_token #ident),
        Item::Impl(i) => i.impl_token.to_token_stream(),
        other => other.to_token_stream(),
    }
}
