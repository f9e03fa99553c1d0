//! The options of `#[microservice(...)]`: [`Options`].
//!
//! Owns: the list of known options (with a "did you mean" for a near miss), each option's
//! value and its rules (flags, counts, watermarks, the `timeout` duration), and the rules
//! between options (`min_instances` ≤ `max_instances`, `low_watermark` < `high_watermark`).
//! A `timeout` is read by the one duration grammar of Colony (`colony_duration`: `250ms`,
//! `1.5s`, `1m30s`, `1h`, `1d`), so it is written as everywhere else. Promises: every
//! option appears at most once; each bad value is reported at its span, and the others are
//! still checked. Must not touch: the function's signature (`signature`); the route's shape
//! is checked by `http`.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser as _};
use syn::{Error, Ident, Lit, LitStr, Result, Token};

use super::http::parse_http;
use super::{Arg, Errors};

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

/// Which options have been given, to reject repeats.
#[derive(Default)]
struct Seen(Vec<String>);

impl Options {
    // Why this is long: one `match` arm per option, each with its own rule and message.
    /// Read the attribute's arguments `attr` for function `func` with arguments `args`.
    pub(super) fn parse(
        attr: TokenStream,
        func: &Ident,
        args: &[Arg],
        errors: &mut Errors,
    ) -> Result<Self> {
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

/// A `timeout` (`"250ms"`, `"5s"`, `"1.5s"`, `"1m30s"`, `"1h"`, `"1d"`) in milliseconds, read
/// by `colony_duration`; the error says why it is wrong.
fn parse_timeout(text: &str) -> std::result::Result<u64, String> {
    let duration = colony_duration::parse(text).map_err(|e| format!("invalid `timeout`: {e}"))?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "`timeout` {text:?} is not a whole number of milliseconds: deadlines are kept in \
             milliseconds"
        ));
    }
    if duration.is_zero() {
        return Err(
            "`timeout` must be greater than zero: a zero deadline would fail every call before \
             it starts"
                .to_owned(),
        );
    }
    u64::try_from(duration.as_millis()).map_err(|_| format!("`timeout` {text:?} is too long"))
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
        assert_eq!(parse_timeout("1h"), Ok(3_600_000));
        assert_eq!(parse_timeout("5h"), Ok(18_000_000));
        assert_eq!(parse_timeout("1d"), Ok(86_400_000));
        assert_eq!(parse_timeout("1m30s"), Ok(90_000));
        assert_eq!(parse_timeout("1h 1.5s"), Ok(3_601_500));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("0.5ms").is_err());
        assert!(parse_timeout("5").is_err());
        assert!(parse_timeout("5w").is_err());
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
