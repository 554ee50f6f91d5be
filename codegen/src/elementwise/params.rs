//! The elementwise family's host/device contract: the map kernel's parameter struct, defined once
//! here; the CUDA declaration the template uses is generated from it ([`contract`]), with static
//! assertions that make NVRTC name any field whose layout differs from Rust's.

use crate::common::params::{Declarations, DevicePtr, DevicePtrMut, KernelParams};
use crate::common::MAX_USER_INPUTS;

/// The map kernel's single by-value parameter (`templates/elementwise/map.cuh`): `n` elements of
/// each input and of the output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, KernelParams)]
#[repr(C)]
pub struct MapParams {
    /// `[n]` of the function's input types, in argument order; the slots past its arity are null
    /// and never read.
    pub inputs: [DevicePtr; MAX_USER_INPUTS],
    /// `[n]` of the function's output type.
    pub out: DevicePtrMut,
    pub n: i64,
}

/// What the map template uses from Rust: [`MapParams`].
pub(crate) fn contract(out: &mut Declarations) {
    out.add::<MapParams>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_what_the_kernel_takes() {
        assert_eq!(std::mem::size_of::<MapParams>(), 48);
        let text = Declarations::of::<MapParams>().to_string();
        assert!(text.contains("    const void* inputs[4];"), "{text}");
    }
}
