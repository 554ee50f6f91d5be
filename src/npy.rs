//! The CLI's `.npy` contract: inputs are little-endian f32 or f16 arrays in C order (adapter ids:
//! int32 or int64); outputs are
//! little-endian f32, written to a temporary file beside the destination and renamed into place, so
//! a failed run never leaves a partial or stale output behind.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use npyz::{DType, NpyFile, WriterBuilder};

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
    let err = |message: String| TesseraError::Npy { path: path.to_path_buf(), message };
    let file = File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let npy = NpyFile::new(BufReader::new(file)).map_err(|e| err(format!("not a valid .npy file: {e}")))?;
    if npy.header().order() == npyz::Order::Fortran {
        return Err(err("Fortran-order arrays are not supported; save with numpy.ascontiguousarray".into()));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let type_str = match npy.dtype() {
        DType::Plain(ts) => ts.to_string(),
        other => return Err(err(format!("unsupported dtype {other:?}: expected <f4 (float32) or <f2 (float16)"))),
    };
    let data = match type_str.as_str() {
        "<f4" => npy.into_vec::<f32>().map_err(|e| err(format!("reading float32 data: {e}")))?,
        "<f2" => npy
            .into_vec::<half::f16>()
            .map_err(|e| err(format!("reading float16 data: {e}")))?
            .into_iter()
            .map(f32::from)
            .collect(),
        other => {
            return Err(err(format!("unsupported dtype {other}: expected <f4 (float32) or <f2 (float16), little-endian")))
        }
    };
    Ok(NpyArray { shape, data })
}

/// A dense C-order integer array (adapter ids), widened to i64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyIndices {
    pub shape: Vec<usize>,
    pub data: Vec<i64>,
}

/// Reads a little-endian int32 (`<i4`) or int64 (`<i8`) array.
pub fn read_npy_indices(path: &Path) -> Result<NpyIndices, TesseraError> {
    let err = |message: String| TesseraError::Npy { path: path.to_path_buf(), message };
    let file = File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let npy = NpyFile::new(BufReader::new(file)).map_err(|e| err(format!("not a valid .npy file: {e}")))?;
    if npy.header().order() == npyz::Order::Fortran {
        return Err(err("Fortran-order arrays are not supported; save with numpy.ascontiguousarray".into()));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let type_str = match npy.dtype() {
        DType::Plain(ts) => ts.to_string(),
        other => return Err(err(format!("unsupported dtype {other:?}: expected <i4 (int32) or <i8 (int64)"))),
    };
    let data = match type_str.as_str() {
        "<i4" => npy.into_vec::<i32>().map_err(|e| err(format!("reading int32 data: {e}")))?.into_iter().map(i64::from).collect(),
        "<i8" => npy.into_vec::<i64>().map_err(|e| err(format!("reading int64 data: {e}")))?,
        other => return Err(err(format!("unsupported dtype {other}: expected <i4 (int32) or <i8 (int64), little-endian"))),
    };
    Ok(NpyIndices { shape, data })
}

/// Writes `data` as a little-endian f32 array atomically (temp file + rename).
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), TesseraError> {
    let err = |message: String| TesseraError::Npy { path: path.to_path_buf(), message };
    debug_assert_eq!(shape.iter().product::<usize>(), data.len());
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| err(format!("cannot create a file in {}: {e}", dir.display())))?;
    {
        let mut out = BufWriter::new(tmp.as_file());
        let shape64: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape64)
            .writer(&mut out)
            .begin_nd()
            .map_err(|e| err(format!("writing header: {e}")))?;
        writer.extend(data.iter().copied()).map_err(|e| err(format!("writing data: {e}")))?;
        writer.finish().map_err(|e| err(format!("writing data: {e}")))?;
        out.flush().map_err(|e| err(format!("writing data: {e}")))?;
    }
    tmp.persist(path).map_err(|e| err(format!("cannot move the result into place: {e}")))?;
    Ok(())
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
