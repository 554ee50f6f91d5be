//! Launchers of the device-side scale updates (`ScaleUpdateSpec`): the dynamic loss scale
//! (PyTorch GradScaler rules) and fp8 delayed scaling (amax history -> scale). The kernels'
//! parameters ([`LossScaleParams`], [`Fp8ScaleParams`]) are part of the host/device contract in
//! `tessera_codegen`.

use tessera_codegen::{DevicePtrMut, ElemType, ScaleUpdateSpec};
pub use tessera_codegen::{Fp8ScaleParams, LossScaleParams};

use crate::common::error::{Result, RuntimeError};
use crate::common::launch::PreparedLaunch;
use crate::common::tensor_list::{check_disjoint, check_elems, check_scalar};
use crate::compile::compiler::Compiler;
use crate::device::backend::{Backend, DeviceBuffer, LaunchConfig};

fn one_thread() -> Option<LaunchConfig> {
    Some(LaunchConfig { grid: [1, 1, 1], block: [32, 1, 1], dynamic_shared_bytes: 0 })
}

/// GradScaler's settings. PyTorch's defaults: growth 2, backoff 0.5, interval 2000.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaleRules {
    pub growth_factor: f32,
    pub backoff_factor: f32,
    pub growth_interval: i32,
}

impl Default for LossScaleRules {
    fn default() -> Self {
        LossScaleRules { growth_factor: 2.0, backoff_factor: 0.5, growth_interval: 2000 }
    }
}

impl LossScaleRules {
    /// growth > 1, 0 < backoff < 1 (both finite), interval >= 1, as GradScaler requires.
    pub fn check(&self) -> Result<()> {
        if !(self.growth_factor.is_finite() && self.growth_factor > 1.0) {
            return Err(RuntimeError::invalid("growth_factor", format!("{} must be finite and > 1", self.growth_factor)));
        }
        if !(self.backoff_factor > 0.0 && self.backoff_factor < 1.0) {
            return Err(RuntimeError::invalid("backoff_factor", format!("{} must be in (0, 1)", self.backoff_factor)));
        }
        if self.growth_interval < 1 {
            return Err(RuntimeError::invalid("growth_interval", format!("{} must be at least 1", self.growth_interval)));
        }
        Ok(())
    }
}

/// The loss-scale update on (f32 scale, i32 growth tracker, f32 found_inf), which it also clears.
pub fn prepare_loss_scale_update(
    backend: &dyn Backend,
    compiler: &Compiler,
    scale: &DeviceBuffer,
    growth_tracker: &DeviceBuffer,
    found_inf: &DeviceBuffer,
    rules: &LossScaleRules,
) -> Result<PreparedLaunch<LossScaleParams>> {
    rules.check()?;
    let named = [("scale", scale), ("growth_tracker", growth_tracker), ("found_inf", found_inf)];
    for (name, b) in named {
        backend.check_buffer(b)?;
        check_scalar(name, b)?;
    }
    check_disjoint(named.iter().map(|(n, b)| (n.to_string(), b.addr(), 4)).collect())?;
    let params = LossScaleParams {
        scale: DevicePtrMut::new(scale.addr()),
        growth_tracker: DevicePtrMut::new(growth_tracker.addr()),
        found_inf: DevicePtrMut::new(found_inf.addr()),
        growth_factor: rules.growth_factor,
        backoff_factor: rules.backoff_factor,
        growth_interval: rules.growth_interval,
        reserved: 0,
    };
    let source = ScaleUpdateSpec::LossScale.render(backend.arch())?;
    PreparedLaunch::new(backend, compiler, &source, one_thread(), params, named.into_iter().map(|(_, b)| b))
}

/// Device buffers of fp8 delayed scaling.
#[derive(Clone, Copy, Debug)]
pub struct Fp8ScaleBuffers<'a> {
    /// f32 amax accumulated by scaled casts; zeroed by the update.
    pub amax: &'a DeviceBuffer,
    /// `history_len` f32, newest first.
    pub history: &'a DeviceBuffer,
    pub scale: &'a DeviceBuffer,
    pub scale_inv: &'a DeviceBuffer,
}

/// The fp8 scale update for `format` (e4m3 or e5m2), `margin` in [-64, 64].
pub fn prepare_fp8_scale_update(
    backend: &dyn Backend,
    compiler: &Compiler,
    buffers: &Fp8ScaleBuffers<'_>,
    history_len: usize,
    format: ElemType,
    margin: i32,
) -> Result<PreparedLaunch<Fp8ScaleParams>> {
    if !format.is_fp8() {
        return Err(RuntimeError::invalid("format", format!("{format} is not an fp8 type; allowed: e4m3, e5m2")));
    }
    if !(-64..=64).contains(&margin) {
        return Err(RuntimeError::invalid("margin", format!("{margin} is outside [-64, 64]")));
    }
    let named = [("amax", buffers.amax), ("scale", buffers.scale), ("scale_inv", buffers.scale_inv)];
    for (name, b) in named {
        backend.check_buffer(b)?;
        check_scalar(name, b)?;
    }
    backend.check_buffer(buffers.history)?;
    check_elems("history", buffers.history, history_len, ElemType::F32)?;
    let mut ranges: Vec<_> = named.iter().map(|(n, b)| (n.to_string(), b.addr(), 4)).collect();
    ranges.push(("history".into(), buffers.history.addr(), history_len * 4));
    check_disjoint(ranges)?;
    let params = Fp8ScaleParams {
        amax: DevicePtrMut::new(buffers.amax.addr()),
        history: DevicePtrMut::new(buffers.history.addr()),
        scale: DevicePtrMut::new(buffers.scale.addr()),
        scale_inv: DevicePtrMut::new(buffers.scale_inv.addr()),
        fp8_max: format.max_finite(),
        history_len: i32::try_from(history_len).map_err(|_| RuntimeError::invalid("history", "too long"))?,
        margin,
        reserved: 0,
    };
    let source = ScaleUpdateSpec::Fp8Scale.render(backend.arch())?;
    let all = [buffers.amax, buffers.history, buffers.scale, buffers.scale_inv];
    PreparedLaunch::new(backend, compiler, &source, one_thread(), params, all.into_iter())
}
