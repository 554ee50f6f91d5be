// The MUFU approximations (ex2, lg2, rcp, rsqrt, sqrt, tanh, sin, cos; .ftz and not) and, for
// contrast, the correctly rounded rcp.rn / sqrt.rn / div.rn. The driver's manifest gives each output
// word its comparison bound (PTX ISA maxima, doubled because both sides approximate).
#include "common.cuh"

#define UN(dst, INSTR, x)                                             \
    do {                                                              \
        float _r;                                                     \
        asm volatile(INSTR " %0, %1;" : "=f"(_r) : "f"(x));           \
        dst = as_u32(_r);                                             \
    } while (0)

// 1 input (mixed f32), 14 outputs in this order:
// ex2.ftz ex2 lg2.ftz lg2 rcp.approx.ftz rcp.approx rsqrt.approx.ftz sqrt.approx tanh sin cos
// rcp.rn sqrt.rn div.rn(x, 3)
extern "C" __global__ void sd_approx(const DiffParams p) {
    const u32 K = 1, W = 14;
    float x = as_f32(input(p, K, 0));
    // Finite inputs are mapped into the ranges where the approximations are specified: ex2 over
    // [-130, 130) (subnormal, normal and overflowing results), sin/cos over [-3.1, 3.1); specials
    // (NaN, infinities, zeros) pass through unchanged.
    u32 bits = input(p, K, 0);
    bool finite = (bits & 0x7f800000u) != 0x7f800000u && (bits & 0x7fffffffu) != 0;
    float frac = as_f32(0x3f800000u | (bits & 0x7fffffu)) - 1.0f;  // [0, 1)
    float e = finite ? frac * 260.0f - 130.0f : x;
    u32 o[W];
    UN(o[0], "ex2.approx.ftz.f32", e);
    UN(o[1], "ex2.approx.f32", e);
    UN(o[2], "lg2.approx.ftz.f32", x);
    UN(o[3], "lg2.approx.f32", x);
    UN(o[4], "rcp.approx.ftz.f32", x);
    UN(o[5], "rcp.approx.f32", x);
    UN(o[6], "rsqrt.approx.ftz.f32", x);
    UN(o[7], "sqrt.approx.f32", x);
    UN(o[8], "tanh.approx.f32", x);
    float s = finite ? (frac - 0.5f) * 6.2f : x;
    UN(o[9], "sin.approx.ftz.f32", s);
    UN(o[10], "cos.approx.ftz.f32", s);
    UN(o[11], "rcp.rn.f32", x);
    UN(o[12], "sqrt.rn.f32", x);
    {
        float r;
        asm volatile("div.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(x), "f"(3.0f));
        o[13] = as_u32(r);
    }
    for (u32 j = 0; j < W; ++j) output(p, W, j, o[j]);
}
