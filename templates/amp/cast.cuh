// amp/cast.cuh: element type conversion of one tensor, optionally scaled, optionally reporting amax.
//
//   y[i] = convert_TO(x[i] * scale)        (SCALED; one f32 RNE multiply, then the conversion)
//   y[i] = convert_TO(x[i])                (otherwise)
//   amax = max |x[i]| over the input, NaN ignored (AMAX; atomically max-ed into *amax)
//
// Conversions round to nearest even; to fp8 they saturate (see amp.cuh). amax is accumulated
// with an integer atomic max on the f32 bits (|x| >= 0 orders like its bit pattern), one per CTA
// after a warp-shuffle and shared-memory reduction, so the caller zeroes *amax before the first
// cast of a window (scale.cuh's fp8 scale update zeroes it after consuming it). Delayed
// scaling: cast with the scale of the previous step, then update the scale from the amax history.
#pragma once

namespace tessera {

// The kernel arguments (`CastParams`: x [n] TI, y [n] TO, the device scale (SCALED) and amax
// (AMAX) or null, n) are generated from their Rust definition (tessera-codegen, amp/params.rs) and
// precede this file.

// Elements [begin, begin + count) of the chunk: vector accesses when A, else element-wise for
// the tail of each thread's last vector. Returns this thread's max |x| (AMAX).
template <typename TI, typename TO, int THREADS, int VEC, bool SCALED, bool AMAX, bool A>
TESSERA_DEVICE float cast_range(const TI* x, TO* y, i64 begin, int count, float scale) {
    float amax = 0.f;
    for (int v = thread_index(); v * VEC < count; v += THREADS) {
        const i64 i = begin + (i64)v * VEC;
        if (A || v * VEC + VEC <= count) {
            float t[VEC];
            load_elems<TI, VEC, A>(x, i, t);
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
                if (AMAX) amax = fmaxf(amax, fabsf(t[e]));
                if (SCALED) t[e] = mul_rn(t[e], scale);
            }
            store_elems<TO, VEC, A>(y, i, t);
        } else {
            for (int e = 0; e < count - v * VEC; ++e) {
                float t[1];
                load_elems<TI, 1, false>(x, i + e, t);
                if (AMAX) amax = fmaxf(amax, fabsf(t[0]));
                if (SCALED) t[0] = mul_rn(t[0], scale);
                store_elems<TO, 1, false>(y, i + e, t);
            }
        }
    }
    return amax;
}

template <typename TI, typename TO, int THREADS, int ELEMS, int VEC, bool SCALED, bool AMAX>
TESSERA_DEVICE void cast(const CastParams& p) {
    constexpr i64 CHUNK = (i64)THREADS * ELEMS;
    static_assert(ELEMS % VEC == 0, "whole vectors per thread");
    const TI* x = static_cast<const TI*>(p.x);
    TO* y = static_cast<TO*>(p.y);
    const i64 begin = chunk_index() * CHUNK;
    const int count = (int)(p.n - begin < CHUNK ? p.n - begin : CHUNK);
    const float scale = SCALED ? *p.scale : 1.f;
    // Vector accesses when the chunk is full and both tensors' vectors are aligned.
    const bool vec = count == CHUNK && vector_aligned(x, begin, Elem<TI>::SIZE, VEC * Elem<TI>::SIZE) &&
                     vector_aligned(y, begin, Elem<TO>::SIZE, VEC * Elem<TO>::SIZE);
    const float amax = vec ? cast_range<TI, TO, THREADS, VEC, SCALED, AMAX, true>(x, y, begin, count, scale)
                           : cast_range<TI, TO, THREADS, VEC, SCALED, AMAX, false>(x, y, begin, count, scale);
    if (AMAX) block_max_to_global(amax, p.amax);
}

}  // namespace tessera
