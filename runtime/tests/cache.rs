//! The on-disk kernel cache: hits, corruption, keys, and concurrent fills from threads and processes.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;

use sha2::{Digest, Sha256};
use tessera_runtime::compile::cache::decode_entry;
use tessera_runtime::codegen::Arch;
use tessera_runtime::{nvrtc_version, CacheKey, Compiler, KernelCache, Lookup, Target};

/// Env var that turns `race_child` from a no-op into one racer of `processes_race_to_fill_one_key`.
const RACE_DIR_ENV: &str = "TESSERA_TEST_CACHE_RACE_DIR";
const RACE_MODE_ENV: &str = "TESSERA_TEST_CACHE_RACE_MODE";

fn test_key(tag: &str) -> CacheKey {
    CacheKey::new(tag, Target::ptx(Arch::SM80), (13, 0), &["-std=c++17".to_string()])
}

/// A deterministic payload big enough (256 KiB, several write syscalls) that a torn write would be
/// visible, and small enough to hash quickly in an unoptimised test build.
fn payload() -> Vec<u8> {
    const LEN: usize = 256 << 10;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..LEN / 8)
        .flat_map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            state.to_le_bytes()
        })
        .collect()
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn miss_then_hit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::open(dir.path()).unwrap();
    let key = test_key("miss-then-hit");
    assert_eq!(cache.get(&key), Lookup::Miss);
    cache.put(&key, b"image").unwrap();
    assert_eq!(cache.get(&key), Lookup::Hit(b"image".to_vec()));
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.corrupt, stats.writes), (1, 1, 0, 1));
    // A second handle on the same folder (another process, in effect) sees the entry.
    let other = KernelCache::open(dir.path()).unwrap();
    assert_eq!(other.get(&key).into_image().as_deref(), Some(&b"image"[..]));
}

#[test]
fn truncated_and_flipped_entries_are_detected_deleted_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::open(dir.path()).unwrap();
    let key = test_key("corrupt");
    let image = payload();
    let path = cache.entry_path(&key);

    type Damage = fn(&Path);
    let damages: [(&str, Damage); 4] = [
        ("truncated payload", |p| {
            let bytes = fs::read(p).unwrap();
            fs::write(p, &bytes[..bytes.len() - 1000]).unwrap();
        }),
        ("truncated header", |p| {
            let bytes = fs::read(p).unwrap();
            fs::write(p, &bytes[..20]).unwrap();
        }),
        ("flipped payload byte", |p| {
            let mut bytes = fs::read(p).unwrap();
            let i = bytes.len() / 2;
            bytes[i] ^= 0x01;
            fs::write(p, bytes).unwrap();
        }),
        ("empty file", |p| fs::write(p, b"").unwrap()),
    ];
    for (i, (what, damage)) in damages.into_iter().enumerate() {
        cache.put(&key, &image).unwrap();
        damage(&path);
        match cache.get(&key) {
            Lookup::Corrupt { reason, .. } => eprintln!("{what}: {reason}"),
            other => panic!("{what}: expected Corrupt, got {:?}", other.into_image().map(|v| v.len())),
        }
        assert!(!path.exists(), "{what}: corrupt entry not deleted");
        assert_eq!(cache.stats().corrupt, i as u64 + 1);
        // Rebuilt on the next fill, then a clean hit.
        let (rebuilt, hit) = cache.get_or_insert_with(&key, || Ok(image.clone())).unwrap();
        assert!(!hit && rebuilt == image, "{what}");
        assert_eq!(cache.get(&key), Lookup::Hit(image.clone()), "{what}");
    }
}

#[test]
fn compiler_rebuilds_a_corrupt_entry() {
    if !common::nvrtc_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = common::tiny_source("rebuild");
    let target = Target::ptx(Arch::SM80);

    let first = Compiler::new().with_cache(KernelCache::open(dir.path()).unwrap()).compile(&source, target).unwrap();
    assert!(!first.from_cache);
    let second = Compiler::new().with_cache(KernelCache::open(dir.path()).unwrap()).compile(&source, target).unwrap();
    assert!(second.from_cache);
    assert_eq!(first.image, second.image);

    // Flip one byte of the stored PTX: the next compiler must not trust it.
    let compiler = Compiler::new().with_cache(KernelCache::open(dir.path()).unwrap());
    let options = compiler.options(target);
    let key = CacheKey::new(&source.hash, target, nvrtc_version().unwrap(), &options);
    let path = compiler.cache().unwrap().entry_path(&key);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x20;
    fs::write(&path, bytes).unwrap();
    let third = compiler.compile(&source, target).unwrap();
    assert!(!third.from_cache, "a corrupt entry was trusted");
    assert_eq!(third.image, first.image);
    assert_eq!(compiler.cache().unwrap().stats().corrupt, 1);
    assert!(decode_entry(&fs::read(&path).unwrap()).is_ok(), "entry not rewritten");
}

#[test]
fn keys_differ_by_arch_output_and_options() {
    let source = common::tiny_source("keys");
    let compiler = Compiler::new();
    let no_lineinfo = Compiler::new().with_line_info(false);
    let keys = [
        CacheKey::new(&source.hash, Target::ptx(Arch::SM80), (13, 0), &compiler.options(Target::ptx(Arch::SM80))),
        CacheKey::new(&source.hash, Target::ptx(Arch::SM90), (13, 0), &compiler.options(Target::ptx(Arch::SM90))),
        CacheKey::new(&source.hash, Target::cubin(Arch::SM80), (13, 0), &compiler.options(Target::cubin(Arch::SM80))),
        CacheKey::new(&source.hash, Target::ptx(Arch::SM80), (13, 0), &no_lineinfo.options(Target::ptx(Arch::SM80))),
        CacheKey::new(&source.hash, Target::ptx(Arch::SM80), (13, 1), &compiler.options(Target::ptx(Arch::SM80))),
    ];
    for i in 0..keys.len() {
        for j in 0..i {
            assert_ne!(keys[i], keys[j], "keys {i} and {j} collide");
        }
    }
}

#[test]
fn threads_race_to_fill_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = test_key("thread-race");
    let expected = payload();
    let shared = Arc::new(KernelCache::open(dir.path()).unwrap());
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            // Half share one handle, half open their own, as separate processes would.
            let cache = if i % 2 == 0 { Arc::clone(&shared) } else { Arc::new(KernelCache::open(dir.path()).unwrap()) };
            let (barrier, key, expected) = (Arc::clone(&barrier), key.clone(), expected.clone());
            thread::spawn(move || {
                barrier.wait();
                let mut images = Vec::new();
                for _ in 0..10 {
                    match cache.get(&key) {
                        Lookup::Hit(image) => images.push(image),
                        Lookup::Miss => {
                            cache.put(&key, &expected).unwrap();
                        }
                        Lookup::Corrupt { reason, .. } => panic!("a reader saw a partial entry: {reason}"),
                    }
                }
                let (image, _) = cache.get_or_insert_with(&key, || Ok(expected.clone())).unwrap();
                images.push(image);
                images
            })
        })
        .collect();
    for handle in handles {
        for image in handle.join().unwrap() {
            assert!(image == expected, "a racer got a different image");
        }
    }
    let entry = fs::read(shared.entry_path(&key)).unwrap();
    assert_eq!(decode_entry(&entry).unwrap(), expected.as_slice());
    // Temporary files are renamed or cleaned up.
    let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

/// One racer; a no-op unless started by `processes_race_to_fill_one_key`.
#[test]
fn race_child() {
    let Some(dir) = std::env::var_os(RACE_DIR_ENV) else { return };
    let cache = KernelCache::open(dir).unwrap();
    if std::env::var(RACE_MODE_ENV).as_deref() == Ok("compile") {
        let compiler = Compiler::new().with_cache(cache);
        let module = compiler.compile(&common::tiny_source("process-race"), Target::ptx(Arch::SM80)).unwrap();
        println!("race-image-sha={} from_cache={}", sha(&module.image), module.from_cache);
        return;
    }
    let key = test_key("process-race");
    let expected = payload();
    for _ in 0..10 {
        match cache.get(&key) {
            Lookup::Hit(image) => assert!(image == expected, "read a different image"),
            Lookup::Miss => cache.put(&key, &expected).unwrap(),
            Lookup::Corrupt { reason, .. } => panic!("a reader saw a partial entry: {reason}"),
        }
    }
    let (image, _) = cache.get_or_insert_with(&key, || Ok(expected.clone())).unwrap();
    println!("race-image-sha={}", sha(&image));
}

/// Spawns this test binary several times, filtered to `race_child`, all filling one cache folder.
fn run_racers(dir: &Path, mode: &str, count: usize) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..count)
        .map(|_| {
            Command::new(&exe)
                .args(["race_child", "--exact", "--nocapture", "--test-threads=1"])
                .env(RACE_DIR_ENV, dir)
                .env(RACE_MODE_ENV, mode)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "racer failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
            // libtest prints "test race_child ... " on the same line as the child's output.
            let at = stdout
                .find("race-image-sha=")
                .unwrap_or_else(|| panic!("racer did not report (did the filter match?):\n{stdout}"));
            stdout[at + "race-image-sha=".len()..].split_whitespace().next().unwrap_or_default().to_string()
        })
        .collect()
}

#[test]
fn processes_race_to_fill_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let shas = run_racers(dir.path(), "bytes", 6);
    assert!(shas.iter().all(|s| *s == sha(&payload())), "{shas:?}");
    let cache = KernelCache::open(dir.path()).unwrap();
    assert_eq!(cache.get(&test_key("process-race")), Lookup::Hit(payload()));
}

#[test]
fn processes_race_to_compile_one_kernel() {
    if !common::nvrtc_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let shas = run_racers(dir.path(), "compile", 4);
    let reference = Compiler::new().compile(&common::tiny_source("process-race"), Target::ptx(Arch::SM80)).unwrap();
    assert!(shas.iter().all(|s| *s == sha(&reference.image)), "{shas:?} vs {}", sha(&reference.image));
}
