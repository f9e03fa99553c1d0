//! The route table: paths, methods, arguments from path, query and body.
use super::*;
use serde_json::json;

fn spec(name: &'static str, schema: Value, source: Source) -> ArgSpec {
    let defs = Map::new();
    let (param_schema, optional) = without_null(&schema, &defs);
    ArgSpec {
        name,
        stringy: is_stringy(&param_schema, &defs, 0),
        structured: is_structured(&param_schema, &defs, 0),
        schema,
        param_schema,
        optional,
        source,
    }
}

fn route(args: Vec<ArgSpec>) -> Route {
    Route {
        entry: &PROBE,
        method: Method::GET,
        path: "/price/{sku}".into(),
        args,
        ok: json!({}),
    }
}

// A stand-in entry for building routes by hand; never called.
static PROBE: ServiceEntry = crate::service::entry::<Probe>(
    "probe::price",
    &["sku", "qty"],
    crate::service::Options::DEFAULT,
    probe_schemas,
    |_| None,
);

// The same arguments behind a route that a matcher cannot take apart.
static ODD: ServiceEntry = crate::service::entry::<Probe>(
    "probe::odd",
    &["sku", "qty"],
    crate::service::Options {
        exposed: true,
        http: Some("GET /price/{sku}-{qty}"),
        ..crate::service::Options::DEFAULT
    },
    probe_schemas,
    |_| None,
);

// Its default route is `POST /probe/price`: taken again by an explicit route.
static TWIN: ServiceEntry = crate::service::entry::<Probe>(
    "probe::twin",
    &["sku", "qty"],
    crate::service::Options {
        exposed: true,
        http: Some("POST /probe/price"),
        ..crate::service::Options::DEFAULT
    },
    probe_schemas,
    |_| None,
);

fn probe_schemas(generator: &mut schemars::SchemaGenerator) -> crate::service::Schemas {
    crate::service::Schemas {
        args: vec![
            generator.subschema_for::<String>(),
            generator.subschema_for::<Option<u32>>(),
        ],
        ok: generator.subschema_for::<u64>(),
        err: schemars::json_schema!({}),
    }
}

#[test]
fn routes_are_read_from_the_entries() {
    let api = Api::from_entries([&PROBE]).expect("routes");
    let route = &api.routes[0];
    assert_eq!(
        (route.method.as_str(), route.path.as_str()),
        ("POST", "/probe/price")
    );
    assert_eq!(route.args[0].source, Source::Body);
    assert!(route.args[0].stringy && !route.args[0].optional);
    assert!(!route.args[1].stringy && route.args[1].optional);
    assert!(matches!(
        api.lookup(&Method::POST, "/probe/price"),
        Lookup::Found(Target::Service(0), _)
    ));
    assert!(matches!(
        api.lookup(&Method::GET, "/probe/price"),
        Lookup::WrongMethod(m) if m == [Method::POST]
    ));
    assert!(matches!(
        api.lookup(&Method::GET, "/nope"),
        Lookup::NotFound
    ));
    assert!(matches!(
        api.lookup(&Method::HEAD, "/openapi.json"),
        Lookup::Found(Target::OpenApi, _)
    ));
}

#[test]
fn colliding_or_unroutable_routes_are_start_up_errors_naming_the_services() {
    let err = Api::from_entries([&PROBE, &TWIN]).expect_err("collide");
    assert!(err.contains("two routes are `POST /probe/price`"), "{err}");
    assert!(
        err.contains("probe::price") && err.contains("probe::twin"),
        "{err}"
    );
    let err = Api::from_entries([&ODD]).expect_err("unroutable");
    assert!(
        err.contains("`/price/{sku}-{qty}` of service `probe::odd`"),
        "{err}"
    );
}

struct Probe;
impl crate::service::Service for Probe {
    type Args = (String, u32);
    type Ok = u64;
    type Err = crate::ServiceError;
    fn entry() -> &'static ServiceEntry {
        &PROBE
    }
    fn run(_: Self::Args) -> crate::service::BoxFuture<Result<u64, crate::ServiceError>> {
        Box::pin(async { Ok(0) })
    }
}

#[test]
fn path_and_query_values_take_their_arguments_types() {
    let r = route(vec![
        spec("sku", json!({"type": "string"}), Source::Path),
        spec("qty", json!({"type": ["integer", "null"]}), Source::Query),
    ]);
    let args = gather_args(&r, &[("sku", "7")], Some("qty=3"), b"").expect("valid");
    assert_eq!(args, json!({"sku": "7", "qty": 3}));
    let args = gather_args(&r, &[("sku", "a%20b")], None, b"").expect("valid");
    assert_eq!(args, json!({"sku": "a b"}));
    // Not a number: kept as a string, so the type check names the field.
    let args = gather_args(&r, &[("sku", "x")], Some("qty=many"), b"").expect("gathered");
    assert_eq!(args["qty"], "many");
    // `null` is not a number; leaving the parameter out is how to say none.
    let args = gather_args(&r, &[("sku", "x")], Some("qty=null"), b"").expect("gathered");
    assert_eq!(args["qty"], "null");
}

#[test]
fn integral_floats_fill_integers() {
    let r = route(vec![spec("qty", json!({"type": "integer"}), Source::Body)]);
    let args = gather_args(&r, &[], None, br#"{"qty": 7.0}"#).expect("valid");
    assert_eq!(args, json!({"qty": 7}));
    let args = gather_args(&r, &[], None, br#"{"qty": 7.5}"#).expect("gathered");
    assert_eq!(args, json!({"qty": 7.5}));
}

#[test]
fn bad_requests_name_what_is_wrong() {
    let r = route(vec![
        spec("sku", json!({"type": "string"}), Source::Path),
        spec("qty", json!({"type": "integer"}), Source::Query),
    ]);
    let err = |q: Option<&str>, body: &[u8]| {
        gather_args(&r, &[("sku", "a")], q, body).expect_err("refused")
    };
    assert!(err(Some("size=2"), b"").contains("unknown query parameter `size`"));
    assert!(err(Some("qty=1&qty=2"), b"").contains("given twice"));
    assert!(err(None, b"{").contains("not valid JSON"));
    assert!(err(None, b"[1]").contains("not an array"));
    assert!(err(None, br#"{"sku": "b"}"#).contains("takes it from the path"));
}

#[test]
fn a_body_alone_is_read_straight_into_the_same_payload_or_error() {
    let r = Route {
        method: Method::POST,
        path: "/probe/price".into(),
        ..route(vec![
            spec("sku", json!({"type": "string"}), Source::Body),
            spec("qty", json!({"type": "integer"}), Source::Query),
        ])
    };
    let by_value = |query: Option<&str>, body: &[u8]| {
        gather_args(&r, &[], query, body).and_then(|args| (PROBE.json_to_args)(args))
    };
    let bodies: [&[u8]; 16] = [
        br#"{"sku": "a", "qty": 7}"#,
        br#"{"qty": 7.0, "sku": "a"}"#,
        br#"{"sku": "a", "qty": 7.5}"#,
        br#"{"sku": "a", "sku": "b", "qty": 1}"#,
        br#"{"sku": "a"}"#,
        br#"{"sku": "a", "qty": 1, "size": 2}"#,
        br#"{"sku": 1, "qty": "x"}"#,
        br#"[1]"#,
        b"\"a\"",
        b"null",
        b"",
        b" \n\x0c",
        b"{",
        br#"{"sku": "a", "qty": 1} {}"#,
        b"\xff",
        br#"{"sku": "\ud800", "qty": 1}"#,
    ];
    for body in bodies {
        let text = String::from_utf8_lossy(body);
        let direct = payload(&r, &[], None, body);
        assert_eq!(direct, by_value(None, body), "{text}");
        assert_eq!(payload(&r, &[], Some(""), body), direct, "{text}");
    }
    // What only the body can get wrong is worded for a body, as before.
    let err = payload(&r, &[], None, b"[1]").expect_err("refused");
    assert_eq!(
        err,
        "the body must be a JSON object of named arguments (`sku`, `qty`), not an array"
    );
    let err = payload(&r, &[], None, b"{").expect_err("refused");
    assert!(err.starts_with("the body is not valid JSON: "), "{err}");
    let err = payload(&r, &[], None, br#"{"sku": "a", "qty": "x"}"#).expect_err("refused");
    assert_eq!(err, "field `qty`: invalid type: string \"x\", expected u32");
    // A query takes the `Value` path, as a path parameter would.
    let body = br#"{"sku": "a"}"#;
    assert_eq!(
        payload(&r, &[], Some("qty=3"), body),
        by_value(Some("qty=3"), body)
    );
    assert!(payload(&r, &[], Some("qty=3"), body).is_ok());
}

#[test]
fn optional_arguments_are_found_in_every_shape_of_option() {
    let defs = Map::new();
    assert!(without_null(&json!({"type": ["string", "null"]}), &defs).1);
    assert!(
        without_null(
            &json!({"anyOf": [{"$ref": "#/x"}, {"type": "null"}]}),
            &defs
        )
        .1
    );
    assert!(!without_null(&json!({"type": "string"}), &defs).1);
    assert_eq!(
        without_null(&json!({"type": ["integer", "null"], "minimum": 0}), &defs).0,
        json!({"type": "integer", "minimum": 0})
    );
}

#[test]
fn string_like_schemas_are_recognized() {
    let defs = Map::new();
    assert!(is_stringy(&json!({"type": "string"}), &defs, 0));
    assert!(is_stringy(&json!({"enum": ["a", "b"]}), &defs, 0));
    assert!(is_stringy(
        &json!({"oneOf": [{"const": "a"}, {"type": "string"}]}),
        &defs,
        0
    ));
    assert!(!is_stringy(&json!({"type": "integer"}), &defs, 0));
    assert!(!is_stringy(&json!({}), &defs, 0));
}

#[test]
fn integer_formats_get_their_bounds() {
    let mut s = json!({"properties": {"n": {"type": "integer", "format": "uint32", "minimum": 0}}});
    add_integer_bounds(&mut s);
    assert_eq!(s["properties"]["n"]["maximum"], json!(u32::MAX));
}

#[test]
fn path_parameters_are_listed() {
    assert_eq!(path_params("/a/{x}/b/{y}"), ["x", "y"]);
    assert!(path_params("/a").is_empty());
    assert_eq!(default_path("shop::cart::add"), "/shop/cart/add");
}

#[test]
fn percent_decoding_is_strict() {
    assert_eq!(super::percent_decode("a%20b"), Ok("a b".to_owned()));
    assert_eq!(super::percent_decode("%E2%9C%93"), Ok("✓".to_owned()));
    for bad in ["%zz", "%", "a%2", "%g0", "%00", "%FF"] {
        let err = super::percent_decode(bad).expect_err(bad);
        assert!(!err.is_empty(), "{bad}");
    }
    assert!(super::percent_decode("%zz").is_err_and(|e| e.contains("%25")));
}
