//! Misuse of the derives is a compile error at the offending item, pinned with trybuild
//! (`tests/ui/*.stderr` hold the expected messages). Regenerate them with
//! `TRYBUILD=overwrite cargo test -p tessera-derive --test ui` after an intended change, and
//! review the diff.

#[test]
fn derive_misuse_is_a_spanned_compile_error() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
