//! The CLI's `.npy` contract: inputs are little-endian f32 or f16 arrays in C order (adapter ids:
//! int32 or int64), read from regular files only, whose header's shape must fit in memory and
//! account for exactly the bytes after the header; outputs are
//! little-endian f32, written to a temporary file beside the destination and renamed into place, so
//! a failed run never leaves a partial or stale output behind.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use npyz::WriterBuilder;
use tessera_runtime::common::buffers::elements;
use tessera_runtime::common::files::open_regular;
use tessera_runtime::{one_line, RuntimeError};

use crate::TesseraError;

/// A dense C-order array read from a `.npy` file, widened to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl NpyArray {
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

/// Reads a little-endian f32 (`<f4`) or f16 (`<f2`) array.
pub fn read_npy(path: &Path) -> Result<NpyArray, TesseraError> {
    let err = |message: String| TesseraError::Npy { path: path.to_path_buf(), message: one_line(&message) };
    let raw = read_payload(path, &[("<f4", 4), ("<f2", 2)], "<f4 (float32) or <f2 (float16)")?;
    let mut data = host_vec(raw.elements).map_err(err)?;
    match raw.descr {
        "<f4" => data.extend(raw.bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        _ => data.extend(raw.bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())),
    }
    Ok(NpyArray { shape: raw.shape, data })
}

/// A dense C-order integer array (adapter ids), widened to i64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyIndices {
    pub shape: Vec<usize>,
    pub data: Vec<i64>,
}

/// Reads a little-endian int32 (`<i4`) or int64 (`<i8`) array.
pub fn read_npy_indices(path: &Path) -> Result<NpyIndices, TesseraError> {
    let err = |message: String| TesseraError::Npy { path: path.to_path_buf(), message: one_line(&message) };
    let raw = read_payload(path, &[("<i4", 4), ("<i8", 8)], "<i4 (int32) or <i8 (int64)")?;
    let mut data = host_vec(raw.elements).map_err(err)?;
    match raw.descr {
        "<i4" => data.extend(raw.bytes.chunks_exact(4).map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))),
        _ => data.extend(raw.bytes.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))),
    }
    Ok(NpyIndices { shape: raw.shape, data })
}

// ---- the one reader -------------------------------------------------------------------------
//
// Every `.npy` input goes through `read_payload`. A file is untrusted: its header's shape may
// claim more elements than exist or than memory can address, so the element count is checked, the
// byte count the header implies must equal what the file holds after the header, and nothing is
// allocated or read beyond it.

/// The first bytes of every `.npy` file.
const MAGIC: &[u8] = b"\x93NUMPY";
/// The longest header text accepted. numpy writes a few hundred bytes and by default refuses
/// headers over 10000 itself; a longer claim is a damaged file, not an array.
const MAX_HEADER_BYTES: usize = 10_000;
/// Nesting allowed in a header value (a structured dtype's description nests a few levels).
const MAX_HEADER_DEPTH: usize = 8;

/// A checked file: its shape and element type, and exactly the payload bytes its header implies.
struct Payload {
    shape: Vec<usize>,
    elements: usize,
    /// One of the accepted descriptions.
    descr: &'static str,
    bytes: Vec<u8>,
}

/// An empty vector with room for `len` items, or why the host cannot give it.
fn host_vec<T>(len: usize) -> Result<Vec<T>, String> {
    tessera_runtime::common::buffers::host_vec("data", len).map_err(|e| match e {
        RuntimeError::InvalidArgument { message, .. } => message,
        other => other.to_string(),
    })
}

/// Opens `path`, checks its header and reads its payload; `accepted` lists the element types
/// `(descr, bytes)` the caller decodes, `expected` names them for the error.
fn read_payload(path: &Path, accepted: &[(&'static str, usize)], expected: &str) -> Result<Payload, TesseraError> {
    // Messages quote header text, which may hold line breaks: keep them one line.
    let err = |message: String| TesseraError::Npy { path: path.to_path_buf(), message: one_line(&message) };
    let invalid = |message: String| err(format!("not a valid .npy file: {message}"));
    let (mut file, meta) = open_regular(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix).map_err(|_| invalid("too short for the magic and version".into()))?;
    if &prefix[..MAGIC.len()] != MAGIC {
        return Err(invalid("magic not found".into()));
    }
    let (major, minor) = (prefix[6], prefix[7]);
    let header_len = match major {
        1 => {
            let mut len = [0u8; 2];
            file.read_exact(&mut len).map_err(|_| invalid("too short for the header length".into()))?;
            u16::from_le_bytes(len) as usize
        }
        2 | 3 => {
            let mut len = [0u8; 4];
            file.read_exact(&mut len).map_err(|_| invalid("too short for the header length".into()))?;
            u32::from_le_bytes(len) as usize
        }
        _ => return Err(invalid(format!("unsupported format version {major}.{minor}"))),
    };
    if header_len > MAX_HEADER_BYTES {
        return Err(invalid(format!("a header of {header_len} bytes (at most {MAX_HEADER_BYTES} are accepted)")));
    }
    let mut header = vec![0u8; header_len];
    file.read_exact(&mut header).map_err(|_| invalid(format!("the file ends inside its {header_len}-byte header")))?;
    // Versions 1 and 2 store latin-1 text, version 3 UTF-8.
    let text = if major == 3 {
        String::from_utf8(header).map_err(|_| invalid("the header is not UTF-8".into()))?
    } else {
        header.iter().map(|&b| char::from(b)).collect()
    };
    let header = parse_header(&text).map_err(invalid)?;
    if header.fortran_order {
        return Err(err("Fortran-order arrays are not supported; save with numpy.ascontiguousarray".into()));
    }
    let Some(&(descr, size)) = accepted.iter().find(|(d, _)| header.descr == *d) else {
        return Err(err(format!("unsupported dtype {}: expected {expected}, little-endian", header.descr)));
    };
    let too_many = || err(format!("shape {:?} has more elements than this machine can address", header.shape));
    let shape: Vec<usize> = header.shape.iter().map(|&d| usize::try_from(d)).collect::<Result<_, _>>().map_err(|_| too_many())?;
    let elements = elements(&shape).ok_or_else(too_many)?;
    let payload = elements.checked_mul(size).ok_or_else(too_many)?;
    let data_start = (prefix.len() + if major == 1 { 2 } else { 4 } + header_len) as u64;
    let held = meta.len().saturating_sub(data_start);
    if held != payload as u64 {
        return Err(err(format!("the header's shape {shape:?} of {descr} needs {payload} bytes of data, but the file holds {held}")));
    }
    let mut bytes = host_vec(payload).map_err(err)?;
    // Never more than the header implies, even if the file grew since it was measured.
    (&mut file).take(payload as u64).read_to_end(&mut bytes).map_err(|e| err(format!("reading {descr} data: {e}")))?;
    if bytes.len() != payload {
        return Err(err(format!("the data ends after {} of {payload} bytes", bytes.len())));
    }
    Ok(Payload { shape, elements, descr, bytes })
}

/// The three keys of a `.npy` header.
#[derive(Debug, PartialEq)]
struct Header {
    /// The dtype's description: the string itself, or the literal text of a structured one.
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// A Python literal of a header: what the three keys hold, and what may stand in for them.
#[derive(Debug)]
enum Literal {
    Str(String),
    Bool(bool),
    Int(u64),
    Seq(Vec<Literal>),
}

/// Parses the header text: a Python dict literal with `descr`, `fortran_order` and `shape`.
fn parse_header(text: &str) -> Result<Header, String> {
    let mut p = LiteralParser { text: text.trim_end(), at: 0 };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    p.expect('{')?;
    loop {
        if p.eat('}') {
            break;
        }
        let key = match p.literal(0)? {
            (Literal::Str(key), _) => key,
            (_, raw) => return Err(format!("the header's key {raw} is not a string")),
        };
        p.expect(':')?;
        let (value, raw) = p.literal(0)?;
        let slot_taken = match (key.as_str(), value) {
            ("descr", Literal::Str(s)) => descr.replace(s).is_some(),
            ("descr", _) => descr.replace(raw.to_string()).is_some(),
            ("fortran_order", Literal::Bool(b)) => fortran_order.replace(b).is_some(),
            ("shape", Literal::Seq(dims)) => {
                let dims = dims.into_iter().map(|d| match d {
                    Literal::Int(n) => Ok(n),
                    _ => Err(format!("the header's shape {raw} is not a tuple of sizes")),
                });
                shape.replace(dims.collect::<Result<Vec<u64>, String>>()?).is_some()
            }
            ("fortran_order" | "shape", _) => return Err(format!("the header's {key} is {raw}")),
            _ => return Err(format!("the header has an unknown key {key:?}")),
        };
        if slot_taken {
            return Err(format!("the header repeats the key {key:?}"));
        }
        if !p.eat(',') {
            p.expect('}')?;
            break;
        }
    }
    p.skip_space();
    if p.at != p.text.len() {
        return Err("text after the header's dict".into());
    }
    let missing = |key: &str| format!("the header has no {key:?}");
    Ok(Header {
        descr: descr.ok_or_else(|| missing("descr"))?,
        fortran_order: fortran_order.ok_or_else(|| missing("fortran_order"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
    })
}

/// A cursor over header text.
struct LiteralParser<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> LiteralParser<'a> {
    fn skip_space(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        if self.text[self.at..].starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected {c:?} at byte {} of the header", self.at))
        }
    }

    /// The next literal and its text.
    fn literal(&mut self, depth: usize) -> Result<(Literal, &'a str), String> {
        if depth > MAX_HEADER_DEPTH {
            return Err("the header nests too deeply".into());
        }
        self.skip_space();
        let start = self.at;
        let rest = &self.text[start..];
        let value = match rest.chars().next() {
            Some(quote @ ('\'' | '"')) => {
                let body = &rest[1..];
                let end = body.find(quote).ok_or("an unterminated string in the header")?;
                self.at += end + 2;
                Literal::Str(body[..end].to_string())
            }
            Some(open @ ('(' | '[')) => {
                let close = if open == '(' { ')' } else { ']' };
                self.at += 1;
                let mut items = Vec::new();
                while !self.eat(close) {
                    items.push(self.literal(depth + 1)?.0);
                    if !self.eat(',') {
                        self.expect(close)?;
                        break;
                    }
                }
                Literal::Seq(items)
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '-' => {
                let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')).unwrap_or(rest.len());
                let word = &rest[..len];
                self.at += len;
                match word {
                    "True" => Literal::Bool(true),
                    "False" => Literal::Bool(false),
                    // Python 2 wrote long integers with an `L`.
                    _ => match word.strip_suffix('L').unwrap_or(word).parse::<u64>() {
                        Ok(n) => Literal::Int(n),
                        Err(_) => return Err(format!("{word} in the header is not a size")),
                    },
                }
            }
            _ => return Err(format!("unexpected text at byte {start} of the header")),
        };
        Ok((value, &self.text[start..self.at]))
    }
}

/// Writes `data` as a little-endian f32 array atomically (temp file + rename). A command with
/// several outputs stages them together in an [`crate::outputs::OutputSet`] instead.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), TesseraError> {
    let err = |message: String| TesseraError::Npy { path: path.to_path_buf(), message: one_line(&message) };
    if let Some(problem) = crate::outputs::target_problem(path) {
        return Err(err(problem));
    }
    let mut tmp = crate::outputs::create_temp(path).map_err(err)?;
    encode_f32(tmp.as_file_mut(), shape, data).map_err(err)?;
    tmp.persist(path).map_err(|e| err(format!("cannot move the result into place: {}", e.error)))?;
    Ok(())
}

/// The `.npy` encoding of a little-endian f32 array, written to `file`.
pub(crate) fn encode_f32(file: &mut File, shape: &[usize], data: &[f32]) -> Result<(), String> {
    if shape.iter().product::<usize>() != data.len() {
        return Err(format!("shape {shape:?} does not hold the {} values to write", data.len()));
    }
    let mut out = BufWriter::new(file);
    let shape64: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape64)
        .writer(&mut out)
        .begin_nd()
        .map_err(|e| format!("writing header: {e}"))?;
    writer.extend(data.iter().copied()).map_err(|e| format!("writing data: {e}"))?;
    writer.finish().map_err(|e| format!("writing data: {e}"))?;
    out.flush().map_err(|e| format!("writing data: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_f32() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        write_npy_f32(&path, &[2, 3, 4], &data).unwrap();
        let back = read_npy(&path).unwrap();
        assert_eq!(back.shape, vec![2, 3, 4]);
        assert_eq!(back.data, data);
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = read_npy(Path::new("/nonexistent/q.npy")).unwrap_err().to_string();
        assert!(err.contains("q.npy") && err.contains("cannot open"), "{err}");
    }

    #[test]
    fn garbage_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.npy");
        std::fs::write(&path, b"definitely not numpy").unwrap();
        let err = read_npy(&path).unwrap_err().to_string();
        assert!(err.contains("not a valid .npy"), "{err}");
    }
}

#[cfg(test)]
mod reader_tests {
    use super::*;

    /// A version-1 `.npy` file of `header` (the dict text) and `data`, padded as numpy pads.
    fn raw_npy(header: &str, data: &[u8]) -> Vec<u8> {
        const ALIGN: usize = 64;
        let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
        let text = format!("{header}{}\n", " ".repeat(unpadded.next_multiple_of(ALIGN) - unpadded));
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn file(dir: &tempfile::TempDir, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join("a.npy");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn header(descr: &str, shape: &str) -> String {
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")
    }

    #[test]
    fn every_accepted_type_is_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let halves: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        let a = read_npy(&file(&dir, &raw_npy(&header("<f2", "(2,)"), &halves))).unwrap();
        assert_eq!((a.shape, a.data), (vec![2], vec![1.5, -2.0]));
        let ints: Vec<u8> = [7i32, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let i = read_npy_indices(&file(&dir, &raw_npy(&header("<i4", "(1, 2)"), &ints))).unwrap();
        assert_eq!((i.shape, i.data), (vec![1, 2], vec![7, -1]));
        let longs: Vec<u8> = [i64::MAX].iter().flat_map(|v| v.to_le_bytes()).collect();
        let l = read_npy_indices(&file(&dir, &raw_npy(&header("<i8", "()"), &longs))).unwrap();
        assert_eq!((l.shape, l.data), (vec![], vec![i64::MAX]));
        let e = read_npy(&file(&dir, &raw_npy(&header("<i8", "()"), &longs))).unwrap_err().to_string();
        assert!(e.contains("unsupported dtype <i8: expected <f4 (float32) or <f2 (float16), little-endian"), "{e}");
        let e = read_npy(&file(&dir, &raw_npy(&header(">f4", "()"), &[0; 4]))).unwrap_err().to_string();
        assert!(e.contains("unsupported dtype >f4"), "{e}");
    }

    #[test]
    fn an_element_count_that_overflows_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // 2^64 elements; and 3 x 6148914691236517206, which wraps to 2 in unchecked arithmetic.
        for shape in ["(4294967296, 4294967296)", "(3, 6148914691236517206)", "(18446744073709551615, 2)"] {
            let e = read_npy(&file(&dir, &raw_npy(&header("<f4", shape), &[0; 8]))).unwrap_err().to_string();
            assert!(e.contains("a.npy") && e.contains("more elements than this machine can address"), "{shape}: {e}");
        }
        // The bytes overflow although the count does not.
        let e = read_npy(&file(&dir, &raw_npy(&header("<f4", "(4611686018427387904,)"), &[]))).unwrap_err().to_string();
        assert!(e.contains("more elements"), "{e}");
        let e = read_npy(&file(&dir, &raw_npy(&header("<f4", "(18446744073709551616,)"), &[]))).unwrap_err().to_string();
        assert!(e.contains("not a valid .npy") && e.contains("not a size"), "{e}");
    }

    #[test]
    fn the_payload_must_be_exactly_what_the_header_implies() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_npy(&file(&dir, &raw_npy(&header("<f4", "(4,)"), &[0; 8]))).unwrap_err().to_string();
        assert!(e.contains("needs 16 bytes of data, but the file holds 8"), "{e}");
        let e = read_npy(&file(&dir, &raw_npy(&header("<f4", "(1,)"), &[0; 8]))).unwrap_err().to_string();
        assert!(e.contains("needs 4 bytes of data, but the file holds 8"), "{e}");
        // No data at all for a huge but addressable count: refused before any allocation.
        let e = read_npy(&file(&dir, &raw_npy(&header("<f4", "(1000000000000,)"), &[]))).unwrap_err().to_string();
        assert!(e.contains("the file holds 0"), "{e}");
        let empty = read_npy(&file(&dir, &raw_npy(&header("<f4", "(0, 4294967296)"), &[]))).unwrap();
        assert_eq!((empty.shape, empty.data.len()), (vec![0, 4294967296], 0));
    }

    #[test]
    fn non_regular_files_are_refused_before_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_npy(dir.path()).unwrap_err().to_string();
        assert!(e.contains("cannot open: not a regular file but a directory"), "{e}");
        #[cfg(unix)]
        {
            let e = read_npy_indices(Path::new("/dev/zero")).unwrap_err().to_string();
            assert!(e.contains("/dev/zero: cannot open: not a regular file but a character device"), "{e}");
            // Opening a FIFO would wait for a writer: it must be refused without opening it.
            let fifo = dir.path().join("fifo.npy");
            let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path; mkfifo only creates a file system entry.
            assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
            let e = read_npy(&fifo).unwrap_err().to_string();
            assert!(e.contains("not a regular file but a FIFO"), "{e}");
        }
    }

    #[test]
    fn damaged_headers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fortran = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }";
        let e = read_npy(&file(&dir, &raw_npy(fortran, &[0; 16]))).unwrap_err().to_string();
        assert!(e.contains("Fortran-order"), "{e}");
        let structured = "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }";
        let e = read_npy(&file(&dir, &raw_npy(structured, &[0; 4]))).unwrap_err().to_string();
        assert!(e.contains("unsupported dtype [('a', '<f4')]"), "{e}");
        for bad in [
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x",
            "{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': ((((((((((1,),),),),),),),),),)}",
        ] {
            let e = read_npy(&file(&dir, &raw_npy(bad, &[0; 4]))).unwrap_err().to_string();
            assert!(e.contains("not a valid .npy file"), "{bad}: {e}");
        }
        // A header length beyond the cap is refused before anything is allocated for it.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[2, 0]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = read_npy(&file(&dir, &huge)).unwrap_err().to_string();
        assert!(e.contains("at most 10000"), "{e}");
        let e = read_npy(&file(&dir, &raw_npy(&header("<f4", "(1,)"), &[])[..20])).unwrap_err().to_string();
        assert!(e.contains("ends inside"), "{e}");
    }

    #[test]
    fn numpy_headers_of_every_version_parse() {
        let h = parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }   \n").unwrap();
        assert_eq!(h, Header { descr: "<f4".into(), fortran_order: false, shape: vec![3, 4] });
        let h = parse_header("{\"shape\": (5L,), \"fortran_order\": False, \"descr\": \"<i8\"}").unwrap();
        assert_eq!(h, Header { descr: "<i8".into(), fortran_order: false, shape: vec![5] });
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{}\n", header("<f4", "(1,)"));
        let mut v3 = MAGIC.to_vec();
        v3.extend_from_slice(&[3, 0]);
        v3.extend_from_slice(&(text.len() as u32).to_le_bytes());
        v3.extend_from_slice(text.as_bytes());
        v3.extend_from_slice(&2.5f32.to_le_bytes());
        assert_eq!(read_npy(&file(&dir, &v3)).unwrap().data, [2.5]);
    }
}
