//! The mma.sync LoRA kernel (`templates/lora/sm80.cuh`): the column-tile grouping
//! ([`default_n_group`]) and the launch grid. Its parameters ([`tessera_codegen::LoraParams`], which
//! the sm_90a kernel's embed) are part of the host/device contract in `tessera_codegen`.

use tessera_codegen::{Arch, LoraSpec};

use super::problem::LoraProblem;
use crate::common::error::{Result, RuntimeError};
use crate::device::backend::LaunchConfig;

const MAX_GRID_Y: usize = 65_535;

/// Column tiles per CTA. Every CTA computes `X A` for its row tile once per group (about
/// `r / block_n` of one column tile's work), so larger groups cost less low-rank work but give fewer
/// CTAs. The group minimises the time in column-tile units with about one CTA per multiprocessor
/// at a time: `waves(g) x (g + r / block_n)`, where `waves(g)` is the number of rounds the
/// `row tiles x ceil(column tiles / g)` CTAs take; ties go to the smaller group.
pub fn default_n_group(spec: &LoraSpec, p: &LoraProblem, arch: Arch, multiprocessors: u32) -> usize {
    let (_, block_m, block_n) = spec.cta_shape(arch);
    let m_tiles = p.m.div_ceil(block_m as usize).max(1);
    let n_tiles = p.n.div_ceil(block_n as usize).max(1);
    let slots = multiprocessors.max(1) as usize;
    let low_rank = f64::from(spec.padded_rank()) / f64::from(block_n);
    let cost = |g: usize| (m_tiles * n_tiles.div_ceil(g)).div_ceil(slots) as f64 * (g as f64 + low_rank);
    (1..=n_tiles).fold(1, |best, g| if cost(g) < cost(best) { g } else { best })
}

/// The launch shape: `(row tiles, column-tile groups, 1)`. `None` when Y is empty.
pub fn launch_config(spec: &LoraSpec, p: &LoraProblem, arch: Arch, n_group: usize) -> Result<Option<LaunchConfig>> {
    if p.m == 0 || p.n == 0 {
        return Ok(None);
    }
    if n_group == 0 {
        return Err(RuntimeError::invalid("n_group", "must be at least 1"));
    }
    let (threads, block_m, block_n) = spec.cta_shape(arch);
    let gx = p.m.div_ceil(block_m as usize);
    let gy = p.n.div_ceil(block_n as usize).div_ceil(n_group);
    if gy > MAX_GRID_Y {
        return Err(RuntimeError::invalid("problem.n", format!("needs {gy} CTAs in grid y; the limit is {MAX_GRID_Y}")));
    }
    let gx = u32::try_from(gx).map_err(|_| RuntimeError::invalid("problem.m", "too many row tiles"))?;
    Ok(Some(LaunchConfig {
        grid: [gx, gy as u32, 1],
        block: [threads, 1, 1],
        dynamic_shared_bytes: spec.shared_memory_bytes_for(arch),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_codegen::{ElemType, LoraParams};

    #[test]
    fn params_have_no_padding() {
        assert_eq!(std::mem::size_of::<LoraParams>(), 128);
    }

    #[test]
    fn group_sizes_follow_the_device() {
        let s = LoraSpec::new(ElemType::BF16, ElemType::BF16, 16);
        let p = LoraProblem::new(4096, 4096, 4096, 1);
        // 32 x 32 tiles of 128 x 128 over 132 SMs: groups of 8 column tiles make 128 CTAs, one
        // round (groups of 7 would make 160 CTAs: two rounds of 7 tiles, 14 tile-times for 8).
        assert_eq!(default_n_group(&s, &p, Arch::SM90, 132), 8);
        let cfg = launch_config(&s, &p, Arch::SM90, 8).unwrap().unwrap();
        assert_eq!(cfg.grid, [32, 4, 1]);
        // sm_90a, 128 x 256 tiles: 32 x 16; groups of 4 make 128 CTAs.
        assert_eq!(default_n_group(&s, &p, Arch::SM90A, 132), 4);
        // A few row tiles: the CTAs fit in one round with single column tiles.
        assert_eq!(default_n_group(&s, &LoraProblem::new(256, 4096, 4096, 1), Arch::SM90, 132), 1);
        // Decode: one row tile, every column tile its own CTA.
        assert_eq!(default_n_group(&s, &LoraProblem::new(1, 4096, 4096, 1), Arch::SM90, 132), 1);
        assert!(launch_config(&s, &LoraProblem::new(0, 8, 8, 1), Arch::SM90, 1).unwrap().is_none());
    }
}
