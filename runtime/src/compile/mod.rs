//! From a rendered [`KernelSource`](tessera_codegen::KernelSource) to a loadable image: finding
//! NVRTC and ptxas ([`locate`]), loading NVRTC ([`nvrtc`]), the JIT [`compiler`] and its on-disk
//! [`cache`], what a compile targets ([`target`]), and the reports on compiled kernels ([`ptxas`],
//! [`sass`], [`check`]).
//!
//! Nothing here knows a kernel family: specs arrive rendered.

pub mod cache;
pub mod check;
pub mod compiler;
pub mod locate;
pub mod nvrtc;
pub mod ptxas;
pub mod sass;
pub mod target;

/// For the unit tests that need a tool, the policy of the integration tests' `require_tool`
/// (`runtime/tests/common`): true when `found` is Ok; when not, the test fails under `CI` or
/// `TESSERA_REQUIRE_TOOLS` (set by CI and by `.ci/test`, which provisions the tools), and is
/// otherwise skipped with a note (false).
#[cfg(test)]
pub(crate) fn test_tool_present<T, E: std::fmt::Display>(name: &str, found: std::result::Result<T, E>) -> bool {
    let Err(e) = found else { return true };
    let required = ["CI", "TESSERA_REQUIRE_TOOLS"]
        .iter()
        .any(|var| std::env::var(var).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false")));
    assert!(!required, "{name} is required here (CI or TESSERA_REQUIRE_TOOLS set) but missing: {e}");
    eprintln!("skipped: {e}");
    false
}
