// Atomics whose outcome does not depend on thread order: final values of commutative atom/red on
// shared counters (global and shared), and returned old values only where each address has a
// single owner (exch, cas) or the operation sequence is order-free (cas increment loops).
#include "common.cuh"

// 128 threads per block, 4 blocks. Outputs: 2 words per thread (exch/cas old values on a private
// slot) in the first 1024 words, then 32 global counters the driver zeroed, last block writes
// nothing extra. Layout: out[0 .. 2*512) per-thread, out[1024 .. 1024+32) counters.
extern "C" __global__ void sd_atomics(const DiffParams p) {
    __shared__ u32 sc[8];
    u32 x = p.in[gid() % p.n_in];
    u32* mine = p.out + gid() * 2;
    u32* ctr = p.out + 1024;
    if (threadIdx.x < 8) sc[threadIdx.x] = threadIdx.x == 3 ? 0xffffffffu : 0u;
    __syncthreads();
    // Private slots: the old value is deterministic.
    u32 old0, old1;
    asm volatile("atom.global.exch.b32 %0, [%1], %2;" : "=r"(old0) : "l"(mine), "r"(x) : "memory");
    asm volatile("atom.global.cas.b32 %0, [%1], %2, %3;" : "=r"(old1) : "l"(mine), "r"(x), "r"(x ^ 0x5a5a5a5au) : "memory");
    asm volatile("atom.global.cas.b32 %0, [%1], %2, %3;" : "=r"(old0) : "l"(mine + 1), "r"(1u), "r"(old1 + 1) : "memory");
    u32 dummy;
    // Shared counters in global memory.
    asm volatile("atom.global.add.u32 %0, [%1], %2;" : "=r"(dummy) : "l"(ctr + 0), "r"(x & 0xffff) : "memory");
    asm volatile("red.global.add.u32 [%0], %1;" :: "l"(ctr + 1), "r"(x >> 16) : "memory");
    asm volatile("atom.global.min.u32 %0, [%1], %2;" : "=r"(dummy) : "l"(ctr + 2), "r"(x | 1) : "memory");
    asm volatile("atom.global.max.u32 %0, [%1], %2;" : "=r"(dummy) : "l"(ctr + 3), "r"(x) : "memory");
    asm volatile("atom.global.min.s32 %0, [%1], %2;" : "=r"(dummy) : "l"(ctr + 4), "r"(x) : "memory");
    asm volatile("atom.global.max.s32 %0, [%1], %2;" : "=r"(dummy) : "l"(ctr + 5), "r"(x) : "memory");
    asm volatile("atom.global.or.b32 %0, [%1], %2;" : "=r"(dummy) : "l"(ctr + 6), "r"(1u << (x & 31)) : "memory");
    asm volatile("atom.global.xor.b32 %0, [%1], %2;" : "=r"(dummy) : "l"(ctr + 7), "r"(x) : "memory");
    asm volatile("atom.global.and.b32 %0, [%1], %2;" : "=r"(dummy) : "l"(ctr + 8), "r"(~(1u << (x & 31))) : "memory");
    asm volatile("atom.global.inc.u32 %0, [%1], %2;" : "=r"(dummy) : "l"(ctr + 9), "r"(100u) : "memory");
    asm volatile("atom.global.dec.u32 %0, [%1], %2;" : "=r"(dummy) : "l"(ctr + 10), "r"(77u) : "memory");
    // Integer-valued floats: every partial sum is exact, so the order does not matter.
    float fx = (float)(x & 255), fold;
    asm volatile("atom.global.add.f32 %0, [%1], %2;" : "=f"(fold) : "l"(ctr + 11), "f"(fx) : "memory");
    asm volatile("red.global.add.f32 [%0], %1;" :: "l"(ctr + 12), "f"(-fx) : "memory");
    u64 dummy64;
    asm volatile("atom.global.add.u64 %0, [%1], %2;" : "=l"(dummy64) : "l"(ctr + 14), "l"((u64)x << 20) : "memory");
    // A lock-free increment with cas: the final count is the number of threads.
    u32 seen = ctr[16], prev;
    while (true) {
        asm volatile("atom.global.cas.b32 %0, [%1], %2, %3;" : "=r"(prev) : "l"(ctr + 16), "r"(seen), "r"(seen + 1) : "memory");
        if (prev == seen) break;
        seen = prev;
    }
    // Shared-memory atomics, folded into global counters afterwards.
    u32 sa = smem_addr(sc);
    asm volatile("atom.shared.add.u32 %0, [%1], %2;" : "=r"(dummy) : "r"(sa), "r"(x & 0xff) : "memory");
    asm volatile("atom.shared.max.u32 %0, [%1], %2;" : "=r"(dummy) : "r"(sa + 4), "r"(x) : "memory");
    asm volatile("atom.shared.xor.b32 %0, [%1], %2;" : "=r"(dummy) : "r"(sa + 8), "r"(x) : "memory");
    asm volatile("atom.shared.and.b32 %0, [%1], %2;" : "=r"(dummy) : "r"(sa + 12), "r"(x | 0xf0f0f0f0u) : "memory");
    float sf;
    asm volatile("atom.shared.add.f32 %0, [%1], %2;" : "=f"(sf) : "r"(sa + 16), "f"(fx) : "memory");
    asm volatile("atom.shared.exch.b32 %0, [%1], %2;" : "=r"(dummy) : "r"(sa + 20 + 4 * (threadIdx.x % 2)), "r"(7u) : "memory");
    __syncthreads();
    if (threadIdx.x < 8) asm volatile("red.global.add.u32 [%0], %1;" :: "l"(ctr + 20 + threadIdx.x), "r"(sc[threadIdx.x]) : "memory");
}
