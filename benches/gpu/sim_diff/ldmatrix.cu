// ldmatrix.sync.aligned.m8n8 .x1/.x2/.x4, with and without .trans, from rows whose addresses each
// lane picks from a permutation in the input.
#include "common.cuh"

// One warp per block. 128 input words fill 4 matrices of 8x8 b16 (32 rows of 16 bytes); word 128+l
// picks lane l's row. 14 outputs per thread.
extern "C" __global__ void sd_ldmatrix(const DiffParams p) {
    __shared__ __align__(16) u32 tile[32 * 4];
    const u32 W = 14;
    u32 lane = threadIdx.x;
    for (u32 i = 0; i < 4; ++i) tile[lane * 4 + i] = p.in[(blockIdx.x * 160 + lane * 4 + i) % p.n_in];
    __syncthreads();
    u32 row = p.in[(blockIdx.x * 160 + 128 + lane) % p.n_in] & 31;
    u32 addr = smem_addr(&tile[row * 4]);
    u32 o[W];
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];" : "=r"(o[0]) : "r"(addr));
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];" : "=r"(o[1]), "=r"(o[2]) : "r"(addr));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(o[3]), "=r"(o[4]), "=r"(o[5]), "=r"(o[6]) : "r"(addr));
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];" : "=r"(o[7]) : "r"(addr));
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];" : "=r"(o[8]), "=r"(o[9]) : "r"(addr));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(o[10]), "=r"(o[11]), "=r"(o[12]), "=r"(o[13]) : "r"(addr));
    for (u32 j = 0; j < W; ++j) output(p, W, j, o[j]);
}
