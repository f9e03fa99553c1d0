//! Compile-time behaviour of the macros: what builds, and the error each mistake gives.
//!
//! Regenerate the expected `.stderr` files with `TRYBUILD=overwrite cargo test -p colony
//! --test it ui`, then read every changed file: each must show the intended error at the
//! intended span.

#[test]
fn microservice() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/microservice/pass/*.rs");
    t.compile_fail("tests/ui/microservice/fail/*.rs");
}
