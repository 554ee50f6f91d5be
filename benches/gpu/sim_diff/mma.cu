// mma.sync.aligned m16n8k16 and m16n8k8, row.col, f32 accumulation, f16 and bf16 inputs.
//
// Each lane reads its own fragments: A 4 registers (k16) or 2 (k8), B 2 (k16) or 1 (k8), C 4 f32.
// The "exact" entries are launched on inputs whose products and sums are exact in f32 (k/4,
// |k| <= 8), so GPU and simulator must agree bit for bit. The "bound" entries take random inputs
// and also compute the same mma on absolute values: word pairs (d, |a|.|b| + |c|), so the
// comparison can allow the tensor core's own accumulation rounding, relative to that magnitude.
#include "common.cuh"

#define MMA_K16(TY, d, a, b, c)                                                                      \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." TY "." TY ".f32 "                          \
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"                \
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                                     \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),                 \
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]))
#define MMA_K8(TY, d, a, b, c)                                                                       \
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32." TY "." TY ".f32 "                           \
                 "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%7, %8, %9, %10};"                               \
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                                     \
                 : "r"(a[0]), "r"(a[1]), "r"(b[0]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]))

// Inputs: 10 words per lane: A[4] B[2] as packed halves, C[4] as packed halves widened to f32.
template <bool BF16> SD_DEVICE float half_to_f32(u32 h) {
    if (BF16) return as_f32(h << 16);
    float f;
    unsigned short s = (unsigned short)h;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(s));
    return f;
}
SD_DEVICE u32 abs2(u32 x) { return x & 0x7fff7fffu; }

#define MMA_ENTRY(NAME, TY, BF16, KIND)                                                     \
    extern "C" __global__ void NAME(const DiffParams p) {                                  \
        const u32 K = 10;                                                                   \
        u32 a[4], b[2], aa[4], ab[2];                                                       \
        float c[4], ac[4], d[4], m[4];                                                      \
        for (int i = 0; i < 4; ++i) { a[i] = input(p, K, i); aa[i] = abs2(a[i]); }          \
        for (int i = 0; i < 2; ++i) { b[i] = input(p, K, 4 + i); ab[i] = abs2(b[i]); }      \
        for (int i = 0; i < 4; ++i) {                                                       \
            c[i] = half_to_f32<BF16>(input(p, K, 6 + i) & 0xffff);                          \
            ac[i] = fabsf(c[i]);                                                            \
        }                                                                                   \
        KIND(TY, d, a, b, c);                                                               \
        KIND(TY, m, aa, ab, ac);                                                            \
        for (int i = 0; i < 4; ++i) {                                                       \
            output(p, 8, 2 * i, as_u32(d[i]));                                              \
            output(p, 8, 2 * i + 1, as_u32(m[i]));                                          \
        }                                                                                   \
    }

// Each entry is compiled on its own (SD_ENTRY_<entry>).
#ifdef SD_ENTRY_sd_mma_f16_k16
MMA_ENTRY(sd_mma_f16_k16, "f16", false, MMA_K16)
#endif
#ifdef SD_ENTRY_sd_mma_bf16_k16
MMA_ENTRY(sd_mma_bf16_k16, "bf16", true, MMA_K16)
#endif
#ifdef SD_ENTRY_sd_mma_f16_k8
MMA_ENTRY(sd_mma_f16_k8, "f16", false, MMA_K8)
#endif
#ifdef SD_ENTRY_sd_mma_bf16_k8
MMA_ENTRY(sd_mma_bf16_k8, "bf16", true, MMA_K8)
#endif
