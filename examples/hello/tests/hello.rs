//! The hello example in each deployment shape: one process, and two processes calling
//! each other over mutual TLS.

use std::process::Output;
use std::sync::OnceLock;

use colony::testing::Processes;

/// The app's binary, with a cluster CA made for this test run.
fn app() -> &'static Processes {
    static APP: OnceLock<Processes> = OnceLock::new();
    APP.get_or_init(|| Processes::new(env!("CARGO_BIN_EXE_hello")).expect("a CA for the run"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

fn call(json: &str, peers: &[(&str, &str)]) -> Output {
    app().call("hello::greeter::greet", json, peers, &[])
}

#[test]
fn one_process() {
    let out = call(r#"{"name": "ada  lovelace"}"#, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), r#""Hello, Ada Lovelace! (11 letters)""#);
}

#[test]
fn two_processes() {
    let names = app()
        .serve(
            &["hello::names::normalize", "hello::names::count_letters"],
            &[],
        )
        .expect("names starts");
    let greeter = app()
        .serve(
            &["hello::greeter::greet"],
            &[("hello::names::*", names.addr())],
        )
        .expect("greeter starts");
    let peer = [("hello::greeter::greet", greeter.addr())];
    let out = call(r#"{"name": "grace hopper"}"#, &peer);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), r#""Hello, Grace Hopper! (11 letters)""#);

    // The service's own error crosses both hops as a value.
    let out = call(r#"{"name": "  "}"#, &peer);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("the name is empty"), "{err}");
}

#[test]
fn services_answer_to_any_unique_suffix_of_their_name() {
    let out = app().call("greet", r#"{"name": "ada"}"#, &[], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), r#""Hello, Ada! (3 letters)""#);

    let names = app()
        .serve(&["normalize", "names::count_letters"], &[])
        .expect("names starts by suffixes");
    let greeter = app()
        .serve(&["greeter::greet"], &[("names::*", names.addr())])
        .expect("greeter starts");
    let out = app().call(
        "greet",
        r#"{"name": "ada"}"#,
        &[("greet", greeter.addr())],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), r#""Hello, Ada! (3 letters)""#);
}

#[test]
fn a_peer_that_names_no_service_is_an_error_listing_the_services() {
    let out = app().call(
        "greet",
        r#"{"name": "ada"}"#,
        &[("nope", "127.0.0.1:1")],
        &[],
    );
    assert!(
        !out.status.success(),
        "a peer for no service must not be ignored"
    );
    let err = text(&out.stderr);
    assert!(err.contains("no service `nope`"), "{err}");
    assert!(err.contains("hello::greeter::greet"), "{err}");
    let out = app().call("nope", "{}", &[], &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("hello::names::normalize"));
}

#[test]
fn run_makes_a_development_ca_when_there_is_none_and_serve_refuses_to() {
    let dir = std::env::temp_dir().join(format!("hello-dev-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let app = Processes::plaintext(env!("CARGO_BIN_EXE_hello"))
        .env("COLONY_TLS", "mtls")
        .env("COLONY_CA_DIR", &dir);
    let serve = app.serve(&["greet"], &[]);
    let err = serve.expect_err("serve must not make a CA").to_string();
    assert!(err.contains("colony certs init"), "{err}");
    assert!(!dir.exists(), "serve made {}", dir.display());

    let args: Vec<String> = ["run", "--listen", "127.0.0.1:0"]
        .map(String::from)
        .to_vec();
    let run = app
        .start(&args, "colony: listening on ")
        .expect("run starts");
    assert!(dir.join("ca.pem").exists(), "no CA in {}", dir.display());
    assert!(
        run.logged(&["made one for development"]),
        "{:?}",
        run.log_lines()
    );
    drop(run);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn describe_lists_both_services_with_schemas() {
    let out = app().command().arg("describe").output().expect("runs");
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let services = doc["services"].as_array().expect("services");
    let greet = services
        .iter()
        .find(|s| s["name"] == "hello::greeter::greet")
        .expect("greet is described");
    assert_eq!(greet["exposed"], true);
    assert_eq!(greet["http"], "GET /hello/{name}");
    assert_eq!(greet["args"][0]["name"], "name");
    assert_eq!(greet["args"][0]["schema"]["type"], "string");
    assert_eq!(services.len(), 3);
}
