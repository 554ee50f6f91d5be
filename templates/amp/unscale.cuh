// amp/unscale.cuh: gradient unscale and non-finite check over a list of tensors in one launch, as
// PyTorch's _amp_foreach_non_finite_check_and_unscale_:
//
//   for every element g of every tensor: if g is inf or NaN, *found_inf = 1;
//                                        g = round_T(g * inv_scale)   (f32 multiply, in place)
//
// The check looks at the value before the multiply. Tensors are f32, f16 or bf16, mixed freely in
// one list, of any length (0 and 1 included) and alignment. The list lives in device memory (a
// table of UnscaleEntry, sorted by first_chunk), so its length has no kernel-argument ceiling.
// CTA b handles chunk b: THREADS x ELEMS consecutive elements of the tensor whose chunk range
// holds b (binary search over the table, the same in every thread).
#pragma once

namespace tessera {

// The kernel arguments (`UnscaleParams`: the table, the device found_inf flag and inv_scale, the
// number of tensors) and the table's entries (`UnscaleEntry`: data, len, first_chunk, dtype, an
// ElemCode: f32, f16 or bf16) are generated from their Rust definitions (tessera-codegen,
// amp/params.rs) and precede this file.

template <typename T, int THREADS, int VEC, bool A>
TESSERA_DEVICE bool unscale_range(T* g, i64 begin, int count, float inv) {
    bool bad = false;
    for (int v = thread_index(); v * VEC < count; v += THREADS) {
        const i64 i = begin + (i64)v * VEC;
        if (A || v * VEC + VEC <= count) {
            float t[VEC];
            load_elems<T, VEC, A>(g, i, t);
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
                bad |= !is_finite_f32(t[e]);
                t[e] = mul_rn(t[e], inv);
            }
            store_elems<T, VEC, A>(g, i, t);
        } else {
            for (int e = 0; e < count - v * VEC; ++e) {
                float t[1];
                load_elems<T, 1, false>(g, i + e, t);
                bad |= !is_finite_f32(t[0]);
                t[0] = mul_rn(t[0], inv);
                store_elems<T, 1, false>(g, i + e, t);
            }
        }
    }
    return bad;
}

template <typename T, int THREADS, int ELEMS, int VEC>
TESSERA_DEVICE bool unscale_chunk(T* g, i64 begin, int count, float inv) {
    const bool vec = count == THREADS * ELEMS && vector_aligned(g, begin, Elem<T>::SIZE, VEC * Elem<T>::SIZE);
    return vec ? unscale_range<T, THREADS, VEC, true>(g, begin, count, inv)
               : unscale_range<T, THREADS, VEC, false>(g, begin, count, inv);
}

template <int THREADS, int ELEMS, int VEC>
TESSERA_DEVICE void unscale(const UnscaleParams& p) {
    constexpr i64 CHUNK = (i64)THREADS * ELEMS;
    const i64 chunk = chunk_index();
    const int t = find_tensor(chunk, p.n_tensors, [&](int i) { return p.table[i].first_chunk; });
    const UnscaleEntry e = p.table[t];
    const i64 begin = (chunk - e.first_chunk) * CHUNK;
    if (begin >= e.len) return;  // only for a table that does not match the grid
    const int count = (int)(e.len - begin < CHUNK ? e.len - begin : CHUNK);
    const float inv = *p.inv_scale;
    bool bad = false;
    if (e.dtype == ELEM_F32) bad = unscale_chunk<float, THREADS, ELEMS, VEC>(static_cast<float*>(e.data), begin, count, inv);
    if (e.dtype == ELEM_F16) bad = unscale_chunk<f16, THREADS, ELEMS, VEC>(static_cast<f16*>(e.data), begin, count, inv);
    if (e.dtype == ELEM_BF16) bad = unscale_chunk<bf16, THREADS, ELEMS, VEC>(static_cast<bf16*>(e.data), begin, count, inv);
    // Every writer stores the same value, so the race is benign.
    if (bad) *p.found_inf = 1.f;
}

}  // namespace tessera
