//! Fuzzing the kernel cache's entry check (`KernelCache::get`, `get_or_insert_with`) with damaged
//! entry files.
//!
//! Each case stores an image, damages its entry file (bits flipped, bytes set, inserted, deleted
//! or appended, the file cut, one part copied over another; header fields overwritten with
//! extreme values), and looks the key up. The lookup must return, within a deadline, the stored
//! image unchanged or `Corrupt` with a one-line reason (never another image); a corrupt entry must
//! be gone afterwards, and `get_or_insert_with` must rebuild it, so that the next lookup hits the
//! rebuilt image. Entry paths that are not regular files (a folder, links to devices and folders,
//! a dangling link) are checked once each, outside proptest.
//!
//! Cases: [`CACHE_CASES`] per run; `TESSERA_FUZZ_CASES=N` multiplies that. Replay a run with
//! `PROPTEST_RNG_SEED=<seed printed by the test> cargo test --offline -p tessera-runtime --test
//! fuzz_cache`; a failing case's entry file is also saved (its path is in the failure). See
//! `fuzz_support` for the shared rules.

mod fuzz_support;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use tessera_runtime::codegen::Arch;
use tessera_runtime::{CacheKey, KernelCache, Lookup, Target};

use fuzz_support::{apply_byte_edit, byte_edit, one_line_problem, save_reproducer, with_deadline, ByteEdit};

const CACHE_CASES: u32 = 5000;
const SEED: u64 = 0x7e55_e7a0_0000_0006;
const MAX_EDITS: usize = 4;
/// A lookup reads and hashes a few KiB; one still running after this hangs.
const CASE_DEADLINE: Duration = Duration::from_secs(30);
/// The entry header's first bytes (magic, version, key, length, digest) are all within this, so
/// field overwrites land in it.
const HEADER_SPAN: usize = 128;

/// Images of the sizes that matter: none, one byte, a short PTX text, several pages.
fn images() -> &'static [Vec<u8>] {
    static IMAGES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let ptx = b".version 9.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\n\tret;\n}\n".to_vec();
        let pages: Vec<u8> = (0..16 << 10).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        vec![Vec::new(), vec![0x2e], ptx, pages]
    })
}

fn key(tag: u64) -> CacheKey {
    CacheKey::new(&format!("fuzz-{tag}"), Target::ptx(Arch::SM80), (13, 0), &["-std=c++17".to_string()])
}

/// One damage to an entry file.
#[derive(Clone, Debug)]
enum EntryEdit {
    Bytes(ByteEdit),
    /// Overwrite 1, 4 or 8 bytes at a header offset with an extreme little-endian value.
    Field(usize, u8, u64),
}

fn entry_edit() -> impl Strategy<Value = EntryEdit> {
    let value = prop_oneof![Just(0u64), Just(1), Just(u64::MAX), Just(u64::from(u32::MAX)), Just(1 << 63), any::<u64>()];
    prop_oneof![
        3 => byte_edit().prop_map(EntryEdit::Bytes),
        1 => (0..HEADER_SPAN, prop::sample::select(vec![1u8, 4, 8]), value).prop_map(|(at, w, v)| EntryEdit::Field(at, w, v)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &EntryEdit) {
    match edit {
        EntryEdit::Bytes(b) => apply_byte_edit(bytes, b),
        EntryEdit::Field(at, width, value) => {
            let width = usize::from(*width);
            if at + width <= bytes.len() {
                bytes[*at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            }
        }
    }
}

/// Looks `key` up in `cache` after its entry was damaged; `Err` describes a broken contract.
/// `original` is the stored image, `damaged_is_original` whether the damage left the file as it
/// was (then only a hit is right).
fn check_lookup(cache: &KernelCache, key: &CacheKey, original: &[u8], damaged_is_original: bool) -> Result<(), String> {
    let path = cache.entry_path(key);
    match cache.get(key) {
        Lookup::Hit(image) if image == original => {}
        Lookup::Hit(image) => return Err(format!("a damaged entry was handed out: {} bytes, not the stored {}", image.len(), original.len())),
        Lookup::Miss => return Err("a present (damaged) entry read as a miss".into()),
        Lookup::Corrupt { reason, .. } => {
            if damaged_is_original {
                return Err(format!("the undamaged entry read as corrupt: {reason}"));
            }
            if let Some(p) = one_line_problem(&reason) {
                return Err(format!("corrupt entry's reason: {p}"));
            }
            if path.symlink_metadata().is_ok_and(|m| m.is_file()) {
                return Err("the corrupt entry file was left in place".into());
            }
            let rebuilt = b"rebuilt image".to_vec();
            let expected = rebuilt.clone();
            match cache.get_or_insert_with(key, move || Ok(rebuilt)) {
                Ok((image, false)) if image == expected => {}
                Ok((image, hit)) => return Err(format!("rebuild returned {} bytes (hit: {hit})", image.len())),
                Err(e) => return Err(format!("rebuild failed: {e}")),
            }
            if cache.get(key) != Lookup::Hit(expected) {
                return Err("the rebuilt entry does not hit".into());
            }
        }
    }
    Ok(())
}

/// One cache folder per test binary; every case uses a fresh key in it.
fn cache() -> &'static KernelCache {
    static CACHE: OnceLock<(tempfile::TempDir, KernelCache)> = OnceLock::new();
    &CACHE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let cache = KernelCache::open(dir.path()).expect("cache folder");
            (dir, cache)
        })
        .1
}

/// Puts something other than an entry file at an entry's path.
type MakeEntry = fn(&Path);

/// Entry paths that are not regular files read as corrupt (or, for what is not there, a miss),
/// and the cache works on after each.
#[test]
fn entries_that_are_not_regular_files_are_rejected() {
    let cache = cache();
    let image = images()[2].clone();
    let cases: [(&str, MakeEntry); 6] = [
        ("a folder", |p| std::fs::create_dir(p).unwrap()),
        ("a link to /dev/zero", |p| std::os::unix::fs::symlink("/dev/zero", p).unwrap()),
        ("a link to /dev/null", |p| std::os::unix::fs::symlink("/dev/null", p).unwrap()),
        ("a link to a folder", |p| std::os::unix::fs::symlink("/", p).unwrap()),
        ("a dangling link", |p| std::os::unix::fs::symlink("/nonexistent/entry", p).unwrap()),
        ("an empty file", |p| std::fs::write(p, b"").unwrap()),
    ];
    for (i, (what, make)) in cases.iter().enumerate() {
        let key = key(u64::MAX - i as u64);
        make(&cache.entry_path(&key));
        let image = image.clone();
        let verdict = with_deadline(CASE_DEADLINE, move || {
            let cache = self::cache();
            let lookup = cache.get(&key);
            if let Lookup::Corrupt { reason, .. } = &lookup {
                if let Some(p) = one_line_problem(reason) {
                    return Err(p);
                }
            } else if lookup != Lookup::Miss {
                return Err(format!("read as {lookup:?}"));
            }
            // Whatever could not be removed, the image still comes back (stored or not).
            match cache.get_or_insert_with(&key, move || Ok(image.clone())) {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("get_or_insert_with failed: {e}")),
            }
        });
        match verdict {
            Ok(Ok(())) => {}
            Ok(Err(problem)) | Err(problem) => panic!("an entry that is {what}: {problem}"),
        }
    }
}

proptest! {
    #![proptest_config(fuzz_support::config("fuzz_cache", CACHE_CASES, SEED))]

    /// A damaged entry is detected, removed and rebuilt, or is still the stored image.
    #[test]
    fn damaged_entries_are_detected_and_rebuilt(
        image in any::<Index>(),
        tag in any::<u64>(),
        edits in prop::collection::vec(entry_edit(), 1..=MAX_EDITS),
    ) {
        let cache = cache();
        let images = images();
        let original = images[image.index(images.len())].clone();
        // The key depends on the edits too, so shrinking never reuses a key a failed case left.
        let key = key(tag ^ (edits.len() as u64).rotate_left(48));
        cache.put(&key, &original).map_err(|e| TestCaseError::fail(format!("put: {e}")))?;
        let path = cache.entry_path(&key);
        let valid = std::fs::read(&path).map_err(|e| TestCaseError::fail(format!("read back: {e}")))?;
        let mut damaged = valid.clone();
        for edit in &edits {
            apply(&mut damaged, edit);
        }
        std::fs::write(&path, &damaged).map_err(|e| TestCaseError::fail(format!("write: {e}")))?;
        let unchanged = damaged == valid;
        let verdict = with_deadline(CASE_DEADLINE, move || check_lookup(self::cache(), &key, &original, unchanged)).and_then(|r| r);
        if let Err(problem) = verdict {
            prop_assert!(false, "{problem}; {}", save_reproducer("fuzz_cache", "tkc", &damaged));
        }
    }
}

/// Found by this fuzzer (and fixed): an entry whose stored key has a newline in it (one byte of the
/// key field, offset 12, set to `\n`) was rejected with a two-line reason, which the compiler
/// prints as a two-line warning.
#[test]
fn a_line_break_in_the_stored_key_gives_a_one_line_reason() {
    /// Where the stored key starts: after the 8-byte magic and the 4-byte format version.
    const KEY_OFFSET: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::open(dir.path()).unwrap();
    let key = key(0);
    cache.put(&key, b"image").unwrap();
    let path = cache.entry_path(&key);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[KEY_OFFSET] = b'\n';
    std::fs::write(&path, &bytes).unwrap();
    match cache.get(&key) {
        Lookup::Corrupt { reason, .. } => assert_eq!(one_line_problem(&reason), None, "{reason:?}"),
        other => panic!("{other:?}"),
    }
}
