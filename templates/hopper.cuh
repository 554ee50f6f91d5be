// hopper.cuh: sm_90a primitives: mbarriers, tensor-map bulk copies (TMA), wgmma control and
// shared-memory matrix descriptors, register reallocation. Written on tessera.cuh's types only (no
// toolkit headers), so the simulator runs exactly what NVRTC compiles.
//
// Ordering rules the kernels rely on (PTX ISA, "Asynchronous operations" / "mbarrier"):
//   - a TMA copy signals its mbarrier with complete_tx once the bytes are in shared memory; a
//     thread that observes the phase flip (try_wait.parity) may read them;
//   - shared memory written by ordinary stores and then read by the async proxy (wgmma operands,
//     TMA stores) needs fence.proxy.async by the writer first;
//   - wgmma reads its register operands and writes its accumulators asynchronously: registers are
//     off limits between mma_async and the wait_group that retires it, and wgmma.fence orders
//     earlier register writes (e.g. a rescaled accumulator) before the next mma_async.
#pragma once

namespace tessera {

// A CUtensorMap, passed by value inside a __grid_constant__ parameter struct: the copy engine reads
// it from parameter memory through its generic address.
struct alignas(64) TensorMap {
    unsigned char bytes[128];
};

// ---- mbarrier (64-bit shared-memory object) ----
TESSERA_DEVICE void mbarrier_init(u64* bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_address(bar)), "r"(count) : "memory");
}

// Makes initialised mbarriers visible to the async proxy (the copy engine signals them).
TESSERA_DEVICE void fence_barrier_init() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

TESSERA_DEVICE void mbarrier_arrive(u64* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_address(bar)) : "memory");
}

// One arrival that also announces `bytes` of copies the phase must wait for.
TESSERA_DEVICE void mbarrier_arrive_expect_tx(u64* bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_address(bar)), "r"(bytes)
                 : "memory");
}

// Spins until the phase with parity `phase` has completed.
TESSERA_DEVICE void mbarrier_wait(u64* bar, u32 phase) {
    asm volatile(
        "{\n"
        ".reg .pred done;\n"
        "WAIT_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT_%=;\n"
        "}\n" ::"r"(smem_address(bar)),
        "r"(phase)
        : "memory");
}

// ---- tensor-map bulk copies ----
// A box of the tensor described by `map` at coordinates (c0 innermost .. c3) into shared memory,
// completing `bytes` on `bar`.
TESSERA_DEVICE void tma_load_4d(void* smem_dst, const TensorMap* map, u64* bar, int c0, int c1, int c2, int c3) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], "
        "[%6];\n" ::"r"(smem_address(smem_dst)),
        "l"(reinterpret_cast<u64>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_address(bar))
        : "memory");
}

// Orders this thread's earlier generic-proxy shared-memory writes before later async-proxy reads.
TESSERA_DEVICE void fence_proxy_async() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// ---- warpgroup MMA control ----
TESSERA_DEVICE void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
TESSERA_DEVICE void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> TESSERA_DEVICE void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Pins accumulator / operand registers at this point of the instruction stream. The wgmma asm
// statements tell the compiler they write their accumulators when issued, but the hardware writes
// them at the wait_group that retires them: without this, the compiler may move an accumulator read
// (or a register copy) between issue and wait, which is wrong, and ptxas serialises the wgmma
// pipeline to stay safe (its C7514 warning). Fence every accumulator before issuing and after each
// wait, as CUTLASS's warpgroup_fence_operand does.
template <int N> TESSERA_DEVICE void fence_operands(float (&r)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N> TESSERA_DEVICE void fence_operands(u32 (&r)[N][4]) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
    }
}

// Shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format") for an operand swizzled over
// SPAN bytes (32, 64 or 128, as the TMA wrote it): start address >> 4 in bits 0-13, leading-dimension
// byte offset >> 4 in 16-29, stride byte offset >> 4 in 32-45, swizzle mode in 62-63 (1: 128B,
// 2: 64B, 3: 32B). Tiles are aligned to the swizzle's repeat (8 x SPAN bytes), so the base offset
// (bits 49-51) is 0.
template <int SPAN> TESSERA_DEVICE u64 swizzled_descriptor(const void* smem, u32 leading_bytes, u32 stride_bytes) {
    static_assert(SPAN == 32 || SPAN == 64 || SPAN == 128, "wgmma swizzle spans are 32, 64 and 128 bytes");
    constexpr u64 mode = SPAN == 128 ? 1 : (SPAN == 64 ? 2 : 3);
    u64 desc = (u64)((smem_address(smem) & 0x3FFFF) >> 4);
    desc |= (u64)((leading_bytes >> 4) & 0x3FFF) << 16;
    desc |= (u64)((stride_bytes >> 4) & 0x3FFF) << 32;
    desc |= mode << 62;
    return desc;
}
TESSERA_DEVICE u64 sw128_descriptor(const void* smem, u32 leading_bytes, u32 stride_bytes) {
    return swizzled_descriptor<128>(smem, leading_bytes, stride_bytes);
}

// ---- register reallocation between warpgroups ----
template <int N> TESSERA_DEVICE void regs_decrease() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N> TESSERA_DEVICE void regs_increase() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}

// The register split of every sm_90a kernel: the producer warpgroup (one thread issues the copies)
// keeps 40 registers per thread, the two consumer warpgroups take 232 (128 x 40 + 256 x 232 = 64,512
// of the 65,536 registers of an SM; the SASS tests check both counts).
constexpr int PRODUCER_REGISTERS = 40;
constexpr int CONSUMER_REGISTERS = 232;

// Where a consumer thread sits: consumer warpgroup `consumer` (warpgroup 1 + consumer), `warp`
// inside it (rows 16 warp .. + 15 of the consumer's 64), and its wgmma accumulator-fragment
// coordinates g = lane / 4, q4 = lane % 4. Every consumer thread calls it once on entry: it raises
// the thread's registers.
struct ConsumerThread {
    int consumer, warp, g, q4;
};
TESSERA_DEVICE ConsumerThread enter_consumer(int tid) {
    regs_increase<CONSUMER_REGISTERS>();
    const int lane = tid % 32;
    return ConsumerThread{tid / 128 - 1, (tid / 32) % 4, lane / 4, lane % 4};
}

// ---- 2-D tensor-map bulk copies (GEMM operands) ----
// A box of the 2-D tensor described by `map` at coordinates (c0 innermost, c1) into shared memory,
// completing the box's bytes on `bar` (elements outside the tensor are filled as the map says, and
// count all the same).
TESSERA_DEVICE void tma_load_2d(void* smem_dst, const TensorMap* map, u64* bar, int c0, int c1) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
        ::"r"(smem_address(smem_dst)), "l"(reinterpret_cast<u64>(map)), "r"(c0), "r"(c1), "r"(smem_address(bar))
        : "memory");
}

}  // namespace tessera
