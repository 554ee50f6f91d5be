//! What the fuzz targets (`fuzz_*.rs` here and in the root crate's `tests/`) share: case counts,
//! seeds, a per-case deadline, and the mutators that turn a valid input into a damaged one.
//!
//! Each target is a proptest property over a list of edits applied to a known-valid input; a case
//! passes when the code under test returns (no panic, no abort, within its deadline) and, for
//! input it rejects, says why in one non-empty line.
//!
//! - Case counts: every target's default is sized so that all of them together take a few minutes
//!   of the unoptimised `cargo test --workspace` on two cores. `TESSERA_FUZZ_CASES=N` multiplies
//!   every target's count by N for a longer run, e.g.
//!   `TESSERA_FUZZ_CASES=50 cargo test --offline --workspace --test 'fuzz_*'`.
//! - Seeds: the default run uses each target's fixed seed, so CI sees the same cases every time; a
//!   longer run draws a fresh seed. The seed is printed (libtest shows it with a failing test's
//!   output), and `PROPTEST_RNG_SEED=<seed>` replays that run: proptest draws cases in order from
//!   the seed, so the same seed gives the same cases whatever the count.
//! - Findings: each bug a target found has a regression test `found_*` in that target, beside
//!   the property, replaying the reproducer.
//! - Failures: proptest shrinks a failing case and prints the edit list; the targets also write the
//!   damaged input to `CARGO_TARGET_TMPDIR/fuzz-failures/<target>.<ext>` (the minimal case, once
//!   shrinking is done) and name the file in the failure, so it can be replayed by hand.
#![allow(dead_code)]

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed};

/// Multiplies every target's case count (a longer run); also switches to a fresh seed.
pub const CASES_ENV: &str = "TESSERA_FUZZ_CASES";
/// proptest's own seed variable: set, it wins over the fixed and the fresh seed.
pub const SEED_ENV: &str = "PROPTEST_RNG_SEED";
/// Shrinking re-runs the property many times; a cap keeps a failing CI run short while still
/// getting most of the way to a minimal edit list.
const MAX_SHRINK_ITERS: u32 = 512;

/// The case-count multiplier from [`CASES_ENV`] (1 when unset or not a positive number).
pub fn multiplier() -> u32 {
    std::env::var(CASES_ENV).ok().and_then(|v| v.trim().parse::<u32>().ok()).filter(|&n| n > 0).unwrap_or(1)
}

/// The proptest configuration of a target: `default_cases` (times [`multiplier`]) cases from
/// `fixed_seed`, or from a fresh seed for a longer run, or from `PROPTEST_RNG_SEED`. No failure
/// persistence file: the printed seed (and the saved input) is the reproducer, and CI must not
/// write into the source tree.
pub fn config(target: &str, default_cases: u32, fixed_seed: u64) -> Config {
    let seed = match std::env::var(SEED_ENV).ok().and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(seed) => seed,
        None if std::env::var_os(CASES_ENV).is_some() => fresh_seed(),
        None => fixed_seed,
    };
    let cases = default_cases.saturating_mul(multiplier());
    eprintln!("{target}: {cases} cases from seed {seed}; replay with {SEED_ENV}={seed}");
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: MAX_SHRINK_ITERS,
        ..Config::default()
    }
}

fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// Runs `f` on its own thread and waits at most `limit` for it. A panic in `f` is re-raised here
/// (so proptest records it as the failure); a run past the deadline is `Err` (the thread is left
/// behind, which is acceptable in a test that is about to fail).
pub fn with_deadline<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("fuzz-case".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start the case's thread: {e}"))?;
    match rx.recv_timeout(limit) {
        Ok(value) => {
            let _ = handle.join();
            Ok(value)
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => Err("the case's thread ended without a result".into()),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("no result within {limit:?} (a hang)")),
    }
}

/// Writes a failing input to `CARGO_TARGET_TMPDIR/fuzz-failures/<target>.<ext>` and returns a
/// note naming it (or why it could not be written), for the failure message. Each failure
/// overwrites the file, so once proptest has shrunk the case it holds the minimal input.
pub fn save_reproducer(target: &str, ext: &str, bytes: &[u8]) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let path = dir.join(format!("{target}.{ext}"));
    match std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, bytes)) {
        Ok(()) => format!("input saved to {} (the last failing case)", path.display()),
        Err(e) => format!("input not saved ({}: {e})", path.display()),
    }
}

/// A rejection message is usable when it is one non-empty line (a carriage return counts as a
/// line break: on a terminal it overwrites the start of the message).
pub fn one_line_problem(message: &str) -> Option<String> {
    let trimmed = message.trim();
    if trimmed.is_empty() {
        Some("the error message is empty".into())
    } else if trimmed.contains(['\n', '\r']) {
        Some(format!("the error message spans lines: {message:?}"))
    } else {
        None
    }
}

/// Values that break naive number handling: zero, signs, the edges of 32 and 64 bits, past u64,
/// floats a parser might not expect, and not-a-number.
pub const EXTREME_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "-0",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "99999999999999999999999999999999999999999",
    "1e308",
    "1e309",
    "-1e-320",
    "nan",
    "inf",
    "0x7fffffff",
    "0xffffffffffffffff",
    "0f7F800000",
    "0d7FF8000000000000",
    "",
];

/// One byte-level damage.
#[derive(Clone, Debug)]
pub enum ByteEdit {
    /// Flip bit `.1 % 8` of a byte.
    Flip(Index, u8),
    /// Overwrite a byte.
    Set(Index, u8),
    /// Insert bytes before a position.
    Insert(Index, Vec<u8>),
    /// Remove up to `.1` bytes from a position.
    Delete(Index, usize),
    /// Keep only the bytes before a position.
    Truncate(Index),
    /// Add bytes at the end.
    Append(Vec<u8>),
    /// Copy up to `.2` bytes from one position over another (reuses the input's own structure).
    Splice(Index, Index, usize),
}

/// Bytes that are likely to matter to a parser (delimiters, quotes, digits, NUL, high bytes that
/// make invalid UTF-8), now and then any byte: a text parser rejects most non-ASCII bytes at once,
/// so they are rarer than the bytes that lead it somewhere.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => prop::sample::select(b"\0\n\r\t {}[](),;:.'\"\\-+0123456789%$eE_xX\x7f\x80\xc3\xff".to_vec()),
        1 => any::<u8>(),
    ]
}

pub fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| ByteEdit::Flip(i, b)),
        3 => (any::<Index>(), interesting_byte()).prop_map(|(i, b)| ByteEdit::Set(i, b)),
        2 => (any::<Index>(), prop::collection::vec(interesting_byte(), 1..8)).prop_map(|(i, v)| ByteEdit::Insert(i, v)),
        2 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| ByteEdit::Delete(i, n)),
        1 => any::<Index>().prop_map(ByteEdit::Truncate),
        1 => prop::collection::vec(interesting_byte(), 1..32).prop_map(ByteEdit::Append),
        1 => (any::<Index>(), any::<Index>(), 1usize..64).prop_map(|(a, b, n)| ByteEdit::Splice(a, b, n)),
    ]
}

/// Applies `edit` to `bytes` in place.
pub fn apply_byte_edit(bytes: &mut Vec<u8>, edit: &ByteEdit) {
    let len = bytes.len();
    match edit {
        ByteEdit::Flip(i, bit) if len > 0 => bytes[i.index(len)] ^= 1 << (bit % 8),
        ByteEdit::Set(i, b) if len > 0 => bytes[i.index(len)] = *b,
        ByteEdit::Insert(i, v) => {
            let at = i.index(len + 1);
            bytes.splice(at..at, v.iter().copied());
        }
        ByteEdit::Delete(i, n) if len > 0 => {
            let at = i.index(len);
            bytes.drain(at..(at + n).min(len));
        }
        ByteEdit::Truncate(i) => bytes.truncate(i.index(len + 1)),
        ByteEdit::Append(v) => bytes.extend_from_slice(v),
        ByteEdit::Splice(from, to, n) if len > 0 => {
            let (from, to) = (from.index(len), to.index(len));
            let n = (*n).min(len - from).min(len - to);
            let chunk = bytes[from..from + n].to_vec();
            bytes[to..to + n].copy_from_slice(&chunk);
        }
        _ => {}
    }
}

pub fn apply_byte_edits(input: &[u8], edits: &[ByteEdit]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for edit in edits {
        apply_byte_edit(&mut bytes, edit);
    }
    bytes
}

/// The kinds of token a structural text edit swaps for another of the same kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenClass {
    /// Decimal, hex or PTX float literals (`42`, `-1`, `0x10`, `0f3F800000`).
    Number,
    /// `%`-prefixed names (registers, special registers).
    Register,
    /// Identifiers, dotted (`ld.global.v4.u32`, `$L__BB0_3`, `.reg`): opcodes, directives, labels.
    Word,
}

/// One line- or token-level damage to a text.
#[derive(Clone, Debug)]
pub enum TextEdit {
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    /// Replace a token of line `.1` with a token of the same class from line `.3`
    /// (a register with another register, an opcode with another opcode, ...).
    ReplaceToken(TokenClass, Index, Index, Index, Index),
    /// Replace a number of line `.0` with one of [`EXTREME_NUMBERS`].
    ExtremeNumber(Index, Index, Index),
    Bytes(ByteEdit),
}

pub fn text_edit() -> impl Strategy<Value = TextEdit> {
    let class = prop::sample::select(vec![TokenClass::Number, TokenClass::Register, TokenClass::Word]);
    prop_oneof![
        2 => any::<Index>().prop_map(TextEdit::DeleteLine),
        1 => any::<Index>().prop_map(TextEdit::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| TextEdit::SwapLines(a, b)),
        4 => (class, any::<Index>(), any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(c, l, t, l2, t2)| TextEdit::ReplaceToken(c, l, t, l2, t2)),
        2 => (any::<Index>(), any::<Index>(), any::<Index>()).prop_map(|(l, t, v)| TextEdit::ExtremeNumber(l, t, v)),
        3 => byte_edit().prop_map(TextEdit::Bytes),
    ]
}

/// The byte spans of `line`'s tokens of `class`.
pub fn tokens(line: &str, class: TokenClass) -> Vec<(usize, usize)> {
    let b = line.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c == b'.' || c == b':';
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c == b'%' {
            i += 1;
            while i < b.len() && word(b[i]) {
                i += 1;
            }
            if class == TokenClass::Register && i > start + 1 {
                spans.push((start, i));
            }
        } else if c.is_ascii_digit() || (c == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            if class == TokenClass::Number {
                spans.push((start, i));
            }
        } else if word(c) {
            while i < b.len() && word(b[i]) {
                i += 1;
            }
            if class == TokenClass::Word {
                spans.push((start, i));
            }
        } else {
            i += 1;
        }
    }
    spans
}

/// A text being edited line by line: the untouched lines stay borrowed from the input.
pub struct Lines<'a> {
    pub lines: Vec<Cow<'a, str>>,
}

impl<'a> Lines<'a> {
    pub fn new(text: &'a str) -> Self {
        Lines { lines: text.split('\n').map(Cow::Borrowed).collect() }
    }

    /// Applies the text edits; byte edits are applied to the joined text afterwards (they may make
    /// it invalid UTF-8, which line edits cannot work on).
    pub fn apply(mut self, edits: &[TextEdit]) -> Vec<u8> {
        let mut byte_edits = Vec::new();
        for edit in edits {
            let n = self.lines.len();
            match edit {
                TextEdit::DeleteLine(i) if n > 1 => {
                    self.lines.remove(i.index(n));
                }
                TextEdit::DuplicateLine(i) if n > 0 => {
                    let at = i.index(n);
                    let line = self.lines[at].clone();
                    self.lines.insert(at, line);
                }
                TextEdit::SwapLines(a, b) if n > 0 => self.lines.swap(a.index(n), b.index(n)),
                TextEdit::ReplaceToken(class, line, token, from_line, from_token) if n > 0 => {
                    let (line, from_line) = (line.index(n), from_line.index(n));
                    let donor = tokens(&self.lines[from_line], *class);
                    if donor.is_empty() {
                        continue;
                    }
                    let (s, e) = donor[from_token.index(donor.len())];
                    let replacement = self.lines[from_line][s..e].to_string();
                    self.replace_token(line, *class, token, &replacement);
                }
                TextEdit::ExtremeNumber(line, token, value) if n > 0 => {
                    let value = EXTREME_NUMBERS[value.index(EXTREME_NUMBERS.len())];
                    self.replace_token(line.index(n), TokenClass::Number, token, value);
                }
                TextEdit::Bytes(b) => byte_edits.push(b.clone()),
                _ => {}
            }
        }
        let text = self.lines.join("\n").into_bytes();
        apply_byte_edits(&text, &byte_edits)
    }

    fn replace_token(&mut self, line: usize, class: TokenClass, token: &Index, replacement: &str) {
        let spans = tokens(&self.lines[line], class);
        if spans.is_empty() {
            return;
        }
        let (s, e) = spans[token.index(spans.len())];
        let mut new = self.lines[line].to_string();
        new.replace_range(s..e, replacement);
        self.lines[line] = Cow::Owned(new);
    }
}
