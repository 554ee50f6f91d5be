//! Fuzzing the tuning database reader (`TuningDb::open`, `TuningDb::import`) with damaged files.
//!
//! The valid input is a database of every tile kind (`fixtures/tuning_db_v1.json`). Two kinds of
//! case: text edits (lines deleted, duplicated or swapped; numbers and words replaced by others of
//! the file or by extreme values; bytes flipped, inserted or removed), and structural edits of the
//! parsed JSON (a value removed, duplicated, swapped with another, or replaced by null, a bool, a
//! huge or negative or fractional number, a number past u64, a string, an empty or deeply nested
//! container). `open` must return within a deadline with either entries and no warning, or no
//! entries and a one-line warning; `import` with entries or a one-line error. Every entry it does
//! load goes through what a launch does with it (the key's spec with the stored tile, validated
//! for each architecture, rendered where valid) without a panic.
//!
//! Cases: [`TEXT_CASES`] + [`JSON_CASES`] per run; `TESSERA_FUZZ_CASES=N` multiplies both. Replay a
//! run with `PROPTEST_RNG_SEED=<seed printed by the test> cargo test --offline -p tessera-runtime
//! --test fuzz_tuning_db`; a failing case's file is also saved (its path is in the failure). See
//! `fuzz_support` for the shared rules.

mod fuzz_support;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;
use tessera_runtime::codegen::Arch;
use tessera_runtime::tuning::db::TuningDb;

use fuzz_support::{one_line_problem, save_reproducer, text_edit, with_deadline, Lines};

const TEXT_CASES: u32 = 2500;
const JSON_CASES: u32 = 2500;
const TEXT_SEED: u64 = 0x7e55_e7a0_0000_0004;
const JSON_SEED: u64 = 0x7e55_e7a0_0000_0005;
const MAX_EDITS: usize = 4;
/// Reading a 4 KiB database takes a millisecond; one still reading after this hangs.
const CASE_DEADLINE: Duration = Duration::from_secs(30);
/// Deeper than serde_json's recursion limit (128), so both sides of it are tried.
const MAX_NESTING: usize = 200;
/// Marks a string that is replaced by raw JSON text after serialisation (numbers a `Value` cannot
/// hold).
const RAW_MARK: &str = "\u{1}raw:";

const VALID_DB: &str = include_str!("fixtures/tuning_db_v1.json");

/// Number literals past what `u64`/`f64` hold, spliced in as text.
const RAW_NUMBERS: &[&str] = &["18446744073709551616", "-9223372036854775809", "1e400", "-1e400", "1e-400", "123456789012345678901234567890"];

/// What replaces a value in a structural edit.
#[derive(Clone, Debug)]
enum Replacement {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Raw(Index),
    Str(String),
    EmptyArray,
    EmptyObject,
    /// The value wrapped in this many arrays.
    Nested(usize),
}

#[derive(Clone, Debug)]
enum JsonEdit {
    Remove(Index),
    Replace(Index, Replacement),
    /// An array element appears twice; an object member is copied under a new key.
    Duplicate(Index),
    Swap(Index, Index),
}

fn replacement() -> impl Strategy<Value = Replacement> {
    prop_oneof![
        Just(Replacement::Null),
        any::<bool>().prop_map(Replacement::Bool),
        prop_oneof![Just(i64::MIN), Just(-1i64), Just(0i64), Just(i64::MAX), any::<i64>()].prop_map(Replacement::Int),
        prop_oneof![Just(u64::MAX), Just(u64::from(u32::MAX) + 1), any::<u64>()].prop_map(Replacement::UInt),
        prop_oneof![Just(0.5f64), Just(-0.0), Just(1e300), Just(f64::MIN_POSITIVE)].prop_map(Replacement::Float),
        any::<Index>().prop_map(Replacement::Raw),
        prop::sample::select(vec!["", "attention", "gemm", "elementwise", "f16", "sm_90a", "\u{0}", "é", "tessera-tuning-db"])
            .prop_map(|s| Replacement::Str(s.to_string())),
        Just(Replacement::EmptyArray),
        Just(Replacement::EmptyObject),
        (1..=MAX_NESTING).prop_map(Replacement::Nested),
    ]
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        3 => any::<Index>().prop_map(JsonEdit::Remove),
        5 => (any::<Index>(), replacement()).prop_map(|(i, r)| JsonEdit::Replace(i, r)),
        1 => any::<Index>().prop_map(JsonEdit::Duplicate),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| JsonEdit::Swap(a, b)),
    ]
}

/// A step from a container to a child.
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    At(usize),
}

/// The paths of every value below the root, parents before children.
fn paths(v: &Value) -> Vec<Vec<Step>> {
    fn walk(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        let children: Vec<(Step, &Value)> = match v {
            Value::Object(m) => m.iter().map(|(k, c)| (Step::Key(k.clone()), c)).collect(),
            Value::Array(a) => a.iter().enumerate().map(|(i, c)| (Step::At(i), c)).collect(),
            _ => Vec::new(),
        };
        for (step, child) in children {
            here.push(step);
            out.push(here.clone());
            walk(child, here, out);
            here.pop();
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn get_mut<'a>(mut v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    for step in path {
        v = match (step, v) {
            (Step::Key(k), Value::Object(m)) => m.get_mut(k)?,
            (Step::At(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

fn apply_json_edit(root: &mut Value, edit: &JsonEdit) {
    let all = paths(root);
    if all.is_empty() {
        return;
    }
    let pick = |i: &Index| all[i.index(all.len())].clone();
    match edit {
        JsonEdit::Remove(i) | JsonEdit::Duplicate(i) => {
            let path = pick(i);
            let (last, parent) = path.split_last().expect("paths are non-empty");
            let Some(parent) = get_mut(root, parent) else { return };
            match (last, parent, edit) {
                (Step::Key(k), Value::Object(m), JsonEdit::Remove(_)) => {
                    m.remove(k);
                }
                (Step::At(at), Value::Array(a), JsonEdit::Remove(_)) => {
                    a.remove(*at);
                }
                (Step::Key(k), Value::Object(m), _) => {
                    if let Some(v) = m.get(k).cloned() {
                        m.insert(format!("{k}_copy"), v);
                    }
                }
                (Step::At(at), Value::Array(a), _) => {
                    let v = a[*at].clone();
                    a.insert(*at, v);
                }
                _ => {}
            }
        }
        JsonEdit::Replace(i, r) => {
            let Some(v) = get_mut(root, &pick(i)) else { return };
            *v = match r {
                Replacement::Null => Value::Null,
                Replacement::Bool(b) => Value::Bool(*b),
                Replacement::Int(n) => Value::from(*n),
                Replacement::UInt(n) => Value::from(*n),
                Replacement::Float(x) => Value::from(*x),
                Replacement::Raw(i) => Value::String(format!("{RAW_MARK}{}", RAW_NUMBERS[i.index(RAW_NUMBERS.len())])),
                Replacement::Str(s) => Value::String(s.clone()),
                Replacement::EmptyArray => Value::Array(Vec::new()),
                Replacement::EmptyObject => Value::Object(Default::default()),
                Replacement::Nested(depth) => (0..*depth).fold(v.take(), |inner, _| Value::Array(vec![inner])),
            };
        }
        JsonEdit::Swap(a, b) => {
            let (pa, pb) = (pick(a), pick(b));
            let Some(va) = get_mut(root, &pa).map(|v| v.clone()) else { return };
            let Some(vb) = get_mut(root, &pb).map(|v| v.clone()) else { return };
            if let Some(slot) = get_mut(root, &pa) {
                *slot = vb;
            }
            // The second path may now lead elsewhere (a swap with an ancestor); that is fine.
            if let Some(slot) = get_mut(root, &pb) {
                *slot = va;
            }
        }
    }
}

/// The JSON text of `root` with the raw-number markers replaced by their literal text.
fn render(root: &Value) -> String {
    let mut text = serde_json::to_string_pretty(root).expect("a Value serialises");
    for raw in RAW_NUMBERS {
        // serde_json writes the marker's control character as `\u0001`.
        text = text.replace(&format!("\"\\u0001raw:{raw}\""), raw);
    }
    text
}

/// The scratch folder (one file per test; the tests run in parallel).
fn scratch(test: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path().join(format!("{test}.json"))
}

/// Opens and imports the file at `path`; `Err` describes a broken contract.
fn check(path: PathBuf) -> Result<(), String> {
    with_deadline(CASE_DEADLINE, move || {
        let mut problems = Vec::new();
        let (db, warning) = TuningDb::open(&path);
        match &warning {
            Some(w) => {
                problems.extend(one_line_problem(w).map(|p| format!("open's warning: {p}")));
                if !db.is_empty() {
                    problems.push(format!("open warned ({w}) but kept {} entries", db.len()));
                }
            }
            None => {
                for entry in db.entries() {
                    use_entry(entry, &mut problems);
                }
            }
        }
        // `import` counts the file's entries, repeated keys included; the database holds each key once.
        let mut imported = TuningDb::in_memory();
        match imported.import(&path) {
            Ok(_) if imported.len() != db.len() => {
                problems.push(format!("import kept {} entries, open {}", imported.len(), db.len()))
            }
            Ok(_) => {}
            Err(e) => problems.extend(one_line_problem(&e.to_string()).map(|p| format!("import's error: {p}"))),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    })?
}

/// What a launch does with a stored winner (`tuning::tuned_spec`), then what it does with a valid
/// tuned spec: name it and render it. A panic here fails the case.
fn use_entry(entry: &tessera_runtime::tuning::db::DbEntry, problems: &mut Vec<String>) {
    let _ = entry.key.spec.kernel_name(Arch::SM80);
    let Some(tuned) = entry.key.spec.with_tile_choice(entry.tile) else { return };
    for arch in Arch::SUPPORTED {
        if tuned.validate(arch).is_ok() {
            let _ = tuned.tile_label(arch);
            if let Err(e) = tuned.render(arch) {
                problems.push(format!("{} validates for {arch} but does not render: {e}", tuned.kernel_name(arch)));
            }
        }
    }
}

#[test]
fn the_valid_database_loads() {
    let path = scratch("valid");
    std::fs::write(&path, VALID_DB).unwrap();
    let (db, warning) = TuningDb::open(&path);
    assert!(warning.is_none(), "{warning:?}");
    assert_eq!(db.len(), 4);
    // The structural mutator's rendering round-trips the valid value.
    let value: Value = serde_json::from_str(VALID_DB).unwrap();
    std::fs::write(&path, render(&value)).unwrap();
    assert_eq!(TuningDb::open(&path).0.len(), 4);
    check(path).unwrap();
}

proptest! {
    #![proptest_config(fuzz_support::config("fuzz_tuning_db text", TEXT_CASES, TEXT_SEED))]

    /// Text-level damage to a valid database.
    #[test]
    fn damaged_database_text_loads_or_warns_in_one_line(edits in prop::collection::vec(text_edit(), 1..=MAX_EDITS)) {
        let bytes = Lines::new(VALID_DB).apply(&edits);
        let path = scratch("text");
        std::fs::write(&path, &bytes).unwrap();
        if let Err(problem) = check(path) {
            prop_assert!(false, "{problem}; {}", save_reproducer("fuzz_tuning_db", "json", &bytes));
        }
    }
}

proptest! {
    #![proptest_config(fuzz_support::config("fuzz_tuning_db json", JSON_CASES, JSON_SEED))]

    /// Structural damage to a valid database's JSON value.
    #[test]
    fn damaged_database_json_loads_or_warns_in_one_line(edits in prop::collection::vec(json_edit(), 1..=MAX_EDITS)) {
        let mut value: Value = serde_json::from_str(VALID_DB).expect("the fixture is JSON");
        for edit in &edits {
            apply_json_edit(&mut value, edit);
        }
        let text = render(&value);
        let path = scratch("json");
        std::fs::write(&path, &text).unwrap();
        if let Err(problem) = check(path) {
            prop_assert!(false, "{problem}; {}", save_reproducer("fuzz_tuning_db", "json", text.as_bytes()));
        }
    }
}

/// Found by this fuzzer (fixed): a database whose JSON has an escaped line break in an enum value (`"family":
/// "att\ntion"`) is ignored with a two-line warning (and `import` fails with a two-line error):
/// serde's "unknown variant" message quotes the decoded string. Expected: one line (the quoted
/// value escaped).
#[test]
fn found_json_strings_stay_one_line_in_warnings() {
    let path = scratch("finding_raw_quote");
    std::fs::write(&path, VALID_DB.replacen("\"family\": \"attention\"", "\"family\": \"att\\ntion\"", 1)).unwrap();
    let (db, warning) = TuningDb::open(&path);
    assert!(db.is_empty());
    let warning = warning.expect("a warning");
    assert_eq!(one_line_problem(&warning), None, "{warning:?}");
    let e = TuningDb::in_memory().import(&path).unwrap_err().to_string();
    assert_eq!(one_line_problem(&e), None, "{e:?}");
}
