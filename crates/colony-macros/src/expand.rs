//! Generate the code of a validated [`Service`].
//!
//! Owns: the shape of the expansion — a wrapper with the user's signature that calls
//! `::colony::__private::invoke`, a private marker type implementing `Service`, and the
//! static entry registered in `SERVICES`. Promises: generated code names only
//! `::colony::__private::…` and `::core`/`::std`; every check the compiler makes on a user's
//! type is spanned at that type so its error points there. Must not touch: validation,
//! which `parse` has done.

use proc_macro2::{Ident, Literal, TokenStream};
use quote::{ToTokens as _, format_ident, quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{FnArg, Pat};

use crate::parse::{Options, Service};

// Why this is long: it is one `quote!` template of the generated code, which reads best
// whole, next to the code it produces.
/// The code that replaces a `#[microservice]` function.
pub(crate) fn service(service: &Service) -> TokenStream {
    let Service {
        attrs,
        vis,
        sig,
        name,
        args,
        args_span,
        ok,
        err,
        block,
        options,
    } = service;
    let ident = &sig.ident;
    let marker = format_ident!("__colony_service_{}", name);
    let output = &sig.output;

    // The wrapper: the user's signature without argument attributes or `mut`, which
    // belong to the body.
    let mut wrapper_sig = sig.clone();
    for input in &mut wrapper_sig.inputs {
        if let FnArg::Typed(typed) = input {
            typed.attrs.clear();
            if let Pat::Ident(pat) = &mut *typed.pat {
                pat.mutability = None;
                pat.attrs.clear();
            }
        }
    }
    let idents: Vec<_> = args.iter().map(|a| &a.ident).collect();
    let names: Vec<_> = args.iter().map(|a| &a.name).collect();
    let types: Vec<_> = args.iter().map(|a| &a.ty).collect();
    let body_params = args.iter().map(|a| {
        let (attrs, mutability, ident, ty) = (&a.attrs, &a.mutability, &a.ident, &a.ty);
        quote!(#(#attrs)* #mutability #ident: #ty)
    });
    // Lint settings the user put on the function also cover its body, which now lives in
    // the inner function.
    let lint_attrs = attrs.iter().filter(|a| a.path().is_ident("allow"));

    let args_tuple = quote_spanned!(*args_span=> (#(#types,)*));
    let ok_assoc = quote_spanned!(ok.span()=> type Ok = #ok;);
    let err_assoc = quote_spanned!(err.span()=> type Err = #err;);
    let boxed = quote_spanned!(ident.span()=>
        ::std::boxed::Box::pin(__colony_body(#(#idents),*))
    );
    let full_name = quote!(::core::concat!(::core::module_path!(), "::", #name));
    let options = options_expr(options);
    // `entry` requires the argument tuple to be readable from named JSON arguments. rustc
    // points an unmet bound at the type argument, so it carries the argument list's span.
    let marker_at_args = Ident::new(&marker.to_string(), *args_span);
    let entry_call = quote_spanned!(*args_span=>
        ::colony::__private::entry::<#marker_at_args>(
            #full_name,
            &[#(#names),*],
            #options,
            __colony_schemas,
            __colony_error_status,
        )
    );
    let arg_schemas = types.iter().map(|ty| schema_of(ty));
    let ok_schema = schema_of(ok);
    let err_schema = schema_of(err);
    let wire_checks = types.iter().copied().chain([ok]).map(
        |ty| quote_spanned!(ty.span()=> const _: () = ::colony::__private::assert_wire::<#ty>();),
    );
    let error_check =
        quote_spanned!(err.span()=> const _: () = ::colony::__private::assert_error::<#err>(););

    quote! {
        #(#attrs)*
        #vis #wrapper_sig {
            ::colony::__private::invoke::<#marker>((#(#idents,)*)).await
        }

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        struct #marker;

        const _: () = {
            // Each check is spanned at its type, so a type that cannot cross a service
            // boundary is reported there, with the runtime's note on how to fix it.
            #(#wire_checks)*
            #error_check

            impl ::colony::__private::Service for #marker {
                type Args = #args_tuple;
                #ok_assoc
                #err_assoc

                fn entry() -> &'static ::colony::__private::ServiceEntry {
                    &__COLONY_ENTRY
                }

                fn run(
                    __colony_args: Self::Args,
                ) -> ::colony::__private::BoxFuture<
                    ::core::result::Result<Self::Ok, Self::Err>,
                > {
                    #(#lint_attrs)*
                    #[allow(clippy::too_many_arguments)]
                    async fn __colony_body(#(#body_params),*) #output #block

                    let (#(#idents,)*) = __colony_args;
                    #boxed
                }
            }

            // The registration is a `#[link_section]` static (linkme), which the
            // `unsafe_code` lint counts: allowed here, so that a crate that denies unsafe
            // code can still declare services (`forbid` cannot be relaxed).
            #[allow(unsafe_code)]
            #[::colony::__private::linkme::distributed_slice(::colony::__private::SERVICES)]
            #[linkme(crate = ::colony::__private::linkme)]
            static __COLONY_ENTRY: ::colony::__private::ServiceEntry = #entry_call;

            // The status of an encoded error of the service's own type, when that type
            // implements `HttpError` (autoref: the fallback answers `None`).
            fn __colony_error_status(
                bytes: &[u8],
            ) -> ::core::option::Option<::colony::__private::ErrorStatus> {
                #[allow(unused_imports)]
                use ::colony::__private::{ViaHttpError as _, ViaNoHttpError as _};
                let err: #err = ::colony::__private::decode(bytes).ok()?;
                (&&::colony::__private::StatusProbe::<#err>::new()).colony_status(&err)
            }

            fn __colony_schemas(
                g: &mut ::colony::__private::SchemaGenerator,
            ) -> ::colony::__private::Schemas {
                #[allow(unused_imports)]
                use ::colony::__private::{ViaAnySchema as _, ViaJsonSchema as _};
                ::colony::__private::Schemas {
                    args: ::std::vec![#(#arg_schemas),*],
                    ok: #ok_schema,
                    err: #err_schema,
                }
            }

            // A service is an entry point: the runtime calls it by name, so it is used even
            // when nothing in this crate calls it directly.
            let _ = #ident;
        };
    }
}

/// The item as written, for when it breaks a rule: with it in place, callers of the function
/// still resolve and the only errors are the macro's. Drops what rustc would report a
/// second time (`const` with `async`, a C-variadic argument).
pub(crate) fn fallback(item: TokenStream) -> TokenStream {
    match syn::parse2::<syn::ItemFn>(item.clone()) {
        Ok(mut func) => {
            func.sig.constness = None;
            func.sig.variadic = None;
            func.into_token_stream()
        }
        Err(_) => item,
    }
}

/// The JSON schema of `ty`: precise when it implements `JsonSchema`, "any value" otherwise.
fn schema_of(ty: &syn::Type) -> TokenStream {
    quote_spanned!(ty.span()=>
        (&&::colony::__private::SchemaProbe::<#ty>::new()).colony_schema(g)
    )
}

/// An expression building `Options` field by field: the struct is `#[non_exhaustive]`, so
/// it cannot be written as a literal outside its crate.
fn options_expr(options: &Options) -> TokenStream {
    let Options {
        exposed,
        http,
        min_instances,
        max_instances,
        high_watermark,
        low_watermark,
        threads,
        blocking,
        timeout_ms,
    } = options;
    let mut sets = Vec::new();
    if *exposed {
        sets.push(quote!(o.exposed = true;));
    }
    if let Some(http) = http {
        sets.push(quote!(o.http = ::core::option::Option::Some(#http);));
    }
    let some_u32 = |field: &str, value: &Option<u32>| {
        value.map(|v| {
            let field = format_ident!("{}", field);
            let v = Literal::u32_suffixed(v);
            quote!(o.#field = ::core::option::Option::Some(#v);)
        })
    };
    let some_f64 = |field: &str, value: &Option<f64>| {
        value.map(|v| {
            let field = format_ident!("{}", field);
            let v = Literal::f64_suffixed(v);
            quote!(o.#field = ::core::option::Option::Some(#v);)
        })
    };
    sets.extend(some_u32("min_instances", min_instances));
    sets.extend(some_u32("max_instances", max_instances));
    sets.extend(some_f64("high_watermark", high_watermark));
    sets.extend(some_f64("low_watermark", low_watermark));
    sets.extend(some_u32("threads", threads));
    if *blocking {
        sets.push(quote!(o.blocking = true;));
    }
    if let Some(ms) = timeout_ms {
        let ms = Literal::u64_suffixed(*ms);
        sets.push(quote!(o.timeout_ms = ::core::option::Option::Some(#ms);));
    }
    if sets.is_empty() {
        return quote!(::colony::__private::Options::DEFAULT);
    }
    quote!({
        let mut o = ::colony::__private::Options::DEFAULT;
        #(#sets)*
        o
    })
}
