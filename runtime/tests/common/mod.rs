//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The workspace root, for the project-local toolkit.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Environment variables that make a missing tool fail the test instead of skipping it: CI sets
/// `CI`, and `.ci/test` (which provisions the tools first) sets `TESSERA_REQUIRE_TOOLS`.
const REQUIRE_TOOLS_VARS: [&str; 2] = ["CI", "TESSERA_REQUIRE_TOOLS"];

/// Whether a missing tool must fail the test: one of [`REQUIRE_TOOLS_VARS`] is set to anything but
/// empty, `0` or `false`.
pub fn tools_required() -> bool {
    REQUIRE_TOOLS_VARS.iter().any(|var| std::env::var(var).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false")))
}

/// True when the tool `name` (`nvrtc`, `ptxas` or `cuobjdump`) can be used. When it cannot, the
/// test fails where the tool is required ([`tools_required`]) or where the workspace has its
/// provisioned copy (then not finding it is a locator bug); elsewhere the test is skipped with a
/// note and this returns false.
pub fn require_tool(name: &str) -> bool {
    let (found, provisioned): (Result<(), String>, &str) = match name {
        "nvrtc" => (tessera_runtime::nvrtc_library().map(drop).map_err(|e| e.to_string()), "lib/libnvrtc.so.13"),
        "ptxas" => (tessera_runtime::find_ptxas().map(drop).map_err(|e| e.to_string()), "bin/ptxas"),
        "cuobjdump" => (tessera_runtime::compile::sass::cuobjdump_path().map(drop).map_err(|e| e.to_string()), "bin/cuobjdump"),
        other => panic!("require_tool: unknown tool {other:?}"),
    };
    let Err(e) = found else { return true };
    assert!(!tools_required(), "{name} is required here ({} set) but missing: {e}; run `bash .ci/provision`", REQUIRE_TOOLS_VARS.join(" or "));
    let provisioned = workspace_root().join(".tessera/cuda/nvidia/cu13").join(provisioned);
    assert!(!provisioned.exists(), "the provisioned {name} ({}) exists but was not found: {e}", provisioned.display());
    eprintln!("skipped: {e}");
    false
}

/// [`require_tool`] for NVRTC.
pub fn nvrtc_available() -> bool {
    require_tool("nvrtc")
}

/// [`require_tool`] for ptxas.
pub fn ptxas_available() -> bool {
    require_tool("ptxas")
}

/// [`require_tool`] for cuobjdump.
pub fn cuobjdump_available() -> bool {
    require_tool("cuobjdump")
}

/// A tiny kernel that compiles in well under a second.
pub fn tiny_source(tag: &str) -> tessera_runtime::codegen::KernelSource {
    let ident: String = tag.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let name = format!("tessera_test_{ident}");
    let src = format!(
        "extern \"C\" __global__ void {name}(float* out, float x) {{\n    out[threadIdx.x] = x * {len}.0f;\n}}\n",
        len = tag.len()
    );
    tessera_runtime::codegen::KernelSource::new(
        name,
        src,
        tessera_runtime::codegen::LaunchGeometry { threads_per_block: 32, dynamic_shared_bytes: 0 },
    )
}

/// Compiles every spec through NVRTC (no disk cache: a stale entry must not make a test pass) and,
/// with ptxas, asserts 0 spill bytes and shared memory within each architecture's limit. Prints
/// registers per kernel and the total time. Skips (with a note) where NVRTC is not installed.
pub fn assert_specs_fit(
    family: &str,
    specs: &[(tessera_runtime::codegen::KernelSpec, tessera_runtime::codegen::Arch)],
) {
    use rayon::prelude::*;
    if !nvrtc_available() {
        return;
    }
    let with_ptxas = ptxas_available();
    let started = std::time::Instant::now();
    let compiler = tessera_runtime::Compiler::new();
    let failures: Vec<String> = specs
        .par_iter()
        .filter_map(|(spec, arch)| {
            let label = format!("{arch} {}", spec.kernel_name(*arch));
            match tessera_runtime::check_spec_with(&compiler, *spec, *arch) {
                // Without ptxas's report there is nothing to check the fit against; every kernel
                // uses registers, so a count of 0 means the report's "Used" line was not read.
                Ok(c) if with_ptxas && !c.report.as_ref().is_some_and(|r| r.registers > 0) => {
                    Some(format!("{label}: no parseable ptxas report ({:?}, {:?})", c.report, c.ptxas_unavailable))
                }
                Ok(c) => {
                    if let Some(r) = &c.report {
                        eprintln!(
                            "{label}: {} registers, {} spill bytes",
                            r.registers,
                            r.spill_store_bytes + r.spill_load_bytes
                        );
                    }
                    let problems = c.problems();
                    (!problems.is_empty()).then(|| format!("{label}: {}", problems.join("; ")))
                }
                Err(e) => Some(format!("{label}: {e}")),
            }
        })
        .collect();
    eprintln!(
        "{} {family} kernels in {:.1} s on {} threads (ptxas: {with_ptxas})",
        specs.len(),
        started.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), specs.len(), failures.join("\n"));
}

/// Assembles each source's PTX with `ptxas -v -arch=sm_90a` and fails if ptxas had to serialise
/// the wgmma pipeline ("wgmma.mma_async instructions are serialized", C7514) or inject a
/// warpgroup.arrive (C7519): both appear when accumulator registers are touched between a wgmma and
/// the wait that retires it, or when a wgmma sits under a run-time condition.
pub fn assert_wgmma_not_serialised(sources: &[tessera_runtime::codegen::KernelSource]) {
    use rayon::prelude::*;
    if !nvrtc_available() || !ptxas_available() {
        return;
    }
    let ptxas = tessera_runtime::find_ptxas().expect("ptxas");
    let compiler = tessera_runtime::Compiler::new();
    let failures: Vec<String> = sources
        .par_iter()
        .filter_map(|source| {
            let module =
                match compiler.compile(source, tessera_runtime::Target::ptx(tessera_runtime::codegen::Arch::SM90A)) {
                    Ok(m) => m,
                    Err(e) => return Some(format!("{}: {e}", source.name)),
                };
            let dir = tempfile::tempdir().expect("temp dir");
            let ptx = dir.path().join("k.ptx");
            std::fs::write(&ptx, &module.image).expect("write ptx");
            let out = std::process::Command::new(&ptxas)
                .args(["-v", "-arch=sm_90a", "-o"])
                .arg(dir.path().join("k.cubin"))
                .arg(&ptx)
                .output()
                .expect("ptxas runs");
            let log = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                return Some(format!("{}: {log}", source.name));
            }
            ["C7514", "C7519", "serialized"]
                .iter()
                .find(|code| log.contains(*code))
                .map(|code| format!("{}: ptxas says {code}:\n{log}", source.name))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The warpgroup register split every sm_90a kernel intends: the producer lowers itself to 40
/// registers per thread, the consumers raise themselves to 232 (`templates/*_hopper.cuh`). `None`
/// when the SASS shows exactly that; otherwise what it shows.
pub fn register_split_problem(s: &tessera_runtime::compile::sass::SassSummary) -> Option<String> {
    let all = |v: &[u32], want: u32| !v.is_empty() && v.iter().all(|&c| c == want);
    (!(all(&s.setmaxnreg_dec, 40) && all(&s.setmaxnreg_inc, 232))).then(|| {
        format!("setmaxnreg.dec to {:?} and .inc to {:?}, want the 40/232 split", s.setmaxnreg_dec, s.setmaxnreg_inc)
    })
}
