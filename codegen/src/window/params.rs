//! The sliding-window family's host/device contract: the kernel's parameter struct, defined once
//! here; the CUDA declarations the template uses are generated from it and from [`WindowOp`]
//! ([`contract`]), with static assertions that make NVRTC name any field whose layout differs from
//! Rust's.

use super::WindowOp;
use crate::common::params::{Declarations, DevicePtr, DevicePtrMut, KernelParams};

/// The window kernel's single by-value parameter (`templates/window/window.cuh`); `T` is the
/// element type, in and out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, KernelParams)]
#[repr(C)]
pub struct WindowParams {
    /// `[rows, n]` T, rows contiguous.
    pub x: DevicePtr,
    /// `[rows, n_out]` T.
    pub y: DevicePtrMut,
    /// `[rows, n_out]` f32 when k > TILE, else null.
    pub ws: DevicePtrMut<f32>,
    pub rows: i64,
    pub n: i64,
    pub k: i64,
    /// `n - k + 1`.
    pub n_out: i64,
    /// Whole k-blocks of outputs per CTA.
    pub blocks_per_cta: i64,
    pub ctas_per_row: i64,
}

/// What the window template uses from Rust: the op codes and [`WindowParams`].
pub(crate) fn contract(out: &mut Declarations) {
    out.add::<WindowOp>().add::<WindowParams>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_what_the_kernel_takes() {
        assert_eq!(std::mem::size_of::<WindowParams>(), 72);
        let mut d = Declarations::new();
        contract(&mut d);
        let text = d.to_string();
        assert!(text.contains("enum WindowOp : int { WINDOW_MAX = 0, WINDOW_MIN = 1, WINDOW_SUM = 2 };"), "{text}");
        assert!(text.contains("    float* ws;") && text.contains("    long long blocks_per_cta;"), "{text}");
    }
}
