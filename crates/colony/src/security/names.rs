//! Identities in certificates: how a service or role name is written as a SPIFFE id, and
//! the allow-lists that say who may call a service.
//!
//! Owns: the mapping between names (`shop::checkout::pay`, `@client`) and URI SANs
//! (`spiffe://shop/shop/checkout/pay`, `spiffe://shop/-/client`), and [`CallerPolicy`].
//! Promises: the mapping is reversible and its output is a valid SPIFFE id (the trust domain
//! is lowercase `[a-z0-9._-]`, path segments are `[A-Za-z0-9._-]` with anything else
//! percent-encoded). Must not touch: certificates or sockets.

use std::collections::BTreeMap;

use x509_parser::extensions::GeneralName;

/// The role of a process that calls services but hosts none (`APP call`).
pub const ROLE_CLIENT: &str = "@client";
/// The role of the orchestrator (`colony up`) on its control link: instances check that the
/// peer they register with carries it.
pub const ROLE_ORCHESTRATOR: &str = "@orchestrator";
/// The role of the `colony` CLI when it asks the orchestrator for status, scaling or a
/// stop: the orchestrator answers such requests only from a peer that carries it.
pub const ROLE_CONTROL: &str = "@control";
/// The role of the HTTP gateway when it calls services.
pub const ROLE_GATEWAY: &str = "@gateway";

/// The SPIFFE trust domain of `app`: lowercased, with characters a trust domain may not
/// hold replaced by `-`.
pub fn trust_domain(app: &str) -> String {
    let td: String = app
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if td.is_empty() { "app".to_owned() } else { td }
}

/// The SPIFFE id that names `name` (a service like `shop::checkout::pay`, or a role like
/// `@client`) in `app`: `spiffe://shop/shop/checkout/pay`, `spiffe://shop/-/client`.
///
/// ```
/// use colony::control::security::spiffe_id;
///
/// assert_eq!(spiffe_id("Shop", "shop::checkout::pay"), "spiffe://shop/shop/checkout/pay");
/// assert_eq!(spiffe_id("shop", "@gateway"), "spiffe://shop/-/gateway");
/// ```
pub fn spiffe_id(app: &str, name: &str) -> String {
    let path = match name.strip_prefix('@') {
        Some(role) => format!("-/{}", encode_segment(role)),
        None => name
            .split("::")
            .map(encode_segment)
            .collect::<Vec<_>>()
            .join("/"),
    };
    format!("spiffe://{}/{path}", trust_domain(app))
}

/// The name a SPIFFE id stands for, when it belongs to `app`'s trust domain.
pub fn name_of(app: &str, uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("spiffe://")?;
    let (td, path) = rest.split_once('/')?;
    if td != trust_domain(app) {
        return None;
    }
    let segments: Vec<String> = path.split('/').map(decode_segment).collect::<Option<_>>()?;
    if segments.iter().any(String::is_empty) {
        return None;
    }
    match segments.as_slice() {
        [dash, role] if dash == "-" => Some(format!("@{role}")),
        [first, ..] if first == "-" => None,
        _ => Some(segments.join("::")),
    }
}

/// The names (services and roles of `app`) that a DER certificate's URI SANs carry.
/// URIs of other trust domains, and certificates that do not parse, name nothing.
pub fn names_in_certificate(app: &str, der: &[u8]) -> Vec<String> {
    uri_sans(der, |uri| name_of(app, uri))
}

/// Every SPIFFE id (of any trust domain) in a DER certificate, for error messages.
pub(crate) fn uris_in_certificate(der: &[u8]) -> Vec<String> {
    uri_sans(der, |uri| Some(uri.to_owned()))
}

/// `keep` of each URI SAN of a DER certificate; none when it does not parse.
fn uri_sans(der: &[u8], keep: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => keep(uri),
            _ => None,
        })
        .collect()
}

fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_segment(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `pattern` matches `name`: `*` matches every name, `shop::checkout::*` every
/// service under that module, anything else only itself (roles are written `@gateway`).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix("::*") {
        Some(prefix) => name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with("::")),
        None => pattern == name,
    }
}

/// Who may call which service: per service, the patterns its callers must match
/// (`callers = ["shop::checkout::*", "@gateway"]` in `colony.toml`). A service with no
/// list may be called by any member of the cluster.
///
/// ```
/// use colony::control::security::CallerPolicy;
///
/// let policy = CallerPolicy::new().allow("shop::payment::charge", ["shop::checkout::*"]);
/// let checkout = ["shop::checkout::pay".to_owned()];
/// let client = ["@client".to_owned()];
/// assert!(policy.permits("shop::payment::charge", &checkout));
/// assert!(!policy.permits("shop::payment::charge", &client));
/// assert!(policy.permits("shop::catalog::list", &client)); // no list: anyone
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerPolicy {
    /// Service name → the patterns its callers must match.
    lists: BTreeMap<String, Vec<String>>,
}

impl CallerPolicy {
    /// No allow-lists: every member of the cluster may call every service.
    pub fn new() -> CallerPolicy {
        CallerPolicy::default()
    }

    /// Let only callers matching `callers` call `service` (added to earlier patterns).
    pub fn allow<I, S>(mut self, service: impl Into<String>, callers: I) -> CallerPolicy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.lists
            .entry(service.into())
            .or_default()
            .extend(callers.into_iter().map(Into::into));
        self
    }

    /// Whether no service has an allow-list.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// The patterns of `service`'s allow-list, if it has one.
    pub fn callers_of(&self, service: &str) -> Option<&[String]> {
        self.lists.get(service).map(Vec::as_slice)
    }

    /// The services that have allow-lists.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.lists.keys().map(String::as_str)
    }

    /// Whether a caller whose certificate names `caller` may call `service`.
    pub fn permits(&self, service: &str, caller: &[String]) -> bool {
        match self.lists.get(service) {
            None => true,
            Some(patterns) => caller
                .iter()
                .any(|name| patterns.iter().any(|p| pattern_matches(p, name))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_round_trip() {
        for name in [
            "shop::checkout::pay",
            "a",
            "r#type::x",
            "héllo::wörld",
            "@client",
            "@orchestrator",
            "@control",
        ] {
            let id = spiffe_id("My App", name);
            assert!(id.starts_with("spiffe://my-app/"), "{id}");
            assert!(id.is_ascii(), "{id}");
            assert_eq!(name_of("my app", &id).as_deref(), Some(name), "{id}");
        }
    }

    #[test]
    fn foreign_and_malformed_ids_name_nothing() {
        assert_eq!(name_of("shop", "spiffe://other/shop/checkout"), None);
        assert_eq!(name_of("shop", "https://shop/shop/checkout"), None);
        assert_eq!(name_of("shop", "spiffe://shop/"), None);
        assert_eq!(name_of("shop", "spiffe://shop/a//b"), None);
        assert_eq!(name_of("shop", "spiffe://shop/-/a/b"), None);
        assert_eq!(name_of("shop", "spiffe://shop/a%zz"), None);
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "a::b"));
        assert!(pattern_matches("a::*", "a::b::c"));
        assert!(!pattern_matches("a::*", "ab::c"));
        assert!(!pattern_matches("a::*", "a"));
        assert!(pattern_matches("@gateway", "@gateway"));
        assert!(!pattern_matches("a::b", "a::bc"));
    }
}
