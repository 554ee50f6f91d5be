// amp/amp.cuh: what the mixed-precision training kernels (cast.cuh, unscale.cuh, adamw.cuh,
// scale.cuh) share: element types and their conversions (fp8 in software, so every
// architecture and the simulator run the same bits), vectorised element I/O, the tensor-table
// lookup of the multi-tensor kernels, and f32 arithmetic that is never contracted into FMAs.
//
// These kernels are memory-bound: what matters is bytes per element and whole 4-16 byte vector
// accesses. Each thread of a CTA moves ELEMS_PER_THREAD elements as vectors of VEC elements;
// vector v of the CTA's chunk goes to thread v % THREADS, so consecutive threads touch
// consecutive vectors (coalesced).
#pragma once

namespace tessera {

// The element codes (`ElemCode`: ELEM_F32, ELEM_F16, ELEM_BF16, ELEM_E4M3, ELEM_E5M2), which the
// multi-tensor tables store per tensor, are generated from their Rust definition (tessera-codegen,
// `ElemType`) and precede the templates that use them (unscale.cuh, adamw.cuh).

struct __align__(1) e4m3 { unsigned char bits; };
struct __align__(1) e5m2 { unsigned char bits; };

// The f32 bit layout (IEEE 754 binary32): sign, 8 exponent bits biased by 127, 23 mantissa bits.
enum : int { F32_MANT_BITS = 23, F32_EXP_BIAS = 127 };
enum : u32 {
    F32_SIGN_BIT = 0x80000000u,  // also the bits of -0.0f
    F32_ABS_MASK = 0x7fffffffu,
    F32_EXP_MASK = 0x7f800000u,  // also the bits of +inf
    F32_QNAN = 0x7fc00000u,      // the canonical quiet NaN
};
// fp8 (one byte): the sign bit, and 0x7f, a NaN in both formats (E4M3's only NaN pattern but for
// the sign; an E5M2 NaN: all exponent bits and a non-zero mantissa), the saturating casts' NaN.
enum : u32 { FP8_SIGN_BIT = 0x80u, FP8_NAN = 0x7fu };

TESSERA_DEVICE u32 f32_bits(float x) { return (u32)__float_as_int(x); }
TESSERA_DEVICE float bits_f32(u32 b) { return __int_as_float((int)b); }
TESSERA_DEVICE bool is_finite_f32(float x) { return (f32_bits(x) & F32_EXP_MASK) != F32_EXP_MASK; }

// ---- fp8 (OCP E4M3 "FN": no infinities, NaN = S.1111.111, max 448; E5M2: IEEE-like, max 57344) ---
// f32 -> fp8, round to nearest even, saturating (PTX cvt.rn.satfinite): |x| at or beyond the largest
// finite value (infinities included) gives +-max, NaN gives 0x7f. Normal results round on the f32
// bits (adding half an fp8 ulp minus one plus the kept lsb implements ties-to-even, and a carry
// into the exponent is the correct result); results below the smallest normal are the f32 value
// scaled exactly by a power of two and rounded to an integer count of fp8 subnormal quanta (2^MANT
// quanta is the smallest normal's code, so that boundary needs no special case).
// MAX_CODE is the format's largest finite code, MAX_BITS the f32 bits of that value.
template <int MANT, int BIAS, u32 MAX_CODE, u32 MAX_BITS>
TESSERA_DEVICE u32 f32_to_fp8_bits(float x) {
    const u32 b = f32_bits(x);
    const u32 sign = (b >> 24) & FP8_SIGN_BIT;  // the f32 sign bit moved to bit 7
    const u32 a = b & F32_ABS_MASK;
    if (a > F32_EXP_MASK) return FP8_NAN;
    if (a >= MAX_BITS) return sign | MAX_CODE;
    const int exp = (int)(a >> F32_MANT_BITS) - F32_EXP_BIAS;
    if (exp >= 1 - BIAS) {
        constexpr int SHIFT = F32_MANT_BITS - MANT;
        const u32 rounded = (a + ((1u << (SHIFT - 1)) - 1u) + ((a >> SHIFT) & 1u)) >> SHIFT;
        return sign | (rounded - ((u32)(F32_EXP_BIAS - BIAS) << MANT));
    }
    // |x| * 2^(MANT + BIAS - 1): exact (a power of two, the result stays normal in f32).
    const float q = fabsf(x) * bits_f32((u32)(F32_EXP_BIAS + MANT + BIAS - 1) << F32_MANT_BITS);
    return sign | __float2uint_rn(q);
}

template <int MANT, int BIAS, bool HAS_INF>
TESSERA_DEVICE float fp8_bits_to_f32(u32 v) {
    constexpr u32 EXP_MASK = (1u << (7 - MANT)) - 1u;  // 7 bits of exponent and mantissa below the sign
    const u32 sign = (v & FP8_SIGN_BIT) << 24;
    const u32 exp = (v >> MANT) & EXP_MASK;
    const u32 mant = v & ((1u << MANT) - 1u);
    if (HAS_INF ? exp == EXP_MASK : (v & FP8_NAN) == FP8_NAN) {
        return bits_f32(sign | (HAS_INF && mant == 0 ? F32_EXP_MASK : F32_QNAN));
    }
    if (exp == 0) {
        // mant quanta of 2^(1 - BIAS - MANT), exact in f32.
        return bits_f32(sign | f32_bits((float)mant * bits_f32((u32)(F32_EXP_BIAS + 1 - BIAS - MANT) << F32_MANT_BITS)));
    }
    return bits_f32(sign | ((exp + (u32)F32_EXP_BIAS - BIAS) << F32_MANT_BITS) | (mant << (F32_MANT_BITS - MANT)));
}

// Per element type: storage size, and conversion of its bits (low bits of a u32) to and from f32.
template <typename T> struct Elem;
template <> struct Elem<float> {
    static constexpr int SIZE = 4;
    TESSERA_DEVICE static float to_f32(u32 b) { return bits_f32(b); }
    TESSERA_DEVICE static u32 from_f32(float x) { return f32_bits(x); }
};
template <> struct Elem<f16> {
    static constexpr int SIZE = 2;
    TESSERA_DEVICE static float to_f32(u32 b) { return bits16_to_f32<f16>(b); }
    TESSERA_DEVICE static u32 from_f32(float x) { return pack2<f16>(x, 0.f) & 0xffffu; }
};
template <> struct Elem<bf16> {
    static constexpr int SIZE = 2;
    TESSERA_DEVICE static float to_f32(u32 b) { return bits16_to_f32<bf16>(b); }
    TESSERA_DEVICE static u32 from_f32(float x) { return pack2<bf16>(x, 0.f) & 0xffffu; }
};
// E4M3: 3 mantissa bits, exponent bias 7, largest finite 448 = code 0x7e (0x43e00000 as f32).
// E5M2: 2 mantissa bits, exponent bias 15, largest finite 57344 = code 0x7b (0x47600000 as f32).
enum : int { E4M3_MANT = 3, E4M3_BIAS = 7, E5M2_MANT = 2, E5M2_BIAS = 15 };
enum : u32 { E4M3_MAX_CODE = 0x7eu, E4M3_MAX_F32 = 0x43e00000u, E5M2_MAX_CODE = 0x7bu, E5M2_MAX_F32 = 0x47600000u };
template <> struct Elem<e4m3> {
    static constexpr int SIZE = 1;
    TESSERA_DEVICE static float to_f32(u32 b) { return fp8_bits_to_f32<E4M3_MANT, E4M3_BIAS, false>(b); }
    TESSERA_DEVICE static u32 from_f32(float x) {
        return f32_to_fp8_bits<E4M3_MANT, E4M3_BIAS, E4M3_MAX_CODE, E4M3_MAX_F32>(x);
    }
};
template <> struct Elem<e5m2> {
    static constexpr int SIZE = 1;
    TESSERA_DEVICE static float to_f32(u32 b) { return fp8_bits_to_f32<E5M2_MANT, E5M2_BIAS, true>(b); }
    TESSERA_DEVICE static u32 from_f32(float x) {
        return f32_to_fp8_bits<E5M2_MANT, E5M2_BIAS, E5M2_MAX_CODE, E5M2_MAX_F32>(x);
    }
};

// ---- vectorised element I/O ---------------------------------------------------------------------
// N elements of T as raw bits, one aligned access of N * SIZE bytes (1 to 16).
template <int BYTES> struct RawVec;
template <> struct RawVec<16> { chunk16 v; };
template <> struct __align__(8) RawVec<8> { u32 x, y; };
template <> struct RawVec<4> { u32 x; };
template <> struct __align__(2) RawVec<2> { unsigned short x; };
template <> struct RawVec<1> { unsigned char x; };

template <int BYTES> TESSERA_DEVICE void raw_to_words(const RawVec<BYTES>& r, u32* w);
template <> TESSERA_DEVICE void raw_to_words<16>(const RawVec<16>& r, u32* w) {
    w[0] = r.v.x; w[1] = r.v.y; w[2] = r.v.z; w[3] = r.v.w;
}
template <> TESSERA_DEVICE void raw_to_words<8>(const RawVec<8>& r, u32* w) { w[0] = r.x; w[1] = r.y; }
template <> TESSERA_DEVICE void raw_to_words<4>(const RawVec<4>& r, u32* w) { w[0] = r.x; }
template <> TESSERA_DEVICE void raw_to_words<2>(const RawVec<2>& r, u32* w) { w[0] = r.x; }
template <> TESSERA_DEVICE void raw_to_words<1>(const RawVec<1>& r, u32* w) { w[0] = r.x; }

template <int BYTES> TESSERA_DEVICE RawVec<BYTES> words_to_raw(const u32* w);
template <> TESSERA_DEVICE RawVec<16> words_to_raw<16>(const u32* w) {
    RawVec<16> r;
    r.v.x = w[0]; r.v.y = w[1]; r.v.z = w[2]; r.v.w = w[3];
    return r;
}
template <> TESSERA_DEVICE RawVec<8> words_to_raw<8>(const u32* w) {
    RawVec<8> r;
    r.x = w[0]; r.y = w[1];
    return r;
}
template <> TESSERA_DEVICE RawVec<4> words_to_raw<4>(const u32* w) { RawVec<4> r; r.x = w[0]; return r; }
template <> TESSERA_DEVICE RawVec<2> words_to_raw<2>(const u32* w) {
    RawVec<2> r;
    r.x = (unsigned short)w[0];
    return r;
}
template <> TESSERA_DEVICE RawVec<1> words_to_raw<1>(const u32* w) {
    RawVec<1> r;
    r.x = (unsigned char)w[0];
    return r;
}

// Loads elements [i, i + N) of `p` widened to f32. ALIGNED: one vector access (the caller checked
// the address); else element by element.
template <typename T, int N, bool ALIGNED>
TESSERA_DEVICE void load_elems(const T* p, i64 i, float (&out)[N]) {
    constexpr int S = Elem<T>::SIZE;
    constexpr int BYTES = N * S;
    const unsigned char* base = reinterpret_cast<const unsigned char*>(p) + i * S;
    if (ALIGNED) {
        constexpr u32 MASK = S == 4 ? 0xffffffffu : (1u << (8 * (S % 4))) - 1u;
        u32 w[(BYTES + 3) / 4];
        raw_to_words<BYTES>(*reinterpret_cast<const RawVec<BYTES>*>(base), w);
#pragma unroll
        for (int e = 0; e < N; ++e) out[e] = Elem<T>::to_f32((w[e * S / 4] >> ((e * S) % 4 * 8)) & MASK);
    } else {
#pragma unroll
        for (int e = 0; e < N; ++e) {
            u32 w;
            raw_to_words<S>(*reinterpret_cast<const RawVec<S>*>(base + e * S), &w);
            out[e] = Elem<T>::to_f32(w);
        }
    }
}

// Stores N f32 values rounded to T at elements [i, i + N) of `p`.
template <typename T, int N, bool ALIGNED>
TESSERA_DEVICE void store_elems(T* p, i64 i, const float (&v)[N]) {
    constexpr int S = Elem<T>::SIZE;
    constexpr int BYTES = N * S;
    unsigned char* base = reinterpret_cast<unsigned char*>(p) + i * S;
    if (ALIGNED) {
        u32 w[(BYTES + 3) / 4];
#pragma unroll
        for (int k = 0; k < (BYTES + 3) / 4; ++k) w[k] = 0u;
#pragma unroll
        for (int e = 0; e < N; ++e) w[e * S / 4] |= Elem<T>::from_f32(v[e]) << ((e * S) % 4 * 8);
        *reinterpret_cast<RawVec<BYTES>*>(base) = words_to_raw<BYTES>(w);
    } else {
#pragma unroll
        for (int e = 0; e < N; ++e) {
            u32 w = Elem<T>::from_f32(v[e]);
            *reinterpret_cast<RawVec<S>*>(base + e * S) = words_to_raw<S>(&w);
        }
    }
}

// Whether `p + i` (elements of SIZE bytes) starts an aligned vector of BYTES bytes.
TESSERA_DEVICE bool vector_aligned(const void* p, i64 i, int size, int bytes) {
    return ((reinterpret_cast<u64>(p) + (u64)(i * size)) % (u64)bytes) == 0;
}

// Max of `v` over the CTA, then one atomic max into *out (f32 bits; v >= 0 orders like its bits).
TESSERA_DEVICE void block_max_to_global(float v, u32* out) {
    __shared__ float warp_max[32];
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v = fmaxf(v, shfl_xor(v, o));
    const int lane = thread_index() % 32;
    const int warp = thread_index() / 32;
    if (lane == 0) warp_max[warp] = v;
    sync_threads();
    if (thread_index() == 0) {
        float m = 0.f;
        for (int w = 0; w < 32 && w * 32 < threads_per_block(); ++w) m = fmaxf(m, warp_max[w]);
        atomic_max_u32(out, f32_bits(m));
    }
}

// ---- multi-tensor launches ----------------------------------------------------------------------
// The CTA's chunk index (grids beyond 2^31 - 1 CTAs are not launched).
TESSERA_DEVICE i64 chunk_index() { return (i64)block_index_x(); }

// The tensor whose chunks contain `chunk`: the last entry with first_chunk <= chunk. `first_chunk`
// reads entry i's first chunk; entries are sorted by it (the runtime builds the table so).
template <typename FirstChunk>
TESSERA_DEVICE int find_tensor(i64 chunk, int n_tensors, FirstChunk&& first_chunk) {
    int lo = 0, hi = n_tensors - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (first_chunk(mid) <= chunk) lo = mid; else hi = mid - 1;
    }
    return lo;
}

}  // namespace tessera
