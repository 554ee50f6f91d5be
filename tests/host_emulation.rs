//! Host emulation of the generated kernels: the numerics check that needs no GPU.
//!
//! `tests/emulation/host_prelude.hpp` implements every primitive of `templates/common/tessera.cuh` on the
//! CPU (lanes as fibers, warps as threads, deferred cp.async, shared-memory race checks). Each
//! attention spec is rendered exactly as for NVRTC, with the device prelude swapped for the host one,
//! compiled with g++ and run for every CTA of the grid; its output is compared with the f64 reference
//! on the same dtype-rounded inputs.
//!
//! The emulator is only as good as its fragment layouts, so `oracles_*` first proves ldmatrix and
//! mma against independent test vectors (`tests/data/oracles/`, bit for bit), `conversions_*` its
//! f16/bf16 rounding against the `half` crate, and `emulator_catches_*` that its checkers fire on
//! deliberately broken kernels.
//!
//! Needs `g++` (C++17; Linux); `TESSERA_CXX` overrides the compiler. Builds are cached by content
//! under `CARGO_TARGET_TMPDIR` (see `Builder`). Set `TESSERA_EMU_KEEP=1` to keep the case
//! directories (inputs, params.txt, outputs) for debugging.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tessera_codegen::{Arch, AttentionSpec, ElemType, Template, TileConfig, PRELUDE};
use tessera_runtime::reference::{self, Comparison};
use tessera_runtime::AttentionProblem;

const EMU_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/emulation");
const ORACLE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/oracles");
/// sm_80: the smallest-featured target; the host build does not depend on it beyond the
/// shared-memory validation of the spec.
const ARCH: Arch = Arch::SM80;
/// Written over the whole O buffer before a launch: NaN in f16 and in bf16, and never produced by
/// the kernel's rounding (which gives the canonical NaN 0x7fff), so it marks "never written".
const O_POISON: u16 = 0xffff;
const LSE_POISON: u32 = 0xffff_ffff;
/// Filled into the padding of the input buffers: a NaN that poisons any result that reads it.
const INPUT_PADDING: u16 = 0x7fff;
/// Largest |lse - reference| accepted, relative to max(1, |reference|). The kernel's LSE is
/// (m + log2 l) ln 2 in f32 from f32 scores of exact products: measured at most 1.6e-7.
const LSE_TOL: f64 = 2e-5;
/// Wall-clock limit of one emulator run (the slowest case takes about 2 s).
const PROGRAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

// ---- building and running C++ ---------------------------------------------------------------------

/// Flags of every host build. The templates' `#pragma unroll` means nothing to g++.
const CXX_FLAGS: [&str; 4] = ["-std=c++17", "-O1", "-pthread", "-Wno-unknown-pragmas"];

type BuildResult = Result<PathBuf, String>;

/// Compiles emulator programs. The emulator itself (host_runtime.cpp) is compiled once and linked
/// into every program; programs are cached by a hash of everything that goes into them (compiler
/// version, flags, every source text) under `CARGO_TARGET_TMPDIR`, so each distinct kernel
/// instantiation is compiled once per test run (shared between tests running in parallel) and
/// not again until a source changes. `TESSERA_EMU_REBUILD=1` ignores the cache.
struct Builder {
    cxx: String,
    version: String,
    root: PathBuf,
    builds: Mutex<HashMap<String, Arc<OnceLock<BuildResult>>>>,
}

fn builder() -> &'static Builder {
    static BUILDER: OnceLock<Builder> = OnceLock::new();
    BUILDER.get_or_init(|| {
        let cxx = std::env::var("TESSERA_CXX").unwrap_or_else(|_| "g++".to_string());
        let version = match Command::new(&cxx).arg("--version").output() {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            Ok(out) => panic!(
                "host emulation tests need a C++17 compiler: `{cxx} --version` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!(
                "host emulation tests need g++ (C++17) on PATH to build the emulated kernels, and `{cxx}` \
                 could not be run: {e}. Install g++, or point TESSERA_CXX at a C++17 compiler."
            ),
        };
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("host-emulation");
        std::fs::create_dir_all(&root).expect("create the host emulation build directory");
        Builder { cxx, version, root, builds: Mutex::new(HashMap::new()) }
    })
}

fn emu_source(name: &str) -> String {
    let path = Path::new(EMU_DIR).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A 128-bit hex digest of `parts` (two SipHash passes with different prefixes).
fn digest(parts: &[&str]) -> String {
    use std::hash::{Hash, Hasher};
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut h);
        for p in parts {
            p.hash(&mut h);
        }
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

impl Builder {
    /// Runs `build` once per key and process; concurrent callers with the same key wait for it.
    fn once(&self, key: &str, build: impl FnOnce() -> Result<PathBuf, String>) -> Result<PathBuf, String> {
        let cell = self.builds.lock().unwrap().entry(key.to_string()).or_default().clone();
        cell.get_or_init(build).clone()
    }

    /// Runs the compiler, writing `output` atomically (through a temporary name).
    fn compile(&self, dir: &Path, args: &[&std::ffi::OsStr], output: &Path) -> Result<(), String> {
        let tmp = output.with_extension(format!("tmp{}", std::process::id()));
        let out = Command::new(&self.cxx)
            .args(CXX_FLAGS)
            .arg("-I")
            .arg(EMU_DIR)
            .arg("-I")
            .arg(dir)
            .args(args)
            .arg("-o")
            .arg(&tmp)
            .output()
            .map_err(|e| format!("running {}: {e}", self.cxx))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed in {}:\n{}",
                self.cxx,
                dir.display(),
                String::from_utf8_lossy(&out.stderr).chars().take(6000).collect::<String>()
            ));
        }
        std::fs::rename(&tmp, output).map_err(|e| e.to_string())
    }

    fn cached(&self, path: &Path) -> bool {
        path.exists() && std::env::var_os("TESSERA_EMU_REBUILD").is_none()
    }

    /// host_runtime.cpp, compiled once.
    fn runtime(&self) -> Result<(PathBuf, String), String> {
        let (prelude, runtime) = (emu_source("host_prelude.hpp"), emu_source("host_runtime.cpp"));
        let key = digest(&[&self.version, &CXX_FLAGS.join(" "), &prelude, &runtime]);
        let object = self.once(&format!("runtime-{key}"), || {
            let object = self.root.join(format!("host_runtime-{key}.o"));
            if !self.cached(&object) {
                let src = Path::new(EMU_DIR).join("host_runtime.cpp");
                self.compile(&self.root, &["-c".as_ref(), src.as_os_str()], &object)?;
            }
            Ok(object)
        })?;
        Ok((object, key))
    }

    /// A program from `main.cpp` and the extra files (written next to it), linked with the runtime.
    fn program(&self, files: &[(&str, &str)]) -> Result<PathBuf, String> {
        let (object, runtime_key) = self.runtime()?;
        let includes = [emu_source("host_prelude.hpp"), emu_source("attention_main.hpp")];
        let mut parts: Vec<&str> = vec![&self.version, &runtime_key, &includes[0], &includes[1]];
        for (name, text) in files {
            parts.push(name);
            parts.push(text);
        }
        let key = digest(&parts);
        self.once(&key, || {
            let dir = self.root.join(&key);
            let binary = dir.join("emulated");
            if !self.cached(&binary) {
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                for (name, text) in files {
                    std::fs::write(dir.join(name), text).map_err(|e| format!("write {name}: {e}"))?;
                }
                let main = dir.join("main.cpp");
                self.compile(&dir, &[main.as_os_str(), object.as_os_str()], &binary)?;
            }
            Ok(binary)
        })
    }
}

/// A scratch directory for one test's case data; removed at the end unless `TESSERA_EMU_KEEP` is set.
struct Scratch {
    _dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    fn new(prefix: &str) -> Scratch {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("create a temp dir");
        let path = dir.path().to_path_buf();
        if std::env::var_os("TESSERA_EMU_KEEP").is_some() {
            eprintln!("keeping {}", path.display());
            #[allow(deprecated)]
            let _ = dir.into_path();
            Scratch { _dir: None, path }
        } else {
            Scratch { _dir: Some(dir), path }
        }
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

fn run(binary: &Path, args: &[&str]) -> Result<String, String> {
    run_with_env(binary, args, &[])
}

/// Runs an emulator program, killing it after `PROGRAM_TIMEOUT` (an endless loop in a kernel;
/// deadlocks at barriers are reported by the emulator itself).
fn run_with_env(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    use std::io::Read;
    let mut child = Command::new(binary)
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", binary.display()))?;
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if started.elapsed() > PROGRAM_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    match status {
        Some(status) if status.success() => Ok(stdout),
        Some(status) => Err(format!("{} {:?} exited with {status}:\n{stderr}", binary.display(), args)),
        None => Err(format!("{} {:?} killed after {:?}:\n{stderr}", binary.display(), args, PROGRAM_TIMEOUT)),
    }
}

/// Runs `jobs` on up to `available_parallelism` threads; results in job order.
fn parallel<T: Sync, R: Send>(jobs: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(jobs.len().max(1));
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    let i = *n;
                    *n += 1;
                    i
                };
                if i >= jobs.len() {
                    break;
                }
                let r = f(&jobs[i]);
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    results.into_inner().unwrap().into_iter().map(|r| r.expect("every job ran")).collect()
}

fn selftest_binary() -> PathBuf {
    builder().program(&[("main.cpp", &emu_source("selftest.cpp"))]).unwrap_or_else(|e| panic!("{e}"))
}

// ---- the emulator's own checks -----------------------------------------------------------------------

fn json(name: &str) -> Value {
    let path = Path::new(ORACLE_DIR).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array().expect("array").iter().map(|x| x.as_u64().expect("unsigned integer")).collect()
}

fn f32_bits(v: &Value) -> u32 {
    (v.as_f64().expect("number") as f32).to_bits()
}

/// Every ldmatrix case (x1, x2, x4, with and without .trans) and every m16n8k16 mma with f16/bf16
/// inputs and f32 accumulation — the shapes the kernels use — must reproduce the oracle's
/// destination registers bit for bit. The m16n8k8 and f16-accumulator cases have no counterpart in
/// tessera.cuh and are skipped (counted below).
#[test]
fn oracles_ldmatrix_and_mma_are_bit_exact() {
    let scratch = Scratch::new("tessera-oracles-");
    let binary = selftest_binary();

    let mut input = String::new();
    let mut expected: Vec<(String, Vec<u32>)> = Vec::new();
    let mut skipped = Vec::new();
    for (i, case) in json("ldmatrix.json")["cases"].as_array().expect("cases").iter().enumerate() {
        let instr = case["instr"].as_str().expect("instr");
        let num = if instr.contains(".x1.") {
            1
        } else if instr.contains(".x2.") {
            2
        } else if instr.contains(".x4.") {
            4
        } else {
            panic!("unexpected ldmatrix case {instr}")
        };
        let trans = instr.contains(".trans.");
        let lanes = case["lanes"].as_array().expect("lanes");
        assert_eq!(lanes.len(), 32);
        let smem = u64s(&case["smem_b16"]);
        let words: Vec<u64> = smem.chunks(2).map(|p| p[0] | p.get(1).copied().unwrap_or(0) << 16).collect();
        write!(input, "L {num} {}", trans as u8).unwrap();
        let mut want = Vec::new();
        for lane in lanes {
            write!(input, " {}", lane["addr"].as_u64().expect("addr")).unwrap();
            let d = u64s(&lane["d"]);
            assert_eq!(d.len(), num, "{instr}: registers per lane");
            want.extend(d.iter().map(|&x| x as u32));
        }
        write!(input, " {}", words.len()).unwrap();
        for w in &words {
            write!(input, " {w}").unwrap();
        }
        input.push('\n');
        expected.push((format!("ldmatrix case {i}: {instr}"), want));
    }
    for (i, case) in json("mma_sync.json")["cases"].as_array().expect("cases").iter().enumerate() {
        let instr = case["instr"].as_str().expect("instr");
        let ty = match instr {
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" => "bf16",
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" => "f16",
            _ => {
                skipped.push(instr.to_string());
                continue;
            }
        };
        write!(input, "M {ty}").unwrap();
        let mut want = Vec::new();
        for lane in case["lanes"].as_array().expect("lanes") {
            let (a, b) = (u64s(&lane["a"]), u64s(&lane["b"]));
            let (c, d) = (lane["c"].as_array().expect("c"), lane["d"].as_array().expect("d"));
            assert!(a.len() == 4 && b.len() == 2 && c.len() == 4 && d.len() == 4, "{instr}: fragment sizes");
            for x in a.iter().chain(&b) {
                write!(input, " {x}").unwrap();
            }
            for x in c {
                write!(input, " {}", f32_bits(x)).unwrap();
            }
            want.extend(d.iter().map(f32_bits));
        }
        input.push('\n');
        expected.push((format!("mma case {i}: {instr}"), want));
    }
    let path = scratch.path().join("oracles.txt");
    std::fs::write(&path, &input).unwrap();
    let out = run(&binary, &["oracles", path.to_str().unwrap()]).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), expected.len(), "one output line per case");
    let mut failures = Vec::new();
    for ((name, want), line) in expected.iter().zip(&lines) {
        let got: Vec<u32> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
        if &got != want {
            let first = got.iter().zip(want).position(|(g, w)| g != w).unwrap_or(got.len().min(want.len()));
            failures.push(format!(
                "{name}: first difference at value {first} (lane {}): got {:#010x?}, want {:#010x?}",
                first / (want.len() / 32).max(1),
                got.get(first),
                want.get(first)
            ));
        }
    }
    let kinds = |pat: &str| expected.iter().filter(|(n, _)| n.contains(pat)).count();
    eprintln!(
        "oracles: {} ldmatrix cases ({} x4, {} x4.trans), {} mma m16n8k16 cases ({} bf16, {} f16) checked; \
         {} mma cases without a tessera.cuh counterpart skipped",
        kinds("ldmatrix"),
        kinds(".x4.shared"),
        kinds(".x4.trans"),
        kinds("mma case"),
        kinds("f32.bf16"),
        kinds("f32.f16"),
        skipped.len()
    );
    assert!(failures.is_empty(), "oracle mismatches:\n{}", failures.join("\n"));
    for pat in [".x4.shared", ".x4.trans", "f32.bf16.bf16.f32", "f32.f16.f16.f32"] {
        assert!(kinds(pat) > 0, "the oracle files no longer cover {pat}");
    }
}

/// pack2<f16>/pack2<bf16> must round like the `half` crate (round-to-nearest-even, overflow to inf,
/// subnormals), and decoding must be exact for every 16-bit pattern: the reference rounds its
/// inputs with `half`, so any difference here would show up as kernel error.
#[test]
fn conversions_match_half_crate() {
    let scratch = Scratch::new("tessera-convert-");
    let binary = selftest_binary();
    let mut values: Vec<u32> = vec![
        0.0f32,
        -0.0,
        1.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        65504.0,
        65519.99,
        65520.0,
        1e6,
        5.960_464_5e-8,
        2.980_232_2e-8,
        8.940_697e-8,
        6.103_515_6e-5,
        6.1e-5,
        1.0e-40,
        3.389_531_4e38,
        3.402_823_5e38,
        f32::MIN_POSITIVE,
    ]
    .into_iter()
    .map(f32::to_bits)
    .collect();
    // Exact ties of both formats: 1 + 2^-11 (f16) and 1 + 2^-8 (bf16), odd and even neighbours.
    for k in 0..4u32 {
        values.push(0x3f80_0000 + (1 << 12) + k * (1 << 13));
        values.push(0x3f80_0000 + (1 << 15) + k * (1 << 16));
    }
    let mut rng = StdRng::seed_from_u64(0x7e55);
    values.extend((0..20_000).map(|_| rng.random::<u32>()));
    values.extend((0..20_000).map(|_| rng.random_range(-70_000.0f32..70_000.0).to_bits()));
    values.extend((0..20_000).map(|_| rng.random_range(-1e-4f32..1e-4).to_bits()));
    let path = scratch.path().join("values.txt");
    std::fs::write(&path, values.iter().map(|v| format!("{v}\n")).collect::<String>()).unwrap();
    let out = run(&binary, &["convert", path.to_str().unwrap()]).unwrap_or_else(|e| panic!("{e}"));
    let mut lines = out.lines();
    let mut bad = Vec::new();
    for &bits in &values {
        let line = lines.next().expect("one line per value");
        let mut it = line.split_whitespace().map(|x| x.parse::<u16>().unwrap());
        let (h, b) = (it.next().unwrap(), it.next().unwrap());
        let x = f32::from_bits(bits);
        let (wh, wb) = (f16::from_f32(x), bf16::from_f32(x));
        let ok_h = if x.is_nan() { f16::from_bits(h).is_nan() } else { h == wh.to_bits() };
        let ok_b = if x.is_nan() { bf16::from_bits(b).is_nan() } else { b == wb.to_bits() };
        if !ok_h || !ok_b {
            let (wh, wb) = (wh.to_bits(), wb.to_bits());
            bad.push(format!("{x:e} ({bits:#010x}): f16 {h:#06x} want {wh:#06x}, bf16 {b:#06x} want {wb:#06x}"));
        }
    }
    assert_eq!(lines.next(), Some("decode"));
    for h in 0..=u16::MAX {
        let line = lines.next().expect("one line per pattern");
        let mut it = line.split_whitespace().map(|x| f32::from_bits(x.parse::<u32>().unwrap()));
        let (x, y) = (it.next().unwrap(), it.next().unwrap());
        let (wx, wy) = (f16::from_bits(h).to_f32(), bf16::from_bits(h).to_f32());
        let same = |a: f32, b: f32| if b.is_nan() { a.is_nan() } else { a.to_bits() == b.to_bits() };
        if !same(x, wx) || !same(y, wy) {
            bad.push(format!("decode {h:#06x}: f16 {x:e} want {wx:e}, bf16 {y:e} want {wy:e}"));
        }
    }
    let first = bad[..bad.len().min(20)].join("\n");
    assert!(bad.is_empty(), "{} conversion mismatches, first ones:\n{first}", bad.len());
}

/// Each deliberately broken kernel of selftest.cpp must be stopped with a message naming the bug;
/// the bug-free control must pass. Without this the clean attention runs below would prove little
/// about synchronisation.
#[test]
fn emulator_catches_synchronisation_and_memory_bugs() {
    let binary = selftest_binary();
    run(&binary, &["fault", "clean"]).unwrap_or_else(|e| panic!("the bug-free control kernel failed: {e}"));
    let faults: &[(&str, &[&str])] = &[
        ("missing_wait", &["in flight"]),
        ("wait_too_shallow", &["in flight"]),
        ("missing_barrier", &["race"]),
        ("missing_sync_warp", &["race"]),
        ("overwrite_while_read", &["race", "in flight"]),
        ("uninitialized", &["never written"]),
        ("out_of_bounds", &["outside"]),
        ("misaligned", &["aligned"]),
        ("global_out_of_bounds", &["outside every buffer"]),
        ("stored_twice", &["stored twice"]),
        ("warp_divergence", &["divergence"]),
        ("barrier_divergence", &["divergence"]),
    ];
    let results =
        parallel(faults, |(name, _)| Command::new(&binary).args(["fault", name]).output().expect("run selftest"));
    let mut problems = Vec::new();
    for ((name, words), out) in faults.iter().zip(results) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(3) || !words.iter().any(|w| stderr.contains(w)) {
            problems.push(format!("{name}: status {}, stderr: {stderr}", out.status));
        }
    }
    assert!(problems.is_empty(), "faults the emulator missed:\n{}", problems.join("\n"));
}

// ---- attention ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Strides {
    batch: usize,
    seq: usize,
    head: usize,
}

impl Strides {
    fn contiguous(seq: usize, heads: usize, d: usize) -> Strides {
        Strides { batch: seq * heads * d, seq: heads * d, head: d }
    }

    fn offset(&self, b: usize, s: usize, h: usize) -> usize {
        b * self.batch + s * self.seq + h * self.head
    }

    /// Elements a buffer needs for `[batch, seq, heads, d]` with these strides, plus a poisoned tail.
    fn len(&self, batch: usize, seq: usize, heads: usize, d: usize) -> usize {
        self.offset(batch - 1, seq.max(1) - 1, heads - 1) + d + 8
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// Contiguous `[batch, seq, heads, head_dim]` for all four tensors.
    Contiguous,
    /// Q and O padded per head and per row (a view into a wider buffer), K stored `[batch, heads,
    /// seq, d]`, V interleaved with another tensor along the row: every stride differs from the
    /// contiguous one, all stay multiples of 8 elements (16-byte cp.async alignment).
    Strided,
}

#[derive(Clone, Debug)]
struct Case {
    spec: AttentionSpec,
    batch: usize,
    seq_q: usize,
    seq_k: usize,
    layout: Layout,
    with_lse: bool,
    /// Softmax scale as a multiple of 1/sqrt(head_dim).
    scale_mult: f32,
}

fn case(spec: AttentionSpec, batch: usize, seq_q: usize, seq_k: usize) -> Case {
    Case { spec, batch, seq_q, seq_k, layout: Layout::Contiguous, with_lse: true, scale_mult: 1.0 }
}

impl Case {
    fn strided(mut self) -> Case {
        self.layout = Layout::Strided;
        self
    }
    fn without_lse(mut self) -> Case {
        self.with_lse = false;
        self
    }
    fn scale(mut self, mult: f32) -> Case {
        self.scale_mult = mult;
        self
    }

    fn dims(&self) -> AttentionProblem {
        AttentionProblem::for_spec(&self.spec, self.batch, self.seq_q, self.seq_k)
    }

    fn name(&self) -> String {
        let tile = self.spec.tile_for(ARCH);
        format!(
            "{} d{} {} h{}/{} {} b{} sq{} sk{}{}{}{}",
            self.spec.dtype,
            self.spec.head_dim,
            if self.spec.causal { "causal" } else { "full" },
            self.spec.heads_q,
            self.spec.heads_kv,
            tile,
            self.batch,
            self.seq_q,
            self.seq_k,
            if self.layout == Layout::Strided { " strided" } else { "" },
            if self.with_lse { "" } else { " no-lse" },
            if self.scale_mult != 1.0 { format!(" scale*{}", self.scale_mult) } else { String::new() },
        )
    }

    /// Strides of (q, k, v, o) in elements.
    fn strides(&self) -> [Strides; 4] {
        let d = self.dims();
        let (hd, hq, hk) = (d.head_dim, d.heads_q, d.heads_kv);
        match self.layout {
            Layout::Contiguous => [
                Strides::contiguous(d.seq_q, hq, hd),
                Strides::contiguous(d.seq_k, hk, hd),
                Strides::contiguous(d.seq_k, hk, hd),
                Strides::contiguous(d.seq_q, hq, hd),
            ],
            Layout::Strided => {
                let q_seq = hq * (hd + 8) + 16;
                let k_head = d.seq_k * hd + 8;
                let v_seq = 2 * hk * hd + 8;
                let o_seq = hq * (hd + 8);
                [
                    Strides { batch: d.seq_q * q_seq + 24, seq: q_seq, head: hd + 8 },
                    Strides { batch: hk * k_head + 8, seq: hd, head: k_head },
                    Strides { batch: d.seq_k * v_seq + 16, seq: v_seq, head: hd },
                    Strides { batch: d.seq_q * o_seq + 8, seq: o_seq, head: hd + 8 },
                ]
            }
        }
    }

    /// Fresh inputs on every run: the case name mixed with the run's seed (printed, and fixed by
    /// `TESSERA_TEST_SEED` to reproduce a failure).
    fn seed(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.name().hash(&mut h);
        run_seed().hash(&mut h);
        h.finish()
    }
}

fn run_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let seed = std::env::var("TESSERA_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        });
        eprintln!("host emulation: input seed {seed} (TESSERA_TEST_SEED={seed} reproduces this run)");
        seed
    })
}

/// The template arguments of the entry point, which decide the host binary: specs that differ only
/// in head counts with the same group share one.
fn instantiation(spec: &AttentionSpec) -> String {
    let entry = spec.entry_point(ARCH);
    let start = entry.find("attention_fwd<").expect("entry point instantiates attention_fwd");
    let end = start + entry[start..].find('>').expect("closing >");
    entry[start..=end].to_string()
}

/// The translation unit: exactly what `render` gives NVRTC, with `templates/common/tessera.cuh` replaced by
/// the host prelude, plus a host `main`.
fn host_sources(spec: &AttentionSpec) -> (String, String) {
    let source = spec.render(ARCH).unwrap_or_else(|e| panic!("{spec:?} does not render: {e}"));
    assert!(source.cuda_src.contains(PRELUDE), "rendered source embeds tessera.cuh verbatim");
    assert!(source.cuda_src.contains(Template::AttentionForward.text()), "rendered source embeds the template");
    let kernel = source.cuda_src.replacen(PRELUDE, "#include \"host_prelude.hpp\"\n", 1);
    let main = format!(
        "// Host driver for {name}\n\
         #include \"host_prelude.hpp\"\n\
         #include \"kernel.cuh\"\n\
         #include \"attention_main.hpp\"\n\
         int main(int argc, char** argv) {{ return tessera_host::attention_main({name}, argc, argv); }}\n",
        name = source.name
    );
    (kernel, main)
}

fn to_bits(x: &[f32], dtype: ElemType) -> Vec<u16> {
    match dtype {
        ElemType::F16 => x.iter().map(|&v| f16::from_f32(v).to_bits()).collect(),
        ElemType::BF16 => x.iter().map(|&v| bf16::from_f32(v).to_bits()).collect(),
        other => unreachable!("{other} is not an attention input type"),
    }
}

fn from_bits(x: u16, dtype: ElemType) -> f32 {
    match dtype {
        ElemType::F16 => f16::from_bits(x).to_f32(),
        ElemType::BF16 => bf16::from_bits(x).to_f32(),
        other => unreachable!("{other} is not an attention input type"),
    }
}

/// Writes logical `[batch, seq, heads, d]` values into a strided buffer with NaN padding.
fn scatter(values: &[u16], batch: usize, seq: usize, heads: usize, d: usize, s: Strides) -> Vec<u16> {
    let mut buf = vec![INPUT_PADDING; s.len(batch, seq, heads, d)];
    for b in 0..batch {
        for i in 0..seq {
            for h in 0..heads {
                let src = ((b * seq + i) * heads + h) * d;
                let dst = s.offset(b, i, h);
                buf[dst..dst + d].copy_from_slice(&values[src..src + d]);
            }
        }
    }
    buf
}

fn le_bytes(x: &[u16]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

struct Outcome {
    cmp: Comparison,
    lse_err: f64,
    empty_rows: usize,
    millis: u128,
}

/// Runs one case through its binary and checks everything; Err describes the first problem found.
fn run_case(c: &Case, binary: &Path, dir: &Path) -> Result<Outcome, String> {
    let started = Instant::now();
    let dims = c.dims();
    let dtype = c.spec.dtype;
    let (hd, hq, hk) = (dims.head_dim, dims.heads_q, dims.heads_kv);
    let mut rng = StdRng::seed_from_u64(c.seed());
    let mut random = |n: usize| -> Vec<f32> {
        let x: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
        reference::round_to_dtype(&x, dtype)
    };
    let (q, k, v) = (random(dims.q_elements()), random(dims.kv_elements()), random(dims.kv_elements()));
    let scale = c.scale_mult / (hd as f32).sqrt();
    let [sq, sk, sv, so] = c.strides();
    let qb = scatter(&to_bits(&q, dtype), c.batch, c.seq_q, hq, hd, sq);
    let kb = scatter(&to_bits(&k, dtype), c.batch, c.seq_k, hk, hd, sk);
    let vb = scatter(&to_bits(&v, dtype), c.batch, c.seq_k, hk, hd, sv);
    let o_len = so.len(c.batch, c.seq_q, hq, hd);

    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("q.bin"), le_bytes(&qb)).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("k.bin"), le_bytes(&kb)).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("v.bin"), le_bytes(&vb)).map_err(|e| e.to_string())?;
    let tile = c.spec.tile_for(ARCH);
    let geometry = c.spec.render(ARCH).map_err(|e| e.to_string())?.geometry;
    let rows = c.spec.rows_per_cta(ARCH) as usize;
    let mut params = BTreeMap::new();
    for (key, val) in [
        ("batch", c.batch),
        ("seq_q", c.seq_q),
        ("seq_k", c.seq_k),
        ("heads_q", hq),
        ("q_len", qb.len()),
        ("k_len", kb.len()),
        ("v_len", vb.len()),
        ("o_len", o_len),
        ("q_batch_stride", sq.batch),
        ("q_seq_stride", sq.seq),
        ("q_head_stride", sq.head),
        ("k_batch_stride", sk.batch),
        ("k_seq_stride", sk.seq),
        ("k_head_stride", sk.head),
        ("v_batch_stride", sv.batch),
        ("v_seq_stride", sv.seq),
        ("v_head_stride", sv.head),
        ("o_batch_stride", so.batch),
        ("o_seq_stride", so.seq),
        ("o_head_stride", so.head),
        ("scale_log2_bits", tessera_runtime::attention::scale_log2(scale).to_bits() as usize),
        ("grid_x", c.seq_q.div_ceil(rows)),
        ("grid_y", hq),
        ("grid_z", c.batch),
        ("threads", geometry.threads_per_block as usize),
        ("smem_bytes", geometry.dynamic_shared_bytes as usize),
        ("with_lse", c.with_lse as usize),
    ] {
        params.insert(key, val);
    }
    assert_eq!(geometry.threads_per_block, tile.threads());
    let text: String = params.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    std::fs::write(dir.join("params.txt"), text).map_err(|e| e.to_string())?;

    // Two CTAs at a time: CTAs share nothing but global memory, and this checks that they do not.
    if let Err(error) = run_with_env(binary, &[dir.to_str().unwrap()], &[("TESSERA_EMU_CTAS", "2")]) {
        if !["race", "in flight", "never written"].iter().any(|w| error.contains(w)) {
            return Err(error);
        }
        // A synchronisation hazard: rerun with hazards only reported, to show what it does to the
        // results (the emulator's deferred copies make stale data likely).
        let effect = run_with_env(binary, &[dir.to_str().unwrap()], &[("TESSERA_EMU_RACES", "warn")])
            .and_then(|_| check_outputs(c, dir, &q, &k, &v, scale, so, o_len))
            .map(|o| format!("outputs still match: rel_l2 {:.2e}, max_abs {:.2e}", o.cmp.rel_l2, o.cmp.max_abs))
            .unwrap_or_else(|e| e);
        return Err(format!("{}\n    run on past the hazard: {effect}", error.trim_end()));
    }
    let mut outcome = check_outputs(c, dir, &q, &k, &v, scale, so, o_len)?;
    outcome.millis = started.elapsed().as_millis();
    Ok(outcome)
}

/// Checks the outputs a run left in `dir` against the reference.
#[allow(clippy::too_many_arguments)]
fn check_outputs(
    c: &Case,
    dir: &Path,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scale: f32,
    so: Strides,
    o_len: usize,
) -> Result<Outcome, String> {
    let dims = c.dims();
    let dtype = c.spec.dtype;
    let (hd, hq) = (dims.head_dim, dims.heads_q);
    let o_raw = std::fs::read(dir.join("o.bin")).map_err(|e| e.to_string())?;
    let o_buf: Vec<u16> = o_raw.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
    if o_buf.len() != o_len {
        return Err(format!("o.bin has {} elements, expected {o_len}", o_buf.len()));
    }
    let reference = reference::attention(q, k, v, &dims, c.spec.causal, scale as f64);

    // Gather O, checking that every element was written and nothing else was.
    let mut out = vec![0f32; dims.q_elements()];
    let mut logical = vec![false; o_len];
    let mut unwritten = Vec::new();
    for b in 0..c.batch {
        for i in 0..c.seq_q {
            for h in 0..hq {
                let at = so.offset(b, i, h);
                for x in 0..hd {
                    logical[at + x] = true;
                    let bits = o_buf[at + x];
                    if bits == O_POISON {
                        unwritten.push((b, i, h, x));
                    }
                    out[((b * c.seq_q + i) * hq + h) * hd + x] = from_bits(bits, dtype);
                }
            }
        }
    }
    if !unwritten.is_empty() {
        let first = &unwritten[..unwritten.len().min(5)];
        return Err(format!("{} output elements never written, first (b, i, h, d): {first:?}", unwritten.len()));
    }
    if let Some(p) = (0..o_len).find(|&p| !logical[p] && o_buf[p] != O_POISON) {
        return Err(format!("O padding element {p} was overwritten with {:#06x}", o_buf[p]));
    }

    // Rows that see no key: exactly 0 and lse -inf.
    let mut empty_rows = 0;
    for i in 0..c.seq_q {
        if (0..c.seq_k).any(|j| dims.visible(c.spec.causal, i, j)) {
            continue;
        }
        empty_rows += c.batch * hq;
        for b in 0..c.batch {
            for h in 0..hq {
                let row = &out[((b * c.seq_q + i) * hq + h) * hd..][..hd];
                if row.iter().any(|&x| x != 0.0) {
                    let head = &row[..4.min(hd)];
                    return Err(format!("query {i} (b {b}, h {h}) sees no key but its output is not 0: {head:?}"));
                }
            }
        }
    }

    let cmp = reference::compare(&out, &reference.out);
    if !cmp.passes(reference::tolerance(dtype)) {
        // Locate the worst rows to make the failure readable.
        let mut worst: Vec<(f64, usize, usize, usize)> = Vec::new();
        for b in 0..c.batch {
            for i in 0..c.seq_q {
                for h in 0..hq {
                    let at = ((b * c.seq_q + i) * hq + h) * hd;
                    let err = (0..hd).map(|x| (out[at + x] as f64 - reference.out[at + x]).abs()).fold(0.0, f64::max);
                    worst.push((err, b, i, h));
                }
            }
        }
        worst.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
        let bad_rows = worst.iter().filter(|w| w.0 > 0.05 || w.0.is_nan()).count();
        return Err(format!(
            "O mismatch: rel_l2 {:.3e} (tolerance {:.1e}), max_abs {:.3e}, non-finite {}; \
             {bad_rows} of {} rows off by > 0.05; \
             worst rows (max |err|, b, i, h): {:?}",
            cmp.rel_l2,
            reference::tolerance(dtype),
            cmp.max_abs,
            cmp.non_finite,
            worst.len(),
            &worst[..worst.len().min(8)]
        ));
    }

    let mut lse_err = 0.0f64;
    if c.with_lse {
        let raw = std::fs::read(dir.join("lse.bin")).map_err(|e| e.to_string())?;
        let lse: Vec<u32> = raw.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if lse.len() != dims.lse_elements() {
            return Err(format!("lse.bin has {} values, expected {}", lse.len(), dims.lse_elements()));
        }
        for (idx, (&bits, &want)) in lse.iter().zip(&reference.lse).enumerate() {
            let got = f32::from_bits(bits) as f64;
            if bits == LSE_POISON {
                return Err(format!("lse[{idx}] never written"));
            }
            if want == f64::NEG_INFINITY {
                if got != f64::NEG_INFINITY {
                    return Err(format!("lse[{idx}]: row sees no key, want -inf, got {got}"));
                }
                continue;
            }
            let err = (got - want).abs() / want.abs().max(1.0);
            if err > LSE_TOL || err.is_nan() {
                let msg = format!("relative error {err:.2e} > {LSE_TOL:.0e}");
                return Err(format!("lse[{idx}] = {got}, reference {want}: {msg}"));
            }
            lse_err = lse_err.max(err);
        }
    }
    Ok(Outcome { cmp, lse_err, empty_rows, millis: 0 })
}

fn spec(dtype: ElemType, head_dim: u32, causal: bool, heads_q: u32, heads_kv: u32) -> AttentionSpec {
    AttentionSpec::new(dtype, head_dim, causal, heads_q, heads_kv)
}

/// The coverage: both dtypes; head_dim 32, 64, 96, 128, 192, 256 (256 with its default tile, Q
/// re-read from shared memory); causal and not; sequence lengths that are not tile multiples (1, 17, 70,
/// 100, 130); seq_q != seq_k both ways under causal masking, including whole CTAs and single rows
/// that see no key; MHA, GQA and MQA; 1, 2 and 3 pipeline stages; batch 2; strided views; no LSE.
fn cases() -> Vec<Case> {
    use ElemType::{BF16, F16};
    let t = TileConfig::new;
    vec![
        // Default tile (128x64, 8 warps, 2 stages).
        case(spec(F16, 64, false, 4, 4), 1, 17, 70),
        case(spec(F16, 64, false, 4, 4), 2, 130, 130).strided(),
        case(spec(BF16, 64, true, 4, 4), 1, 130, 130),
        case(spec(BF16, 64, true, 4, 4), 1, 70, 17),
        case(spec(BF16, 64, true, 4, 4), 2, 17, 70).scale(4.0),
        case(spec(BF16, 64, true, 4, 4), 1, 1, 1),
        case(spec(F16, 128, true, 4, 2), 2, 70, 130).strided(),
        case(spec(F16, 128, true, 4, 2), 1, 130, 70),
        case(spec(BF16, 128, false, 4, 1), 1, 1, 130),
        case(spec(BF16, 128, false, 4, 1), 1, 130, 17).without_lse(),
        case(spec(BF16, 96, false, 2, 2), 1, 17, 70),
        // head_dim 256: default 64x32 tile, 4 warps, Q fragments re-read from shared memory.
        case(spec(F16, 256, true, 2, 1), 1, 70, 70),
        case(spec(BF16, 256, false, 2, 2), 1, 17, 40).strided(),
        // head_dim 192: default 128x32 tile.
        case(spec(BF16, 192, true, 2, 2), 1, 70, 40),
        // One stage: load, wait, compute.
        case(spec(BF16, 32, true, 4, 2).with_tile(t(64, 32, 4, 1)), 1, 70, 70),
        case(spec(BF16, 32, true, 4, 2).with_tile(t(64, 32, 4, 1)), 1, 100, 130),
        case(spec(F16, 128, false, 2, 2).with_tile(t(128, 64, 8, 1)), 1, 70, 130).strided(),
        // Three stages: the ring wraps (130 keys = 5 tiles of 32).
        case(spec(F16, 32, false, 2, 2).with_tile(t(64, 32, 4, 3)), 2, 17, 130).strided(),
        case(spec(BF16, 64, true, 4, 2).with_tile(t(64, 32, 4, 3)), 1, 130, 100),
        case(spec(BF16, 64, true, 4, 2).with_tile(t(64, 32, 4, 3)), 1, 100, 130).scale(2.0),
    ]
}

/// Every CTA of a causal launch with seq_q > seq_k whose rows all see no key, with one stage. Kept
/// apart from `cases()` because it exercises a path of its own (no K/V tile at all).
fn fully_masked_cta_cases() -> Vec<Case> {
    let t = TileConfig::new;
    vec![
        case(spec(ElemType::BF16, 32, true, 4, 2).with_tile(t(64, 32, 4, 1)), 1, 130, 17),
        case(spec(ElemType::F16, 64, true, 2, 2), 1, 200, 40),
        case(spec(ElemType::F16, 64, true, 2, 2).with_tile(t(64, 32, 4, 3)), 1, 130, 17),
    ]
}

/// Compiles every distinct instantiation of `cases` (in parallel), runs every case (in parallel) and
/// returns a report; panics with every failure.
fn run_cases(label: &str, cases: &[Case]) {
    let builder = builder();
    let scratch = Scratch::new(&format!("tessera-{label}-"));
    let started = Instant::now();
    let mut builds: Vec<(String, AttentionSpec)> = Vec::new();
    for c in cases {
        let key = instantiation(&c.spec);
        if !builds.iter().any(|(k, _)| *k == key) {
            builds.push((key, c.spec));
        }
    }
    let binaries = parallel(&builds, |(_, spec)| {
        let (kernel, main) = host_sources(spec);
        builder.program(&[("kernel.cuh", &kernel), ("main.cpp", &main)])
    });
    let compiled = started.elapsed();
    let mut failures = Vec::new();
    for ((key, _), b) in builds.iter().zip(&binaries) {
        if let Err(e) = b {
            failures.push(format!("{key}: {e}"));
        }
    }
    assert!(failures.is_empty(), "host builds failed:\n{}", failures.join("\n\n"));

    let jobs: Vec<(usize, &Case)> = cases.iter().enumerate().collect();
    let outcomes = parallel(&jobs, |(i, c)| {
        let b = builds.iter().position(|(k, _)| *k == instantiation(&c.spec)).unwrap();
        let binary = binaries[b].as_ref().unwrap();
        run_case(c, binary, &scratch.path().join(format!("case-{i}")))
    });

    let mut report =
        format!("{label}: {} cases, {} host builds in {:.1} s\n", cases.len(), builds.len(), compiled.as_secs_f64());
    let mut per_dtype: BTreeMap<String, (f64, f64, f64)> = BTreeMap::new();
    for (c, o) in cases.iter().zip(&outcomes) {
        match o {
            Ok(o) => {
                let e = per_dtype.entry(c.spec.dtype.to_string()).or_default();
                e.0 = e.0.max(o.cmp.rel_l2);
                e.1 = e.1.max(o.cmp.max_abs);
                e.2 = e.2.max(o.lse_err);
                writeln!(
                    report,
                    "  ok   {:<58} rel_l2 {:.2e}  max_abs {:.2e}  lse {:.1e}  empty rows {:>4}  {:>5} ms",
                    c.name(),
                    o.cmp.rel_l2,
                    o.cmp.max_abs,
                    o.lse_err,
                    o.empty_rows,
                    o.millis
                )
                .unwrap();
            }
            Err(e) => {
                writeln!(report, "  FAIL {}: {e}", c.name()).unwrap();
                failures.push(format!("{}: {e}", c.name()));
            }
        }
    }
    for (dtype, (rel, abs, lse)) in &per_dtype {
        writeln!(report, "  worst {dtype}: rel_l2 {rel:.2e}  max_abs {abs:.2e}  lse rel {lse:.1e}").unwrap();
    }
    writeln!(report, "  total {:.1} s", started.elapsed().as_secs_f64()).unwrap();
    eprintln!("{report}");
    assert!(
        failures.is_empty(),
        "{} of {} cases failed (TESSERA_TEST_SEED={}):\n{}",
        failures.len(),
        cases.len(),
        run_seed(),
        failures.join("\n")
    );
}

#[test]
fn attention_kernels_match_reference() {
    run_cases("attention", &cases());
}

#[test]
fn attention_ctas_without_visible_keys() {
    run_cases("masked-ctas", &fully_masked_cta_cases());
}
