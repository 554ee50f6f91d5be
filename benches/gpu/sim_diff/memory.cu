// Vector and narrow loads and stores: ld/st.global .v2/.v4 of u32, f32 and u64, ld.global.nc,
// ld/st.shared .v2/.v4, and 8- and 16-bit loads with zero and sign extension.
#include "common.cuh"

// 64 threads per block; each reads 8 consecutive input words (32-byte aligned). 24 outputs.
extern "C" __global__ void sd_vector_memory(const DiffParams p) {
    __shared__ __align__(16) u32 sh[64 * 8];
    const u32 W = 24;
    u32 base = (gid() * 8) % (p.n_in - 8) / 8 * 8;
    const u32* src = p.in + base;
    u32* dst = p.out + gid() * W;
    u32 a, b, c, d, e, f, g, h;
    asm volatile("ld.global.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(a), "=r"(b), "=r"(c), "=r"(d) : "l"(src));
    asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(e), "=r"(f), "=r"(g), "=r"(h) : "l"(src + 4));
    float x, y;
    asm volatile("ld.global.v2.f32 {%0, %1}, [%2];" : "=f"(x), "=f"(y) : "l"(src + 2));
    u64 w0, w1;
    asm volatile("ld.global.v2.u64 {%0, %1}, [%2];" : "=l"(w0), "=l"(w1) : "l"(src + 4));
    // Stores: words 0-3 (v4), 4-5 (v2.f32), 8-11 (v2.u64, 16-byte aligned); 6, 7 and 12-23 below.
    asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" :: "l"(dst), "r"(h), "r"(g), "r"(f), "r"(e) : "memory");
    asm volatile("st.global.v2.f32 [%0], {%1, %2};" :: "l"(dst + 4), "f"(y), "f"(x) : "memory");
    asm volatile("st.global.v2.u64 [%0], {%1, %2};" :: "l"(dst + 8), "l"(w1), "l"(w0) : "memory");
    // Shared round trip, read back by a neighbour.
    u32 t = threadIdx.x;
    u32 s = smem_addr(&sh[t * 8]);
    asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" :: "r"(s), "r"(a), "r"(b), "r"(c), "r"(d) : "memory");
    asm volatile("st.shared.v2.u32 [%0], {%1, %2};" :: "r"(s + 16), "r"(e), "r"(f) : "memory");
    asm volatile("st.shared.u32 [%0], %1;" :: "r"(s + 24), "r"(g) : "memory");
    asm volatile("st.shared.u16 [%0], %1;" :: "r"(s + 28), "h"((u16)h) : "memory");
    asm volatile("st.shared.u8 [%0], %1;" :: "r"(s + 30), "r"(h >> 16) : "memory");
    asm volatile("st.shared.u8 [%0], %1;" :: "r"(s + 31), "r"(a) : "memory");
    __syncthreads();
    u32 n = smem_addr(&sh[((t + 5) % 64) * 8]);
    u32 r0, r1, r2, r3, r4, r5;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(n + 16));
    asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];" : "=r"(r4), "=r"(r5) : "r"(n));
    // Narrow global loads with extension.
    const unsigned char* bytes = (const unsigned char*)src;
    u32 u8v, s8v, u16v, s16v;
    asm volatile("ld.global.u8 %0, [%1];" : "=r"(u8v) : "l"(bytes + 3));
    asm volatile("ld.global.s8 %0, [%1];" : "=r"(s8v) : "l"(bytes + 5));
    asm volatile("{ .reg .u16 t; ld.global.u16 t, [%1]; cvt.u32.u16 %0, t; }" : "=r"(u16v) : "l"(bytes + 6));
    asm volatile("{ .reg .s16 t; ld.global.s16 t, [%1]; cvt.s32.s16 %0, t; }" : "=r"(s16v) : "l"(bytes + 10));
    u32 o[] = {r0, r1, r2, r3, r4, r5, u8v, s8v, u16v, s16v, (u32)(w0 >> 32) ^ (u32)w1, as_u32(x + y)};
    for (u32 j = 0; j < 12; ++j) output(p, W, 12 + j, o[j]);
    // Words 6, 7 of the row were not stored above.
    output(p, W, 6, a ^ h);
    output(p, W, 7, b + g);
}
