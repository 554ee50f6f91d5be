// elementwise/map.cuh: a user-defined elementwise kernel, out[i] = F(in0[i], ..., in{ARITY-1}[i]).
//
// F is a functor over f32 values (the CUDA translation of a Rust function, see
// `#[tessera::elementwise]`): inputs are widened exactly from their types, the result is rounded
// into TO. CTAs walk the chunks of THREADS x ELEMS elements with a grid-stride loop (the runtime
// launches at most a few CTAs per multiprocessor); full, aligned chunks move whole vectors of VEC
// elements per array, the rest goes element by element.
#pragma once

namespace tessera {

// The kernel arguments (`MapParams`: the inputs, null past ARITY, the output, n) are generated
// from their Rust definition (tessera-codegen, elementwise/params.rs) and precede this file.

template <typename TO, typename T0, typename T1, typename T2, typename T3, int ARITY, int VEC, bool A, typename F>
TESSERA_DEVICE void map_vector(const MapParams& p, i64 i, const F& f) {
    float in[ARITY > 0 ? ARITY : 1][VEC];
    load_elems<T0, VEC, A>(static_cast<const T0*>(p.inputs[0]), i, in[0]);
    if constexpr (ARITY > 1) load_elems<T1, VEC, A>(static_cast<const T1*>(p.inputs[1]), i, in[1]);
    if constexpr (ARITY > 2) load_elems<T2, VEC, A>(static_cast<const T2*>(p.inputs[2]), i, in[2]);
    if constexpr (ARITY > 3) load_elems<T3, VEC, A>(static_cast<const T3*>(p.inputs[3]), i, in[3]);
    float out[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
        float a[ARITY > 0 ? ARITY : 1];
#pragma unroll
        for (int k = 0; k < ARITY; ++k) a[k] = in[k][e];
        out[e] = f(a);
    }
    store_elems<TO, VEC, A>(static_cast<TO*>(p.out), i, out);
}

template <typename TO, typename T0, typename T1, typename T2, typename T3, int ARITY, int THREADS, int ELEMS, int VEC,
          typename F>
TESSERA_DEVICE void map(const MapParams& p, const F& f) {
    constexpr i64 CHUNK = (i64)THREADS * ELEMS;
    const i64 chunks = (p.n + CHUNK - 1) / CHUNK;
    for (i64 c = block_index_x(); c < chunks; c += blocks_per_grid()) {
        const i64 begin = c * CHUNK;
        const int count = (int)(p.n - begin < CHUNK ? p.n - begin : CHUNK);
        bool vec = count == CHUNK && vector_aligned(p.out, begin, Elem<TO>::SIZE, VEC * Elem<TO>::SIZE);
        vec = vec && vector_aligned(p.inputs[0], begin, Elem<T0>::SIZE, VEC * Elem<T0>::SIZE);
        if (ARITY > 1) vec = vec && vector_aligned(p.inputs[1], begin, Elem<T1>::SIZE, VEC * Elem<T1>::SIZE);
        if (ARITY > 2) vec = vec && vector_aligned(p.inputs[2], begin, Elem<T2>::SIZE, VEC * Elem<T2>::SIZE);
        if (ARITY > 3) vec = vec && vector_aligned(p.inputs[3], begin, Elem<T3>::SIZE, VEC * Elem<T3>::SIZE);
        for (int v = thread_index(); v * VEC < count; v += THREADS) {
            const i64 i = begin + (i64)v * VEC;
            if (vec) {
                map_vector<TO, T0, T1, T2, T3, ARITY, VEC, true>(p, i, f);
            } else {
                for (int e = 0; e < VEC && v * VEC + e < count; ++e) map_vector<TO, T0, T1, T2, T3, ARITY, 1, false>(p, i + e, f);
            }
        }
    }
}

}  // namespace tessera
