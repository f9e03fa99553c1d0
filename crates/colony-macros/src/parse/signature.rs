//! The rules of a service's signature.
//!
//! Owns: what the function itself must be (an `async fn`, not `const`, `unsafe`, `extern`,
//! variadic or generic), its arguments (at most 12, each a plain name, no `self`) and its
//! return type (`Result<T, E>` with both written out), and that every type that crosses
//! the boundary is owned (no references, borrowed lifetimes, `impl Trait` or `_`).
//! Promises: each mistake is reported at its own span with the reason the rule exists.
//! Must not touch: the attribute's options (`options` and `http` own those).

use syn::ext::IdentExt as _;
use syn::{FnArg, GenericArgument, Pat, PathArguments, ReturnType, Safety, Signature, Type};

use super::{Arg, Errors};

/// The most arguments a service may take: the runtime reads named JSON arguments into
/// tuples of at most this many elements.
const MAX_ARGS: usize = 12;

/// The function's own qualifiers and generics.
pub(super) fn check(sig: &Signature, errors: &mut Errors) {
    if let Some(constness) = &sig.constness {
        errors.at(
            constness,
            "a #[microservice] cannot be a `const fn`: a call may run in another process, \
             which compile-time evaluation cannot reach",
        );
    }
    if sig.asyncness.is_none() {
        errors.at(
            sig.fn_token,
            "a #[microservice] must be an `async fn`: a call may go to another process, so \
             callers await it and never block a thread while it runs",
        );
    }
    if let Safety::Unsafe(unsafety) = &sig.safety {
        errors.at(
            unsafety,
            "a #[microservice] cannot be `unsafe`: a caller in another process cannot uphold \
             a safety contract",
        );
    }
    if let Some(abi) = &sig.abi {
        errors.at(
            abi,
            "a #[microservice] cannot have an `extern` ABI: it is called through Colony's \
             messages, not a foreign calling convention",
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.at(
            variadic,
            "a #[microservice] cannot be variadic: its arguments are sent by name and type, \
             so there must be a fixed list of them",
        );
    }
    let generics = &sig.generics;
    if let Some(param) = generics.params.first() {
        let what = match param {
            syn::GenericParam::Lifetime(_) => {
                "lifetime parameters: its arguments travel between processes as messages, \
                 so they are owned values with no borrowed lifetimes"
            }
            _ => {
                "generic parameters: it is compiled once and called by name from other \
                 processes, which cannot choose its type parameters; use concrete types"
            }
        };
        errors.at(
            generics,
            format_args!("a #[microservice] cannot have {what}"),
        );
    }
    if let Some(where_clause) = &generics.where_clause {
        errors.at(
            where_clause,
            "a #[microservice] cannot have a `where` clause: it is compiled once for concrete \
             types and called by name from other processes",
        );
    }
}

/// The arguments, each an owned value with a plain name.
pub(super) fn parse_args(sig: &Signature, errors: &mut Errors) -> Vec<Arg> {
    let mut args = Vec::new();
    for (index, input) in sig.inputs.iter().enumerate() {
        let typed = match input {
            FnArg::Receiver(receiver) => {
                errors.at(
                    receiver,
                    "a #[microservice] cannot take `self`: a service is a free function called \
                     by name from any process; keep state in a `#[colony::object]` or the store",
                );
                continue;
            }
            FnArg::Typed(typed) => typed,
        };
        if index == MAX_ARGS {
            errors.at(
                typed,
                format_args!(
                    "a #[microservice] takes at most {MAX_ARGS} arguments: group them in a \
                     struct that derives `Serialize` and `Deserialize`, which also gives each \
                     field a name in the JSON gateway"
                ),
            );
        }
        check_owned(&typed.ty, "an argument", errors);
        match &*typed.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                args.push(Arg {
                    attrs: typed.attrs.clone(),
                    mutability: pat.mutability,
                    ident: pat.ident.clone(),
                    name: pat.ident.unraw().to_string(),
                    ty: (*typed.ty).clone(),
                });
            }
            pat => {
                let found = match pat {
                    Pat::Wild(_) => "`_` has no name",
                    Pat::Ident(p) if p.by_ref.is_some() => "`ref` borrows, but arguments are owned",
                    _ => "a pattern has no single name",
                };
                errors.at(
                    pat,
                    format_args!(
                        "a #[microservice] argument must be a plain name such as `qty` or \
                         `mut qty`, and {found}: arguments are sent by name (the JSON gateway \
                         and `colony describe` show them); destructure inside the body instead"
                    ),
                );
            }
        }
    }
    args
}

/// `T` and `E` of the return type `Result<T, E>`.
pub(super) fn parse_output(sig: &Signature, errors: &mut Errors) -> Option<(Type, Type)> {
    const WHY: &str = "every call can fail remotely (no instance, deadline passed, instance \
                       died) and that failure arrives as the `Err` of this `Result`, so its \
                       error type implements `From<colony::CallError>` (`colony::ServiceError` \
                       does)";
    let ty = match &sig.output {
        ReturnType::Default => {
            errors.at_span(
                sig.paren_token.span.close(),
                format_args!("a #[microservice] must return `Result<T, E>`: {WHY}"),
            );
            return None;
        }
        ReturnType::Type(_, ty) => ty,
    };
    let mut inner = &**ty;
    while let Type::Paren(syn::TypeParen { elem, .. }) | Type::Group(syn::TypeGroup { elem, .. }) =
        inner
    {
        inner = elem;
    }
    let segment = match inner {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        _ => None,
    };
    let Some(segment) = segment.filter(|s| s.ident == "Result") else {
        errors.at(
            ty,
            format_args!("a #[microservice] must return `Result<T, E>`: {WHY}"),
        );
        return None;
    };
    let types: Vec<&Type> = match &segment.arguments {
        PathArguments::AngleBracketed(args) => args
            .args
            .iter()
            .filter_map(|arg| match arg {
                GenericArgument::Type(ty) => Some(ty),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let count = match &segment.arguments {
        PathArguments::AngleBracketed(args) => args.args.len(),
        _ => 0,
    };
    match types[..] {
        [ok, err] if count == 2 => {
            check_owned(ok, "the success type", errors);
            check_owned(err, "the error type", errors);
            Some(((*ok).clone(), (*err).clone()))
        }
        _ => {
            errors.at(
                ty,
                format_args!(
                    "a #[microservice] must return `Result<T, E>` with both types written out \
                     (for example `Result<u64, ServiceError>`): {WHY}"
                ),
            );
            None
        }
    }
}

/// Reject types that cannot be sent between processes for a reason visible in the tokens:
/// borrows, `impl Trait`, `_`.
fn check_owned(ty: &Type, what: &str, errors: &mut Errors) {
    match ty {
        Type::Reference(reference) => errors.at(
            reference,
            format_args!(
                "{what} of a #[microservice] cannot be a reference: values travel between \
                 processes as messages, so they must be owned (`String` instead of `&str`, \
                 `Vec<T>` instead of `&[T]`)"
            ),
        ),
        Type::ImplTrait(impl_trait) => errors.at(
            impl_trait,
            format_args!(
                "{what} of a #[microservice] cannot be `impl Trait`: the service is compiled \
                 once and called by name from other processes, so its types must be concrete"
            ),
        ),
        Type::Infer(infer) => errors.at(
            infer,
            format_args!(
                "{what} of a #[microservice] must be written out: other processes decode it \
                 by its declared type"
            ),
        ),
        Type::Array(array) => check_owned(&array.elem, what, errors),
        Type::Group(group) => check_owned(&group.elem, what, errors),
        Type::Paren(paren) => check_owned(&paren.elem, what, errors),
        Type::Slice(slice) => check_owned(&slice.elem, what, errors),
        Type::Tuple(tuple) => {
            for elem in &tuple.elems {
                check_owned(elem, what, errors);
            }
        }
        Type::Path(path) => {
            if let Some(qself) = &path.qself {
                check_owned(&qself.ty, what, errors);
            }
            for segment in &path.path.segments {
                let PathArguments::AngleBracketed(args) = &segment.arguments else {
                    continue;
                };
                for arg in &args.args {
                    match arg {
                        GenericArgument::Type(ty) => check_owned(ty, what, errors),
                        GenericArgument::AssocType(assoc) => check_owned(&assoc.ty, what, errors),
                        GenericArgument::Lifetime(lifetime) if lifetime.ident != "static" => {
                            errors.at(
                                lifetime,
                                format_args!(
                                    "{what} of a #[microservice] cannot borrow: values travel \
                                     between processes as messages, so they must be owned \
                                     (only `'static` is allowed)"
                                ),
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
        _ => {}
    }
}
