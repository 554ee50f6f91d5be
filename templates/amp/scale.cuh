// amp/scale.cuh: the scale bookkeeping of mixed-precision training, on the device (no host sync,
// capturable in a CUDA graph). One thread does the work; these kernels touch a few scalars.
//
// Loss scale (PyTorch's _amp_update_scale_, the GradScaler rules):
//   found_inf:  scale = scale * backoff;  tracker = 0
//   otherwise:  tracker + 1 == interval ? (scale * growth, kept only if finite; tracker = 0)
//                                       : tracker = tracker + 1
// then *found_inf = 0, ready for the next step's unscale.
//
// fp8 delayed scaling (TransformerEngine's recipe): the amax the casts accumulated enters a rolling
// history (newest first); amax_ref = max(history) (NaN ignored); if amax_ref is finite and > 0,
// scale = (fp8_max / amax_ref) * 2^-margin, kept only if finite and > 0, else the old scale stays;
// scale_inv = 1 / scale; the amax accumulator is zeroed for the next window.
#pragma once

namespace tessera {

// The kernel arguments (`LossScaleParams`, `Fp8ScaleParams`) are generated from their Rust
// definitions (tessera-codegen, amp/params.rs) and precede this file.

TESSERA_DEVICE void loss_scale_update(const LossScaleParams& p) {
    if (thread_index() != 0 || block_index_x() != 0) return;
    const float scale = *p.scale;
    if (*p.found_inf != 0.f) {
        *p.scale = mul_rn(scale, p.backoff_factor);
        *p.growth_tracker = 0;
    } else {
        const int successful = *p.growth_tracker + 1;
        if (successful == p.growth_interval) {
            const float grown = mul_rn(scale, p.growth_factor);
            if (is_finite_f32(grown)) *p.scale = grown;
            *p.growth_tracker = 0;
        } else {
            *p.growth_tracker = successful;
        }
    }
    *p.found_inf = 0.f;
}

TESSERA_DEVICE void fp8_scale_update(const Fp8ScaleParams& p) {
    if (thread_index() != 0 || block_index_x() != 0) return;
    const float amax = bits_f32(*p.amax);
    for (int i = p.history_len - 1; i > 0; --i) p.history[i] = p.history[i - 1];
    if (p.history_len > 0) p.history[0] = amax;
    float ref = p.history_len > 0 ? 0.f : amax;
    for (int i = 0; i < p.history_len; ++i) ref = fmaxf(ref, p.history[i]);
    if (is_finite_f32(ref) && ref > 0.f) {
        // 2^-margin exactly, as f32 bits (margins keep the exponent in the normal range).
        const float pow2 = bits_f32((u32)(F32_EXP_BIAS - p.margin) << F32_MANT_BITS);
        const float scale = mul_rn(div_rn(p.fp8_max, ref), pow2);
        // A scale that overflowed (amax below fp8_max / FLT_MAX) or underflowed is not used.
        if (is_finite_f32(scale) && scale > 0.f) {
            *p.scale = scale;
            *p.scale_inv = div_rn(1.f, scale);
        }
    }
    *p.amax = 0u;
}

}  // namespace tessera
