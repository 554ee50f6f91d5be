// cvt in every rounding mode Tessera's kernels and common CUDA code use: f32 -> f16/bf16 (rn, rz,
// rm, rp), packed f16x2/bf16x2, f16/bf16 -> f32, f32 <-> integers (rni, rzi, rmi, rpi; saturation of
// NaN and out-of-range values), f32 -> f32 integer rounding, .sat and .ftz, f32 <-> f64, and
// saturating narrowing integer conversions. sd_cvt_ext: .relu, .satfinite, rz bf16x2, tf32.
//
// Each entry is compiled on its own: the driver defines SD_ENTRY_<entry>.
#include "common.cuh"

#define CVT_H(dst, INSTR, x)                                               \
    do {                                                                   \
        unsigned short _h;                                                 \
        asm volatile(INSTR " %0, %1;" : "=h"(_h) : "f"(x));                \
        dst = _h;                                                          \
    } while (0)
#define CVT_R(dst, INSTR, OUTC, INC, x) asm volatile(INSTR " %0, %1;" : "=" OUTC(dst) : INC(x))

#ifdef SD_ENTRY_sd_cvt
// 2 inputs (mixed f32 bit patterns), 28 outputs.
extern "C" __global__ void sd_cvt(const DiffParams p) {
    const u32 K = 2, W = 28;
    u32 xi = input(p, K, 0), yi = input(p, K, 1);
    float x = as_f32(xi), y = as_f32(yi);
    u32 o[W];
    u32 j = 0;
    CVT_H(o[j++], "cvt.rn.f16.f32", x);
    CVT_H(o[j++], "cvt.rz.f16.f32", x);
    CVT_H(o[j++], "cvt.rm.f16.f32", x);
    CVT_H(o[j++], "cvt.rp.f16.f32", x);
    CVT_H(o[j++], "cvt.rn.bf16.f32", x);
    CVT_H(o[j++], "cvt.rz.bf16.f32", x);
    asm volatile("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(o[j]) : "f"(x), "f"(y)); j++;
    asm volatile("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(o[j]) : "f"(x), "f"(y)); j++;
    // Widening: the 16-bit halves of the raw input word as f16 and bf16.
    {
        unsigned short h = (unsigned short)yi;
        float f;
        asm volatile("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); o[j++] = as_u32(f);
        asm volatile("mov.b32 %0, {%1, %2};" : "=r"(o[j]) : "h"((u16)0), "h"(h)); j++;  // bf16 -> f32 by packing
        asm volatile("cvt.f32.bf16 %0, %1;" : "=f"(f) : "h"(h)); o[j++] = as_u32(f);
    }
    CVT_R(o[j++], "cvt.rni.s32.f32", "r", "f", x);
    CVT_R(o[j++], "cvt.rzi.s32.f32", "r", "f", x);
    CVT_R(o[j++], "cvt.rmi.s32.f32", "r", "f", x);
    CVT_R(o[j++], "cvt.rpi.s32.f32", "r", "f", x);
    CVT_R(o[j++], "cvt.rni.u32.f32", "r", "f", x);
    CVT_R(o[j++], "cvt.rzi.u32.f32", "r", "f", x);
    {
        float f;
        asm volatile("cvt.rn.f32.s32 %0, %1;" : "=f"(f) : "r"(yi)); o[j++] = as_u32(f);
        asm volatile("cvt.rz.f32.s32 %0, %1;" : "=f"(f) : "r"(yi)); o[j++] = as_u32(f);
        asm volatile("cvt.rm.f32.u32 %0, %1;" : "=f"(f) : "r"(yi)); o[j++] = as_u32(f);
        asm volatile("cvt.rp.f32.u32 %0, %1;" : "=f"(f) : "r"(yi)); o[j++] = as_u32(f);
        asm volatile("cvt.rni.f32.f32 %0, %1;" : "=f"(f) : "f"(x)); o[j++] = as_u32(f);
        asm volatile("cvt.rzi.f32.f32 %0, %1;" : "=f"(f) : "f"(x)); o[j++] = as_u32(f);
        asm volatile("cvt.sat.f32.f32 %0, %1;" : "=f"(f) : "f"(x)); o[j++] = as_u32(f);
        asm volatile("cvt.ftz.f32.f32 %0, %1;" : "=f"(f) : "f"(x)); o[j++] = as_u32(f);
        double d;
        asm volatile("cvt.f64.f32 %0, %1;" : "=d"(d) : "f"(x));
        asm volatile("cvt.rn.f32.f64 %0, %1;" : "=f"(f) : "d"(d * 3.0)); o[j++] = as_u32(f);
    }
    asm volatile("cvt.sat.s8.s32 %0, %1;" : "=r"(o[j]) : "r"(yi)); j++;
    asm volatile("{ .reg .u16 t; cvt.sat.u16.s32 t, %1; cvt.u32.u16 %0, t; }" : "=r"(o[j]) : "r"(yi)); j++;
    for (u32 i = 0; i < W; ++i) output(p, W, i, i < j ? o[i] : 0u);
}
#endif

#ifdef SD_ENTRY_sd_cvt_ext
// Forms the simulator does not run yet (its loader reports them as unsupported): .relu,
// .satfinite, rz packing to bf16x2, tf32. 2 inputs, 4 outputs.
extern "C" __global__ void sd_cvt_ext(const DiffParams p) {
    const u32 K = 2, W = 4;
    float x = as_f32(input(p, K, 0)), y = as_f32(input(p, K, 1));
    u32 o[W];
    CVT_H(o[0], "cvt.rn.relu.f16.f32", x);
    CVT_H(o[1], "cvt.rn.satfinite.bf16.f32", x);
    asm volatile("cvt.rz.bf16x2.f32 %0, %1, %2;" : "=r"(o[2]) : "f"(x), "f"(y));
    asm volatile("cvt.rna.tf32.f32 %0, %1;" : "=r"(o[3]) : "f"(x));
    for (u32 j = 0; j < W; ++j) output(p, W, j, o[j]);
}
#endif
