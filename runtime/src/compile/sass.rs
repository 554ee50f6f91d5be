//! The machine code (SASS) of compiled kernels, from `cuobjdump -sass` on the CUBIN NVRTC built.
//!
//! ptxas decides registers and spills; SASS shows which instructions the tensor-core code became.
//! A matrix kernel that silently lost its tensor-core path (HMMA on sm_80, HGMMA on sm_90a) still
//! computes the right answer, only slowly: [`SassSummary`] lets tests hold the line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::error::{Result, RuntimeError};
use crate::compile::ptxas::ptxas_path;

/// Environment variable naming a `cuobjdump` executable (or its folder).
pub const CUOBJDUMP_ENV: &str = "TESSERA_CUOBJDUMP";

/// Finds `cuobjdump`: [`CUOBJDUMP_ENV`], else beside the `ptxas` the runtime uses (a CUDA toolkit's
/// `bin` or the PyPI wheels' `nvidia/cu13/bin`, where `.ci/provision` puts it), else `PATH`.
/// `nvdisasm`, which cuobjdump runs to print SASS, is looked for in the same folder.
pub fn find_cuobjdump() -> Result<PathBuf> {
    let not_found = |searched: Vec<String>| RuntimeError::NotFound {
        what: "cuobjdump".into(),
        searched,
        rejected: Vec::new(),
        fix: "run `bash .ci/provision` (installs nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm), or set \
              TESSERA_CUOBJDUMP"
            .into(),
    };
    let mut tried = Vec::new();
    if let Some(value) = std::env::var_os(CUOBJDUMP_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        let candidate = if path.is_dir() { path.join("cuobjdump") } else { path };
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(format!("{} ({CUOBJDUMP_ENV})", candidate.display()));
        return Err(not_found(tried));
    }
    if let Ok(ptxas) = ptxas_path() {
        if let Some(dir) = ptxas.parent() {
            let candidate = dir.join("cuobjdump");
            if candidate.is_file() {
                return Ok(candidate);
            }
            tried.push(format!("{} (beside ptxas)", candidate.display()));
        }
    }
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    for dir in path_dirs {
        let candidate = dir.join("cuobjdump");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    tried.push("PATH".into());
    Err(not_found(tried))
}

/// [`find_cuobjdump`], searched once per process.
pub fn cuobjdump_path() -> Result<PathBuf> {
    static PATH: OnceLock<Result<PathBuf>> = OnceLock::new();
    PATH.get_or_init(find_cuobjdump).as_ref().cloned().map_err(RuntimeError::replay)
}

/// The SASS listing of a CUBIN (`cuobjdump -sass`).
pub fn disassemble(cubin: &[u8]) -> Result<String> {
    disassemble_with(&cuobjdump_path()?, cubin)
}

/// [`disassemble`] with the given cuobjdump.
pub fn disassemble_with(cuobjdump: &Path, cubin: &[u8]) -> Result<String> {
    let tool_err = |message: String| RuntimeError::Cuobjdump { path: cuobjdump.to_path_buf(), message };
    let dir = tempfile::tempdir().map_err(|e| RuntimeError::io("creating a folder for cuobjdump", e))?;
    let input = dir.path().join("kernel.cubin");
    std::fs::write(&input, cubin).map_err(|e| RuntimeError::io("writing a CUBIN for cuobjdump", e))?;
    let mut command = Command::new(cuobjdump);
    command.arg("-sass").arg(&input);
    // cuobjdump prints SASS through nvdisasm, which ships beside it.
    if let Some(dir) = cuobjdump.parent().filter(|d| d.join("nvdisasm").is_file()) {
        command.env("NVDISASM_PATH", dir);
    }
    let output = command.output().map_err(|e| tool_err(format!("cannot run: {e}")))?;
    if !output.status.success() {
        return Err(tool_err(String::from_utf8_lossy(&output.stderr).trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Instruction counts of one SASS listing, by opcode family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SassSummary {
    /// Warp-level tensor-core MMA (`mma.sync`): HMMA.
    pub hmma: usize,
    /// Warpgroup tensor-core MMA (`wgmma`, sm_90a): HGMMA.
    pub hgmma: usize,
    /// Tensor-memory-accelerator copies (UTMALDG / UTMASTG).
    pub tma: usize,
    /// Local-memory traffic (spills or stack arrays): LDL / STL.
    pub local: usize,
    /// Register reallocation between warpgroups (`setmaxnreg`): USETMAXREG.
    pub setmaxnreg: usize,
    /// The per-thread register counts `setmaxnreg.inc` raises to (USETMAXREG.TRY_ALLOC), in order.
    pub setmaxnreg_inc: Vec<u32>,
    /// The per-thread register counts `setmaxnreg.dec` lowers to (USETMAXREG.DEALLOC), in order.
    pub setmaxnreg_dec: Vec<u32>,
    /// Every instruction line.
    pub instructions: usize,
}

impl SassSummary {
    /// Counts the opcodes of a `cuobjdump -sass` listing (lines `/*0040*/  OPCODE ...`).
    pub fn of(sass: &str) -> SassSummary {
        let mut s = SassSummary::default();
        for line in sass.lines() {
            let Some(rest) = line.trim_start().strip_prefix("/*") else { continue };
            let Some((offset, body)) = rest.split_once("*/") else { continue };
            if !offset.chars().all(|c| c.is_ascii_hexdigit()) {
                continue;
            }
            // Predicated instructions start with `@P0 `; the opcode is the first word after it.
            let mut words = body.split_whitespace().skip_while(|w| w.starts_with('@'));
            let Some(opcode) = words.next() else { continue };
            let family = opcode.split('.').next().unwrap_or(opcode);
            s.instructions += 1;
            match family {
                "HMMA" => s.hmma += 1,
                "HGMMA" => s.hgmma += 1,
                "UTMALDG" | "UTMASTG" => s.tma += 1,
                "LDL" | "STL" => s.local += 1,
                "USETMAXREG" => {
                    s.setmaxnreg += 1;
                    // The count is the last operand: `USETMAXREG.TRY_ALLOC.CTAPOOL UP0, 0xe8 ;`.
                    let count = body
                        .split(';')
                        .next()
                        .and_then(|ops| ops.rsplit([' ', ',']).find(|w| !w.is_empty()))
                        .and_then(|w| u32::from_str_radix(w.trim_start_matches("0x"), 16).ok());
                    if let Some(count) = count {
                        if opcode.contains("DEALLOC") {
                            s.setmaxnreg_dec.push(count);
                        } else {
                            s.setmaxnreg_inc.push(count);
                        }
                    }
                }
                _ => {}
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_opcode_families() {
        let listing = "\
        /*0000*/                   LDC R1, c[0x0][0x28] ;           /* 0x00000a00ff017b82 */
                                                                    /* 0x000fe20000000800 */
        /*0010*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;
        /*0020*/              @!P0 HMMA.16816.F32.BF16 R4, R8, R14, R4 ;
        /*0030*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], R24 ;
        /*0040*/                   UTMALDG.2D [UR8], [UR4] ;
        /*0050*/                   STL [R1], R2 ;
        /*0058*/                   USETMAXREG.DEALLOC.CTAPOOL 0x28 ;
        /*005c*/                   USETMAXREG.TRY_ALLOC.CTAPOOL UP0, 0xe8 ;                           /* 0x000000e8000079c8 */
        /*0060*/                   EXIT ;
";
        let s = SassSummary::of(listing);
        assert_eq!((s.hmma, s.hgmma, s.tma, s.local, s.setmaxnreg, s.instructions), (2, 1, 1, 1, 2, 9));
        assert_eq!((s.setmaxnreg_dec, s.setmaxnreg_inc), (vec![40], vec![232]));
    }
}
