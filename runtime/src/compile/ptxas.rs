//! Resource usage of compiled kernels, from `ptxas -v`.
//!
//! NVRTC's PTX says nothing about registers or spills; those are decided by ptxas. Running it on
//! the PTX for a real architecture gives the numbers that decide whether a tile configuration is
//! viable: spilled bytes (local-memory traffic in the inner loop) and static shared memory (which
//! adds to the dynamic shared memory the launcher requests).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tessera_codegen::Arch;

use crate::common::error::{Result, RuntimeError};
use crate::compile::locate::find_ptxas;

/// What ptxas reports for one entry function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PtxasReport {
    pub function: String,
    pub arch: Option<Arch>,
    pub registers: u32,
    pub barriers: u32,
    /// Static shared memory (`N bytes smem`); dynamic shared memory is not included.
    pub shared_bytes: u32,
    pub stack_frame_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
    /// All constant banks of the function (`cmem[0]` holds the kernel parameters).
    pub constant_bytes: u32,
}

impl PtxasReport {
    pub fn spills(&self) -> bool {
        self.spill_store_bytes > 0 || self.spill_load_bytes > 0
    }
}

/// [`find_ptxas`], searched once per process (the search may ask Python, which is slow).
pub fn ptxas_path() -> Result<PathBuf> {
    static PTXAS: OnceLock<Result<PathBuf>> = OnceLock::new();
    PTXAS.get_or_init(find_ptxas).as_ref().cloned().map_err(RuntimeError::replay)
}

/// Runs ptxas (found with [`ptxas_path`]) on `ptx` for `arch`.
pub fn run_ptxas(ptx: &[u8], arch: Arch) -> Result<Vec<PtxasReport>> {
    run_ptxas_with(&ptxas_path()?, ptx, arch)
}

/// Runs the given ptxas executable on `ptx` for `arch` and parses its `-v` report.
pub fn run_ptxas_with(ptxas: &Path, ptx: &[u8], arch: Arch) -> Result<Vec<PtxasReport>> {
    let ptxas_err = |message: String| RuntimeError::Ptxas { path: ptxas.to_path_buf(), message };
    let dir = tempfile::tempdir().map_err(|e| RuntimeError::io("creating a folder for ptxas", e))?;
    let input = dir.path().join("kernel.ptx");
    let output = dir.path().join("kernel.cubin");
    let mut file = std::fs::File::create(&input).map_err(|e| RuntimeError::io("writing PTX for ptxas", e))?;
    file.write_all(ptx).map_err(|e| RuntimeError::io("writing PTX for ptxas", e))?;
    drop(file);

    let result = Command::new(ptxas)
        .arg("-v")
        .arg(format!("-arch={}", arch.sm_name()))
        .arg("-o")
        .arg(&output)
        .arg(&input)
        .output()
        .map_err(|e| ptxas_err(format!("could not run it: {e}")))?;
    // ptxas prints its report on stderr, but older versions used stdout; read both.
    let text = format!("{}{}", String::from_utf8_lossy(&result.stdout), String::from_utf8_lossy(&result.stderr));
    if !result.status.success() {
        return Err(ptxas_err(format!("{}\n{}", result.status, text.trim_end())));
    }
    let reports = parse_ptxas_output(&text);
    if reports.is_empty() {
        return Err(ptxas_err(format!("no entry function in its report:\n{}", text.trim_end())));
    }
    Ok(reports)
}

/// Parses `ptxas -v` output into one report per entry function, in order.
///
/// ```text
/// ptxas info    : 12 bytes gmem, 24 bytes cmem[4]
/// ptxas info    : Compiling entry function 'kernel' for 'sm_80'
/// ptxas info    : Function properties for kernel
///     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 248 registers, used 1 barriers, 504 bytes cmem[0]
/// ```
///
/// Module-level lines (before the first entry) are ignored; "Function properties" blocks of
/// non-entry functions are ignored too.
pub fn parse_ptxas_output(text: &str) -> Vec<PtxasReport> {
    let mut reports: Vec<PtxasReport> = Vec::new();
    // The function the last "Function properties for" line named, if it is an entry.
    let mut properties_of: Option<usize> = None;
    for line in text.lines() {
        let body = line.split_once("info    :").map_or(line, |(_, rest)| rest).trim();
        if let Some(rest) = body.strip_prefix("Compiling entry function") {
            let mut quoted = rest.split('\'').skip(1).step_by(2);
            let function = quoted.next().unwrap_or_default().to_string();
            let arch = quoted.next().and_then(parse_arch);
            reports.push(PtxasReport { function, arch, ..PtxasReport::default() });
            properties_of = None;
        } else if let Some(name) = body.strip_prefix("Function properties for") {
            let name = name.trim();
            properties_of = reports.iter().rposition(|r| r.function == name);
        } else if body.contains("stack frame") {
            if let Some(report) = properties_of.and_then(|i| reports.get_mut(i)) {
                for (value, what) in counts(body) {
                    match what {
                        "bytes stack frame" => report.stack_frame_bytes = value,
                        "bytes spill stores" => report.spill_store_bytes = value,
                        "bytes spill loads" => report.spill_load_bytes = value,
                        _ => {}
                    }
                }
            }
        } else if let Some(rest) = body.strip_prefix("Used") {
            if let Some(report) = reports.last_mut() {
                for (value, what) in counts(&format!("Used{rest}")) {
                    if what == "registers" {
                        report.registers = value;
                    } else if what == "barriers" {
                        report.barriers = value;
                    } else if what == "bytes smem" {
                        report.shared_bytes = value;
                    } else if what.starts_with("bytes cmem") {
                        report.constant_bytes += value;
                    }
                }
            }
        }
    }
    reports
}

/// `"Used 248 registers, used 1 barriers, 504 bytes cmem[0]"` -> `[(248, "registers"),
/// (1, "barriers"), (504, "bytes cmem[0]")]`: each comma-separated item's first number and the
/// words after it.
fn counts(line: &str) -> Vec<(u32, &str)> {
    line.split(',')
        .filter_map(|item| {
            let item = item.trim();
            let start = item.find(|c: char| c.is_ascii_digit())?;
            let digits_end = item[start..].find(|c: char| !c.is_ascii_digit()).map_or(item.len(), |n| start + n);
            let value = item[start..digits_end].parse().ok()?;
            Some((value, item[digits_end..].trim()))
        })
        .collect()
}

fn parse_arch(name: &str) -> Option<Arch> {
    let digits = name.strip_prefix("sm_")?;
    let sm = digits.trim_end_matches(|c: char| c.is_ascii_alphabetic()).parse().ok()?;
    Some(Arch { sm, arch_specific: digits.ends_with('a') })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from ptxas 13.0.88 on the bf16 head_dim 128 causal kernel.
    const SAMPLE: &str = "\
ptxas info    : 12 bytes gmem, 24 bytes cmem[4]
ptxas info    : Compiling entry function 'tessera_attention_fwd_bf16_d128_causal_h8x2_m128n64w8s2' for 'sm_80'
ptxas info    : Function properties for tessera_attention_fwd_bf16_d128_causal_h8x2_m128n64w8s2
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 248 registers, used 1 barriers, 504 bytes cmem[0]
ptxas info    : Compile time = 473.528 ms
";

    #[test]
    fn parses_a_captured_report() {
        let reports = parse_ptxas_output(SAMPLE);
        assert_eq!(
            reports,
            [PtxasReport {
                function: "tessera_attention_fwd_bf16_d128_causal_h8x2_m128n64w8s2".to_string(),
                arch: Some(Arch::SM80),
                registers: 248,
                barriers: 1,
                shared_bytes: 0,
                stack_frame_bytes: 0,
                spill_store_bytes: 0,
                spill_load_bytes: 0,
                constant_bytes: 504,
            }]
        );
    }

    #[test]
    fn parses_spills_smem_several_functions_and_device_functions() {
        let text = "\
ptxas info    : 0 bytes gmem
ptxas info    : Function properties for helper
    8 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function 'a' for 'sm_90a'
ptxas info    : Function properties for a
    24 bytes stack frame, 20 bytes spill stores, 16 bytes spill loads
ptxas info    : Used 255 registers, 16384 bytes smem, 400 bytes cmem[0], 8 bytes cmem[2]
ptxas info    : Compiling entry function 'b' for 'sm_86'
ptxas info    : Function properties for b
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 368 bytes cmem[0]
";
        let r = parse_ptxas_output(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].function, "a");
        assert_eq!(r[0].arch, Some(Arch::SM90A));
        assert_eq!((r[0].registers, r[0].shared_bytes, r[0].constant_bytes), (255, 16384, 408));
        assert_eq!((r[0].stack_frame_bytes, r[0].spill_store_bytes, r[0].spill_load_bytes), (24, 20, 16));
        assert!(r[0].spills());
        assert_eq!((r[1].function.as_str(), r[1].registers, r[1].barriers), ("b", 32, 1));
        assert!(!r[1].spills());
    }

    #[test]
    fn empty_or_foreign_text_gives_no_reports() {
        assert!(parse_ptxas_output("").is_empty());
        assert!(parse_ptxas_output("ptxas fatal   : Unresolved extern function 'x'").is_empty());
    }
}
