//! Tests of the JSON ⇄ argument conversions: the bytes path gives exactly what the `Value`
//! path gives, on chosen bodies and on generated ones.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::Deserialize;

use schemars::SchemaGenerator;
use serde::Serialize;

use super::*;

fn no_schemas(_: &mut SchemaGenerator) -> Schemas {
    Schemas {
        args: Vec::new(),
        ok: schemars::json_schema!({}),
        err: schemars::json_schema!({}),
    }
}

/// A service of these arguments, never run: only its entry's conversions are used.
macro_rules! test_service {
    ($service:ident, $entry:ident, $args:ty, [$($name:literal),*]) => {
        struct $service;
        static $entry: ServiceEntry = entry::<$service>(
            concat!("test::", stringify!($service)),
            &[$($name),*],
            Options::DEFAULT,
            no_schemas,
            |_| None,
        );
        impl Service for $service {
            type Args = $args;
            type Ok = ();
            type Err = crate::ServiceError;
            fn entry() -> &'static ServiceEntry {
                &$entry
            }
            fn run(_: $args) -> BoxFuture<Result<(), crate::ServiceError>> {
                Box::pin(async { Ok(()) })
            }
        }
    };
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Line {
    sku: String,
    qty: u32,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Dot,
    Circle(u16),
    Pair(i32, i32),
    Rect { w: u32, h: u32 },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Loose {
    Int(i64),
    Float(f64),
    Text(String),
    Point { x: u32, y: u32 },
    Map(BTreeMap<String, i64>),
    List(Vec<Loose>),
    Nothing(()),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
enum Tagged {
    A { n: u8 },
    B { s: String },
}

test_service!(Echo, ECHO, (String,), ["payload"]);
test_service!(None0, NONE, (), []);
test_service!(
    Order,
    ORDER,
    (String, u32, Option<i64>, Vec<f64>, Option<Line>),
    ["sku", "qty", "limit", "weights", "line"]
);
test_service!(
    Kinds,
    KINDS,
    (Shape, Option<Tagged>, BTreeMap<u32, String>, Option<bool>),
    ["shape", "tagged", "by_id", "flag"]
);
test_service!(
    Anything,
    ANYTHING,
    (Loose, Option<serde_json::Value>),
    ["loose", "any"]
);
test_service!(
    Wide,
    WIDE,
    (i128, u128, f32, char, Option<()>),
    ["big", "ubig", "small", "letter", "unit"]
);
test_service!(Optional, OPTIONAL, (Option<u8>, Option<String>), ["a", "b"]);

const ENTRIES: [&ServiceEntry; 7] = [&ECHO, &NONE, &ORDER, &KINDS, &ANYTHING, &WIDE, &OPTIONAL];

/// The `Value` path: what `json_bytes_to_args` must agree with.
fn by_value(entry: &ServiceEntry, body: &[u8]) -> Result<Vec<u8>, String> {
    (entry.json_to_args)(json_value_of_args(body)?)
}

/// Whether the direct reading took these bytes itself (rather than the `Value` path).
fn direct<S: Service>(body: &str) -> bool
where
    S::Args: NamedArgs,
{
    S::Args::from_named_json_bytes(S::entry().arg_names, body.as_bytes()).is_some()
}

fn same(entry: &ServiceEntry, body: &str) -> Result<Vec<u8>, String> {
    let direct = (entry.json_bytes_to_args)(body.as_bytes());
    assert_eq!(
        direct,
        by_value(entry, body.as_bytes()),
        "{} on {body}",
        entry.name
    );
    direct
}

#[test]
fn valid_bodies_are_read_directly_into_the_same_payload() {
    // The entry, whether its direct reading takes a body, and a valid body.
    type Case = (&'static ServiceEntry, fn(&str) -> bool, &'static str);
    let bodies: [Case; 14] = [
        (&ECHO, direct::<Echo>, r#"{"payload": "hi \u00e9\n"}"#),
        (&NONE, direct::<None0>, "{}"),
        (&NONE, direct::<None0>, " null "),
        (&NONE, direct::<None0>, ""),
        (&OPTIONAL, direct::<Optional>, " \x0c\n"),
        (&OPTIONAL, direct::<Optional>, r#"{"b": null}"#),
        (
            &ORDER,
            direct::<Order>,
            r#"{"qty": 7.0, "sku": "a", "weights": [1, 2.5, -3.0, 1e2], "line": {"qty": 1, "sku": "b", "extra": [{"deep": [1, {}]}]}}"#,
        ),
        (
            &ORDER,
            direct::<Order>,
            r#"{"sku": "a", "qty": 1, "limit": -0.0, "weights": []}"#,
        ),
        (
            &KINDS,
            direct::<Kinds>,
            r#"{"shape": "Dot", "by_id": {"7": "x", "1": "y"}}"#,
        ),
        (
            &KINDS,
            direct::<Kinds>,
            r#"{"shape": {"Rect": {"h": 2.0, "w": 1}}, "tagged": {"s": "x", "kind": "B"}, "by_id": {}}"#,
        ),
        (
            &KINDS,
            direct::<Kinds>,
            r#"{"shape": {"Pair": [1, -2]}, "by_id": {}, "flag": true}"#,
        ),
        (
            &ANYTHING,
            direct::<Anything>,
            r#"{"loose": [1.0, 1.5, "s", {"y": 2, "x": 1.0}, {"b": 1, "a": 2.0}, null], "any": {"z": 1.0, "a": [1e3, -2.0, 0.5]}}"#,
        ),
        (
            &WIDE,
            direct::<Wide>,
            r#"{"big": -170141183460469231731687303715884105728, "ubig": 12.0, "small": 0.1, "letter": "x", "unit": null}"#,
        ),
        (
            &WIDE,
            direct::<Wide>,
            r#"{"big": 1, "ubig": 2, "small": 3, "letter": "é"}"#,
        ),
    ];
    for (entry, direct, body) in bodies {
        let outcome = same(entry, body);
        // The big `i128` is a float to the `Value` path, so not an integer: an error.
        if !body.contains("1701411834604") {
            assert!(outcome.is_ok(), "{body}: {outcome:?}");
            assert!(direct(body), "{body} was left to the Value path");
        }
    }
}

#[test]
fn bad_bodies_get_the_value_paths_errors() {
    let cases: [(&ServiceEntry, &str, &str); 12] = [
        (
            &ECHO,
            r#"{"payload": 7}"#,
            "field `payload`: invalid type: integer `7`, expected a string",
        ),
        (&ECHO, "{}", "missing field `payload`"),
        (&ECHO, "null", "missing field `payload`"),
        (&ECHO, "", "missing field `payload`"),
        (
            &ECHO,
            r#"{"payload": "a", "size": 2}"#,
            "unknown field `size`; the arguments are `payload`",
        ),
        (
            &ECHO,
            r#"["a"]"#,
            "expected a JSON object of named arguments (`payload`), found an array",
        ),
        (
            &NONE,
            "7",
            "expected a JSON object of named arguments (none), found a number",
        ),
        (
            &NONE,
            r#"{"x": 1}"#,
            "unknown field `x`; the arguments are none",
        ),
        (
            &ECHO,
            r#"{"payload": "a""#,
            "the arguments are not valid JSON: EOF while parsing an object at line 1 column 15",
        ),
        (
            &ECHO,
            r#"{"payload": "a"} x"#,
            "the arguments are not valid JSON: trailing characters at line 1 column 18",
        ),
        (
            &ORDER,
            r#"{"sku": "a", "qty": 7.5}"#,
            "field `qty`: invalid type: floating point `7.5`, expected u32",
        ),
        (
            &ORDER,
            r#"{"qty": 1, "sku": 2, "bogus": 1}"#,
            "field `sku`: invalid type: integer `2`, expected a string",
        ),
    ];
    for (entry, body, expected) in cases {
        assert_eq!(same(entry, body), Err(expected.to_owned()), "{body}");
    }
}

#[test]
fn a_key_given_twice_counts_once_with_its_last_value() {
    // At the top level the direct reading keeps the last value itself.
    let body = r#"{"payload": "first", "payload": "last"}"#;
    assert!(direct::<Echo>(body));
    assert_eq!(
        same(&ECHO, body),
        postcard::to_stdvec(&("last",)).map_err(|e| e.to_string())
    );
    // Even when the first one would not do.
    assert!(same(&ECHO, r#"{"payload": 1, "payload": "last"}"#).is_ok());
    // Inside an argument, a repeated key is left to the `Value` path, which keeps the last.
    let body = r#"{"sku": "a", "qty": 1, "line": {"sku": "x", "qty": 1, "qty": 2}}"#;
    assert!(!direct::<Order>(body));
    let last = r#"{"sku": "a", "qty": 1, "line": {"sku": "x", "qty": 2}}"#;
    assert_eq!(same(&ORDER, body), same(&ORDER, last));
    let body = r#"{"loose": {"x": 1, "y": 2, "x": 3}}"#;
    assert_eq!(
        same(&ANYTHING, body),
        same(&ANYTHING, r#"{"loose": {"x": 3, "y": 2}}"#)
    );
}

#[test]
fn what_the_direct_reading_cannot_match_is_left_to_the_value_path() {
    // A struct variant from an array: text would take it, a `Value` does not.
    assert!(same(&KINDS, r#"{"shape": {"Rect": [1, 2]}, "by_id": {}}"#).is_err());
    // Numeric keys, escaped keys and objects of many keys.
    same(&KINDS, r#"{"shape": "Dot", "by_id": {"-0": "x"}}"#).ok();
    same(&KINDS, r#"{"shape": "Dot", "by_id": {"1.0": "x"}}"#).ok();
    same(&ANYTHING, r#"{"loose": {"\u0078": 1, "y": 2}}"#).ok();
    let many: Vec<String> = (0..100).map(|i| format!("\"k{i}\": {i}")).collect();
    let body = format!(r#"{{"loose": {{{}}}}}"#, many.join(", "));
    assert!(same(&ANYTHING, &body).is_ok());
    assert!(!direct::<Anything>(&body));
    // Lone surrogates are not valid JSON strings to a `Value`.
    assert!(same(&ECHO, r#"{"payload": "\ud800"}"#).is_err());
    // Nesting deeper than `serde_json`'s limit, even in a skipped value.
    let deep = format!(
        r#"{{"sku": "a", "qty": 1, "line": {{"sku": "b", "qty": 1, "x": {}1{}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert!(same(&ORDER, &deep).is_err());
}

/// A JSON text as a client may write it: keys may repeat, numbers keep their spelling.
#[derive(Debug, Clone)]
enum Text {
    Null,
    Bool(bool),
    Number(String),
    Str(String),
    Array(Vec<Text>),
    Object(Vec<(String, Text)>),
}

impl Text {
    fn render(&self, out: &mut String) {
        match self {
            Text::Null => out.push_str("null"),
            Text::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Text::Number(n) => out.push_str(n),
            Text::Str(s) => out.push_str(&serde_json::Value::from(s.as_str()).to_string()),
            Text::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.render(out);
                }
                out.push(']');
            }
            Text::Object(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::from(key.as_str()).to_string());
                    out.push(':');
                    value.render(out);
                }
                out.push('}');
            }
        }
    }
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u8>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (-300i32..300).prop_map(|n| format!("{n}.0")),
        (-300i32..300).prop_map(|n| format!("{n}.5")),
        Just("-0".to_owned()),
        Just("-0.0".to_owned()),
        Just("1e2".to_owned()),
        Just("2.5E-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("9223372036854775808.0".to_owned()),
        Just("1e300".to_owned()),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x".to_owned()),
        Just("y".to_owned()),
        Just("n".to_owned()),
        Just("s".to_owned()),
        Just("kind".to_owned()),
        Just("A".to_owned()),
        Just("B".to_owned()),
        Just("Rect".to_owned()),
        Just("w".to_owned()),
        Just("h".to_owned()),
        Just("sku".to_owned()),
        Just("qty".to_owned()),
        Just("7".to_owned()),
        "[a-c0-9é]{0,3}",
    ]
}

fn text() -> impl Strategy<Value = Text> {
    let leaf = prop_oneof![
        Just(Text::Null),
        any::<bool>().prop_map(Text::Bool),
        number().prop_map(Text::Number),
        prop_oneof![
            Just("Dot".to_owned()),
            Just("x".to_owned()),
            "[a-zé\"\\\\]{0,4}"
        ]
        .prop_map(Text::Str),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Text::Array),
            prop::collection::vec((key(), inner), 0..4).prop_map(Text::Object),
        ]
    })
}

fn small() -> impl Strategy<Value = Text> {
    prop_oneof![
        (0u8..20).prop_map(|n| Text::Number(n.to_string())),
        (0u8..20).prop_map(|n| Text::Number(format!("{n}.0"))),
        number().prop_map(Text::Number),
    ]
}

fn word() -> impl Strategy<Value = Text> {
    "[a-zé\"\\\\]{0,4}".prop_map(Text::Str)
}

fn object(entries: Vec<(&'static str, BoxedStrategy<Text>)>) -> BoxedStrategy<Text> {
    let entries: Vec<_> = entries
        .into_iter()
        .map(|(k, v)| (prop::bool::weighted(0.95), Just(k.to_owned()), v))
        .collect();
    let extra = prop_oneof![
        4 => Just(Vec::new()),
        1 => prop::collection::vec((key(), text()), 1..3),
    ];
    (entries, extra)
        .prop_map(|(entries, extra)| {
            let mut all: Vec<(String, Text)> = entries
                .into_iter()
                .filter(|e| e.0)
                .map(|e| (e.1, e.2))
                .collect();
            all.extend(extra);
            all
        })
        .prop_shuffle()
        .prop_map(Text::Object)
        .boxed()
}

/// A value that an argument of this name is likely to take (or nearly).
fn plausible(name: &str) -> BoxedStrategy<Text> {
    let numbers = || prop::collection::vec(small(), 0..4).prop_map(Text::Array);
    match name {
        "payload" | "sku" | "b" => word().boxed(),
        "qty" | "big" | "ubig" | "small" | "a" | "limit" => small().boxed(),
        "weights" => numbers().boxed(),
        "line" => object(vec![
            ("sku", word().boxed()),
            ("qty", small().boxed()),
            ("note", prop_oneof![Just(Text::Null), word()].boxed()),
        ]),
        "shape" => prop_oneof![
            Just(Text::Str("Dot".to_owned())),
            small().prop_map(|n| Text::Object(vec![("Circle".to_owned(), n)])),
            numbers().prop_map(|n| Text::Object(vec![("Pair".to_owned(), n)])),
            object(vec![("w", small().boxed()), ("h", small().boxed())])
                .prop_map(|o| Text::Object(vec![("Rect".to_owned(), o)])),
        ]
        .boxed(),
        "tagged" => prop_oneof![
            object(vec![
                ("kind", Just(Text::Str("A".to_owned())).boxed()),
                ("n", small().boxed())
            ]),
            object(vec![
                ("kind", Just(Text::Str("B".to_owned())).boxed()),
                ("s", word().boxed())
            ]),
        ]
        .boxed(),
        "by_id" => prop::collection::vec(
            (
                prop_oneof![
                    Just("7"),
                    Just("12"),
                    Just("-0"),
                    Just("1.0"),
                    Just("01"),
                    Just("-3")
                ],
                word(),
            ),
            0..3,
        )
        .prop_map(|e| Text::Object(e.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
        .boxed(),
        "flag" => prop_oneof![any::<bool>().prop_map(Text::Bool), Just(Text::Null)].boxed(),
        "letter" => "[a-zé]{1,2}".prop_map(Text::Str).boxed(),
        "unit" => Just(Text::Null).boxed(),
        _ => text().boxed(),
    }
}

/// A body for `entry`: mostly its own arguments with likely values, sometimes other
/// keys, repeated keys, or any JSON at all.
fn body(entry: &'static ServiceEntry) -> impl Strategy<Value = Text> {
    let args = entry
        .arg_names
        .iter()
        .map(|&n| (n, prop_oneof![9 => plausible(n), 1 => text()].boxed()))
        .collect();
    prop_oneof![
        8 => object(args),
        1 => text(),
    ]
}

fn any_entry_and_body() -> impl Strategy<Value = (&'static ServiceEntry, String, usize)> {
    prop::sample::select(ENTRIES.to_vec()).prop_flat_map(|entry| {
        (Just(entry), body(entry), any::<usize>()).prop_map(|(entry, body, cut)| {
            let mut text = String::new();
            body.render(&mut text);
            (entry, text, cut)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn the_bytes_give_what_the_value_gives((entry, body, cut) in any_entry_and_body()) {
        let direct = (entry.json_bytes_to_args)(body.as_bytes());
        prop_assert_eq!(&direct, &by_value(entry, body.as_bytes()), "{} on {}", entry.name, body);
        // Cut short, or with a byte changed: nearly always invalid, the same error.
        let at = cut % (body.len() + 1);
        if body.is_char_boundary(at) {
            let short = &body.as_bytes()[..at];
            prop_assert_eq!((entry.json_bytes_to_args)(short), by_value(entry, short));
            let mut changed = body.clone().into_bytes();
            if let Some(b) = changed.get_mut(at) {
                *b = b"{}[],:\"0 -.e"[cut % 12];
            }
            prop_assert_eq!((entry.json_bytes_to_args)(&changed), by_value(entry, &changed));
        }
    }
}
