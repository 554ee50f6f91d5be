// amp/adamw.cuh: one AdamW step with f32 master weights over a list of tensors in one launch.
//
// Per element, every operation one f32 op rounded to nearest even, in exactly this order (the CPU
// reference `reference::adamw_step` follows it; nothing is contracted into an FMA):
//   g = grad (f16, bf16 or f32) [* inv_scale]
//   p = master;  p = p - (lr wd) p                       decoupled weight decay
//   m = beta1 m + (1 - beta1) g
//   v = beta2 v + (1 - beta2) (g g)
//   p = p - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)
//   master = p;  model = round(p) (f16 or bf16; none when the entry has no model weight)
// with bc_i = 1 - beta_i^step, beta^step by square-and-multiply in f64 (powi_exact), rounded to f32.
//
// Device state, so a CUDA graph can capture the step: lr and the step count are read from device
// memory; the step used is *step + 1, and the last CTA to finish (a ticket from an atomic counter
// after a fence) stores it back and re-arms the counter. With *found_inf != 0 every CTA returns
// before touching anything: weights, moments and the step count stay exactly as they were.
#pragma once

namespace tessera {

// The kernel arguments (`AdamWParams`: the table, the device found_inf, inv_scale, lr, step and
// done scalars, the hyperparameters, the number of tensors) and the table's entries (`AdamWEntry`:
// grad, master, exp_avg, exp_avg_sq, model or null, len, first_chunk, and the ElemCodes
// grad_dtype: f32, f16, bf16 and model_dtype: f16, bf16) are generated from their Rust definitions
// (tessera-codegen, amp/params.rs) and precede this file.

TESSERA_DEVICE double dmul_rn(double a, double b) { return __dmul_rn(a, b); }
TESSERA_DEVICE double dsub_rn(double a, double b) { return __dsub_rn(a, b); }

// b^n by square-and-multiply from the exponent's least significant bit.
TESSERA_DEVICE double powi_exact(double b, u32 n) {
    double r = 1.0;
    while (n != 0u) {
        if (n & 1u) r = dmul_rn(r, b);
        b = dmul_rn(b, b);
        n >>= 1;
    }
    return r;
}

struct AdamWScalars {
    float step_size, bc2_sqrt, lr_wd, beta1, beta2, omb1, omb2, eps, inv;
    bool unscale;
};

template <typename TG, typename TM, bool HAS_MODEL, int VEC, bool A>
TESSERA_DEVICE void adamw_vector(const AdamWEntry& e, i64 i, const AdamWScalars& s) {
    float g[VEC], p[VEC], m[VEC], v[VEC];
    load_elems<TG, VEC, A>(static_cast<const TG*>(e.grad), i, g);
    load_elems<float, VEC, A>(e.master, i, p);
    load_elems<float, VEC, A>(e.exp_avg, i, m);
    load_elems<float, VEC, A>(e.exp_avg_sq, i, v);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
        float gk = s.unscale ? mul_rn(g[k], s.inv) : g[k];
        float pk = sub_rn(p[k], mul_rn(s.lr_wd, p[k]));
        m[k] = add_rn(mul_rn(s.beta1, m[k]), mul_rn(s.omb1, gk));
        v[k] = add_rn(mul_rn(s.beta2, v[k]), mul_rn(s.omb2, mul_rn(gk, gk)));
        const float denom = add_rn(div_rn(sqrt_rn(v[k]), s.bc2_sqrt), s.eps);
        p[k] = sub_rn(pk, div_rn(mul_rn(s.step_size, m[k]), denom));
    }
    store_elems<float, VEC, A>(e.master, i, p);
    store_elems<float, VEC, A>(e.exp_avg, i, m);
    store_elems<float, VEC, A>(e.exp_avg_sq, i, v);
    if (HAS_MODEL) store_elems<TM, VEC, A>(static_cast<TM*>(e.model), i, p);
}

template <typename TG, typename TM, bool HAS_MODEL, int THREADS, int ELEMS, int VEC>
TESSERA_DEVICE void adamw_chunk(const AdamWEntry& e, i64 begin, int count, const AdamWScalars& s) {
    const bool vec = count == THREADS * ELEMS && vector_aligned(e.grad, begin, Elem<TG>::SIZE, VEC * Elem<TG>::SIZE) &&
                     vector_aligned(e.master, begin, Elem<float>::SIZE, VEC * Elem<float>::SIZE) &&
                     vector_aligned(e.exp_avg, begin, Elem<float>::SIZE, VEC * Elem<float>::SIZE) &&
                     vector_aligned(e.exp_avg_sq, begin, Elem<float>::SIZE, VEC * Elem<float>::SIZE) &&
                     (!HAS_MODEL || vector_aligned(e.model, begin, Elem<TM>::SIZE, VEC * Elem<TM>::SIZE));
    for (int v = thread_index(); v * VEC < count; v += THREADS) {
        const i64 i = begin + (i64)v * VEC;
        if (vec) {
            adamw_vector<TG, TM, HAS_MODEL, VEC, true>(e, i, s);
        } else {
            for (int k = 0; k < VEC && v * VEC + k < count; ++k) adamw_vector<TG, TM, HAS_MODEL, 1, false>(e, i + k, s);
        }
    }
}

template <typename TG, int THREADS, int ELEMS, int VEC>
TESSERA_DEVICE void adamw_dispatch_model(const AdamWEntry& e, i64 begin, int count, const AdamWScalars& s) {
    if (e.model == nullptr) {
        adamw_chunk<TG, f16, false, THREADS, ELEMS, VEC>(e, begin, count, s);
    } else if (e.model_dtype == ELEM_F16) {
        adamw_chunk<TG, f16, true, THREADS, ELEMS, VEC>(e, begin, count, s);
    } else if (e.model_dtype == ELEM_BF16) {
        adamw_chunk<TG, bf16, true, THREADS, ELEMS, VEC>(e, begin, count, s);
    }
}

template <int THREADS, int ELEMS, int VEC>
TESSERA_DEVICE void adamw(const AdamWParams& p) {
    constexpr i64 CHUNK = (i64)THREADS * ELEMS;
    if (p.found_inf != nullptr && *p.found_inf != 0.f) return;
    const int step = *p.step + 1;
    const float lr = *p.lr;
    AdamWScalars s;
    const float bc1 = (float)dsub_rn(1.0, powi_exact((double)p.beta1, (u32)step));
    const float bc2 = (float)dsub_rn(1.0, powi_exact((double)p.beta2, (u32)step));
    s.step_size = div_rn(lr, bc1);
    s.bc2_sqrt = sqrt_rn(bc2);
    s.lr_wd = mul_rn(lr, p.weight_decay);
    s.beta1 = p.beta1;
    s.beta2 = p.beta2;
    s.omb1 = sub_rn(1.f, p.beta1);
    s.omb2 = sub_rn(1.f, p.beta2);
    s.eps = p.eps;
    s.unscale = p.inv_scale != nullptr;
    s.inv = s.unscale ? *p.inv_scale : 1.f;

    const i64 chunk = chunk_index();
    // An empty list still launches one CTA, which only advances the step count.
    const int t = p.n_tensors > 0 ? find_tensor(chunk, p.n_tensors, [&](int i) { return p.table[i].first_chunk; }) : 0;
    const AdamWEntry e = p.n_tensors > 0 ? p.table[t] : AdamWEntry{};
    const i64 begin = (chunk - e.first_chunk) * CHUNK;
    if (begin < e.len) {
        const int count = (int)(e.len - begin < CHUNK ? e.len - begin : CHUNK);
        if (e.grad_dtype == ELEM_F32) adamw_dispatch_model<float, THREADS, ELEMS, VEC>(e, begin, count, s);
        if (e.grad_dtype == ELEM_F16) adamw_dispatch_model<f16, THREADS, ELEMS, VEC>(e, begin, count, s);
        if (e.grad_dtype == ELEM_BF16) adamw_dispatch_model<bf16, THREADS, ELEMS, VEC>(e, begin, count, s);
    }

    // The last CTA stores the new step count. Every CTA read *step before taking its ticket, so
    // no CTA can see the new value.
    sync_threads();
    if (thread_index() == 0) {
        fence_device();
        const u32 ticket = atomic_add_u32(p.done, 1u);
        if (ticket == (u32)blocks_per_grid() - 1u) {
            *p.step = step;
            *p.done = 0u;
        }
    }
}

}  // namespace tessera
