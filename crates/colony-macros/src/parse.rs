//! Parse and validate a `#[microservice]` function into a [`Service`].
//!
//! Owns: every rule a service must follow that can be checked from its tokens, each
//! reported at the span of the mistake with the reason the rule exists. Promises: a
//! [`Service`] that comes out of here expands to code whose only remaining errors are
//! about trait implementations (serde, `From<CallError>`), which rustc reports through the
//! runtime's `#[diagnostic::on_unimplemented]` notes. Must not touch: code generation.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::ext::IdentExt as _;
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser as _};
use syn::{
    Attribute, Block, Error, FnArg, GenericArgument, Ident, Item, Lit, LitStr, Pat, PathArguments,
    Result, ReturnType, Safety, Signature, Token, Type, Visibility,
};

/// The most arguments a service may take: the runtime reads named JSON arguments into
/// tuples of at most this many elements.
const MAX_ARGS: usize = 12;

/// HTTP methods the gateway routes.
const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Every option `#[microservice(...)]` accepts, in the order the docs list them.
const KNOWN_OPTIONS: &[&str] = &[
    "exposed",
    "http",
    "min_instances",
    "max_instances",
    "high_watermark",
    "low_watermark",
    "threads",
    "blocking",
    "timeout",
];

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

/// Options from `#[microservice(...)]`, validated; `None` means "Colony's default".
#[derive(Default)]
pub(crate) struct Options {
    /// Reachable through the gateway.
    pub(crate) exposed: bool,
    /// `"METHOD /path/{param}"`.
    pub(crate) http: Option<String>,
    /// Instances kept running when idle.
    pub(crate) min_instances: Option<u32>,
    /// Instances the autoscaler never goes past.
    pub(crate) max_instances: Option<u32>,
    /// Load ratio above which an instance is added.
    pub(crate) high_watermark: Option<f64>,
    /// Load ratio below which an instance is removed.
    pub(crate) low_watermark: Option<f64>,
    /// Worker threads per instance.
    pub(crate) threads: Option<u32>,
    /// The body blocks its thread.
    pub(crate) blocking: bool,
    /// The default call deadline, in milliseconds.
    pub(crate) timeout_ms: Option<u64>,
}

/// Collects every independent mistake so that one build reports all of them.
#[derive(Default)]
struct Errors(Option<Error>);

impl Errors {
    fn push(&mut self, err: Error) {
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    /// An error covering all of `tokens` (a span alone would show only the first token on
    /// stable Rust).
    fn at(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(Error::new_spanned(tokens, message));
    }

    fn at_span(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(Error::new(span, message));
    }

    fn finish(self) -> Result<()> {
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
        check_signature(&func.sig, &mut errors);
        let args = parse_args(&func.sig, &mut errors);
        let (ok, err) = match parse_output(&func.sig, &mut errors) {
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

fn check_signature(sig: &Signature, errors: &mut Errors) {
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

fn parse_args(sig: &Signature, errors: &mut Errors) -> Vec<Arg> {
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
fn parse_output(sig: &Signature, errors: &mut Errors) -> Option<(Type, Type)> {
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

/// Which options have been given, to reject repeats.
#[derive(Default)]
struct Seen(Vec<String>);

impl Options {
    fn parse(attr: TokenStream, func: &Ident, args: &[Arg], errors: &mut Errors) -> Result<Self> {
        let mut options = Options::default();
        let mut seen = Seen::default();
        let mut min_instances: Option<(u32, Span)> = None;
        let mut max_instances: Option<(u32, Span)> = None;
        let mut high_watermark: Option<(f64, Span)> = None;
        let mut low_watermark: Option<(f64, Span)> = None;
        let parser = syn::meta::parser(|meta| {
            let Some(name) = meta.path.get_ident().map(Ident::to_string) else {
                return Err(meta.error(unknown_option(&meta.path)));
            };
            if !KNOWN_OPTIONS.contains(&name.as_str()) {
                return Err(meta.error(unknown_option(&meta.path)));
            }
            if seen.0.contains(&name) {
                errors.at(
                    &meta.path,
                    format_args!("`{name}` is given twice: each option may appear once"),
                );
            }
            seen.0.push(name.clone());
            match name.as_str() {
                "exposed" => options.exposed = parse_flag(&meta, &name)?,
                "blocking" => options.blocking = parse_flag(&meta, &name)?,
                "http" => {
                    let lit = parse_string(&meta, "http = \"POST /checkout\"")?;
                    match parse_http(&lit, func, args) {
                        Ok(()) => options.http = Some(lit.value()),
                        Err(err) => errors.push(err),
                    }
                }
                "min_instances" => min_instances = Some(parse_count(&meta, &name)?),
                "max_instances" => {
                    let (max, span) = parse_count(&meta, &name)?;
                    if max == 0 {
                        errors.at_span(
                            span,
                            "`max_instances` must be at least 1: a service with no instance \
                             could never be called",
                        );
                    }
                    max_instances = Some((max, span));
                }
                "threads" => {
                    let (threads, span) = parse_count(&meta, &name)?;
                    if threads == 0 {
                        errors.at_span(
                            span,
                            "`threads` must be at least 1: an instance needs a worker thread \
                             to run anything",
                        );
                    }
                    options.threads = Some(threads);
                }
                "high_watermark" => high_watermark = Some(parse_watermark(&meta, &name, errors)?),
                "low_watermark" => low_watermark = Some(parse_watermark(&meta, &name, errors)?),
                "timeout" => {
                    let lit = parse_string(&meta, "timeout = \"5s\"")?;
                    match parse_timeout(&lit.value()) {
                        Ok(ms) => options.timeout_ms = Some(ms),
                        Err(why) => errors.at(&lit, why),
                    }
                }
                _ => return Err(meta.error(unknown_option(&meta.path))),
            }
            Ok(())
        });
        parser.parse2(attr)?;
        if let (Some((min, span)), Some((max, _))) = (min_instances, max_instances)
            && min > max
        {
            errors.at_span(
                span,
                format_args!(
                    "`min_instances` ({min}) is greater than `max_instances` ({max}): the \
                     autoscaler keeps the count between the two, so min must not exceed max"
                ),
            );
        }
        if let (Some((low, span)), Some((high, _))) = (low_watermark, high_watermark)
            && low >= high
        {
            errors.at_span(
                span,
                format_args!(
                    "`low_watermark` ({low}) must be below `high_watermark` ({high}): the \
                     autoscaler adds instances above the high mark and removes them below the \
                     low one, so if they met or crossed it would flap"
                ),
            );
        }
        options.min_instances = min_instances.map(|(v, _)| v);
        options.max_instances = max_instances.map(|(v, _)| v);
        options.high_watermark = high_watermark.map(|(v, _)| v);
        options.low_watermark = low_watermark.map(|(v, _)| v);
        Ok(options)
    }
}

fn unknown_option(path: &syn::Path) -> String {
    let name = path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::");
    let list = KNOWN_OPTIONS
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let suggestion = KNOWN_OPTIONS
        .iter()
        .map(|known| (edit_distance(&name, known), known))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| format!(" (did you mean `{known}`?)"))
        .unwrap_or_default();
    format!("unknown #[microservice] option `{name}`{suggestion}; the options are {list}")
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `name` alone means true; `name = true` or `name = false` also works.
fn parse_flag(meta: &ParseNestedMeta<'_>, name: &str) -> Result<bool> {
    if !meta.input.peek(Token![=]) {
        return Ok(true);
    }
    match meta.value()?.parse()? {
        Lit::Bool(lit) => Ok(lit.value),
        other => Err(Error::new_spanned(
            other,
            format_args!("`{name}` is a flag: write `{name}`, or `{name} = false`"),
        )),
    }
}

/// A string literal, or an error that shows `example`.
fn parse_string(meta: &ParseNestedMeta<'_>, example: &str) -> Result<LitStr> {
    match meta.value()?.parse()? {
        Lit::Str(lit) => Ok(lit),
        other => Err(Error::new_spanned(
            other,
            format_args!("expected a string here, such as `{example}`"),
        )),
    }
}

/// A leading `-`, which a literal cannot contain, joined with the literal after it.
fn negative(input: ParseStream<'_>) -> Result<Option<TokenStream>> {
    if !input.peek(Token![-]) {
        return Ok(None);
    }
    let minus: Token![-] = input.parse()?;
    let lit: Lit = input.parse()?;
    Ok(Some(quote!(#minus #lit)))
}

/// A count of instances or threads.
fn parse_count(meta: &ParseNestedMeta<'_>, name: &str) -> Result<(u32, Span)> {
    let input = meta.value()?;
    if let Some(tokens) = negative(input)? {
        return Err(Error::new_spanned(
            tokens,
            format_args!("`{name}` is a count, so it cannot be negative"),
        ));
    }
    match input.parse()? {
        Lit::Int(lit) => match lit.base10_parse::<u32>() {
            Ok(value) => Ok((value, lit.span())),
            Err(_) => Err(Error::new(
                lit.span(),
                format_args!("`{name}` must be a whole number from 0 to {}", u32::MAX),
            )),
        },
        other => Err(Error::new_spanned(
            other,
            format_args!("`{name}` is a whole number, such as `{name} = 4`"),
        )),
    }
}

fn parse_watermark(
    meta: &ParseNestedMeta<'_>,
    name: &str,
    errors: &mut Errors,
) -> Result<(f64, Span)> {
    let why = "it is a load ratio (in flight ÷ capacity), and the autoscaler compares each \
               instance's load with it";
    let input = meta.value()?;
    if let Some(tokens) = negative(input)? {
        return Err(Error::new_spanned(
            tokens,
            format_args!("`{name}` must be greater than 0: {why}"),
        ));
    }
    let lit: Lit = input.parse()?;
    let value: f64 = match &lit {
        Lit::Float(float) => float.base10_parse()?,
        Lit::Int(int) => int.base10_parse()?,
        other => {
            return Err(Error::new_spanned(
                other,
                format_args!("`{name}` is a number such as `{name} = 0.8`: {why}"),
            ));
        }
    };
    if !(value.is_finite() && value > 0.0) {
        errors.at(&lit, format_args!("`{name}` must be greater than 0: {why}"));
    }
    Ok((value, lit.span()))
}

/// Check `"METHOD /path/{param}"` against the function's arguments.
fn parse_http(lit: &LitStr, func: &Ident, args: &[Arg]) -> Result<()> {
    let route = lit.value();
    let err = |message: String| Err(Error::new(lit.span(), message));
    let Some((method, path)) = route.split_once(' ') else {
        return err(format!(
            "`http` is \"METHOD /path\", such as \"POST /checkout\" or \"GET /orders/{{id}}\": \
             the gateway routes requests by method and path; found {route:?}"
        ));
    };
    if !HTTP_METHODS.contains(&method) {
        return err(format!(
            "unknown HTTP method `{method}` in `http`; the gateway routes {}",
            HTTP_METHODS.join(", ")
        ));
    }
    if !path.starts_with('/') {
        return err(format!(
            "the HTTP path `{path}` must start with `/`: it is matched against the request's \
             path"
        ));
    }
    if path.chars().any(char::is_whitespace) {
        return err(format!(
            "the HTTP path `{path}` cannot contain whitespace: `http` is one method, one space, \
             then the path"
        ));
    }
    let names: Vec<&str> = args.iter().map(|a| a.name.as_str()).collect();
    let mut params: Vec<&str> = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return err(format!(
                "the HTTP path `{path}` has a `}}` with no `{{`: parameters are written `{{name}}`"
            ));
        }
        let after = &rest[open + 1..];
        let Some(close) = after
            .find(['{', '}'])
            .filter(|&i| after[i..].starts_with('}'))
        else {
            return err(format!(
                "the HTTP path `{path}` has a `{{` with no matching `}}`: parameters are written \
                 `{{name}}`"
            ));
        };
        let param = &after[..close];
        if !names.contains(&param) {
            let list = if names.is_empty() {
                format!("`{func}` takes no arguments")
            } else {
                format!(
                    "the arguments of `{func}` are {}",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return err(format!(
                "the HTTP path parameter `{{{param}}}` is not an argument; {list}: each \
                 `{{name}}` in the path fills the argument of that name"
            ));
        }
        if params.contains(&param) {
            return err(format!(
                "the HTTP path parameter `{{{param}}}` appears twice: it fills one argument"
            ));
        }
        params.push(param);
        rest = &after[close + 1..];
    }
    Ok(())
}

/// `"250ms"`, `"5s"`, `"1.5s"`, `"1m"` → milliseconds; the error says why it is wrong.
fn parse_timeout(text: &str) -> std::result::Result<u64, String> {
    let usage = "`timeout` is a duration with a unit: \"250ms\", \"5s\", \"1.5s\" or \"1m\"";
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim_start());
    let factor: u128 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "" => return Err(format!("{usage}; {text:?} has no unit")),
        other => {
            return Err(format!(
                "{usage}; `{other}` is not a unit (use `ms`, `s` or `m`)"
            ));
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(format!("{usage}; found {text:?}"));
    }
    let too_long = || format!("`timeout` {text:?} is too long");
    let digits: u128 = format!("{whole}{fraction}")
        .parse()
        .map_err(|_| too_long())?;
    let scale = u32::try_from(fraction.len())
        .ok()
        .and_then(|len| 10u128.checked_pow(len))
        .ok_or_else(too_long)?;
    let scaled = digits.checked_mul(factor).ok_or_else(too_long)?;
    if scaled % scale != 0 {
        return Err(format!(
            "`timeout` {text:?} is not a whole number of milliseconds: deadlines are kept in \
             milliseconds"
        ));
    }
    let ms = u64::try_from(scaled / scale).map_err(|_| too_long())?;
    if ms == 0 {
        return Err(
            "`timeout` must be greater than zero: a zero deadline would fail every call before \
             it starts"
                .to_owned(),
        );
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("250ms"), Ok(250));
        assert_eq!(parse_timeout("5s"), Ok(5_000));
        assert_eq!(parse_timeout("1.5s"), Ok(1_500));
        assert_eq!(parse_timeout("1.1s"), Ok(1_100));
        assert_eq!(parse_timeout("1m"), Ok(60_000));
        assert_eq!(parse_timeout("2 s"), Ok(2_000));
        assert_eq!(parse_timeout(".5s"), Ok(500));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("0.5ms").is_err());
        assert!(parse_timeout("5").is_err());
        assert!(parse_timeout("5h").is_err());
        assert!(parse_timeout("s").is_err());
        assert!(parse_timeout("1.2.3s").is_err());
        assert!(parse_timeout("99999999999999999999999999999999999999999m").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("max_instance", "max_instances"), 1);
        assert!(unknown_option(&syn::parse_quote!(expose)).contains("did you mean `exposed`"));
        assert!(!unknown_option(&syn::parse_quote!(colour)).contains("did you mean"));
    }
}
