//! The rules of a service's HTTP route, `http = "METHOD /path/{param}"`.
//!
//! Owns: the methods the gateway routes and the shape of a path: it starts with `/`, has no
//! whitespace, and each `{name}` parameter names an argument of the function, once.
//! Promises: a route that passes here is one the gateway can register, so a bad route is a
//! compile error rather than a start-up failure. Must not touch: the other options.

use syn::{Error, Ident, LitStr, Result};

use super::Arg;

/// HTTP methods the gateway routes.
const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Check `"METHOD /path/{param}"` against the function's arguments.
pub(super) fn parse_http(lit: &LitStr, func: &Ident, args: &[Arg]) -> Result<()> {
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
