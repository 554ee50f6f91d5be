// host_runtime.cpp: the emulator behind host_prelude.hpp (execution model, checks and numerics are
// described there). Compiled once per test run and linked into every emulated kernel.
#include "host_prelude.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

// Lane fibers switch stacks with a few instructions of assembly on x86-64 (glibc's swapcontext
// makes a sigprocmask system call per switch, which dominated the run time); elsewhere, or with
// TESSERA_EMU_UCONTEXT defined, they use ucontext.
#if defined(__x86_64__) && !defined(TESSERA_EMU_UCONTEXT)
#define TESSERA_EMU_ASM_SWITCH 1
// tessera_emu_switch(save, to): pushes the callee-saved registers, stores the stack pointer in
// *save, loads `to` and pops the registers saved there, returning into the other fiber.
extern "C" void tessera_emu_switch(void** save, void* to);
asm(R"(
    .text
    .globl tessera_emu_switch
    .type tessera_emu_switch, @function
tessera_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size tessera_emu_switch, .-tessera_emu_switch
)");
#else
#include <ucontext.h>
#endif

thread_local tessera_host::Dim3 threadIdx;
thread_local tessera_host::Dim3 blockIdx;

namespace tessera_host {
namespace {

double timeout_seconds() {
    static double t = [] {
        const char* s = std::getenv("TESSERA_EMU_TIMEOUT");
        double v = s ? std::atof(s) : 0.0;
        return v > 0.0 ? v : 60.0;
    }();
    return t;
}

// A reusable barrier for `expected` threads. Every arrival names the barrier kind it is at; threads
// that meet at different kinds (one at sync_threads, one already leaving the kernel) diverged.
class Barrier {
public:
    explicit Barrier(int expected) : expected_(expected) {}
    void arrive_and_wait(int kind, const char* what) {
        std::unique_lock<std::mutex> lock(mu_);
        if (arrived_ == 0) {
            kind_ = kind;
            what_ = what;
        } else if (kind_ != kind) {
            fail("divergence: warps meet at different barriers (%s vs %s)", what_, what);
        }
        const u64 gen = generation_;
        if (++arrived_ == expected_) {
            arrived_ = 0;
            ++generation_;
            cv_.notify_all();
            return;
        }
        const auto limit = std::chrono::duration<double>(timeout_seconds());
        if (!cv_.wait_for(lock, limit, [&] { return generation_ != gen; }))
            fail("deadlock: %d of %d warps waited %.0f s at %s", arrived_, expected_, timeout_seconds(), what_);
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    int expected_;
    int arrived_ = 0;
    u64 generation_ = 0;
    int kind_ = -1;
    const char* what_ = "";
};

enum BarrierKind { BAR_START = 1, BAR_SYNC = 2, BAR_END = 3 };
enum CollectiveOp { OP_SYNC_WARP = 1, OP_SHFL = 2, OP_LDMATRIX = 3, OP_MMA = 4 };
enum LaneWait { LANE_RUNNING, LANE_AT_COLLECTIVE, LANE_AT_BARRIER, LANE_DONE };

// One lane's operands for a warp collective, and its result.
struct LaneSlot {
    int op;
    int arg;        // shfl lane mask, ldmatrix (num | trans << 4), mma input type
    u32 data[10];   // shfl: value; ldmatrix: the 16-byte row this lane addresses; mma: a[4], b[2], c[4]
    u32 out[4];     // filled in by the warp scheduler
};

// Per 4-byte word of shared memory: who last wrote / read it and in which barrier epochs.
struct ShadowWord {
    u64 w_epoch = 0, w_wepoch = 0;
    int writer = -1;   // -1: never written
    u64 r_epoch = 0, r_wepoch = 0;
    int reader = -1;   // -1: not read, -2: several threads in r_epoch
    int r_warp = -1;   // warp of the readers in r_epoch, -2: several warps
    int pending = -1;  // thread whose cp.async to this word is in flight
};

struct Cta {
    Cta(int threads, size_t smem_bytes) : barrier(threads / 32), smem_bytes(smem_bytes) {
        size_t rounded = (smem_bytes + 127) / 128 * 128 + 128;
        smem = static_cast<unsigned char*>(std::aligned_alloc(128, rounded));
        shadow.resize(rounded / 4);
    }
    ~Cta() { std::free(smem); }
    Cta(const Cta&) = delete;
    Cta& operator=(const Cta&) = delete;
    Barrier barrier;  // between the warp threads
    unsigned char* smem;
    size_t smem_bytes;
    std::vector<ShadowWord> shadow;
    std::mutex shadow_mu;
    Dim3 block;
    bool finished = false;
    void reset() {
        std::memset(smem, 0xff, smem_bytes);  // 0xffff is NaN in f16 and bf16
        for (auto& s : shadow) s = ShadowWord();
    }
};

struct AsyncCopy {
    unsigned char* dst;
    const unsigned char* src;
    bool valid;
};

struct WarpRunner;

// The state of one CUDA thread (one lane fiber).
struct ThreadState {
    Cta* cta = nullptr;
    WarpRunner* runner = nullptr;
    int tid = 0, lane = 0, warp = 0;
    u64 epoch = 0;   // sync_threads() passed in this CTA
    u64 wepoch = 0;  // warp collectives passed in this CTA (the same count on every lane of a warp)
    LaneWait wait = LANE_RUNNING;
    const char* wait_what = "";
    std::vector<AsyncCopy> uncommitted;
    std::vector<std::vector<AsyncCopy>> committed;  // oldest first
#ifdef TESSERA_EMU_ASM_SWITCH
    void* sp = nullptr;
#else
    ucontext_t context;
#endif
    std::unique_ptr<char[]> stack;
};

thread_local ThreadState* self = nullptr;

ThreadState& me() {
    if (self == nullptr) fail("device function called outside a kernel launch");
    return *self;
}

// One warp: a std::thread that schedules its 32 lane fibers.
struct WarpRunner {
    static constexpr size_t STACK_BYTES = 256 * 1024;
    Cta* cta = nullptr;
    int warp = 0;
    void (*kernel)(void*) = nullptr;
    void* kernel_context = nullptr;
    ThreadState lanes[32];
    LaneSlot slots[32];
#ifdef TESSERA_EMU_ASM_SWITCH
    void* scheduler_sp = nullptr;
#else
    ucontext_t scheduler;
#endif
};

void switch_to_scheduler(ThreadState& t) {
#ifdef TESSERA_EMU_ASM_SWITCH
    tessera_emu_switch(&t.sp, t.runner->scheduler_sp);
#else
    if (swapcontext(&t.context, &t.runner->scheduler) != 0) fail("swapcontext failed");
#endif
}

void switch_to_lane(WarpRunner& r, ThreadState& t) {
#ifdef TESSERA_EMU_ASM_SWITCH
    tessera_emu_switch(&r.scheduler_sp, t.sp);
#else
    if (swapcontext(&r.scheduler, &t.context) != 0) fail("swapcontext failed");
#endif
}

void yield_to_scheduler(ThreadState& t, LaneWait wait, const char* what) {
    t.wait = wait;
    t.wait_what = what;
    switch_to_scheduler(t);
}

// Posts this lane's operands and waits until all 32 lanes have posted theirs and the scheduler has
// computed the collective (warp_collective); returns this lane's slot with its result. Like
// __syncwarp, a collective orders all lanes' shared-memory accesses before it before all lanes'
// accesses after it: the .sync.aligned instructions run on the converged warp.
const LaneSlot& warp_exchange(const LaneSlot& mine, const char* what) {
    ThreadState& t = me();
    LaneSlot& slot = t.runner->slots[t.lane];
    slot = mine;
    yield_to_scheduler(t, LANE_AT_COLLECTIVE, what);
    ++t.wepoch;
    return slot;
}

// ---- global memory registry ------------------------------------------------------------------------
struct GlobalBuffer {
    const unsigned char* base;
    size_t bytes;
    bool writable;
    std::unique_ptr<std::vector<unsigned char>> writes;  // stores per byte, writable buffers only
};

std::vector<GlobalBuffer>& globals() {
    static std::vector<GlobalBuffer> g;
    return g;
}
std::mutex globals_mu;

GlobalBuffer& global_at(const void* p, size_t bytes, bool write, const char* what) {
    auto* c = static_cast<const unsigned char*>(p);
    for (auto& b : globals()) {
        if (c >= b.base && c + bytes <= b.base + b.bytes) {
            if (write && !b.writable) fail("%s: store into a read-only global buffer", what);
            return b;
        }
    }
    fail("%s: global address %p (+%zu bytes) is outside every buffer", what, p, bytes);
}

// ---- shared-memory checks ----------------------------------------------------------------------------
// Synchronisation hazards (races, in-flight copies, uninitialised reads) end the run like any
// error, unless TESSERA_EMU_RACES=warn: then the first is printed as a warning and the run goes
// on, to see what the hazard does to the results (with deferred cp.async, usually the worst case).
std::atomic<long> hazards{0};

bool hazards_fatal() {
    static bool fatal = [] {
        const char* s = std::getenv("TESSERA_EMU_RACES");
        return !(s && std::string(s) == "warn");
    }();
    return fatal;
}

void hazard(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void hazard(const char* fmt, ...) {
    char msg[512];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(msg, sizeof msg, fmt, args);
    va_end(args);
    if (hazards_fatal()) fail("%s", msg);
    if (hazards.fetch_add(1) == 0)
        std::fprintf(stderr, "tessera-emu: warning (first hazard, run continues): %s\n", msg);
}

size_t smem_offset(const void* p, size_t bytes, size_t align, const char* what) {
    ThreadState& t = me();
    auto* c = static_cast<const unsigned char*>(p);
    if (c < t.cta->smem || c + bytes > t.cta->smem + t.cta->smem_bytes)
        fail("%s: shared address %p (+%zu) outside the %zu bytes of dynamic shared memory", what, p,
             bytes, t.cta->smem_bytes);
    size_t off = c - t.cta->smem;
    if (off % align != 0) fail("%s: shared offset %zu is not %zu-byte aligned", what, off, align);
    return off;
}

// Is an earlier access by thread `tid` in epochs (`epoch`, `wepoch`) ordered before the current one?
bool ordered(const ThreadState& t, int tid, u64 epoch, u64 wepoch) {
    if (tid == t.tid || epoch < t.epoch) return true;
    return tid >= 0 && tid / 32 == t.warp && wepoch < t.wepoch;
}

bool readers_ordered(const ThreadState& t, const ShadowWord& s) {
    if (s.reader == -1 || s.r_epoch < t.epoch || s.reader == t.tid) return true;
    return s.r_warp == t.warp && s.r_wepoch < t.wepoch;
}

// Checks and records a read of [off, off + bytes) by the current thread (shadow_mu held).
void shadow_read(ThreadState& t, size_t off, size_t bytes, const char* what) {
    for (size_t i = off / 4; i < (off + bytes + 3) / 4; ++i) {
        ShadowWord& s = t.cta->shadow[i];
        if (s.pending >= 0)
            hazard("%s: reads shared offset %zu while thread %d's cp.async to it is in flight "
                 "(missing cp_async_wait?)", what, i * 4, s.pending);
        if (s.writer == -1) hazard("%s: reads shared offset %zu, which was never written", what, i * 4);
        else if (!ordered(t, s.writer, s.w_epoch, s.w_wepoch))
            hazard("%s: race: reads shared offset %zu written by thread %d with no barrier in between",
                 what, i * 4, s.writer);
        if (s.reader == -1 || s.r_epoch < t.epoch) {
            s.reader = t.tid;
            s.r_warp = t.warp;
            s.r_epoch = t.epoch;
            s.r_wepoch = t.wepoch;
        } else {
            if (s.reader != t.tid) s.reader = -2;
            if (s.r_warp != t.warp) s.r_warp = -2;
            if (t.wepoch > s.r_wepoch) s.r_wepoch = t.wepoch;
        }
    }
}

void shadow_check_write(ThreadState& t, const ShadowWord& s, size_t word, const char* what) {
    if (s.pending >= 0)
        hazard("%s: writes shared offset %zu while thread %d's cp.async to it is in flight", what,
             word * 4, s.pending);
    if (s.writer != -1 && !ordered(t, s.writer, s.w_epoch, s.w_wepoch))
        hazard("%s: race: writes shared offset %zu also written by thread %d with no barrier in between",
             what, word * 4, s.writer);
    if (!readers_ordered(t, s))
        hazard("%s: race: overwrites shared offset %zu read by thread %d (warp %d; -2: several) with no "
             "barrier in between", what, word * 4, s.reader, s.r_warp);
}

// Lands the copies of one group: the bytes arrive now, attributed to the issuing thread.
void complete_group(ThreadState& t, const std::vector<AsyncCopy>& group) {
    std::lock_guard<std::mutex> lock(t.cta->shadow_mu);
    for (const AsyncCopy& c : group) {
        if (c.valid) std::memcpy(c.dst, c.src, 16);
        else std::memset(c.dst, 0, 16);
        size_t off = c.dst - t.cta->smem;
        for (size_t i = off / 4; i < off / 4 + 4; ++i) {
            ShadowWord& s = t.cta->shadow[i];
            s.pending = -1;
            s.writer = t.tid;
            s.w_epoch = t.epoch;
            s.w_wepoch = t.wepoch;
        }
    }
}

// ---- warp collectives, computed by the scheduler once all 32 lanes have posted ------------------------
void warp_collective(WarpRunner& r) {
    LaneSlot* slots = r.slots;
    for (int l = 1; l < 32; ++l) {
        if (slots[l].op != slots[0].op || slots[l].arg != slots[0].arg) {
            self = &r.lanes[l];
            fail("divergence: lane 0 of warp %d is at %s (arg %d) while lane %d is at %s (arg %d)", r.warp,
                 r.lanes[0].wait_what, slots[0].arg, l, r.lanes[l].wait_what, slots[l].arg);
        }
    }
    switch (slots[0].op) {
    case OP_SYNC_WARP:
        break;
    case OP_SHFL:
        for (int l = 0; l < 32; ++l) slots[l].out[0] = slots[(l ^ slots[l].arg) & 31].data[0];
        break;
    case OP_LDMATRIX: {
        // ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16 (PTX ISA, "Warp-level matrix
        // load instruction: ldmatrix"): lane l supplied row l%8 of matrix l/8. Without .trans,
        // register i of lane l receives row l/4, elements 2(l%4) and 2(l%4)+1 of matrix i (the lower
        // element in the low half); with .trans it receives M_i[2(l%4)][l/4] (low) and
        // M_i[2(l%4)+1][l/4] (high): the same fragment of the transposed matrix.
        const int num = slots[0].arg & 15;
        const bool trans = (slots[0].arg & 16) != 0;
        auto elem = [&](int matrix, int row, int col) -> u32 {
            return (slots[matrix * 8 + row].data[col / 2] >> (16 * (col % 2))) & 0xffffu;
        };
        for (int l = 0; l < 32; ++l) {
            for (int i = 0; i < num; ++i) {
                u32 lo, hi;
                if (!trans) {
                    lo = elem(i, l / 4, 2 * (l % 4));
                    hi = elem(i, l / 4, 2 * (l % 4) + 1);
                } else {
                    lo = elem(i, 2 * (l % 4), l / 4);
                    hi = elem(i, 2 * (l % 4) + 1, l / 4);
                }
                slots[l].out[i] = lo | (hi << 16);
            }
        }
        break;
    }
    case OP_MMA: {
        // mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 (PTX ISA, "Matrix
        // Fragments for mma.m16n8k16 with floating point type"), g = lane/4, t = lane%4, the lower
        // column (A, C) or row (B) of each pair in the low half:
        //   A 16x16: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
        //   B 16x8:  b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
        //   C/D:     c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
        const bool is_bf16 = slots[0].arg == 2;
        auto decode = [&](u32 reg, int half) -> float {
            unsigned short h = (unsigned short)((reg >> (16 * half)) & 0xffffu);
            return is_bf16 ? bf16_to_f32(h) : f16_to_f32(h);
        };
        float A[16][16], B[16][8];
        for (int l = 0; l < 32; ++l) {
            const int g = l / 4, t = l % 4;
            const u32* a = slots[l].data;
            for (int h = 0; h < 2; ++h) {
                A[g][2 * t + h] = decode(a[0], h);
                A[g + 8][2 * t + h] = decode(a[1], h);
                A[g][2 * t + 8 + h] = decode(a[2], h);
                A[g + 8][2 * t + 8 + h] = decode(a[3], h);
                B[2 * t + h][g] = decode(a[4], h);
                B[2 * t + 8 + h][g] = decode(a[5], h);
            }
        }
        for (int l = 0; l < 32; ++l) {
            const int g = l / 4, t = l % 4;
            for (int e = 0; e < 4; ++e) {
                const int row = g + 8 * (e / 2), col = 2 * t + (e % 2);
                double acc = (double)bits_f32(slots[l].data[6 + e]);
                // Each product of two 16-bit values is exact in f32; sum in double, round once.
                for (int k = 0; k < 16; ++k) acc += (double)(A[row][k] * B[k][col]);
                slots[l].out[e] = f32_bits((float)acc);
            }
        }
        break;
    }
    default:
        fail("unknown warp collective %d", slots[0].op);
    }
}

// ---- scheduling --------------------------------------------------------------------------------------
// The first function of every lane fiber: runs the kernel, then hands control back for good.
void lane_entry() {
    ThreadState& t = *self;
    t.runner->kernel(t.runner->kernel_context);
    t.wait = LANE_DONE;
    t.wait_what = "kernel exit";
#ifdef TESSERA_EMU_ASM_SWITCH
    switch_to_scheduler(t);
    fail("a finished lane was resumed");
#endif
    // (ucontext: returning resumes uc_link, the warp's scheduler.)
}

// Points a lane at the start of the kernel, with fresh per-thread state.
void start_lane(WarpRunner& r, ThreadState& t) {
    t.epoch = t.wepoch = 0;
    t.wait = LANE_RUNNING;
    t.uncommitted.clear();
    t.committed.clear();
#ifdef TESSERA_EMU_ASM_SWITCH
    // A frame tessera_emu_switch can "return" into: six zeroed callee-saved registers, the address
    // of lane_entry, then a null return address, so that lane_entry starts with the stack alignment
    // of a called function (rsp + 8 a multiple of 16).
    (void)r;
    uintptr_t top = reinterpret_cast<uintptr_t>(t.stack.get() + WarpRunner::STACK_BYTES) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;
    *--sp = reinterpret_cast<void*>(&lane_entry);
    for (int i = 0; i < 6; ++i) *--sp = nullptr;
    t.sp = sp;
#else
    if (getcontext(&t.context) != 0) fail("getcontext failed");
    t.context.uc_stack.ss_sp = t.stack.get();
    t.context.uc_stack.ss_size = WarpRunner::STACK_BYTES;
    t.context.uc_link = &r.scheduler;
    makecontext(&t.context, lane_entry, 0);
#endif
}

// Runs one CTA's worth of one warp: schedules the lane fibers until all 32 have left the kernel.
void run_warp(WarpRunner& r) {
    Cta& cta = *r.cta;
    for (int l = 0; l < 32; ++l) start_lane(r, r.lanes[l]);
    for (;;) {
        for (int l = 0; l < 32; ++l) {
            ThreadState& t = r.lanes[l];
            if (t.wait == LANE_DONE) continue;
            t.wait = LANE_RUNNING;
            self = &t;
            threadIdx = Dim3{t.tid, 0, 0};
            blockIdx = cta.block;
            switch_to_lane(r, t);
        }
        self = nullptr;
        int done = 0, at_barrier = 0;
        for (int l = 0; l < 32; ++l) {
            done += r.lanes[l].wait == LANE_DONE;
            at_barrier += r.lanes[l].wait == LANE_AT_BARRIER;
        }
        if (done == 32) break;
        if (done > 0 || (at_barrier > 0 && at_barrier < 32)) {
            for (int l = 1; l < 32; ++l) {
                if (r.lanes[l].wait != r.lanes[0].wait) {
                    self = &r.lanes[l];
                    fail("divergence: lane 0 of warp %d is at %s while lane %d is at %s", r.warp,
                         r.lanes[0].wait_what, l, r.lanes[l].wait_what);
                }
            }
        }
        if (at_barrier == 32) cta.barrier.arrive_and_wait(BAR_SYNC, "sync_threads");
        else warp_collective(r);
    }
    // Copies still in flight land before the CTA retires.
    for (int l = 0; l < 32; ++l) {
        ThreadState& t = r.lanes[l];
        self = &t;
        for (auto& g : t.committed) complete_group(t, g);
        complete_group(t, t.uncommitted);
        self = nullptr;
    }
}

std::map<std::string, long long>& params() {
    static std::map<std::string, long long> p;
    return p;
}

}  // namespace

// ---- the interface of host_prelude.hpp -----------------------------------------------------------------
void fail(const char* fmt, ...) {
    static std::mutex mu;
    std::lock_guard<std::mutex> lock(mu);
    std::fprintf(stderr, "tessera-emu: error: ");
    va_list args;
    va_start(args, fmt);
    std::vfprintf(stderr, fmt, args);
    va_end(args);
    if (self != nullptr && self->cta != nullptr) {
        const Dim3& b = self->cta->block;
        std::fprintf(stderr, " [block (%d,%d,%d) thread %d (warp %d lane %d), after %llu sync_threads]", b.x,
                     b.y, b.z, self->tid, self->warp, self->lane, (unsigned long long)self->epoch);
    }
    std::fprintf(stderr, "\n");
    std::fflush(stderr);
    std::_Exit(3);
}

int current_thread_index() { return me().tid; }
Dim3 current_block_index() { return me().cta->block; }

// The grid of the launch in progress (one launch at a time).
static Dim3 g_grid{0, 0, 0};
Dim3 current_grid_dim() { return g_grid; }

void cta_barrier() {
    ThreadState& t = me();
    yield_to_scheduler(t, LANE_AT_BARRIER, "sync_threads");
    ++t.epoch;
}

void warp_barrier() {
    LaneSlot s{};
    s.op = OP_SYNC_WARP;
    warp_exchange(s, "sync_warp");
}

unsigned char* cta_shared_memory() { return me().cta->smem; }

u32 shared_offset(const void* p) { return (u32)smem_offset(p, 0, 1, "smem_address"); }

float warp_shfl_xor(float v, int lane_mask) {
    LaneSlot s{};
    s.op = OP_SHFL;
    s.arg = lane_mask;
    s.data[0] = f32_bits(v);
    return bits_f32(warp_exchange(s, "shfl_xor").out[0]);
}

void async_copy_16(void* smem_dst, const void* gmem_src, bool valid) {
    ThreadState& t = me();
    size_t off = smem_offset(smem_dst, 16, 16, "cp_async_16");
    if (valid) {
        if (reinterpret_cast<uintptr_t>(gmem_src) % 16 != 0)
            fail("cp_async_16: global source %p is not 16-byte aligned", gmem_src);
        global_at(gmem_src, 16, false, "cp_async_16");
    }
    {
        std::lock_guard<std::mutex> lock(t.cta->shadow_mu);
        for (size_t i = off / 4; i < off / 4 + 4; ++i) {
            ShadowWord& s = t.cta->shadow[i];
            shadow_check_write(t, s, i, "cp_async_16");
            s.pending = t.tid;
        }
    }
    t.uncommitted.push_back(AsyncCopy{static_cast<unsigned char*>(smem_dst),
                                      static_cast<const unsigned char*>(gmem_src), valid});
}

void async_commit() {
    ThreadState& t = me();
    t.committed.push_back(std::move(t.uncommitted));
    t.uncommitted.clear();
}

void async_wait(int n) {
    ThreadState& t = me();
    while (t.committed.size() > (size_t)n) {
        complete_group(t, t.committed.front());
        t.committed.erase(t.committed.begin());
    }
}

void shared_load(void* out, const void* p, size_t bytes) {
    ThreadState& t = me();
    size_t off = smem_offset(p, bytes, bytes, "load_shared");
    std::lock_guard<std::mutex> lock(t.cta->shadow_mu);
    shadow_read(t, off, bytes, "load_shared");
    std::memcpy(out, p, bytes);
}

void shared_store(void* p, const void* v, size_t bytes) {
    ThreadState& t = me();
    size_t off = smem_offset(p, bytes, bytes, "store_shared");
    std::lock_guard<std::mutex> lock(t.cta->shadow_mu);
    for (size_t i = off / 4; i < (off + bytes + 3) / 4; ++i) {
        ShadowWord& s = t.cta->shadow[i];
        shadow_check_write(t, s, i, "store_shared");
        s.writer = t.tid;
        s.w_epoch = t.epoch;
        s.w_wepoch = t.wepoch;
    }
    std::memcpy(p, v, bytes);
}

void global_store(void* p, const void* v, size_t bytes) {
    const char* what = bytes == 16 ? "store_global_16" : "store_global_f32";
    if (reinterpret_cast<uintptr_t>(p) % bytes != 0)
        fail("%s: address %p is not %zu-byte aligned", what, p, bytes);
    GlobalBuffer& b = global_at(p, bytes, true, what);
    {
        std::lock_guard<std::mutex> lock(globals_mu);
        size_t off = static_cast<const unsigned char*>(p) - b.base;
        for (size_t i = 0; i < bytes; ++i) {
            if ((*b.writes)[off + i] != 0)
                fail("%s: byte %zu of a global buffer is stored twice in one launch", what, off + i);
            (*b.writes)[off + i] = 1;
        }
    }
    std::memcpy(p, v, bytes);
}

void ldmatrix(u32* r, int num, bool trans, const void* smem_row) {
    ThreadState& t = me();
    if (num != 1 && num != 2 && num != 4) fail("ldmatrix: .x%d does not exist", num);
    LaneSlot s{};
    s.op = OP_LDMATRIX;
    s.arg = num | (trans ? 16 : 0);
    if (t.lane < 8 * num) {  // the other lanes' addresses are ignored
        size_t off = smem_offset(smem_row, 16, 16, "ldmatrix");
        std::lock_guard<std::mutex> lock(t.cta->shadow_mu);
        shadow_read(t, off, 16, "ldmatrix");
        std::memcpy(s.data, smem_row, 16);
    }
    const LaneSlot& mine = warp_exchange(s, "ldmatrix");
    for (int i = 0; i < num; ++i) r[i] = mine.out[i];
}

void mma_m16n8k16(float* d, const u32* a, u32 b0, u32 b1, bool bf16) {
    LaneSlot s{};
    s.op = OP_MMA;
    s.arg = bf16 ? 2 : 1;
    for (int e = 0; e < 4; ++e) s.data[e] = a[e];
    s.data[4] = b0;
    s.data[5] = b1;
    for (int e = 0; e < 4; ++e) s.data[6 + e] = f32_bits(d[e]);
    const LaneSlot& mine = warp_exchange(s, "mma_16816");
    for (int e = 0; e < 4; ++e) d[e] = bits_f32(mine.out[e]);
}

void register_global(const void* p, size_t bytes, bool writable) {
    GlobalBuffer b{static_cast<const unsigned char*>(p), bytes, writable, nullptr};
    if (writable) b.writes.reset(new std::vector<unsigned char>(bytes, 0));
    globals().push_back(std::move(b));
}

void launch_raw(Dim3 grid, int threads, size_t smem_bytes, void (*kernel)(void*), void* context) {
    if (threads <= 0 || threads % 32 != 0 || threads > 1024) fail("launch: bad block size %d", threads);
    if (grid.x <= 0 || grid.y <= 0 || grid.z <= 0) fail("launch: empty grid (%d, %d, %d)", grid.x, grid.y, grid.z);
    g_grid = grid;
    for (auto& b : globals())
        if (b.writes) std::fill(b.writes->begin(), b.writes->end(), 0);
    const long total = (long)grid.x * grid.y * grid.z;
    const char* env = std::getenv("TESSERA_EMU_CTAS");
    long slots = env ? std::atol(env) : 1;
    slots = slots < 1 ? 1 : (slots > total ? total : slots);
    const int warps = threads / 32;

    std::mutex next_mu;
    long next = 0;
    std::vector<std::unique_ptr<Cta>> ctas;
    std::vector<std::unique_ptr<WarpRunner>> runners;
    for (long s = 0; s < slots; ++s) {
        ctas.emplace_back(new Cta(threads, smem_bytes));
        for (int w = 0; w < warps; ++w) {
            std::unique_ptr<WarpRunner> r(new WarpRunner());
            r->cta = ctas.back().get();
            r->warp = w;
            r->kernel = kernel;
            r->kernel_context = context;
            for (int l = 0; l < 32; ++l) {
                ThreadState& t = r->lanes[l];
                t.cta = r->cta;
                t.runner = r.get();
                t.tid = w * 32 + l;
                t.lane = l;
                t.warp = w;
                t.stack.reset(new char[WarpRunner::STACK_BYTES]);
            }
            runners.push_back(std::move(r));
        }
    }
    std::vector<std::thread> pool;
    for (auto& runner : runners) {
        WarpRunner* r = runner.get();
        pool.emplace_back([&, r] {
            Cta& cta = *r->cta;
            for (;;) {
                if (r->warp == 0) {
                    long index;
                    {
                        std::lock_guard<std::mutex> lock(next_mu);
                        index = next++;
                    }
                    cta.finished = index >= total;
                    if (!cta.finished) {
                        cta.reset();
                        cta.block = Dim3{(int)(index % grid.x), (int)(index / grid.x % grid.y),
                                         (int)(index / ((long)grid.x * grid.y))};
                    }
                }
                cta.barrier.arrive_and_wait(BAR_START, "kernel start");
                if (cta.finished) break;
                run_warp(*r);
                cta.barrier.arrive_and_wait(BAR_END, "kernel exit");
            }
        });
    }
    for (auto& th : pool) th.join();
    if (hazards > 0) std::fprintf(stderr, "tessera-emu: warning: %ld hazards in this launch\n", hazards.load());
}

void load_params(const char* path) {
    std::ifstream in(path);
    if (!in) fail("cannot open %s", path);
    std::string key;
    long long value;
    while (in >> key >> value) params()[key] = value;
}

long long param(const char* key) {
    auto it = params().find(key);
    if (it == params().end()) fail("parameter file lacks %s", key);
    return it->second;
}

void* alloc_buffer(size_t bytes, int fill_byte, bool writable) {
    void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
    if (p == nullptr) fail("out of memory (%zu bytes)", bytes);
    std::memset(p, fill_byte, bytes);
    register_global(p, bytes, writable);
    return p;
}

void* load_buffer(const char* path, size_t bytes, bool writable) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("cannot open %s", path);
    std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (data.size() != bytes) fail("%s: %zu bytes, expected %zu", path, data.size(), bytes);
    void* p = alloc_buffer(bytes, 0, writable);
    std::memcpy(p, data.data(), bytes);
    return p;
}

void save_buffer(const char* path, const void* p, size_t bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(static_cast<const char*>(p), (std::streamsize)bytes);
    if (!out) fail("cannot write %s", path);
}

}  // namespace tessera_host
