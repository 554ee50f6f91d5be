//! [`HostTensor`]: a tensor on the host as stored bytes of an element type, what the host
//! wrappers of the multi-tensor kernels take and update in place ([`run_unscale`]'s gradients,
//! [`run_adamw`]'s parameters). Both the unscale and the AdamW launchers use it, so it has a file
//! of its own in the family rather than living in one of them.
//!
//! [`run_unscale`]: crate::amp::unscale::run_unscale
//! [`run_adamw`]: crate::amp::adamw::run_adamw

use tessera_codegen::ElemType;

use crate::common::buffers::{decode, encode};

/// A gradient on the host: stored bytes of `dtype`, updated in place by [`run_unscale`](crate::amp::unscale::run_unscale).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub dtype: ElemType,
    pub bytes: Vec<u8>,
}

impl HostTensor {
    pub fn from_f32(values: &[f32], dtype: ElemType) -> Self {
        HostTensor { dtype, bytes: encode(values, dtype) }
    }
    pub fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size_bytes()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    pub fn to_f32(&self) -> Vec<f32> {
        decode(&self.bytes, self.dtype)
    }
}
