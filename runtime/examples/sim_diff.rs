//! Differential check of the CPU simulator against a GPU, one half at a time.
//!
//! Runs a suite of small CUDA kernels (`benches/gpu/sim_diff/*.cu`), one or more per instruction
//! family the simulator implements (warp shuffles, votes, reductions, match, activemask, ldmatrix,
//! mma.sync, cp.async, vector loads and stores, atomics, conversions, MUFU approximations,
//! arithmetic, bit operations, prmt, setp/selp), through the [`Backend`] trait on the backend named
//! by `--backend`, with inputs generated from `--seed`, and writes every output buffer plus a
//! `manifest.json` that says how each output word is to be compared. `benches/gpu/sim_diff.py` runs
//! it once with `--backend cuda` and once with `--backend sim` on the same seed and compares.
//!
//! ```text
//! cargo run --release -p tessera-runtime --example sim_diff -- --backend sim --out /tmp/sd/sim [--seed N] [--only NAME]
//! ```
//!
//! Exit status 0 when every case ran; 1 when any failed to compile, load or run (the manifest
//! records the error), so the simulator half alone is a smoke test of the suite.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_runtime::codegen::{Arch, KernelSource, LaunchGeometry};
use tessera_runtime::{open_backend, Backend, BackendKind, Compiler, KernelCache, LaunchConfig, Target};

const COMMON: &str = include_str!("../../benches/gpu/sim_diff/common.cuh");

/// How the driver fills a case's input words.
#[derive(Clone, Copy, Debug)]
enum Inputs {
    /// Uniform random bits.
    Bits,
    /// f32 bit patterns: specials (NaN, infinities, signed zeros, subnormals, limits), f16 and bf16
    /// rounding ties, integers and half-integers, and random values over a wide exponent range.
    Floats,
    /// Integers: boundaries (0, ±1, INT_MIN, INT_MAX, shift widths), small values, random bits.
    Ints,
    /// Two halves per word with values k/4, |k| <= 8: every mma product and sum is exact in f32.
    ExactHalves,
    /// Two halves per word, random in [-2, 2), as f16 (`false`) or bf16 (`true`).
    Halves(bool),
    /// Two halves per word: specials, moderate values and random bits.
    MixedHalves,
}

/// How the comparison script compares one output word (see `benches/gpu/sim_diff.py`).
type Compare = &'static str;

struct Case {
    /// Output file stem and manifest key.
    name: &'static str,
    file: &'static str,
    source: &'static str,
    entry: &'static str,
    grid: u32,
    block: u32,
    /// Input words per thread (0: `input_words` gives the total).
    inputs_per_thread: usize,
    input_words: usize,
    inputs: Inputs,
    /// Output words per thread; `out_words` overrides the total (atomics).
    outputs_per_thread: usize,
    out_words: usize,
    /// Initial output contents, word by word (the rest zero).
    out_init: &'static [(usize, u32)],
    /// One mode for every word, or one per word slot (cycled).
    compare: &'static [Compare],
    /// Forms the simulator does not run yet: on the simulator, a load error is recorded as
    /// `unsupported` and does not fail the run. On the GPU these cases are ordinary.
    ext: bool,
}

macro_rules! kernel {
    ($file:literal) => {
        ($file, include_str!(concat!("../../benches/gpu/sim_diff/", $file)))
    };
}

#[allow(clippy::too_many_arguments)]
fn case(
    name: &'static str,
    (file, source): (&'static str, &'static str),
    entry: &'static str,
    grid: u32,
    block: u32,
    inputs_per_thread: usize,
    inputs: Inputs,
    outputs_per_thread: usize,
    compare: &'static [Compare],
) -> Case {
    Case {
        name,
        file,
        source,
        entry,
        grid,
        block,
        inputs_per_thread,
        input_words: 0,
        inputs,
        outputs_per_thread,
        out_words: 0,
        out_init: &[],
        compare,
        ext: false,
    }
}

/// Counters of `sd_atomics` that do not start at zero (word index in the output, value).
const ATOMIC_INIT: &[(usize, u32)] =
    &[(1024 + 2, 0xffff_ffff), (1024 + 4, 0x7fff_ffff), (1024 + 5, 0x8000_0000), (1024 + 8, 0xffff_ffff), (1024 + 10, 50)];

fn suite() -> Vec<Case> {
    let warp = kernel!("warp.cu");
    let mma = kernel!("mma.cu");
    let arith = kernel!("arith.cu");
    let bits = kernel!("bits.cu");
    const BITS: &[Compare] = &["bits"];
    const F32: &[Compare] = &["f32"];
    // (d, magnitude) pairs: the tensor core's accumulation rounding, relative to the magnitude.
    const MMA: &[Compare] = &["mma"];
    vec![
        case("shfl", warp, "sd_shfl", 4, 64, 4, Inputs::Bits, 24, BITS),
        case("vote", warp, "sd_vote", 4, 64, 1, Inputs::Bits, 8, BITS),
        case("redux", warp, "sd_redux", 4, 64, 1, Inputs::Ints, 10, BITS),
        case("match", warp, "sd_match", 4, 64, 2, Inputs::Bits, 6, BITS),
        case("activemask", warp, "sd_activemask", 2, 48, 1, Inputs::Bits, 3, BITS),
        Case {
            input_words: 4 * 160,
            inputs_per_thread: 0,
            ..case("ldmatrix", kernel!("ldmatrix.cu"), "sd_ldmatrix", 4, 32, 0, Inputs::Bits, 14, BITS)
        },
        case("mma_f16_k16_exact", mma, "sd_mma_f16_k16", 2, 64, 10, Inputs::ExactHalves, 8, F32),
        case("mma_bf16_k16_exact", mma, "sd_mma_bf16_k16", 2, 64, 10, Inputs::ExactHalves, 8, F32),
        case("mma_f16_k8_exact", mma, "sd_mma_f16_k8", 2, 64, 10, Inputs::ExactHalves, 8, F32),
        case("mma_bf16_k8_exact", mma, "sd_mma_bf16_k8", 2, 64, 10, Inputs::ExactHalves, 8, F32),
        case("mma_f16_k16_random", mma, "sd_mma_f16_k16", 2, 64, 10, Inputs::Halves(false), 8, MMA),
        case("mma_bf16_k16_random", mma, "sd_mma_bf16_k16", 2, 64, 10, Inputs::Halves(true), 8, MMA),
        case("mma_f16_k8_random", mma, "sd_mma_f16_k8", 2, 64, 10, Inputs::Halves(false), 8, MMA),
        case("mma_bf16_k8_random", mma, "sd_mma_bf16_k8", 2, 64, 10, Inputs::Halves(true), 8, MMA),
        Case {
            input_words: 2 * 64 * 12 + 16,
            inputs_per_thread: 0,
            ..case("cp_async", kernel!("cp_async.cu"), "sd_cp_async", 2, 64, 0, Inputs::Bits, 15, BITS)
        },
        Case {
            input_words: 2 * 64 * 8 + 8,
            inputs_per_thread: 0,
            ..case("vector_memory", kernel!("memory.cu"), "sd_vector_memory", 2, 64, 0, Inputs::Bits, 24, BITS)
        },
        Case {
            out_words: 1024 + 32,
            out_init: ATOMIC_INIT,
            ..case("atomics", kernel!("atomics.cu"), "sd_atomics", 4, 128, 1, Inputs::Ints, 0, BITS)
        },
        case("cvt", kernel!("convert.cu"), "sd_cvt", 4, 64, 2, Inputs::Floats, 28, CVT),
        Case {
            ext: true,
            ..case("cvt_ext", kernel!("convert.cu"), "sd_cvt_ext", 4, 64, 2, Inputs::Floats, 4, CVT_EXT)
        },
        case("approx", kernel!("approx.cu"), "sd_approx", 4, 64, 1, Inputs::Floats, 14, APPROX),
        case("float_arith", arith, "sd_float_arith", 4, 64, 3, Inputs::Floats, 16, F32),
        case("packed_arith", arith, "sd_packed_arith", 4, 64, 3, Inputs::MixedHalves, 6, PACKED),
        case("int_arith", arith, "sd_int_arith", 4, 64, 3, Inputs::Ints, 16, BITS),
        case("minmax", arith, "sd_minmax", 4, 64, 2, Inputs::Floats, 14, MINMAX),
        Case { ext: true, ..case("arith_ext", arith, "sd_arith_ext", 4, 64, 3, Inputs::Floats, 6, ARITH_EXT) },
        case("bits", bits, "sd_bits", 4, 64, 3, Inputs::Ints, 26, BITS),
        Case { ext: true, ..case("bits_ext", bits, "sd_bits_ext", 4, 64, 3, Inputs::Ints, 8, BITS) },
        case("prmt", bits, "sd_prmt", 4, 64, 3, Inputs::Bits, 8, BITS),
        case("setp", bits, "sd_setp", 4, 64, 2, Inputs::Floats, 6, SETP),
    ]
}

/// `sd_cvt`: f16/bf16 results as halves, f32 results with NaN == NaN, integers exactly.
const CVT: &[Compare] = &[
    "f16", "f16", "f16", "f16", "bf16", "bf16", // f32 -> 16-bit, rn rz rm rp / rn rz
    "f16x2", "bf16x2", // packed
    "f32", "f32", "f32", // widening (f16, bf16 by packing, bf16)
    "bits", "bits", "bits", "bits", "bits", "bits", // f32 -> integers
    "f32", "f32", "f32", "f32", "f32", "f32", "f32", "f32", "f32", // -> f32
    "bits", "bits", // saturating narrowing
];
/// `sd_cvt_ext`: relu f16, satfinite bf16, rz bf16x2, rna tf32.
const CVT_EXT: &[Compare] = &["f16", "bf16", "bf16x2", "f32"];
/// `sd_arith_ext`: directed fma, sad, .NaN packed min/max.
const ARITH_EXT: &[Compare] = &["f32", "f32", "f32", "bits", "f16x2", "bf16x2"];
/// `sd_approx`: PTX ISA error bounds of each approximation, doubled (both sides approximate).
const APPROX: &[Compare] = &[
    "ulps:4",               // ex2.approx.ftz: 2^-22 relative
    "ulps:4",               // ex2.approx
    "ulps_or_abs:4:4.8e-7", // lg2.approx.ftz: 2^-22 absolute near 1, relative elsewhere
    "ulps_or_abs:4:4.8e-7", // lg2.approx
    "ulps:2",               // rcp.approx.ftz: 1 ulp
    "ulps:2",               // rcp.approx
    "ulps:4",               // rsqrt.approx.ftz: 2^-22.9 relative
    "ulps:4",               // sqrt.approx
    "rel:1e-3",             // tanh.approx: 2^-10.987 relative
    "abs:1.1e-6",           // sin.approx: 2^-20.9 absolute on [-pi, pi]
    "abs:1.1e-6",           // cos.approx
    "f32", "f32", "f32",    // rcp.rn, sqrt.rn, div.rn: correctly rounded
];
const PACKED: &[Compare] = &["f16x2", "bf16x2", "f16x2", "f16x2", "f64pair", "skip"];
const MINMAX: &[Compare] = &[
    "f32", "f32", "f32", "f32", "f32", "bits", "bits", "bits", "bits", "f16x2", "bf16x2", "f16x2", "bf16x2", "f32",
];
const SETP: &[Compare] = &["bits", "bits", "f32", "f32", "bits", "bits"];

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

const FLOAT_SPECIALS: &[u32] = &[
    0x0000_0000, 0x8000_0000, 0x7f80_0000, 0xff80_0000, 0x7fc0_0000, 0x7f80_0001, 0xffc0_0001, 0x0000_0001,
    0x8000_0001, 0x007f_ffff, 0x0080_0000, 0x7f7f_ffff, 0xff7f_ffff, 0x3f80_0000, 0xbf80_0000, 0x3f00_0000,
    0x4f00_0000, // 2^31
    0x4eff_ffff, // just below 2^31
    0xcf00_0000, // -2^31
    0xcf00_0001, // just below -2^31
    0x4f80_0000, // 2^32
    0x477f_e000, // 65504, f16 max
    0x477f_f000, // 65520: rounds to f16 inf
    0x477f_efff, // just below: rounds to 65504
    0x3880_0000, // 2^-14, f16 min normal
    0x3380_0000, // 2^-24, f16 min subnormal
    0x3300_0000, // 2^-25: ties to zero in f16
];

fn float_word(rng: &mut StdRng) -> u32 {
    let pick = rng.random_range(0..100u32);
    let random_float = |rng: &mut StdRng, lo: u32, hi: u32| {
        let sign = rng.random::<u32>() & 0x8000_0000;
        let exp = rng.random_range(lo..=hi);
        sign | (exp << 23) | (rng.random::<u32>() & 0x7f_ffff)
    };
    match pick {
        0..=11 => FLOAT_SPECIALS[rng.random_range(0..FLOAT_SPECIALS.len())],
        // f16 ties: the 13 bits f16 drops are exactly half an f16 ulp (normal range of f16).
        12..=17 => (random_float(rng, 113, 142) & !0x1fff) | 0x1000,
        // bf16 ties.
        18..=23 => (random_float(rng, 1, 254) & !0xffff) | 0x8000,
        // Subnormals.
        24..=27 => (rng.random::<u32>() & 0x8000_0000) | rng.random_range(1..0x80_0000u32),
        // Integers and half-integers, for the integer roundings.
        28..=35 => {
            let k = rng.random_range(-70_000i32..70_000) as f32;
            let v = if rng.random::<bool>() { k + 0.5 } else { k };
            v.to_bits()
        }
        // Around the f16 range, where 16-bit conversions overflow or go subnormal.
        36..=45 => random_float(rng, 100, 145),
        _ => random_float(rng, 87, 167),
    }
}

fn int_word(rng: &mut StdRng) -> u32 {
    const SPECIALS: &[u32] = &[
        0, 1, 2, 0xffff_ffff, 0xffff_fffe, 0x7fff_ffff, 0x8000_0000, 0x8000_0001, 0x7fff_fffe, 31, 32, 33, 63, 64, 0xffff,
        0x1_0000, 0x7fff, 0x8000, 0xff, 0x80,
    ];
    match rng.random_range(0..10u32) {
        0..=1 => SPECIALS[rng.random_range(0..SPECIALS.len())],
        2..=4 => rng.random_range(-300i32..300) as u32,
        _ => rng.random(),
    }
}

fn half_pair(rng: &mut StdRng, inputs: Inputs) -> u32 {
    let half = |rng: &mut StdRng| -> u32 {
        match inputs {
            Inputs::Halves(true) => u32::from(half::bf16::from_f32(rng.random_range(-2.0f32..2.0)).to_bits()),
            Inputs::Halves(false) => u32::from(half::f16::from_f32(rng.random_range(-2.0f32..2.0)).to_bits()),
            _ => match rng.random_range(0..8u32) {
                // Zeros, infinities, NaN, subnormals, the largest finite (as f16; other values as bf16).
                0 => [0x0000, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0x0001, 0x03ff, 0x7bff, 0x7f80, 0xff80][rng.random_range(0..10)],
                1..=2 => rng.random::<u32>() & 0xffff,
                _ => u32::from(half::f16::from_f32(rng.random_range(-64.0f32..64.0)).to_bits()),
            },
        }
    };
    let lo = half(rng);
    lo | (half(rng) << 16)
}

/// Two halves k/4, |k| <= 8, in the dtype of the entry.
fn exact_pair(rng: &mut StdRng, bf16: bool) -> u32 {
    let mut half = || {
        let v = rng.random_range(-8i32..=8) as f32 / 4.0;
        if bf16 {
            u32::from(half::bf16::from_f32(v).to_bits())
        } else {
            u32::from(half::f16::from_f32(v).to_bits())
        }
    };
    let lo = half();
    lo | (half() << 16)
}

fn make_inputs(case: &Case, seed: u64) -> Vec<u32> {
    let threads = (case.grid * case.block) as usize;
    let n = if case.input_words > 0 { case.input_words } else { threads * case.inputs_per_thread.max(1) };
    let mut rng = StdRng::seed_from_u64(seed ^ fnv(case.name));
    // The exact mma cases name the dtype in their entry.
    let bf16 = case.entry.contains("bf16");
    (0..n)
        .map(|_| match case.inputs {
            Inputs::Bits => rng.random(),
            Inputs::Floats => float_word(&mut rng),
            Inputs::Ints => int_word(&mut rng),
            Inputs::ExactHalves => exact_pair(&mut rng, bf16),
            other => half_pair(&mut rng, other),
        })
        .collect()
}

/// The case's file with the shared header inlined, compiled for its entry alone: files with several
/// entries guard each with `#ifdef SD_ENTRY_<entry>`, so one entry the simulator cannot load does
/// not take the others down with it.
fn entry_source(case: &Case) -> String {
    format!("#define SD_ENTRY_{}\n{}", case.entry, case.source.replace("#include \"common.cuh\"", COMMON))
}

fn words_to_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Compiles, loads and runs one case; returns its output words.
fn run_case(backend: &dyn Backend, compiler: &Compiler, case: &Case, input: &[u32]) -> Result<Vec<u32>, String> {
    let threads = case.grid * case.block;
    let out_words = if case.out_words > 0 { case.out_words } else { threads as usize * case.outputs_per_thread };
    let source = entry_source(case);
    let kernel_source = KernelSource::new(
        case.entry.to_string(),
        source,
        LaunchGeometry { threads_per_block: case.block, dynamic_shared_bytes: 0 },
    );
    let module = compiler.compile(&kernel_source, backend.target()).map_err(|e| format!("compile: {e}"))?;
    let kernel = backend.load(&module).map_err(|e| format!("load: {e}"))?;
    let in_buf = backend.alloc(input.len() * 4).map_err(|e| e.to_string())?;
    let out_buf = backend.alloc(out_words * 4).map_err(|e| e.to_string())?;
    let result = (|| {
        backend.write(&in_buf, &words_to_bytes(input)).map_err(|e| e.to_string())?;
        let mut init = vec![0u32; out_words];
        for &(i, v) in case.out_init {
            init[i] = v;
        }
        backend.write(&out_buf, &words_to_bytes(&init)).map_err(|e| e.to_string())?;
        // struct DiffParams { const u32* in; u32* out; u32 n_in; u32 n_out; }
        let mut params = Vec::with_capacity(24);
        params.extend_from_slice(&in_buf.addr().to_le_bytes());
        params.extend_from_slice(&out_buf.addr().to_le_bytes());
        params.extend_from_slice(&(input.len() as u32).to_le_bytes());
        params.extend_from_slice(&(out_words as u32).to_le_bytes());
        let config = LaunchConfig { grid: [case.grid, 1, 1], block: [case.block, 1, 1], dynamic_shared_bytes: 0 };
        // SAFETY: `params` is `DiffParams` (two device pointers, two u32), the pointers are live
        // buffers of this backend, and each kernel stays within `n_in` / `n_out` words.
        unsafe { backend.launch(&kernel, &config, &params) }.map_err(|e| format!("launch: {e}"))?;
        backend.synchronize().map_err(|e| format!("run: {e}"))?;
        let mut raw = vec![0u8; out_words * 4];
        backend.read(&out_buf, &mut raw).map_err(|e| e.to_string())?;
        Ok(raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    })();
    let _ = backend.free(in_buf);
    let _ = backend.free(out_buf);
    result
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() {
    let mut backend_kind = BackendKind::Sim;
    let mut out_dir: Option<PathBuf> = None;
    let mut seed: u64 = 1;
    let mut only: Option<String> = None;
    let mut list = false;
    let mut emit_ptx: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--backend" => backend_kind = value("--backend").parse().unwrap_or_else(|e| panic!("{e}")),
            "--out" => out_dir = Some(PathBuf::from(value("--out"))),
            "--seed" => seed = value("--seed").parse().expect("--seed takes an integer"),
            "--only" => only = Some(value("--only")),
            "--list" => list = true,
            "--emit-ptx" => emit_ptx = Some(PathBuf::from(value("--emit-ptx"))),
            "-h" | "--help" => {
                println!(
                    "sim_diff --backend cuda|sim --out DIR [--seed N] [--only SUBSTRING] [--list] [--emit-ptx DIR]"
                );
                return;
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }
    let cases: Vec<Case> =
        suite().into_iter().filter(|c| only.as_deref().map_or(true, |o| c.name.contains(o))).collect();
    if list {
        for c in &cases {
            println!("{:<22} {:<16} {}", c.name, c.file, c.entry);
        }
        return;
    }
    if let Some(dir) = emit_ptx {
        // Writes each case's PTX (compute_80) for inspection or `ptxas`, and runs nothing.
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let compiler = Compiler::new();
        for c in &cases {
            let source = entry_source(c);
            let geometry = LaunchGeometry { threads_per_block: c.block, dynamic_shared_bytes: 0 };
            let module = compiler
                .compile(&KernelSource::new(c.entry.to_string(), source, geometry), Target::ptx(Arch::SM80))
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            std::fs::write(dir.join(format!("{}.ptx", c.entry)), &module.image).expect("write PTX");
        }
        return;
    }
    let out_dir = out_dir.unwrap_or_else(|| std::env::temp_dir().join(format!("tessera-sim-diff-{backend_kind}")));
    std::fs::create_dir_all(&out_dir).unwrap_or_else(|e| panic!("{}: {e}", out_dir.display()));
    let backend = open_backend(backend_kind).unwrap_or_else(|e| panic!("cannot open the {backend_kind} backend: {e}"));
    let cache_dir = std::env::temp_dir().join("tessera-sim-diff-cache");
    let compiler = Compiler::new().with_cache(KernelCache::open(&cache_dir).expect("kernel cache folder"));
    eprintln!("sim_diff on {} ({}, {}), seed {seed}", backend.device_name(), backend.kind(), backend.arch());

    let mut manifest = format!(
        "{{\n  \"backend\": {},\n  \"device\": {},\n  \"arch\": {},\n  \"seed\": {seed},\n  \"cases\": [\n",
        json_str(backend_kind.name()),
        json_str(&backend.device_name()),
        json_str(&backend.arch().to_string())
    );
    let mut failed = 0;
    let mut unsupported = 0;
    for (i, case) in cases.iter().enumerate() {
        let input = make_inputs(case, seed);
        let started = Instant::now();
        let result = run_case(backend.as_ref(), &compiler, case, &input);
        let ms = started.elapsed().as_secs_f64() * 1e3;
        std::fs::write(out_dir.join(format!("{}.in.bin", case.name)), words_to_bytes(&input)).expect("write input");
        let words_per_thread = if case.out_words > 0 { case.out_words } else { case.outputs_per_thread };
        let compare: Vec<String> = case.compare.iter().map(|c| json_str(c)).collect();
        let _ = write!(
            manifest,
            "    {{\"name\": {}, \"file\": {}, \"entry\": {}, \"grid\": {}, \"block\": {}, \"words_per_thread\": {}, \
             \"compare\": [{}], \"ms\": {ms:.1}",
            json_str(case.name),
            json_str(case.file),
            json_str(case.entry),
            case.grid,
            case.block,
            words_per_thread,
            compare.join(", ")
        );
        match result {
            Ok(out) => {
                std::fs::write(out_dir.join(format!("{}.out.bin", case.name)), words_to_bytes(&out))
                    .expect("write output");
                let _ = write!(manifest, ", \"out\": {}, \"words\": {}}}", json_str(&format!("{}.out.bin", case.name)), out.len());
                eprintln!("  {:<22} ok     {:>8.1} ms", case.name, ms);
            }
            Err(e) if case.ext && backend_kind == BackendKind::Sim && e.contains("unsupported PTX instruction") => {
                unsupported += 1;
                let _ = write!(manifest, ", \"unsupported\": {}}}", json_str(&e));
                eprintln!("  {:<22} not simulated yet: {e}", case.name);
            }
            Err(e) => {
                failed += 1;
                let _ = write!(manifest, ", \"error\": {}}}", json_str(&e));
                eprintln!("  {:<22} FAILED {:>8.1} ms: {e}", case.name, ms);
            }
        }
        manifest.push_str(if i + 1 < cases.len() { ",\n" } else { "\n" });
    }
    manifest.push_str("  ]\n}\n");
    std::fs::write(out_dir.join("manifest.json"), manifest).expect("write manifest");
    eprintln!(
        "{} cases, {failed} failed, {unsupported} not simulated yet; outputs in {}",
        cases.len(),
        out_dir.display()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
