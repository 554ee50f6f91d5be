// common/hopper.cuh: what the sm_90a kernels (attention/sm90a.cuh, gemm/sm90a.cuh, lora/sm90a.cuh) are
// written in. Written on tessera.cuh's types only (no toolkit headers), so the simulator runs exactly
// what NVRTC compiles.
//   - primitives: mbarriers, tensor-map bulk copies (TMA), wgmma control and shared-memory matrix
//     descriptors, register reallocation, named barriers;
//   - the vocabulary built on them: the warpgroup roles (one producer, two consumers) and their
//     register split, the mbarrier ring between them (PipelineState, MbarrierRing), the consumers'
//     turns on the tensor cores (ConsumerTurns), the wgmma accumulator walker (for_each_acc,
//     acc_to_a_fragments) and the compile-time shared-memory layout (SmemLayout).
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

// ---- warpgroups and their roles ----
// A warpgroup is 4 consecutive warps; wgmma is issued by all 128 of its threads together. Every
// sm_90a kernel runs 3 warpgroups (codegen's HOPPER_THREADS = 384): warpgroup 0 is the producer (one
// of its threads issues every TMA copy), warpgroups 1 and 2 are consumers 0 and 1 (the wgmma and
// the epilogue), each owning WGMMA_M rows of the CTA's tile.
constexpr int WARPGROUP_THREADS = 128;
constexpr int WARPGROUP_WARPS = 4;
constexpr int PRODUCER_WARPGROUP = 0;
constexpr int PRODUCER_THREAD = 0;  // the producer thread that issues every copy (and inits the mbarriers)
constexpr int CONSUMER_WARPGROUPS = 2;
constexpr int CONSUMER_THREADS = CONSUMER_WARPGROUPS * WARPGROUP_THREADS;

// wgmma shapes for 16-bit inputs: m64nNk16. A consumer warpgroup owns WGMMA_M rows of the tile.
constexpr int WGMMA_M = 64;
constexpr int WGMMA_K = 16;
constexpr int WGMMA_ROWS_PER_WARP = WGMMA_M / WARPGROUP_WARPS;  // 16 accumulator rows per warp

TESSERA_DEVICE int warpgroup_of(int tid) { return tid / WARPGROUP_THREADS; }

// ---- 128-byte swizzled tiles ----
// Every shared-memory operand is 128-byte swizzled, as the TMA writes it: a box row is 128 bytes
// (64 16-bit elements), and the swizzle pattern repeats every 8 rows, an atom of 1024 bytes. Tiles
// start on atom boundaries, so a descriptor's base offset (bits 49-51) is always 0.
constexpr int SW128_SPAN_BYTES = 128;
constexpr int SW128_COLS = SW128_SPAN_BYTES / 2;  // 16-bit elements per swizzled row: every TMA box's width
constexpr int SWIZZLE_ATOM_ROWS = 8;
constexpr u32 SW128_ATOM_BYTES = SWIZZLE_ATOM_ROWS * SW128_SPAN_BYTES;  // 1024

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

// Spins until the phase with parity `phase` has completed. A freshly initialised mbarrier is in
// phase 0, and the phase before it (parity 1) counts as completed.
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

// ---- the mbarrier ring between the producer and the consumers ----
// A STAGES-deep ring of shared-memory buffers that one producer thread fills with TMA copies and
// CONSUMER_THREADS consumer threads read, handed back and forth by two mbarriers per stage:
//   full[s]:  1 arrival (the producer's arrive.expect_tx) plus the bytes of the stage's copies;
//             completes when the data has landed;
//   empty[s]: CONSUMER_THREADS arrivals; completes when every consumer thread is done with the stage.
// Each side walks the ring with a PipelineState; its phase bit flips every time the index wraps.
// The consumer starts at phase 0: it waits for the first fill of each stage. The producer starts at
// phase 1: it waits for "the release before the first fill", the completed phase a fresh mbarrier
// already counts, so its first pass over the ring does not block (every stage starts empty).
// STAGES = 1 is a single buffer handed back and forth (attention's Q, LoRA's B).
template <int STAGES> struct PipelineState {
    int index;  // the stage: 0 .. STAGES - 1
    u32 phase;  // parity of the mbarrier phase to wait for on that stage

    TESSERA_DEVICE static PipelineState consumer_start() { return PipelineState{0, 0u}; }
    TESSERA_DEVICE static PipelineState producer_start() { return PipelineState{0, 1u}; }

    // The next stage; past the last one the ring wraps and the parity flips.
    TESSERA_DEVICE void advance() {
        const bool wrap = index + 1 == STAGES;
        index = wrap ? 0 : index + 1;
        phase ^= wrap ? 1u : 0u;
    }
};

// The 2 STAGES mbarriers of a ring, at `bars` in shared memory: full[0 .. STAGES), then
// empty[0 .. STAGES).
template <int STAGES> struct MbarrierRing {
    static constexpr int BARRIERS = 2 * STAGES;
    u64* bars;

    TESSERA_DEVICE u64* full(int stage) const { return bars + stage; }
    TESSERA_DEVICE u64* empty(int stage) const { return bars + STAGES + stage; }

    // By one thread, before the CTA barrier that makes the ring visible to every thread (and
    // before fence_barrier_init, which makes it visible to the copy engine).
    TESSERA_DEVICE void init() const {
        for (int s = 0; s < STAGES; ++s) {
            mbarrier_init(full(s), 1);
            mbarrier_init(empty(s), CONSUMER_THREADS);
        }
    }

    // Producer: waits until the consumers have released the stage, then announces the `bytes` its
    // copies will bring. Returns the stage's full barrier, which those copies complete.
    TESSERA_DEVICE u64* producer_acquire(const PipelineState<STAGES>& state, u32 bytes) const {
        mbarrier_wait(empty(state.index), state.phase);
        mbarrier_arrive_expect_tx(full(state.index), bytes);
        return full(state.index);
    }

    // Consumer: waits until the stage's copies have landed.
    TESSERA_DEVICE void consumer_wait(const PipelineState<STAGES>& state) const {
        mbarrier_wait(full(state.index), state.phase);
    }

    // Consumer: this thread is done reading the stage (every consumer thread arrives once).
    TESSERA_DEVICE void consumer_release(const PipelineState<STAGES>& state) const {
        mbarrier_arrive(empty(state.index));
    }
};

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

// A box of the 2-D tensor described by `map` at coordinates (c0 innermost, c1) into shared memory,
// completing the box's bytes on `bar` (elements outside the tensor are filled as the map says, and
// count all the same).
TESSERA_DEVICE void tma_load_2d(void* smem_dst, const TensorMap* map, u64* bar, int c0, int c1) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
        ::"r"(smem_address(smem_dst)), "l"(reinterpret_cast<u64>(map)), "r"(c0), "r"(c1), "r"(smem_address(bar))
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

// ---- shared-memory matrix descriptors ----
// PTX ISA "Matrix Descriptor Format": start address >> 4 in bits 0-13, leading-dimension byte
// offset (LBO) >> 4 in 16-29, stride byte offset (SBO) >> 4 in 32-45, swizzle mode in 62-63 (1:
// 128B, 2: 64B, 3: 32B). For an operand swizzled over SPAN bytes (32, 64 or 128, as the TMA wrote
// it), tiles aligned to the swizzle's atom (8 x SPAN bytes), so the base offset (bits 49-51) is 0.
constexpr u32 DESC_ADDRESS_MASK = 0x3FFFF;  // shared-memory addresses below 256 KiB, before the >> 4
constexpr u32 DESC_FIELD_MASK = 0x3FFF;     // the 14-bit fields, in 16-byte units
constexpr int DESC_LBO_SHIFT = 16;
constexpr int DESC_SBO_SHIFT = 32;
constexpr int DESC_SWIZZLE_SHIFT = 62;
template <int SPAN> TESSERA_DEVICE u64 swizzled_descriptor(const void* smem, u32 leading_bytes, u32 stride_bytes) {
    static_assert(SPAN == 32 || SPAN == 64 || SPAN == 128, "wgmma swizzle spans are 32, 64 and 128 bytes");
    constexpr u64 mode = SPAN == 128 ? 1 : (SPAN == 64 ? 2 : 3);
    u64 desc = (u64)((smem_address(smem) & DESC_ADDRESS_MASK) >> 4);
    desc |= (u64)((leading_bytes >> 4) & DESC_FIELD_MASK) << DESC_LBO_SHIFT;
    desc |= (u64)((stride_bytes >> 4) & DESC_FIELD_MASK) << DESC_SBO_SHIFT;
    desc |= mode << DESC_SWIZZLE_SHIFT;
    return desc;
}

// The two canonical operand layouts of wgmma, swizzled over SPAN bytes. The SBO is one atom: the
// next 8 rows (K-major: rows of M / N; MN-major: rows of K).
//   K-major (the reduction dimension contiguous): one swizzled row holds the k-step, so the LBO is
//     unused; it is encoded as 16 (1 after the >> 4), as CUTLASS writes it. A 16-deep k-step
//     advances the start address by 32 bytes inside the row.
//   MN-major (M or N contiguous): the LBO is the distance to the next SPAN-wide box of M / N
//     (`next_box_bytes`); a 16-deep k-step advances the start address by 16 rows (2 atoms).
constexpr u32 K_MAJOR_UNUSED_LBO = 16;
template <int SPAN> TESSERA_DEVICE u64 k_major_descriptor(const void* smem) {
    return swizzled_descriptor<SPAN>(smem, K_MAJOR_UNUSED_LBO, SWIZZLE_ATOM_ROWS * SPAN);
}
template <int SPAN> TESSERA_DEVICE u64 mn_major_descriptor(const void* smem, u32 next_box_bytes) {
    return swizzled_descriptor<SPAN>(smem, next_box_bytes, SWIZZLE_ATOM_ROWS * SPAN);
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

// The producer warpgroup gives its registers away; only PRODUCER_THREAD goes on (true), the others
// are done.
TESSERA_DEVICE bool enter_producer(int tid) {
    regs_decrease<PRODUCER_REGISTERS>();
    return tid == PRODUCER_THREAD;
}

// Where a consumer thread sits: consumer warpgroup `consumer` (warpgroup 1 + consumer), `warp`
// inside it (rows 16 warp .. + 15 of the consumer's 64), and its wgmma accumulator-fragment
// coordinates g = lane / 4, q4 = lane % 4. Every consumer thread calls enter_consumer once on entry:
// it raises the thread's registers.
struct ConsumerThread {
    int consumer, warp, g, q4;

    // The row of the thread's accumulator half `half` (see acc_half) inside the consumer's WGMMA_M
    // rows, and the thread's first column (see acc_col).
    TESSERA_DEVICE int acc_row(int half) const { return WGMMA_ROWS_PER_WARP * warp + g + 8 * half; }
    TESSERA_DEVICE int acc_col0() const { return 2 * q4; }
};
TESSERA_DEVICE ConsumerThread enter_consumer(int tid) {
    regs_increase<CONSUMER_REGISTERS>();
    const int lane = tid % 32;
    return ConsumerThread{warpgroup_of(tid) - 1, (tid / 32) % WARPGROUP_WARPS, lane / 4, lane % 4};
}

// ---- wgmma accumulator fragments ----
// The f32 accumulator of an m64nNk16 wgmma (PTX ISA "Register Fragments and Shared Memory Matrix
// Layouts", wgmma .m64nNk16 matrix D) holds N / 2 registers per thread; thread (warp w of the
// warpgroup, lane 4 g + q) has register i at
//   row 16 w + g + 8 ((i >> 1) & 1),   column 8 (i >> 2) + 2 q + (i & 1).
// So registers 2j and 2j + 1 are neighbouring columns of one row, each thread touches two rows (g
// and g + 8, its "halves"), and a row is spread over the 4 threads of a quad (lanes 4g .. 4g + 3).
// acc_half(i): 0 for row g, 1 for row g + 8; acc_col(i): the column, less the thread's 2 q.
TESSERA_DEVICE constexpr int acc_half(int i) { return (i >> 1) & 1; }
TESSERA_DEVICE constexpr int acc_col(int i) { return 8 * (i >> 2) + (i & 1); }

// Calls f(i, row, col) for every register i of the consumer's m64nN accumulator `acc` (N = 2 REGS),
// with its row and column in a tile whose element (0, 0) of the consumer's 64 rows is (row0, col0).
template <int REGS, typename F>
TESSERA_DEVICE void for_each_acc(const ConsumerThread& me, const float (&acc)[REGS], int row0, int col0, F&& f) {
    const int col = col0 + me.acc_col0();
#pragma unroll
    for (int i = 0; i < REGS; ++i) f(i, row0 + me.acc_row(acc_half(i)), col + acc_col(i));
}

// Calls f(i) for the registers of one of the thread's two rows (acc_half(i) == half), in column
// order: the row's columns me.acc_col0() + acc_col(i).
template <int REGS, typename F> TESSERA_DEVICE void for_each_acc_in_row(const float (&acc)[REGS], int half, F&& f) {
#pragma unroll
    for (int i = 2 * half; i < REGS; i += 4) {
        f(i);
        f(i + 1);
    }
}

// The same over the register pairs (i, i + 1) of one row, i even: columns me.acc_col0() + acc_col(i)
// and the next, for two-element stores.
template <int REGS, typename F> TESSERA_DEVICE void for_each_acc_pair_in_row(const float (&acc)[REGS], int half, F&& f) {
#pragma unroll
    for (int i = 2 * half; i < REGS; i += 4) f(i);
}

// The accumulator as the A operand of a following wgmma from registers: 16 columns of the m64nN
// accumulator layout (registers 8 kk .. 8 kk + 7) are exactly the m64k16 A-fragment layout, so
// k-step kk's fragment register r is pack2(f(acc[8 kk + 2 r]), f(acc[8 kk + 2 r + 1])), rounded to T.
template <typename T, int REGS, typename F>
TESSERA_DEVICE void acc_to_a_fragments(const float (&acc)[REGS], u32 (&a)[REGS / 8][4], F&& f) {
    static_assert(REGS % 8 == 0, "whole 16-column k-steps");
#pragma unroll
    for (int kk = 0; kk < REGS / 8; ++kk) {
#pragma unroll
        for (int r = 0; r < 4; ++r) a[kk][r] = pack2<T>(f(acc[8 * kk + 2 * r]), f(acc[8 * kk + 2 * r + 1]));
    }
}
template <typename T, int REGS> TESSERA_DEVICE void acc_to_a_fragments(const float (&acc)[REGS], u32 (&a)[REGS / 8][4]) {
    acc_to_a_fragments<T>(acc, a, [](float x) { return x; });
}

// ---- named barriers ----
// Hardware barrier ids of bar.sync / bar.arrive (16 per CTA). Id 0 is sync_threads' (__syncthreads).
enum NamedBarrier : int {
    BARRIER_CTA = 0,
    // The consumers' turns on the tensor cores (ConsumerTurns): consumer c waits on
    // BARRIER_CONSUMER_TURN + c before issuing its wgmma.
    BARRIER_CONSUMER_TURN = 1,  // and 2
};
TESSERA_DEVICE void named_barrier_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
TESSERA_DEVICE void named_barrier_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// The other consumer warpgroup of the two.
TESSERA_DEVICE int other_consumer(int consumer) { return CONSUMER_WARPGROUPS - 1 - consumer; }

// Ping-pong: the two consumers take turns issuing their wgmma, so one's softmax or epilogue
// overlaps the other's matrix products instead of both contending for the tensor cores. Consumer c
// waits for its turn on barrier BARRIER_CONSUMER_TURN + c (both consumers' threads take part: the
// other consumer's arrive and c's sync), issues, and hands the turn over by arriving on the other's.
// start() lets consumer 0 go first (consumer 1 hands it the turn); after the last turn every sync
// was matched by an arrive except that first hand-over's, which finish() absorbs so no barrier is
// left half-arrived.
struct ConsumerTurns {
    int consumer;

    TESSERA_DEVICE static int barrier(int consumer) { return BARRIER_CONSUMER_TURN + consumer; }
    TESSERA_DEVICE void start() const {
        if (consumer == 1) named_barrier_arrive(barrier(0), CONSUMER_THREADS);
    }
    TESSERA_DEVICE void wait() const { named_barrier_sync(barrier(consumer), CONSUMER_THREADS); }
    TESSERA_DEVICE void hand_over() const { named_barrier_arrive(barrier(other_consumer(consumer)), CONSUMER_THREADS); }
    TESSERA_DEVICE void finish() const {
        if (consumer == 0) named_barrier_sync(barrier(0), CONSUMER_THREADS);
    }
};

// ---- dynamic shared memory layout ----
// A kernel's dynamic shared memory is laid out at compile time: SmemLayout places regions one after
// the other, each at the next multiple of its alignment, and the kernel turns each region's offset
// into a pointer from the aligned base (aligned_dynamic_smem). Codegen sizes the launch's dynamic
// shared memory (`shared_memory_bytes` of the sm_90a tiles) as the plain sum of the regions plus
// SMEM_ALIGN_SLACK, the room to round the base up to a swizzle atom; so every layout must pack
// without padding (`padding() == 0`, which the kernels assert).
constexpr u32 SMEM_ALIGN_SLACK = SW128_ATOM_BYTES;

struct SmemRegion {
    u32 offset, bytes;
};

class SmemLayout {
  public:
    __host__ __device__ constexpr SmemLayout() : end_(0), payload_(0) {}

    // `count` elements of E at the next multiple of ALIGN bytes.
    template <typename E, u32 ALIGN = alignof(E)> __host__ __device__ constexpr SmemRegion take(u32 count) {
        static_assert(ALIGN > 0 && (ALIGN & (ALIGN - 1)) == 0, "power-of-two alignment");
        const u32 offset = (end_ + ALIGN - 1) / ALIGN * ALIGN;
        const u32 bytes = count * (u32)sizeof(E);
        end_ = offset + bytes;
        payload_ += bytes;
        return SmemRegion{offset, bytes};
    }
    // Bytes from the aligned base to the end of the last region.
    __host__ __device__ constexpr u32 bytes() const { return end_; }
    // Bytes lost to alignment between regions.
    __host__ __device__ constexpr u32 padding() const { return end_ - payload_; }

  private:
    u32 end_, payload_;
};

// The dynamic shared memory base rounded up to ALIGN bytes: less than SMEM_ALIGN_SLACK bytes further.
template <u32 ALIGN> TESSERA_DEVICE unsigned char* aligned_dynamic_smem() {
    static_assert(ALIGN <= SMEM_ALIGN_SLACK && (ALIGN & (ALIGN - 1)) == 0, "alignment within the slack");
    unsigned char* base = dynamic_smem();
    return base + ((ALIGN - (smem_address(base) & (ALIGN - 1))) & (ALIGN - 1));
}

// The region `r` of a layout as E*, from the aligned base.
template <typename E> TESSERA_DEVICE E* smem_at(unsigned char* base, SmemRegion r) {
    return reinterpret_cast<E*>(base + r.offset);
}

}  // namespace tessera
