//! Fuzzing the `tessera` command line with damaged argument vectors.
//!
//! Each case takes a valid command (`run attention|gemm|lora|cast|unscale|adamw|window-*` on tiny
//! inputs with `--backend sim`, `db show|export|import`, `tune ... --dry-run`), edits its
//! arguments (one dropped, duplicated, swapped with another, replaced by an extreme or negative
//! number, an empty string, a folder, a missing or non-`.npy` file, a link to `/dev/null` or
//! `/dev/zero`, another input; an optional flag added with such a value) and runs the built binary
//! in a fresh folder with a timeout. The process must exit by itself with status 0, 1 or 2 (never
//! a signal, an abort or a panic's 101); on status 1 the error is one `error: ...` line, the last
//! one on stderr; on status 2 (usage) stderr starts with clap's `error:` line.
//!
//! Outputs only ever name files in the case's folder: the device files are reached through links
//! there, since an output is replaced by a rename, which replaces a link, never what it points at.
//! `tune` keeps `--dry-run` (without it, it compiles every candidate: minutes).
//!
//! Cases: [`CLI_CASES`] per run (each spawns a process); `TESSERA_FUZZ_CASES=N` multiplies that.
//! Replay a run with `PROPTEST_RNG_SEED=<seed printed by the test> cargo test --offline --test
//! fuzz_cli`; a failing case's argument vector is printed and saved. See
//! `runtime/tests/fuzz_support` for the shared rules.

#[path = "../runtime/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use tessera::npy::write_npy_f32;

use fuzz_support::save_reproducer;

const CLI_CASES: u32 = 500;
const SEED: u64 = 0x7e55_e7a0_0000_0007;
const MAX_EDITS: usize = 3;
/// A command on these inputs takes well under a second once its kernel is cached (a first NVRTC
/// compile takes a few); one still running after this hangs.
const PROCESS_DEADLINE: Duration = Duration::from_secs(120);
/// How often a running process is polled.
const POLL: Duration = Duration::from_millis(5);

/// One valid command.
struct Template {
    args: &'static [&'static str],
    /// Leading words (the subcommand) that edits leave alone.
    command_words: usize,
    /// Optional flags an edit may add, and whether each takes a value.
    extras: &'static [(&'static str, bool)],
    /// Arguments an edit must keep.
    keep: &'static [&'static str],
}

const ELEMENTWISE_EXTRAS: &[(&str, bool)] = &[("--threads", true), ("--elems-per-thread", true), ("--vector", true)];

const TEMPLATES: &[Template] = &[
    Template {
        args: &["run", "attention", "--dtype", "bf16", "--q", "q.npy", "--k", "k.npy", "--v", "v.npy", "--out", "o.npy", "--backend", "sim"],
        command_words: 2,
        extras: &[
            ("--causal", false),
            ("--scale", true),
            ("--lse", true),
            ("--block-m", true),
            ("--block-n", true),
            ("--warps", true),
            ("--stages", true),
            ("--window-left", true),
            ("--window-right", true),
            ("--softcap", true),
            ("--alibi-slopes", true),
            ("--prefix-k", true),
            ("--prefix-v", true),
            ("--tree-parents", true),
            ("--cu-seqlens-q", true),
            ("--cu-seqlens-k", true),
            ("--block-table", true),
            ("--seq-lens", true),
            ("--pack-gqa", false),
            ("--num-splits", true),
        ],
        keep: &[],
    },
    Template {
        args: &["run", "gemm", "--dtype", "bf16", "--x", "x.npy", "--w", "w.npy", "--out", "y.npy", "--backend", "sim"],
        command_words: 2,
        extras: &[
            ("--out-type", true),
            ("--x-layout", true),
            ("--w-layout", true),
            ("--bias", true),
            ("--activation", true),
            ("--residual", true),
            ("--block-m", true),
            ("--block-k", true),
            ("--split-k", true),
            ("--c", true),
            ("--alpha", true),
            ("--beta", true),
        ],
        keep: &[],
    },
    Template {
        args: &[
            "run", "lora", "--dtype", "bf16", "--x", "x.npy", "--w", "w.npy", "--a", "a.npy", "--b", "b.npy", "--out", "y.npy",
            "--backend", "sim",
        ],
        command_words: 2,
        extras: &[("--adapter-ids", true), ("--scale", true), ("--bottleneck", true), ("--n-group", true), ("--bias", true)],
        keep: &[],
    },
    Template {
        args: &["run", "cast", "--from", "f32", "--to", "bf16", "--x", "x.npy", "--out", "y.npy", "--backend", "sim"],
        command_words: 2,
        extras: &[("--scale", true), ("--amax-out", true), ("--threads", true), ("--vector", true)],
        keep: &[],
    },
    Template {
        args: &["run", "unscale", "--grads", "g.npy,x.npy", "--dtypes", "f32", "--inv-scale", "0.5", "--out", "g2.npy,x2.npy", "--backend", "sim"],
        command_words: 2,
        extras: &[("--found-inf-out", true), ("--threads", true), ("--elems-per-thread", true)],
        keep: &[],
    },
    Template {
        args: &["run", "adamw", "--params", "p.npy", "--grads", "g.npy", "--lr", "0.01", "--step", "3", "--out-dir", "out", "--backend", "sim"],
        command_words: 2,
        extras: &[
            ("--exp-avg", true),
            ("--exp-avg-sq", true),
            ("--grad-dtype", true),
            ("--model-dtype", true),
            ("--beta1", true),
            ("--beta2", true),
            ("--eps", true),
            ("--weight-decay", true),
            ("--inv-scale", true),
            ("--found-inf", false),
        ],
        keep: &[],
    },
    Template {
        args: &["run", "window-max", "--k", "3", "--x", "g.npy", "--out", "y.npy", "--backend", "sim"],
        command_words: 2,
        extras: ELEMENTWISE_EXTRAS,
        keep: &[],
    },
    Template {
        args: &["run", "window-sum", "--k", "5", "--dtype", "bf16", "--x", "x.npy", "--out", "y.npy", "--backend", "sim"],
        command_words: 2,
        extras: ELEMENTWISE_EXTRAS,
        keep: &[],
    },
    Template { args: &["db", "show", "--tuning-db", "db.json"], command_words: 2, extras: &[], keep: &[] },
    Template { args: &["db", "export", "shipped.json", "--tuning-db", "db.json"], command_words: 2, extras: &[], keep: &[] },
    Template { args: &["db", "import", "db.json", "--tuning-db", "new.json"], command_words: 2, extras: &[], keep: &[] },
    Template {
        args: &["tune", "attention", "--dtype", "bf16", "--head-dim", "64", "--shapes", "1x16x16", "--dry-run"],
        command_words: 2,
        extras: &[("--causal", false), ("--heads-q", true), ("--heads-kv", true), ("--max-candidates", true), ("--arch", true), ("--tuning-db", true)],
        keep: &["--dry-run"],
    },
    Template {
        args: &["tune", "gemm", "--dtype", "bf16", "--shapes", "64x64x64", "--dry-run"],
        command_words: 2,
        extras: &[("--out-type", true), ("--w-layout", true), ("--max-candidates", true), ("--arch", true), ("--warmup", true), ("--reps", true)],
        keep: &["--dry-run"],
    },
    Template {
        args: &["tune", "cast", "--from", "f32", "--to", "bf16", "--shapes", "4096", "--dry-run"],
        command_words: 2,
        extras: &[("--max-candidates", true), ("--arch", true)],
        keep: &["--dry-run"],
    },
];

/// Numbers at and past the limits of the integer and float types, negative, fractional, and
/// not numbers at all.
const NUMBERS: &[&str] = &[
    "0", "-1", "1", "-0", "3", "64", "1024", "2147483648", "4294967296", "-9223372036854775808", "18446744073709551615",
    "18446744073709551616", "1e309", "1e-45", "0.5", "nan", "-inf", "",
];
/// Paths to a folder, to nothing, to a non-`.npy` file, to links to devices, to other inputs; an
/// empty one; lists.
const PATHS: &[&str] = &[
    "", "dir", "dir/", ".", "missing.npy", "missing/o.npy", "garbage.npy", "devnull", "devzero", "q.npy", "k.npy", "x.npy",
    "g.npy", "o.npy", "ids.npy", "db.json", "q.npy,q.npy", ",",
];
/// Element types, layouts, activations, backends, architectures, some valid, some not.
const WORDS: &[&str] =
    &["", "bf16", "f16", "f32", "e4m3", "e5m2", "i8", "row", "col", "relu", "none", "cuda", "sim", "sm_80", "sm_90a", "sm_1000"];
/// `--shapes` values: valid, zero, past u32 and u64, the wrong number of dimensions, lists.
const SHAPES: &[&str] = &[
    "1x1x1", "1x16x16", "0x0x0", "4294967296x4294967296x4294967296", "18446744073709551615x1x1", "9223372036854775807x2x2",
    "18446744073709551616", "1x16", "8x64x64,1x1x1", "x", "",
];

/// Flags whose value is a path (or a list of paths); positional arguments are paths too.
const PATH_FLAGS: &[&str] = &[
    "--q", "--k", "--v", "--out", "--lse", "--x", "--w", "--a", "--b", "--c", "--bias", "--residual", "--alibi-slopes",
    "--prefix-k", "--prefix-v", "--tree-parents", "--cu-seqlens-q", "--cu-seqlens-k", "--block-table", "--seq-lens",
    "--adapter-ids", "--grads", "--params", "--exp-avg", "--exp-avg-sq", "--out-dir", "--amax-out", "--found-inf-out",
    "--tuning-db",
];
/// Flags whose value is a word from a fixed set.
const WORD_FLAGS: &[&str] = &[
    "--dtype", "--out-type", "--from", "--to", "--x-layout", "--w-layout", "--activation", "--bottleneck", "--backend",
    "--dtypes", "--grad-dtype", "--model-dtype", "--arch",
];

/// The values that fit `flag`'s kind (the others are tried through [`ALL_VALUES_WEIGHT`]).
fn pool_for(flag: Option<&str>) -> &'static [&'static str] {
    match flag {
        None => PATHS,
        Some(f) if PATH_FLAGS.contains(&f) => PATHS,
        Some(f) if WORD_FLAGS.contains(&f) => WORDS,
        Some("--shapes") => SHAPES,
        Some(_) => NUMBERS,
    }
}

/// How often a value comes from every pool rather than the flag's own: a value of the wrong kind
/// mostly stops at the argument parser, so it is the exception.
const ALL_VALUES_WEIGHT: f64 = 0.1;

/// A value for a flag: from its kind's pool, or (`.0` false) from all pools.
#[derive(Clone, Debug)]
struct ValueChoice(bool, Index);

fn value_choice() -> impl Strategy<Value = ValueChoice> {
    (prop::bool::weighted(1.0 - ALL_VALUES_WEIGHT), any::<Index>()).prop_map(|(typed, i)| ValueChoice(typed, i))
}

fn value_for(flag: Option<&str>, choice: &ValueChoice) -> String {
    if choice.0 {
        let pool = pool_for(flag);
        pool[choice.1.index(pool.len())].to_string()
    } else {
        let all: Vec<&str> = [NUMBERS, PATHS, WORDS, SHAPES].concat();
        all[choice.1.index(all.len())].to_string()
    }
}

#[derive(Clone, Debug)]
enum ArgEdit {
    /// Remove a flag with its value.
    DropItem(Index),
    /// Repeat a flag with its value.
    DuplicateItem(Index),
    /// Exchange the values of two flags of one kind (an output named as an input, ...).
    SwapValues(Index, Index),
    /// Give a flag (or a positional argument) another value.
    ReplaceValue(Index, ValueChoice),
    /// Add an optional flag, with a value if it takes one.
    InsertItem(Index, ValueChoice),
    /// Exchange two words, whatever they are.
    SwapWords(Index, Index),
}

fn arg_edit() -> impl Strategy<Value = ArgEdit> {
    // Mostly edits that keep the command line well-formed, so the command gets past the argument
    // parser to the checks and the run; some that do not.
    prop_oneof![
        6 => (any::<Index>(), value_choice()).prop_map(|(a, v)| ArgEdit::ReplaceValue(a, v)),
        4 => (any::<Index>(), value_choice()).prop_map(|(f, v)| ArgEdit::InsertItem(f, v)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| ArgEdit::SwapValues(a, b)),
        1 => any::<Index>().prop_map(ArgEdit::DropItem),
        1 => any::<Index>().prop_map(ArgEdit::DuplicateItem),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| ArgEdit::SwapWords(a, b)),
    ]
}

/// A flag with its value, a flag alone, or a positional argument.
#[derive(Clone, Debug)]
struct Item {
    flag: Option<String>,
    value: Option<String>,
}

fn items(words: &[&str]) -> Vec<Item> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = words[i].to_string();
        if word.starts_with("--") {
            let value = words.get(i + 1).filter(|v| !v.starts_with("--")).map(|v| v.to_string());
            i += 1 + usize::from(value.is_some());
            out.push(Item { flag: Some(word), value });
        } else {
            out.push(Item { flag: None, value: Some(word) });
            i += 1;
        }
    }
    out
}

/// The template's arguments with `edits` applied.
fn edited(t: &Template, edits: &[ArgEdit]) -> Vec<String> {
    let (command, rest) = t.args.split_at(t.command_words);
    let mut items = items(rest);
    let kept = |item: &Item| item.flag.as_deref().is_some_and(|f| t.keep.contains(&f));
    let mut word_swaps = Vec::new();
    for edit in edits {
        let n = items.len();
        match edit {
            ArgEdit::DropItem(i) if n > 0 => {
                let at = i.index(n);
                if !kept(&items[at]) {
                    items.remove(at);
                }
            }
            ArgEdit::DuplicateItem(i) if n > 0 => {
                let at = i.index(n);
                items.insert(at, items[at].clone());
            }
            ArgEdit::SwapValues(a, b) if n > 0 => {
                let (a, b) = (a.index(n), b.index(n));
                let same_kind = pool_for(items[a].flag.as_deref()) == pool_for(items[b].flag.as_deref());
                if same_kind && items[a].value.is_some() && items[b].value.is_some() {
                    let va = items[a].value.take();
                    items[a].value = items[b].value.replace(va.unwrap_or_default());
                }
            }
            ArgEdit::ReplaceValue(i, v) if n > 0 => {
                let at = i.index(n);
                let new = value_for(items[at].flag.as_deref(), v);
                if let Some(slot) = items[at].value.as_mut() {
                    *slot = new;
                }
            }
            ArgEdit::InsertItem(f, v) if !t.extras.is_empty() => {
                let (flag, takes_value) = t.extras[f.index(t.extras.len())];
                items.push(Item { flag: Some(flag.to_string()), value: takes_value.then(|| value_for(Some(flag), v)) });
            }
            ArgEdit::SwapWords(a, b) => word_swaps.push((*a, *b)),
            _ => {}
        }
    }
    let mut words: Vec<String> = items.into_iter().flat_map(|item| item.flag.into_iter().chain(item.value)).collect();
    for (a, b) in word_swaps {
        if !words.is_empty() {
            let (a, b) = (a.index(words.len()), b.index(words.len()));
            words.swap(a, b);
        }
    }
    command.iter().map(|s| s.to_string()).chain(words).collect()
}

/// A fresh folder with every input the templates name, a folder, a non-`.npy` file, a tuning
/// database, and links to `/dev/null` and `/dev/zero`.
fn sandbox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = dir.path();
    let fill = |shape: &[usize]| -> Vec<f32> {
        (0..shape.iter().product::<usize>()).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect()
    };
    for (name, shape) in [
        ("q.npy", &[1usize, 8, 2, 32][..]),
        ("k.npy", &[1, 8, 1, 32]),
        ("v.npy", &[1, 8, 1, 32]),
        ("x.npy", &[16, 32]),
        ("w.npy", &[32, 16]),
        ("a.npy", &[32, 16]),
        ("b.npy", &[16, 16]),
        ("g.npy", &[100]),
        ("p.npy", &[100]),
    ] {
        write_npy_f32(&p.join(name), shape, &fill(shape)).expect("write input");
    }
    // Adapter ids and the like are integer arrays; an f32 file of ids is one more wrong input.
    write_npy_f32(&p.join("ids.npy"), &[16], &[0.0; 16]).expect("write ids");
    std::fs::write(p.join("garbage.npy"), b"\x93NUMPY definitely not an array").expect("write garbage");
    std::fs::write(p.join("db.json"), include_str!("../runtime/tests/fixtures/tuning_db_v1.json")).expect("write db");
    std::fs::create_dir(p.join("dir")).expect("folder");
    std::os::unix::fs::symlink("/dev/null", p.join("devnull")).expect("link");
    std::os::unix::fs::symlink("/dev/zero", p.join("devzero")).expect("link");
    dir
}

/// Runs the binary with `args` in `dir`; `Err` describes a broken contract.
fn run(dir: &Path, args: &[String]) -> Result<(), String> {
    let (out, err) = (dir.join(".stdout"), dir.join(".stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .current_dir(dir)
        // Compiled kernels are shared with the simulator tests; nothing else outside the folder.
        .env("TESSERA_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("tessera-sim-kernels"))
        .env("TESSERA_TUNING_DB", dir.join("db.json"))
        .env("XDG_CACHE_HOME", dir)
        .stdin(Stdio::null())
        .stdout(File::create(&out).map_err(|e| e.to_string())?)
        .stderr(File::create(&err).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot start tessera: {e}"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > PROCESS_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {PROCESS_DEADLINE:?} (a hang)"));
        }
        std::thread::sleep(POLL);
    };
    let stderr = String::from_utf8_lossy(&std::fs::read(&err).unwrap_or_default()).into_owned();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let error_lines = lines.iter().filter(|l| l.starts_with("error:")).count();
    match status.code() {
        Some(0) => Ok(()),
        Some(1) => {
            let last = lines.last().copied().unwrap_or("");
            if error_lines == 1 && last.starts_with("error:") && last.len() > "error:".len() + 1 {
                Ok(())
            } else {
                Err(format!("status 1 without exactly one final `error:` line; stderr:\n{stderr}"))
            }
        }
        Some(2) if lines.first().is_some_and(|l| l.starts_with("error:")) => Ok(()),
        Some(2) => Err(format!("status 2 without clap's `error:` line; stderr:\n{stderr}")),
        Some(code) => Err(format!("status {code}; stderr:\n{stderr}")),
        None => {
            use std::os::unix::process::ExitStatusExt;
            Err(format!("killed by signal {:?}; stderr:\n{stderr}", status.signal()))
        }
    }
}

/// Every template runs successfully as it is (so the edits start from valid commands).
#[test]
fn every_template_is_valid() {
    for t in TEMPLATES {
        let dir = sandbox();
        let args: Vec<String> = t.args.iter().map(|s| s.to_string()).collect();
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(&args)
            .current_dir(dir.path())
            .env("TESSERA_CACHE_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("tessera-sim-kernels"))
            .env("TESSERA_TUNING_DB", dir.path().join("db.json"))
            .env("XDG_CACHE_HOME", dir.path())
            .output()
            .expect("tessera runs");
        // Without NVRTC the `run` commands fail; that is covered by the fuzz property itself.
        let needs_nvrtc = t.args[0] == "run" && tessera::runtime::find_nvrtc().is_err();
        assert!(out.status.success() || needs_nvrtc, "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

proptest! {
    #![proptest_config(fuzz_support::config("fuzz_cli", CLI_CASES, SEED))]

    /// A damaged command line ends by itself with 0, 1 (one error line) or 2 (usage).
    #[test]
    fn damaged_command_lines_end_with_a_clear_status(
        template in any::<Index>(),
        edits in prop::collection::vec(arg_edit(), 1..=MAX_EDITS),
    ) {
        let t = &TEMPLATES[template.index(TEMPLATES.len())];
        let args = edited(t, &edits);
        let dir = sandbox();
        let verdict = run(dir.path(), &args);
        // The links must still point at the devices, and the devices must still be devices.
        use std::os::unix::fs::FileTypeExt;
        let null_is_device = std::fs::metadata("/dev/null").is_ok_and(|m| m.file_type().is_char_device());
        prop_assert!(null_is_device, "/dev/null is no longer a device after {args:?}");
        if let Err(problem) = verdict {
            let saved = save_reproducer("fuzz_cli", "argv", format!("{args:?}\n").as_bytes());
            prop_assert!(false, "tessera {args:?}: {problem}; {saved}");
        }
    }
}

/// Found by this fuzzer (fixed): `tessera run attention ... --warps 2147483648` (any `--warps` of 2^28 or more, with or
/// without `--block-m`) panics with "attempt to multiply with overflow" (status 101) in a debug
/// build: the default block_m is computed as `16 * warps` in u32 before anything checks the warp
/// count. Expected: status 1 with a one-line error naming `--warps`.
#[test]
fn found_attention_warps_overflow_is_a_clear_error() {
    let dir = sandbox();
    let args: Vec<String> = TEMPLATES[0].args.iter().map(|s| s.to_string()).chain(["--warps".into(), "2147483648".into()]).collect();
    run(dir.path(), &args).unwrap();
}

/// Found by this fuzzer (fixed): `tessera tune gemm --dtype bf16 --shapes 18446744073709551615x1x1 --dry-run` (any
/// `--shapes` dimension above 2^63, any tune family) panics with "attempt to add with overflow"
/// (status 101) in a debug build: the tuning key's power-of-two bucket (`tuning::key::bucket`,
/// `next_power_of_two`) has no value for it; a release build gets a bucket of 0. And `tessera
/// tune attention --dtype bf16 --head-dim 64 --shapes 9223372036854775807x2x2 --dry-run` panics
/// with "attempt to multiply with overflow" (batch x `--heads-q`, `tune.rs`). Expected: status 1
/// (or 2) with a one-line error naming `--shapes`.
#[test]
fn found_tune_shape_overflow_is_a_clear_error() {
    let dir = sandbox();
    for args in [
        &["tune", "gemm", "--dtype", "bf16", "--shapes", "18446744073709551615x1x1", "--dry-run"][..],
        &["tune", "attention", "--dtype", "bf16", "--head-dim", "64", "--shapes", "9223372036854775807x2x2", "--dry-run"],
    ] {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        run(dir.path(), &args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    }
}
