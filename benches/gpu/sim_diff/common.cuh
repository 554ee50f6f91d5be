// Shared by every sim_diff kernel: the parameter struct and a few helpers. No toolkit headers
// (NVRTC has none); everything below is plain CUDA C++ and inline PTX.
//
// Every kernel takes one `DiffParams` by value, reads its inputs from `in` (random words the driver
// generated from a seed) and writes `OUT_WORDS` words per thread to `out[gid * OUT_WORDS + j]`, so
// the GPU and the simulator can be compared word for word.
#pragma once

typedef unsigned int u32;
typedef int s32;
typedef unsigned long long u64;
typedef long long s64;
typedef unsigned short u16;

struct DiffParams {
    const u32* in;
    u32* out;
    u32 n_in;   // words in `in`
    u32 n_out;  // words in `out`
};

#define SD_DEVICE __device__ __forceinline__

SD_DEVICE u32 gid() { return blockIdx.x * blockDim.x + threadIdx.x; }
SD_DEVICE u32 lane_id() {
    u32 l;
    asm volatile("mov.u32 %0, %%laneid;" : "=r"(l));
    return l;
}
SD_DEVICE float as_f32(u32 x) { return __uint_as_float(x); }
SD_DEVICE u32 as_u32(float x) { return __float_as_uint(x); }
// Input word `j` of this thread, `k` words per thread.
SD_DEVICE u32 input(const DiffParams& p, u32 k, u32 j) { return p.in[(gid() * k + j) % p.n_in]; }
SD_DEVICE void output(const DiffParams& p, u32 k, u32 j, u32 v) { p.out[gid() * k + j] = v; }
SD_DEVICE u32 smem_addr(const void* ptr) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(ptr));
    return a;
}

// One inline-PTX instruction into an output word: f32 operands (BIN/TRI) or b32 (the _R forms).
#define BIN(dst, INSTR, C, a, b)                                                        \
    do {                                                                                 \
        float _r;                                                                        \
        asm volatile(INSTR " %0, %1, %2;" : "=f"(_r) : C(a), C(b));                      \
        dst = as_u32(_r);                                                                \
    } while (0)
#define TRI(dst, INSTR, a, b, c)                                                        \
    do {                                                                                 \
        float _r;                                                                        \
        asm volatile(INSTR " %0, %1, %2, %3;" : "=f"(_r) : "f"(a), "f"(b), "f"(c));      \
        dst = as_u32(_r);                                                                \
    } while (0)
#define TRI_R(dst, INSTR, a, b, c) asm volatile(INSTR " %0, %1, %2, %3;" : "=r"(dst) : "r"(a), "r"(b), "r"(c))
#define BIN_R(dst, INSTR, a, b) asm volatile(INSTR " %0, %1, %2;" : "=r"(dst) : "r"(a), "r"(b))
#define UN_R(dst, INSTR, a) asm volatile(INSTR " %0, %1;" : "=r"(dst) : "r"(a))
