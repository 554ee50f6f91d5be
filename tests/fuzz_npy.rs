//! Fuzzing the `.npy` readers (`read_npy`, `read_npy_indices`) with damaged files.
//!
//! Two kinds of case: byte edits (flips, inserts, deletes, truncation, appended bytes) of valid
//! files of every accepted dtype (`<f4`, `<f2`, `<i4`, `<i8`), and files assembled from damaged
//! parts: the format version, the header length field, the header's `descr` (wrong, big-endian,
//! structured, absurd sizes), `fortran_order` and `shape` (huge, overflowing, negative, fractional,
//! malformed dimensions), and a payload that is exact, short, long or missing. Both readers get
//! every file and must return, within a deadline, either an array whose shape's element count
//! equals its data length, or an error with a one-line message.
//!
//! Cases: [`BYTE_CASES`] + [`STRUCTURED_CASES`] per run; `TESSERA_FUZZ_CASES=N` multiplies both.
//! Replay a run with `PROPTEST_RNG_SEED=<seed printed by the test> cargo test --offline --test
//! fuzz_npy`; a failing case's file is also saved (its path is in the failure). See
//! `runtime/tests/fuzz_support` for the shared rules.

#[path = "../runtime/tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use npyz::WriterBuilder;
use proptest::prelude::*;
use proptest::sample::Index;
use tessera::npy::{read_npy, read_npy_indices, write_npy_f32};

use fuzz_support::{apply_byte_edits, byte_edit, one_line_problem, save_reproducer, with_deadline, ByteEdit};

/// Byte-edit cases per default run.
const BYTE_CASES: u32 = 5000;
/// Assembled-file cases per default run.
const STRUCTURED_CASES: u32 = 5000;
const BYTE_SEED: u64 = 0x7e55_e7a0_0000_0002;
const STRUCTURED_SEED: u64 = 0x7e55_e7a0_0000_0003;
/// Edits per byte-level case: the files are small, so a few edits already damage most of it.
const MAX_EDITS: usize = 4;
/// Reading a file of a few hundred bytes takes microseconds; one still reading after this hangs.
const CASE_DEADLINE: Duration = Duration::from_secs(20);
/// Payloads are built for at most this many elements (bigger shapes get a short payload).
const MAX_PAYLOAD_ELEMENTS: u64 = 4096;
/// `.npy` headers are padded so the data starts at a multiple of this.
const HEADER_ALIGN: usize = 64;
const MAGIC: &[u8] = b"\x93NUMPY";

/// Valid files of every dtype the readers accept, written by the library's own writer and npyz.
fn seeds() -> &'static [(String, Vec<u8>)] {
    static SEEDS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut out = Vec::new();
        for shape in [&[6usize][..], &[2, 3], &[1, 2, 3], &[0], &[2, 0, 3]] {
            let n: usize = shape.iter().product();
            let path = dir.path().join("f4.npy");
            write_npy_f32(&path, shape, &(0..n).map(|i| i as f32 - 2.5).collect::<Vec<_>>()).expect("write f32");
            out.push((format!("<f4 {shape:?}"), std::fs::read(&path).expect("read back")));
        }
        out.push(("<f2 [2, 3]".into(), npyz_file(&[2, 3], (0..6).map(|i| half::f16::from_f32(i as f32)))));
        out.push(("<i4 [5]".into(), npyz_file(&[5], [-1i32, 0, 1, 2, 3])));
        out.push(("<i8 [2, 2]".into(), npyz_file(&[2, 2], [-1i64, 0, 7, 1 << 40])));
        out
    })
}

fn npyz_file<T: npyz::Serialize + npyz::AutoSerialize>(shape: &[u64], data: impl IntoIterator<Item = T>) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut writer =
        npyz::WriteOptions::new().default_dtype().shape(shape).writer(&mut bytes).begin_nd().expect("npyz header");
    writer.extend(data).expect("npyz data");
    writer.finish().expect("npyz finish");
    bytes
}

/// A `.npy` file from parts: `major` 1 has a 2-byte header length, 2 and 3 a 4-byte one;
/// `header_len` overrides the length field; the header is padded (spaces, `\n`) to 64 bytes.
fn assemble(major: u8, header_len: Option<u32>, header: &str, payload: &[u8]) -> Vec<u8> {
    let len_field = if major == 1 { 2 } else { 4 };
    let unpadded = MAGIC.len() + 2 + len_field + header.len() + 1;
    let padded = format!("{header}{}\n", " ".repeat((HEADER_ALIGN - unpadded % HEADER_ALIGN) % HEADER_ALIGN));
    let len = header_len.unwrap_or(padded.len() as u32);
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[major, 0]);
    if major == 1 {
        out.extend_from_slice(&(len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(padded.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// `descr` values (Python literals) with the element size the payload is built for.
const DESCRS: &[(&str, usize)] = &[
    ("'<f4'", 4),
    ("'<f2'", 2),
    ("'<i4'", 4),
    ("'<i8'", 8),
    ("'>f4'", 4),
    ("'>i8'", 8),
    ("'|f4'", 4),
    ("'=f4'", 4),
    ("'<f8'", 8),
    ("'<u4'", 4),
    ("'|u1'", 1),
    ("'|b1'", 1),
    ("'<c8'", 8),
    ("'|O'", 8),
    ("'<U8'", 32),
    ("'|S0'", 0),
    ("'<M8[ns]'", 8),
    ("'<f0'", 0),
    ("'<f99999999999999999999'", 4),
    ("'<i18446744073709551615'", 4),
    ("''", 4),
    ("'f4'", 4),
    ("\"<f4\"", 4),
    ("[('a', '<f4')]", 4),
    ("[('a', '<f4', (2,))]", 8),
    ("[('a', '<f4', (4294967296, 4294967296))]", 4),
    ("[('a', '<f4'), ('a', '<f4')]", 8),
    ("4", 4),
    ("None", 4),
];

/// `fortran_order` values, the valid one most often.
const FORTRAN: &[&str] = &["False", "False", "False", "False", "False", "False", "True", "0", "'x'", "None"];

/// Shape dimensions: mostly small, some at or past the limits of the integer types.
fn dim() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => (0u64..8).prop_map(|d| d.to_string()),
        1 => prop::sample::select(vec![
            "4294967295", "4294967296", "9223372036854775807", "9223372036854775808",
            "18446744073709551615", "18446744073709551616", "100000000000000000000000000000",
            "-1", "-4294967296", "1.5", "1e3", "'2'", "None", "True", "0x10", "2**40",
        ])
        .prop_map(str::to_string),
    ]
}

fn shape_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (prop::collection::vec(dim(), 0..6), any::<bool>()).prop_map(|(dims, trailing)| {
            match dims.len() {
                0 => "()".to_string(),
                1 if trailing => format!("({},)", dims[0]),
                1 => format!("({})", dims[0]),
                _ if trailing => format!("({},)", dims.join(", ")),
                _ => format!("({})", dims.join(", ")),
            }
        }),
        1 => prop::sample::select(vec!["[]", "[2, 3]", "(,)", "((2,),)", "", "(1 2)", "(", "(2, 3", "{}", "(2,3)(4,)"])
            .prop_map(str::to_string),
    ]
}

/// A file assembled from (possibly damaged) parts.
#[derive(Clone, Debug)]
struct Parts {
    major: u8,
    header_len: Option<u32>,
    descr: Index,
    fortran: Index,
    shape: String,
    /// Another key, or a duplicate of one.
    extra: Option<&'static str>,
    /// Elements' worth of payload relative to the shape's count: exact plus this many bytes.
    payload_delta: i32,
    edits: Vec<ByteEdit>,
}

fn parts() -> impl Strategy<Value = Parts> {
    (
        prop_oneof![12 => Just(1u8), 2 => Just(2), 2 => Just(3), 1 => prop::sample::select(vec![0u8, 4, 255])],
        prop::option::weighted(0.1, prop_oneof![Just(0u32), Just(1), Just(u32::MAX), Just(65535), 0u32..512]),
        any::<Index>(),
        any::<Index>(),
        shape_literal(),
        prop::option::weighted(
            0.15,
            prop::sample::select(vec!["'shape': (2,), ", "'descr': '<i8', ", "'x': 1, ", "'fortran_order': True, "]),
        ),
        prop_oneof![6 => Just(0i32), 2 => -64i32..0, 2 => 1i32..64],
        prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(byte_edit(), 1..3)],
    )
        .prop_map(|(major, header_len, descr, fortran, shape, extra, payload_delta, edits)| Parts {
            major,
            header_len,
            descr,
            fortran,
            shape,
            extra,
            payload_delta,
            edits,
        })
}

fn build(p: &Parts) -> Vec<u8> {
    let (descr, item) = DESCRS[p.descr.index(DESCRS.len())];
    let fortran = FORTRAN[p.fortran.index(FORTRAN.len())];
    let header =
        format!("{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {}, {}}}", p.shape, p.extra.unwrap_or(""));
    // The element count the shape claims, when it is small enough to write.
    let count = p
        .shape
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .try_fold(1u64, |n, d| d.parse::<u64>().ok().and_then(|d| n.checked_mul(d)))
        .filter(|&n| n <= MAX_PAYLOAD_ELEMENTS)
        .unwrap_or(3);
    let len = (count as usize * item) as i64 + i64::from(p.payload_delta);
    let payload: Vec<u8> = (0..len.max(0)).map(|i| (i * 37 % 251) as u8).collect();
    apply_byte_edits(&assemble(p.major, p.header_len, &header, &payload), &p.edits)
}

/// The scratch file of one test (its cases run one at a time; the tests run in parallel).
fn scratch(test: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path().join(format!("{test}.npy"))
}

/// Reads `bytes` as a file with both readers; `Err` describes a broken contract.
fn check(path: PathBuf, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(&path, bytes).map_err(|e| format!("cannot write the case: {e}"))?;
    with_deadline(CASE_DEADLINE, move || {
        // A zero dimension makes the array empty whatever the others are.
        let elements =
            |shape: &[usize]| if shape.contains(&0) { Some(0) } else { shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) };
        let mut problems = Vec::new();
        match read_npy(&path) {
            Ok(a) if elements(&a.shape) != Some(a.data.len()) => {
                problems.push(format!("read_npy: shape {:?} but {} values", a.shape, a.data.len()))
            }
            Ok(_) => {}
            Err(e) => problems.extend(one_line_problem(&e.to_string()).map(|p| format!("read_npy: {p}"))),
        }
        match read_npy_indices(&path) {
            Ok(a) if elements(&a.shape) != Some(a.data.len()) => {
                problems.push(format!("read_npy_indices: shape {:?} but {} values", a.shape, a.data.len()))
            }
            Ok(_) => {}
            Err(e) => problems.extend(one_line_problem(&e.to_string()).map(|p| format!("read_npy_indices: {p}"))),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    })?
}

#[test]
fn seeds_are_valid() {
    let path = scratch("seeds");
    for (label, bytes) in seeds() {
        std::fs::write(&path, bytes).unwrap();
        let ok = if label.starts_with("<i") { read_npy_indices(&path).is_ok() } else { read_npy(&path).is_ok() };
        assert!(ok, "{label}");
    }
    // The assembler writes what numpy writes.
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    let bytes = assemble(1, None, header, &[0, 0, 128, 63, 0, 0, 0, 64]);
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(read_npy(&path).unwrap().data, [1.0, 2.0]);
}

proptest! {
    #![proptest_config(fuzz_support::config("fuzz_npy bytes", BYTE_CASES, BYTE_SEED))]

    /// Byte-level damage to a valid file.
    #[test]
    fn damaged_npy_bytes_read_or_fail_in_one_line(seed in any::<Index>(), edits in prop::collection::vec(byte_edit(), 1..=MAX_EDITS)) {
        let seeds = seeds();
        let (label, valid) = &seeds[seed.index(seeds.len())];
        let bytes = apply_byte_edits(valid, &edits);
        if let Err(problem) = check(scratch("bytes"), &bytes) {
            prop_assert!(false, "{label}: {problem}; {}", save_reproducer("fuzz_npy", "npy", &bytes));
        }
    }
}

proptest! {
    #![proptest_config(fuzz_support::config("fuzz_npy structured", STRUCTURED_CASES, STRUCTURED_SEED))]

    /// Files assembled from damaged headers and payloads.
    #[test]
    fn assembled_npy_files_read_or_fail_in_one_line(p in parts()) {
        let bytes = build(&p);
        if let Err(problem) = check(scratch("structured"), &bytes) {
            prop_assert!(false, "{problem}; {}", save_reproducer("fuzz_npy", "npy", &bytes));
        }
    }
}

/// Found by this fuzzer (fixed): an error quoting header text quoted it raw, so a line break in the `descr` string or
/// the `fortran_order` value makes a two-line message (the CLI prints it as a two-line error).
/// Reproducers: `{'descr': '<f4\n', 'fortran_order': False, 'shape': (2,), }` and
/// `{'descr': '<f4', 'fortran_order': 'a\nb', 'shape': (2,), }`, each with 8 bytes of data.
/// Expected: one-line errors (the quoted text escaped).
#[test]
fn found_header_line_breaks_stay_one_line() {
    let path = scratch("finding_line_breaks");
    for header in [
        "{'descr': '<f4\n', 'fortran_order': False, 'shape': (2,), }",
        "{'descr': '<f4', 'fortran_order': 'a\nb', 'shape': (2,), }",
    ] {
        std::fs::write(&path, assemble(1, None, header, &[0; 8])).unwrap();
        let e = read_npy(&path).unwrap_err().to_string();
        assert_eq!(one_line_problem(&e), None, "{header:?}: {e:?}");
        let e = read_npy_indices(&path).unwrap_err().to_string();
        assert_eq!(one_line_problem(&e), None, "{header:?}: {e:?}");
    }
}
