//! `mma.sync.aligned.m16n8k{8,16}.row.col` with f16/bf16 inputs (PTX ISA, "Matrix Fragments for
//! mma.m16n8k16 / mma.m16n8k8 with floating point type").
//!
//! Fragment layout, with g = lane / 4 and t = lane % 4; every 32-bit register holds two 16-bit
//! values, the lower column (A, C, D) or row (B) in the low half:
//!
//! ```text
//!   A 16xK (row):  a0 = A[g][2t..2t+1]   a1 = A[g+8][2t..2t+1]          (k8: a0, a1 only)
//!                  a2 = A[g][2t+8..+9]   a3 = A[g+8][2t+8..+9]
//!   B Kx8 (col):   b0 = B[2t..2t+1][g]   b1 = B[2t+8..2t+9][g]          (k8: b0 only)
//!   C/D f32:       c0,c1 = C[g][2t..2t+1]   c2,c3 = C[g+8][2t..2t+1]
//!   C/D f16:       c0 = C[g][2t..2t+1] packed, c1 = C[g+8][2t..2t+1] packed
//! ```
//!
//! Arithmetic: each product of two f16/bf16 values is exact in f32; the products are added to C in
//! f64 in order k = 0, 1, ..., K-1 and the sum is rounded once (to f32, or to f16 for f16
//! accumulators). This is the host emulation's rule (tests/emulation/host_runtime.cpp); the
//! hardware's order and internal precision are unspecified but at least f32-accurate, so results
//! can differ from a GPU in the last bit of the accumulator.

use crate::ir::{MmaShape, Rnd};
use crate::numerics::{bf16_to_f32, f16_to_f32, round_to_format};

/// One lane's registers: a (up to 4), b (up to 2), c (up to 4, f32 bits or packed f16 pairs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LaneIn {
    pub a: [u32; 4],
    pub b: [u32; 2],
    pub c: [u32; 4],
}

/// Computes D for the warp; returns each lane's d registers (4 f32, or 2 packed f16 pairs).
///
/// On x86-64 hosts with AVX the same code is compiled a second time with AVX enabled (wider
/// vectors for the 16x8xK product) and picked at run time. The results are bit-identical: Rust
/// never contracts `acc + x * b` into a fused multiply-add, so both versions perform the same
/// IEEE operations in the same order.
pub(crate) fn mma(shape: MmaShape, lanes: &[LaneIn; 32]) -> [[u32; 4]; 32] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU supports AVX (checked just above).
            return unsafe { mma_avx(shape, lanes) };
        }
    }
    mma_generic(shape, lanes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn mma_avx(shape: MmaShape, lanes: &[LaneIn; 32]) -> [[u32; 4]; 32] {
    mma_generic(shape, lanes)
}

#[inline(always)]
fn mma_generic(shape: MmaShape, lanes: &[LaneIn; 32]) -> [[u32; 4]; 32] {
    let k = shape.k as usize;
    let decode = |reg: u32, half: usize| -> f32 {
        let h = ((reg >> (16 * half)) & 0xffff) as u16;
        if shape.bf16 {
            bf16_to_f32(h)
        } else {
            f16_to_f32(h)
        }
    };
    // Values are kept in f64: the product of two 16-bit floats is exact in f32 and in f64 alike,
    // so `acc + a * b` in f64 is the host emulation's `acc + (double)(a * b)` (with or without a
    // fused multiply-add: the product needs no rounding).
    let mut a = [[0f64; 16]; 16];
    let mut b = [[0f64; 8]; 16];
    let mut d = [[0f64; 8]; 16];
    for (l, lane) in lanes.iter().enumerate() {
        let g = l / 4;
        let t = l % 4;
        for h in 0..2 {
            a[g][2 * t + h] = decode(lane.a[0], h) as f64;
            a[g + 8][2 * t + h] = decode(lane.a[1], h) as f64;
            b[2 * t + h][g] = decode(lane.b[0], h) as f64;
            if k == 16 {
                a[g][2 * t + 8 + h] = decode(lane.a[2], h) as f64;
                a[g + 8][2 * t + 8 + h] = decode(lane.a[3], h) as f64;
                b[2 * t + 8 + h][g] = decode(lane.b[1], h) as f64;
            }
            if shape.f32_acc_c {
                d[g][2 * t + h] = f32::from_bits(lane.c[h]) as f64;
                d[g + 8][2 * t + h] = f32::from_bits(lane.c[2 + h]) as f64;
            } else {
                d[g][2 * t + h] = f16_to_f32(((lane.c[0] >> (16 * h)) & 0xffff) as u16) as f64;
                d[g + 8][2 * t + h] = f16_to_f32(((lane.c[1] >> (16 * h)) & 0xffff) as u16) as f64;
            }
        }
    }
    // k outermost per row keeps each element's sum in k order while the 8 columns vectorise.
    for (arow, drow) in a.iter().zip(d.iter_mut()) {
        let mut acc = *drow;
        for (kk, brow) in b.iter().enumerate().take(k) {
            let x = arow[kk];
            for c in 0..8 {
                acc[c] += x * brow[c];
            }
        }
        *drow = acc;
    }
    let mut out = [[0u32; 4]; 32];
    for (l, o) in out.iter_mut().enumerate() {
        let g = l / 4;
        let t = l % 4;
        if shape.f32_acc_d {
            o[0] = (d[g][2 * t] as f32).to_bits();
            o[1] = (d[g][2 * t + 1] as f32).to_bits();
            o[2] = (d[g + 8][2 * t] as f32).to_bits();
            o[3] = (d[g + 8][2 * t + 1] as f32).to_bits();
        } else {
            let h = |x: f64| round_to_format(x, 5, 10, Rnd::Rn, 0) as u32;
            o[0] = h(d[g][2 * t]) | (h(d[g][2 * t + 1]) << 16);
            o[1] = h(d[g + 8][2 * t]) | (h(d[g + 8][2 * t + 1]) << 16);
        }
    }
    out
}
