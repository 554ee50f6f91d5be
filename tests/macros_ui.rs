//! Compile-time errors of the kernel macros, pinned with trybuild: every impossible spec and every
//! construct outside the elementwise subset fails the build with an error at the offending
//! argument or expression (`tests/ui/*.stderr` hold the expected messages). Regenerate them with
//! `TRYBUILD=overwrite cargo test --test macros_ui` after an intended change, and review the diff.

#[test]
fn macro_misuse_is_a_spanned_compile_error() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
