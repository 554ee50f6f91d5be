// cp.async.ca (4, 8, 16 bytes) and cp.async.cg (16 bytes), with src-size zero fill, in two commit
// groups; wait_group 1 makes the first group visible to the issuing thread, wait_group 0 and
// wait_all the rest; after a barrier every thread reads another thread's copies.
#include "common.cuh"

// 64 threads per block; each copies 4 + 8 + 16 + 16 bytes (group 0: ca 4, ca 8; group 1: ca 16,
// cg 16 with a src-size from the input). 12 outputs: its own first group right after
// wait_group 1 (3 words), then a neighbour's 12 words... (see below).
extern "C" __global__ void sd_cp_async(const DiffParams p) {
    __shared__ __align__(16) u32 stage[64 * 12];
    const u32 W = 15;
    u32 t = threadIdx.x;
    const u32* src = p.in + (blockIdx.x * 64 + t) * 12 % (p.n_in - 12) / 4 * 4;  // 16-byte aligned
    u32 dst = smem_addr(&stage[t * 12]);
    u32 partial = p.in[(blockIdx.x * 64 + t) % p.n_in] % 17;  // src-size 0..16 for the cg copy
    // Group 0.
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" :: "r"(dst), "l"(src) : "memory");
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" :: "r"(dst + 8), "l"(src + 2) : "memory");
    asm volatile("cp.async.commit_group;" ::: "memory");
    // Group 1.
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16;" :: "r"(dst + 16), "l"(src + 4) : "memory");
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(dst + 32), "l"(src + 8), "r"(partial) : "memory");
    asm volatile("cp.async.commit_group;" ::: "memory");
    asm volatile("cp.async.wait_group 1;" ::: "memory");
    u32 first[3];
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(first[0]) : "r"(dst));
    asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];" : "=r"(first[1]), "=r"(first[2]) : "r"(dst + 8));
    asm volatile("cp.async.wait_all;" ::: "memory");
    __syncthreads();
    u32 other = (t * 7 + 3) % 64;
    output(p, W, 0, first[0]);
    output(p, W, 1, first[1]);
    output(p, W, 2, first[2]);
    // Word 1 of each slot (bytes 4..8) is never written: skip it.
    for (u32 j = 0; j < 12; ++j) output(p, W, 3 + j, j == 1 ? 0u : stage[other * 12 + j]);
}
