//! tessera-sim: a CPU interpreter for the PTX that NVRTC produces for Tessera's kernels.
//!
//! The PTX text is parsed once and lowered into a compact array of pre-decoded instructions
//! ([`Module::parse`]); an instruction the simulator cannot run exactly is rejected there
//! ([`SimError::Unsupported`], with its line), never run approximately. [`launch`] then runs a grid
//! of CTAs, in parallel on rayon, every thread with its own registers and program counter. Every
//! memory access is bounds- and alignment-checked against the allocations of [`GlobalMemory`] and
//! the CTA's shared memory; with [`SimOptions::checks`], shared-memory races, reads of never-written
//! shared memory, reads of data an asynchronous copy (`cp.async`, TMA) has not delivered yet, plain
//! accesses to mbarrier objects and async-proxy reads of unfenced generic-proxy writes are reported
//! too. Barrier divergence, deadlocked collectives, mbarrier phases nobody completes and runaway
//! threads end in a [`Report`], never a hang.
//!
//! # Pipeline (one concept per module)
//!
//! - `lex`, `parse`: tokens, then a light tree (directives, declarations, labels, guards, operand
//!   shapes); inline-asm `{ .reg ...; }` scopes get function-unique registers.
//! - `lower` into `ir`: typed opcodes, operands as register-file slots (immediates and special
//!   registers are slots too), resolved branch targets; every modifier is checked here.
//! - `regalloc`: liveness-based packing of NVRTC's thousands of virtual registers into a few
//!   hundred slots per thread (the attention kernel: ~6000 to ~300), so a warp's registers stay in
//!   cache while the scheduler switches lanes.
//! - `cta` (scheduler, barriers, deadlock reports), `exec` (the interpreter loop), `warp`
//!   (collectives), `mma`, `space` (state spaces, generic addresses), `memory`, `checks`
//!   (shadow memory), `numerics` (rounding, f16/bf16, approximate functions).
//! - `mbarrier` (mbarrier objects, in-flight bulk loads, bulk-store groups), `bulk` (issuing
//!   `cp.async.bulk{.tensor}`: tensor-map reads, boxes, swizzling), `tensor_map` ([`TensorMap`],
//!   the simulator's encoding of a `CUtensorMap`).
//! - `wgmma` (sm_90a warpgroup MMA): `wgmma.fence`, `commit_group`, `wait_group` and
//!   `wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}` (A from shared memory or registers, B
//!   from shared memory through matrix descriptors, all swizzle modes, K- or MN-major) as warpgroup
//!   collectives of 128 threads; results land in the D registers at the `wait_group` that retires
//!   them (summed like `mma.sync`), and with checks, accesses to in-flight registers, missing
//!   `wgmma.fence`s and writes to shared operands still being read are reported. `wgmma` holds the
//!   lowering, layouts and per-CTA state; `warpgroup` runs the instructions on the CTA.
//!
//! Imports run one way: from the CTA's executor (`cta`, and `exec`, `warp` and `warpgroup`, which
//! add methods to its `Cta`) down through the asynchronous units and memory to `ir` and `numerics`;
//! no module imports one that imports it.
//!
//! # Execution model
//!
//! A thread runs until it blocks: at a barrier, a warp collective, an mbarrier wait whose phase is
//! incomplete, or exit. Warps run in order, lanes in order; a collective executes once every lane of
//! its member mask waits at it (`ldmatrix` and `mma` need the whole warp), a barrier releases once
//! all threads (or its thread count) arrived, an mbarrier waiter runs again once the phase changed.
//! `cp.async` copies are deferred until a `cp.async.wait_group` / `wait_all` of the issuing thread
//! needs them (groups complete in commit order) or the thread exits, so a missing wait shows up as a
//! read of bytes still in flight. Bulk copies into shared memory (`cp.async.bulk{.tensor}`) read
//! global memory when issued and land, with their complete-tx, when a thread waits on their mbarrier
//! or nothing else can run; bulk stores read shared memory when issued and write global memory at
//! `cp.async.bulk.wait_group` or exit. When nothing can run, waits time out (return false) a bounded
//! number of times before a deadlock is reported (see `cta`). An mbarrier phase completion orders
//! all earlier shared accesses before all later ones for the race checks, like `bar.sync` (see
//! `checks` and `mbarrier`). Generic addresses: bits 40..48 select the local, shared and param
//! windows; everything else is global.
//!
//! # Numerics
//!
//! IEEE operations round as PTX specifies (Rust's own `.rn` arithmetic; directed modes through
//! error-free transformations); f16/bf16 conversions are bit-exact RNE (NaN to 0x7fff); the
//! `.approx` functions (`ex2`, `lg2`, `rcp`, `rsqrt`, `sqrt`, `sin`, `cos`, `tanh`) are computed in f64
//! and rounded once, inside the ISA's stated error bounds but not necessarily equal to a GPU's MUFU
//! results in the last bits; `mma.sync` sums each product (exact) onto C in f64 in k order and
//! rounds once, as the host emulation (tests/emulation) does. Integer division by zero (undefined in
//! PTX) gives all ones, and the dividend as remainder.
//!
//! # Supported PTX
//!
//! Module directives, `.entry` with `.maxntid` / `.reqntid` / ..., `.reg`, `.global` / `.const`
//! (initialised), static and `.extern` (dynamic) `.shared`, `.local`; `mov` (incl. packing and
//! special registers), integer `add/sub/mul/mad` (`.lo/.hi/.wide`, `.cc`/`addc`), `div/rem/min/max/
//! abs/neg`, bit operations (`and/or/xor/not/cnot/shl/shr/bfe/bfi/brev/popc/clz/bfind/prmt/shf`),
//! `setp` (all comparisons, boolean combination, two destinations), `set`, `selp`, `testp`, f32/f64
//! arithmetic with `.ftz/.sat` and rounding modes, f16/bf16 (x2) arithmetic, `cvt` (all integer and
//! float pairs, every rounding mode, `.sat`, f16x2/bf16x2 packing with `.relu/.satfinite`), `cvta`,
//! `isspacep`, `ld/ldu/st` (all spaces, `.v2/.v4`, cache hints ignored), `atom/red` (global and
//! shared), `cp.async` (`.ca/.cg`, 4/8/16 bytes, src-size and ignore-src forms, commit/wait),
//! `ldmatrix` (x1/x2/x4, `.trans`), `mma.sync` (m16n8k16 and m16n8k8, f16/bf16 inputs, f32 or f16
//! accumulators), `shfl/vote/redux/match.sync`, `activemask`, `bar/barrier{.cta}.sync{.aligned}`
//! (named barriers 0..15 with thread counts), `bar.arrive`, `bar.warp.sync`, `membar/fence` (no-ops:
//! execution is sequentially consistent), `bra`, `ret`, `exit`, `trap`.
//!
//! Hopper (sm_90 / sm_90a): `mbarrier.init`, `mbarrier.inval`, `mbarrier.arrive{.expect_tx,
//! .noComplete}` and `mbarrier.arrive_drop{.expect_tx}` (state or `_` destination, optional count),
//! `mbarrier.expect_tx`, `mbarrier.complete_tx`, `mbarrier.test_wait{.parity}`,
//! `mbarrier.try_wait{.parity}` (optional suspend-time hint), all with optional `.sem.scope`
//! (`.release/.acquire/.relaxed`, `.cta/.cluster`), `.shared{::cta,::cluster}` or generic addresses;
//! `cp.async.bulk.shared::{cta,cluster}.global.mbarrier::complete_tx::bytes` and
//! `cp.async.bulk.global.shared::cta.bulk_group` (1D); `cp.async.bulk.tensor.{1..5}d` in `.tile` mode,
//! global to `.shared::{cta,cluster}` (`.mbarrier::complete_tx::bytes`) and `.shared::cta` to global
//! (`.bulk_group`), the tensor map given by a generic address ([`TensorMap`]); the optional
//! `.L2::cache_hint` operand of both (ignored); `cp.async.bulk.commit_group`,
//! `cp.async.bulk.wait_group{.read}`, `cp.async.bulk.prefetch{.tensor}` and `prefetch.tensormap`
//! (no-ops); `fence.proxy.async{.shared::cta,.shared::cluster,.global}` (the async-proxy check),
//! `fence.mbarrier_init.release.cluster` (no-op); `elect.sync`; `setmaxnreg.{inc,dec}.sync.aligned.u32`
//! (checked, no effect); `stmatrix` (m8n8, x1/x2/x4, `.trans`); `griddepcontrol` (no-op). The
//! simulator models a cluster of one CTA: `.shared::cluster` addresses are the CTA's own shared
//! memory; `.multicast::cluster`, the `im2col` / `gather4` / `scatter4` modes, shared-to-cluster copies
//! and `cta_group` are rejected as unsupported. Not supported (rejected at parse time): `call` and device
//! functions, textures and surfaces, `mbarrier.pending_count`, `cp.async.mbarrier.arrive`,
//! `cp.reduce.async.bulk`, `createpolicy`, `mapa` and other cluster instructions, `bar.red`, video
//! instructions, tf32/fp8/integer `mma`.
//!
//! Sizes are bounded where they are declared, so a malformed module is a parse error rather than
//! an overflow or a failed allocation: parameters to PTX's 32764 bytes, static `.shared` variables
//! to [`MAX_SHARED_BYTES`], `.local` to 512 KiB per thread, `.const` to 64 KiB, `.global` variables
//! to 64 MiB; `.align` to powers of two up to 1 MiB.
//!
//! ```
//! use tessera_sim::{launch, GlobalMemory, LaunchConfig, Module, SimOptions};
//! let ptx = r#"
//! .version 9.0
//! .target sm_80
//! .address_size 64
//! .visible .entry twice(.param .u64 p)
//! {
//!     .reg .b32 %r<4>;
//!     .reg .b64 %rd<4>;
//!     ld.param.u64 %rd1, [p];
//!     cvta.to.global.u64 %rd2, %rd1;
//!     mov.u32 %r1, %tid.x;
//!     mul.wide.u32 %rd3, %r1, 4;
//!     add.s64 %rd2, %rd2, %rd3;
//!     ld.global.u32 %r2, [%rd2];
//!     shl.b32 %r3, %r2, 1;
//!     st.global.u32 [%rd2], %r3;
//!     ret;
//! }
//! "#;
//! let module = Module::parse(ptx)?;
//! let memory = GlobalMemory::new();
//! let buf = memory.alloc(32 * 4);
//! let data: Vec<u8> = (0..32u32).flat_map(|i| i.to_le_bytes()).collect();
//! memory.write(buf, &data)?;
//! let config = LaunchConfig { grid: [1, 1, 1], block: [32, 1, 1], dynamic_shared_bytes: 0 };
//! launch(&module, "twice", &config, &buf.to_le_bytes(), &memory, &SimOptions::default())?;
//! let mut out = vec![0u8; 32 * 4];
//! memory.read(buf, &mut out)?;
//! assert_eq!(u32::from_le_bytes([out[8], out[9], out[10], out[11]]), 4);
//! # Ok::<(), tessera_sim::SimError>(())
//! ```

mod bulk;
mod checks;
mod cta;
mod error;
mod exec;
mod ir;
mod lex;
mod lower;
mod mbarrier;
mod memory;
mod mma;
mod numerics;
mod parse;
mod regalloc;
mod space;
mod tensor_map;
mod warp;
mod warpgroup;
mod wgmma;

pub use error::{Report, SimError};
pub use ir::ParamInfo;
pub use memory::GlobalMemory;
pub use tensor_map::{OobFill, Swizzle, TensorMap};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::cta::{Cta, LaunchCtx};
use crate::ir::Kernel;
use crate::memory::Allocation;
use crate::space::{GlobalView, Traffic};

/// The most shared memory one CTA may use (sm_90's 227 KiB).
pub const MAX_SHARED_BYTES: usize = 227 * 1024;
/// The most threads one CTA may have.
pub const MAX_THREADS_PER_BLOCK: usize = 1024;

/// A parsed and lowered PTX module. Its `.global` variables live with it (and keep their values
/// across launches, as on a device).
#[derive(Debug)]
pub struct Module {
    kernels: Vec<Kernel>,
    globals: Vec<Arc<Allocation>>,
    version: Option<String>,
    target: Vec<String>,
}

impl Module {
    /// Parses and lowers PTX text.
    pub fn parse(ptx: &str) -> Result<Module, SimError> {
        let tree = parse::parse_module(ptx)?;
        if let Some(bits) = tree.address_size {
            if bits != 64 {
                return Err(SimError::Unsupported { instruction: format!(".address_size {bits}"), line: 0 });
            }
        }
        let lowered = lower::lower_module(&tree)?;
        Ok(Module { kernels: lowered.kernels, globals: lowered.globals, version: tree.version, target: tree.target })
    }

    /// The names of the module's `.entry` functions, in order of appearance.
    pub fn entries(&self) -> Vec<String> {
        self.kernels.iter().map(|k| k.name.clone()).collect()
    }

    /// The parameter layout of an entry.
    pub fn entry_params(&self, name: &str) -> Result<Vec<ParamInfo>, SimError> {
        Ok(self.kernel(name)?.params.clone())
    }

    /// Bytes of the parameter buffer `launch` expects for an entry.
    pub fn param_bytes(&self, name: &str) -> Result<usize, SimError> {
        Ok(self.kernel(name)?.param_bytes)
    }

    /// Static shared memory of an entry, in bytes (the dynamic region follows it).
    pub fn static_shared_bytes(&self, name: &str) -> Result<usize, SimError> {
        Ok(self.kernel(name)?.static_shared_bytes)
    }

    /// Register-file slots per thread of an entry (after packing; see the crate docs).
    pub fn register_slots(&self, name: &str) -> Result<usize, SimError> {
        Ok(self.kernel(name)?.init_regs.len())
    }

    /// Number of lowered instructions of an entry.
    pub fn instruction_count(&self, name: &str) -> Result<usize, SimError> {
        Ok(self.kernel(name)?.code.len())
    }

    /// The `.version` directive, if any.
    pub fn ptx_version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The `.target` directive's values.
    pub fn target(&self) -> &[String] {
        &self.target
    }

    fn kernel(&self, name: &str) -> Result<&Kernel, SimError> {
        self.kernels
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| SimError::EntryNotFound { name: name.to_string(), available: self.entries() })
    }
}

/// Grid and block dimensions plus dynamic shared memory, as for `cuLaunchKernel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared_bytes: u32,
}

/// How to run a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimOptions {
    /// Shared-memory race detection, uninitialised shared reads, in-flight asynchronous-copy reads,
    /// plain accesses to mbarrier objects, the mbarrier-initialisation visibility check and the
    /// async-proxy fence check (bounds, alignment and mbarrier state are always checked).
    pub checks: bool,
    /// Maximum instructions per thread before a [`SimError::StepBudget`] report.
    pub step_budget: u64,
    /// Run CTAs in parallel on rayon.
    pub parallel: bool,
    /// The order CTAs run in. [`CtaOrder::Shuffled`] runs them one at a time in a seeded random
    /// order (overriding `parallel`), so a test can show a kernel's result does not depend on which
    /// CTA finishes first: the property a deterministic kernel promises.
    pub cta_order: CtaOrder,
}

/// In which order [`launch`] runs the CTAs of a grid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CtaOrder {
    /// Grid order (x fastest), or whatever order rayon picks when `parallel` is set.
    #[default]
    Grid,
    /// One at a time, in the permutation of the grid that `seed` picks (the same seed, the same
    /// order, on every machine).
    Shuffled { seed: u64 },
}

/// The most CTAs a shuffled launch permutes (the permutation is held in memory).
pub const MAX_SHUFFLED_CTAS: u64 = 1 << 24;

/// The grid indices `0..count` in the order `seed` picks: Fisher–Yates driven by SplitMix64, a
/// generator with no dependency and the same stream everywhere.
fn shuffled_order(count: u64, seed: u64) -> Vec<u64> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut order: Vec<u64> = (0..count).collect();
    for i in (1..order.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

impl Default for SimOptions {
    /// Checks on, a budget of 2^28 instructions per thread, parallel, grid order.
    fn default() -> Self {
        SimOptions { checks: true, step_budget: 1 << 28, parallel: true, cta_order: CtaOrder::Grid }
    }
}

/// What a launch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaunchStats {
    /// Instructions executed, summed over threads (guarded-off instructions count too).
    pub thread_instructions: u64,
    /// CTAs run.
    pub ctas: u64,
    /// Bytes `cp.async` copies read from global memory, summed over threads and CTAs: each copy's
    /// src-size, so a zero-filling copy (src-size 0, or the ignore-src predicate true) counts 0 and a
    /// 16-byte copy with src-size 8 counts 8. Guarded-off copies count nothing. Bulk copies
    /// (`cp.async.bulk`, `cp.async.bulk.tensor`) into shared memory count the bytes they read: a 1D
    /// copy its size, a tensor copy the elements of its box inside the tensor (not the zero fill).
    pub async_copy_bytes: u64,
    /// Bytes loaded from global memory by executed `ld` / `ldu` instructions (`ld.global` with any
    /// cache hint, `.nc`, and generic loads of global addresses), all lanes of vector loads
    /// included, summed over threads and CTAs. Loads of `.const` or parameter memory, atomics,
    /// `cp.async` and guarded-off loads do not count.
    pub global_load_bytes: u64,
    /// Bytes stored to global memory by executed `st` instructions (`st.global` and generic stores
    /// to global addresses), all lanes of vector stores included, summed over threads and CTAs.
    /// Atomics and `red` and guarded-off stores do not count. Bulk stores (`cp.async.bulk`,
    /// `cp.async.bulk.tensor` to global) count the bytes they write (a tensor store's box clipped to
    /// the tensor) when they complete.
    pub global_store_bytes: u64,
    /// Wall time of the launch.
    pub elapsed: Duration,
}

/// Runs `entry` over the grid. `params` holds the raw parameter bytes laid out per
/// [`Module::entry_params`].
///
/// On failure the error describes the first failing CTA in run order among those that ran (with
/// `parallel`, CTAs not yet started when one fails are skipped).
pub fn launch(
    module: &Module,
    entry: &str,
    config: &LaunchConfig,
    params: &[u8],
    memory: &GlobalMemory,
    options: &SimOptions,
) -> Result<LaunchStats, SimError> {
    let start = Instant::now();
    let kernel = module.kernel(entry)?;
    if params.len() != kernel.param_bytes {
        return Err(SimError::ParamSize { expected: kernel.param_bytes, got: params.len() });
    }
    let [bx, by, bz] = config.block;
    let [gx, gy, gz] = config.grid;
    if config.block.contains(&0) || config.grid.contains(&0) {
        return Err(SimError::Config(format!("grid {:?} and block {:?} must be non-zero", config.grid, config.block)));
    }
    let nthreads = bx as usize * by as usize * bz as usize;
    if nthreads > MAX_THREADS_PER_BLOCK || bz > 64 {
        return Err(SimError::Config(format!("block {:?} has more than {MAX_THREADS_PER_BLOCK} threads", config.block)));
    }
    if let Some(max) = kernel.maxntid {
        // In u128: three u32 dimensions can overflow u64.
        if nthreads as u128 > max.iter().map(|&m| u128::from(m)).product::<u128>() {
            return Err(SimError::Config(format!("block {:?} exceeds the kernel's .maxntid {max:?}", config.block)));
        }
    }
    if let Some(req) = kernel.reqntid {
        if req != config.block {
            return Err(SimError::Config(format!("block {:?} differs from the kernel's .reqntid {req:?}", config.block)));
        }
    }
    let shared_bytes = kernel.dynamic_shared_base + config.dynamic_shared_bytes as usize;
    if shared_bytes > MAX_SHARED_BYTES {
        return Err(SimError::Config(format!(
            "{shared_bytes} bytes of shared memory (static {} + dynamic {}) exceed {MAX_SHARED_BYTES}",
            kernel.dynamic_shared_base, config.dynamic_shared_bytes
        )));
    }
    let mut allocs = memory.snapshot();
    allocs.extend(module.globals.iter().cloned());
    let ctx = LaunchCtx {
        kernel,
        params,
        global: GlobalView::new(allocs),
        memory,
        checks: options.checks,
        budget: options.step_budget,
        grid: config.grid,
        block: config.block,
        nthreads,
        dynamic_bytes: config.dynamic_shared_bytes,
        shared_bytes,
        abort: AtomicBool::new(false),
    };
    let count = gx as u64 * gy as u64 * gz as u64;
    let run_one = |i: u64| -> Result<(u64, Traffic), SimError> {
        if ctx.abort.load(Ordering::Relaxed) {
            return Ok((0, Traffic::default()));
        }
        let ctaid = [(i % gx as u64) as u32, ((i / gx as u64) % gy as u64) as u32, (i / (gx as u64 * gy as u64)) as u32];
        let mut cta = Cta::new(&ctx, ctaid);
        match cta.run() {
            Ok(()) => Ok((cta.executed, cta.traffic)),
            Err(e) => {
                ctx.abort.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    };
    let sequential = |order: &mut dyn Iterator<Item = u64>| {
        let mut out = Vec::new();
        for i in order {
            let r = run_one(i);
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        out
    };
    let results: Vec<Result<(u64, Traffic), SimError>> = match options.cta_order {
        CtaOrder::Shuffled { seed } => {
            if count > MAX_SHUFFLED_CTAS {
                return Err(SimError::Config(format!("a shuffled launch runs at most {MAX_SHUFFLED_CTAS} CTAs; this grid has {count}")));
            }
            sequential(&mut shuffled_order(count, seed).into_iter())
        }
        CtaOrder::Grid if options.parallel => (0..count).into_par_iter().map(run_one).collect(),
        CtaOrder::Grid => sequential(&mut (0..count)),
    };
    let mut total = 0;
    let mut traffic = Traffic::default();
    for r in results {
        let (executed, t) = r?;
        total += executed;
        traffic += t;
    }
    Ok(LaunchStats {
        thread_instructions: total,
        ctas: count,
        async_copy_bytes: traffic.async_copy,
        global_load_bytes: traffic.global_load,
        global_store_bytes: traffic.global_store,
        elapsed: start.elapsed(),
    })
}
