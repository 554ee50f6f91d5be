//! Fuzzing the simulator's PTX parser, lowering and interpreter with damaged real kernels.
//!
//! The corpus is NVRTC's PTX for one kernel of every family (attention sm_80 and sm_90a, GEMM
//! sm_80 and sm_90a, LoRA, the AMP cast / unscale / AdamW / loss-scale kernels, window, a user
//! elementwise map), compiled once per build tree through a disk cache. Each case edits one of
//! them (lines deleted, duplicated or swapped; a number, register or opcode replaced by another
//! of the file's or by an extreme value; bytes flipped, inserted or removed) and parses it: the
//! parser must return `Ok` or an `Err` with a one-line message. What parses is launched on one CTA
//! with a small step budget and must end, within a deadline, in `Ok` or a one-line error.
//!
//! Cases: [`PTX_CASES`] per run; `TESSERA_FUZZ_CASES=N` multiplies that. Replay a run with
//! `PROPTEST_RNG_SEED=<seed printed by the test> cargo test --offline -p tessera-runtime --test
//! fuzz_ptx`; a failing case's PTX is also saved (its path is in the failure). See
//! `fuzz_support` for the shared rules.
//!
//! Without NVRTC the corpus falls back to the simulator's checked-in PTX (attention and TMA
//! kernels) with a note; where the project's NVRTC is provisioned (CI) and does not load, the
//! test fails instead (`common::nvrtc_available`).

mod common;
mod fuzz_support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use rayon::prelude::*;
use tessera_runtime::codegen::{
    AdamWSpec, Arch, AttentionSpec, CastSpec, ElemType, GemmSpec, KernelSpec, LoraSpec, MapSpec, ScaleUpdateSpec,
    UnscaleSpec, UserFunction, WindowOp, WindowSpec,
};
use tessera_runtime::simulator::{launch, GlobalMemory, LaunchConfig, Module, SimError, SimOptions};
use tessera_runtime::{Compiler, KernelCache, Target};

use fuzz_support::{one_line_problem, save_reproducer, text_edit, with_deadline, Lines, TextEdit};

/// Cases per default run (see the file's doc comment for the multiplier).
const PTX_CASES: u32 = 5000;
/// The default run's seed.
const SEED: u64 = 0x7e55_e7a0_0000_0001;
/// Edits per case: one edit finds most shallow bugs; several reach states no single edit does.
const MAX_EDITS: usize = 6;
/// Instructions per thread before the simulator stops a launch: enough to get deep into a
/// kernel's prologue and main loop, small enough that a runaway case costs milliseconds.
const STEP_BUDGET: u64 = 20_000;
/// Parse plus launch of the largest kernel takes well under a second; a case still running after
/// this is a hang.
const CASE_DEADLINE: Duration = Duration::from_secs(60);
/// The block when the PTX declares neither `.reqntid` nor a usable `.maxntid`.
const DEFAULT_BLOCK: [u32; 3] = [128, 1, 1];
/// The buffer every pointer parameter points at, in the pointer-filled launches.
const BUFFER_BYTES: usize = 1 << 20;

/// A user elementwise function with three inputs of different widths (the widest map kernel).
const AXPY: UserFunction = UserFunction {
    name: "fuzz_axpy",
    cuda_name: "tessera_user_fuzz_axpy",
    cuda: "__device__ __forceinline__ float tessera_user_fuzz_axpy(float a, float x, float y) {\n    return a * x + y;\n}\n",
    inputs: &[ElemType::F32, ElemType::BF16, ElemType::F16],
    output: ElemType::BF16,
};

fn family_specs() -> Vec<(KernelSpec, Arch)> {
    vec![
        (AttentionSpec::new(ElemType::BF16, 64, true, 4, 2).into(), Arch::SM80),
        (AttentionSpec::new(ElemType::BF16, 64, true, 8, 2).into(), Arch::SM90A),
        (GemmSpec::new(ElemType::BF16, ElemType::F32).into(), Arch::SM80),
        (GemmSpec::new(ElemType::BF16, ElemType::BF16).into(), Arch::SM90A),
        (LoraSpec::new(ElemType::BF16, ElemType::BF16, 16).into(), Arch::SM80),
        (CastSpec::new(ElemType::F32, ElemType::BF16).into(), Arch::SM80),
        (CastSpec { scaled: true, amax: true, ..CastSpec::new(ElemType::F32, ElemType::E4M3) }.into(), Arch::SM80),
        (UnscaleSpec::default().into(), Arch::SM80),
        (AdamWSpec::default().into(), Arch::SM80),
        (ScaleUpdateSpec::LossScale.into(), Arch::SM80),
        (WindowSpec::new(WindowOp::Sum, ElemType::F32).into(), Arch::SM80),
        (MapSpec::new(AXPY).into(), Arch::SM80),
    ]
}

/// Checked-in PTX of the simulator's tests, for machines without NVRTC, with the dynamic shared
/// memory their launches use.
const FALLBACK_PTX: [(&str, u32); 2] = [("attn_bf16_d96_full_s1.ptx", 48 << 10), ("hopper_tma.ptx", 64 << 10)];

/// One corpus kernel: its PTX and the launch its generator intends.
struct Seed {
    label: String,
    ptx: Arc<str>,
    /// Threads per block; `None`: take it from the PTX's `.reqntid` / `.maxntid`.
    threads: Option<u32>,
    dynamic_shared_bytes: u32,
}

/// Every corpus kernel, built once per test binary.
fn corpus() -> &'static [Seed] {
    static CORPUS: OnceLock<Vec<Seed>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        if !common::nvrtc_available() {
            eprintln!("fuzz_ptx: no NVRTC; fuzzing the simulator's checked-in PTX only");
            let dir = common::workspace_root().join("sim/tests/ptx");
            return FALLBACK_PTX
                .iter()
                .map(|&(name, dynamic_shared_bytes)| {
                    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
                    Seed { label: name.to_string(), ptx: Arc::from(text), threads: None, dynamic_shared_bytes }
                })
                .collect();
        }
        // The cache folder the root crate's simulator tests use: a kernel is compiled once per
        // build tree, whichever test binary needs it first.
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tessera-sim-kernels");
        let compiler = Compiler::new().with_cache(KernelCache::open(dir).expect("kernel cache folder"));
        family_specs()
            .par_iter()
            .map(|(spec, arch)| {
                let label = format!("{arch} {}", spec.kernel_name(*arch));
                let source = spec.render(*arch).unwrap_or_else(|e| panic!("{label}: {e}"));
                let module = compiler.compile(&source, Target::ptx(*arch)).unwrap_or_else(|e| panic!("{label}: {e}"));
                let text = String::from_utf8(module.image).unwrap_or_else(|e| panic!("{label}: {e}"));
                Seed {
                    label,
                    ptx: Arc::from(text.trim_end_matches('\0')),
                    threads: Some(source.geometry.threads_per_block),
                    dynamic_shared_bytes: source.geometry.dynamic_shared_bytes,
                }
            })
            .collect()
    })
}

/// How the parameter buffer of a launch is filled.
#[derive(Clone, Copy, Debug)]
enum ParamFill {
    /// All zero: null pointers and empty problems.
    Zero,
    /// Every 8-byte slot points at one zeroed buffer, so loads succeed and the kernel runs on.
    Pointers,
    /// Each 8-byte slot, by this seed, either the buffer's address or two small counts (sizes,
    /// strides, flags): sometimes close enough to a real problem to run the main loop.
    Mixed(u64),
    /// Bytes from a generator with this seed.
    Noise(u64),
}

fn param_fill() -> impl Strategy<Value = ParamFill> {
    prop_oneof![
        1 => Just(ParamFill::Zero),
        1 => Just(ParamFill::Pointers),
        3 => any::<u64>().prop_map(ParamFill::Mixed),
        1 => any::<u64>().prop_map(ParamFill::Noise),
    ]
}

/// The block the PTX asks for: `.reqntid` exactly, else `.maxntid`, else [`DEFAULT_BLOCK`]
/// (a damaged directive just makes the launch fail its configuration check, which is fine).
fn block_for(ptx: &str) -> [u32; 3] {
    let dims = |directive: &str| -> Option<[u32; 3]> {
        let rest = &ptx[ptx.find(directive)? + directive.len()..];
        let line = rest.lines().next()?;
        let mut dims = [1u32; 3];
        for (slot, text) in dims.iter_mut().zip(line.split(',')) {
            *slot = text.trim().parse().ok()?;
        }
        let threads = dims.iter().map(|&d| u64::from(d)).product::<u64>();
        (threads > 0 && threads <= tessera_runtime::simulator::MAX_THREADS_PER_BLOCK as u64).then_some(dims)
    };
    dims(".reqntid").or_else(|| dims(".maxntid")).unwrap_or(DEFAULT_BLOCK)
}

/// Small values a size, stride, count or flag field plausibly holds.
const SMALL_COUNTS: [u32; 12] = [0, 1, 2, 3, 4, 7, 8, 16, 31, 32, 64, 128];

fn params_for(module: &Module, entry: &str, fill: ParamFill, memory: &GlobalMemory) -> Result<Vec<u8>, SimError> {
    let size = module.param_bytes(entry)?;
    let mut bytes = vec![0u8; size];
    let next = |state: &mut u64| {
        *state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        *state >> 33
    };
    match fill {
        ParamFill::Zero => {}
        ParamFill::Pointers => {
            let buffer = memory.alloc(BUFFER_BYTES);
            for slot in bytes.chunks_exact_mut(8) {
                slot.copy_from_slice(&buffer.to_le_bytes());
            }
        }
        ParamFill::Mixed(mut state) => {
            let buffer = memory.alloc(BUFFER_BYTES);
            for slot in bytes.chunks_exact_mut(8) {
                if next(&mut state) % 2 == 0 {
                    slot.copy_from_slice(&buffer.to_le_bytes());
                } else {
                    for half in slot.chunks_exact_mut(4) {
                        let count = SMALL_COUNTS[next(&mut state) as usize % SMALL_COUNTS.len()];
                        half.copy_from_slice(&count.to_le_bytes());
                    }
                }
            }
        }
        ParamFill::Noise(mut state) => bytes.iter_mut().for_each(|b| *b = next(&mut state) as u8),
    }
    Ok(bytes)
}

/// What is wrong with an error the simulator returned, if anything.
fn error_problem(e: &SimError) -> Option<String> {
    if let SimError::Parse { message, .. } = e {
        if message.trim().is_empty() {
            return Some(format!("parse error without a message: {e}"));
        }
    }
    one_line_problem(&e.to_string())
}

/// Parses `ptx` and, if that works, launches its first entry. `Err` describes a broken contract.
fn parse_and_run(ptx: String, threads: Option<u32>, dynamic_shared_bytes: u32, fill: ParamFill) -> Result<(), String> {
    let module = match Module::parse(&ptx) {
        Ok(m) => m,
        Err(e) => return error_problem(&e).map_or(Ok(()), Err),
    };
    let Some(entry) = module.entries().into_iter().next() else { return Ok(()) };
    let memory = GlobalMemory::new();
    let block = threads.map_or_else(|| block_for(&ptx), |t| [t, 1, 1]);
    let config = LaunchConfig { grid: [1, 1, 1], block, dynamic_shared_bytes };
    let options = SimOptions { checks: true, step_budget: STEP_BUDGET, parallel: false, ..SimOptions::default() };
    let result = params_for(&module, &entry, fill, &memory)
        .and_then(|params| launch(&module, &entry, &config, &params, &memory, &options));
    match result {
        Ok(_) => Ok(()),
        Err(e) => error_problem(&e).map_or(Ok(()), Err),
    }
}

/// The corpus is valid: every kernel parses and lowers unchanged, so the fuzz cases start from
/// real, accepted PTX.
#[test]
fn every_corpus_kernel_parses() {
    for seed in corpus() {
        let module = Module::parse(&seed.ptx).unwrap_or_else(|e| panic!("{}: {e}", seed.label));
        assert!(!module.entries().is_empty(), "{}: no entry", seed.label);
    }
}

proptest! {
    #![proptest_config(fuzz_support::config("fuzz_ptx", PTX_CASES, SEED))]

    /// Damaged PTX parses or is rejected in one line, and what parses runs to an end.
    #[test]
    fn damaged_ptx_is_rejected_or_runs_to_an_end(
        kernel in any::<Index>(),
        edits in prop::collection::vec(text_edit(), 1..=MAX_EDITS),
        fill in param_fill(),
    ) {
        let corpus = corpus();
        let seed = &corpus[kernel.index(corpus.len())];
        let damaged = Lines::new(&seed.ptx).apply(&edits);
        // The simulator backend rejects non-UTF-8 images before parsing; the lossy text still
        // tests the parser on what the damage did to the rest.
        let text = String::from_utf8_lossy(&damaged).into_owned();
        let (threads, smem) = (seed.threads, seed.dynamic_shared_bytes);
        let verdict = with_deadline(CASE_DEADLINE, move || parse_and_run(text, threads, smem, fill)).and_then(|r| r);
        if let Err(problem) = verdict {
            let saved = save_reproducer("fuzz_ptx", "ptx", &damaged);
            prop_assert!(false, "{} with {fill:?}: {problem}; {saved}", seed.label);
        }
    }
}

/// Edits with no effect still leave a kernel that parses (the mutator's own sanity check).
#[test]
fn no_op_edits_keep_the_kernel_valid() {
    let ptx = &corpus()[0].ptx;
    let out = Lines::new(ptx).apply(&[TextEdit::Bytes(fuzz_support::ByteEdit::Append(Vec::new()))]);
    assert_eq!(out, ptx.as_bytes());
}
