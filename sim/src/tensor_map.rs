//! Tensor maps: what a `cp.async.bulk.tensor` reads from its `[tensorMap, {coords}]` operand.
//!
//! The layout and validation rules are documented on [`TensorMap`].

use crate::error::SimError;

/// Shared-memory swizzling of a tensor copy (PTX ISA "Tensor: Swizzling Modes"), 16-byte
/// granularity, applied to absolute shared-memory byte addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Swizzle {
    /// The box lands densely, row-major.
    #[default]
    None,
    /// Address bit 4 ^= bit 7 (the pattern repeats every 256 bytes).
    B32,
    /// Address bits \[4,6) ^= bits \[7,9) (repeats every 512 bytes).
    B64,
    /// Address bits \[4,7) ^= bits \[7,10) (repeats every 1024 bytes).
    B128,
}

impl Swizzle {
    /// The swizzle span in bytes: the most the box's inner extent may be (0 for none).
    pub fn span(self) -> usize {
        match self {
            Swizzle::None => 0,
            Swizzle::B32 => 32,
            Swizzle::B64 => 64,
            Swizzle::B128 => 128,
        }
    }

    /// The shared-memory byte address where the byte at linear (unswizzled) shared address `addr`
    /// lands: the 16-byte chunk index within each 128-byte line (bits 4..7) is XOR-ed with the line
    /// index (bits 7..10), masked to the mode's width, as the ISA's tables show.
    pub fn apply(self, addr: u64) -> u64 {
        let bits = match self {
            Swizzle::None => return addr,
            Swizzle::B32 => 1,
            Swizzle::B64 => 2,
            Swizzle::B128 => 3,
        };
        let m = (1u64 << bits) - 1;
        addr ^ (((addr >> 7) & m) << 4)
    }

    fn code(self) -> u8 {
        match self {
            Swizzle::None => 0,
            Swizzle::B32 => 1,
            Swizzle::B64 => 2,
            Swizzle::B128 => 3,
        }
    }
}

/// What a tensor load writes for box elements outside the tensor (PTX ISA "Tensor: Out of
/// Boundary Access").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OobFill {
    /// Zeros.
    #[default]
    Zero,
    /// A NaN of the element size (all bits set except the sign: `0x7fff`, `0x7fffffff`, ...), the
    /// simulator's stand-in for the hardware's "OOB-NaN".
    Nan,
}

/// A tiled tensor map: a tensor of up to 5 dimensions in global memory and the box one tensor copy
/// moves.
///
/// On a GPU the 128-byte `CUtensorMap` is an opaque object built by `cuTensorMapEncodeTiled` (PTX
/// ISA "Tensor-map"); the simulator reads a Tessera-defined encoding of the same information from the
/// same 128 bytes (a kernel parameter declared `.param .align 64 .b8 p[128]`, or global memory). The
/// layout is little-endian:
///
/// | bytes    | field                                                                          |
/// |----------|--------------------------------------------------------------------------------|
/// | 0..4     | magic `u32` [`TensorMap::MAGIC`] ("TMAP")                                      |
/// | 4..8     | `u32` rank, 1..=5                                                              |
/// | 8..16    | `u64` global address (16-byte aligned)                                         |
/// | 16..56   | `u64` global dims\[5\], in elements, innermost first (unused: 1)               |
/// | 56..88   | `u64` global strides\[4\], in bytes: the strides of dims 1..rank (dim 0 is contiguous; unused: 0) |
/// | 88..108  | `u32` box dims\[5\], in elements, innermost first, each 1..=256 (unused: 1)    |
/// | 108      | `u8` element bytes: 1, 2, 4 or 8                                               |
/// | 109      | `u8` swizzle: 0 none, 1 32B, 2 64B, 3 128B                                     |
/// | 110      | `u8` out-of-bounds fill: 0 zeros, 1 NaN                                        |
/// | 111..128 | reserved, 0                                                                    |
///
/// [`TensorMap::decode`] validates as `cuTensorMapEncodeTiled` documents: rank 1..=5, global
/// address 16-byte aligned, dims 1..=2^31, strides multiples of 16 and below 2^40, box dims 1..=256,
/// the box's inner extent (box\[0\] x element bytes) a multiple of 16 bytes and, with a swizzle, at
/// most the swizzle span (32, 64 or 128 bytes); the NaN fill needs a floating-point element size (2,
/// 4 or 8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorMap {
    /// Number of dimensions, 1..=5.
    pub rank: u32,
    /// Address of element (0, 0, ...) in global memory.
    pub global_address: u64,
    /// Size of each dimension in elements, innermost first (entries past `rank` are 1).
    pub global_dims: [u64; 5],
    /// Byte strides of dimensions 1..rank (`global_strides[i]` is the stride of dimension i + 1;
    /// dimension 0 is contiguous; entries past `rank - 1` are 0).
    pub global_strides: [u64; 4],
    /// Box size in elements, innermost first (entries past `rank` are 1).
    pub box_dims: [u32; 5],
    /// Bytes per element: 1, 2, 4 or 8.
    pub elem_bytes: u8,
    pub swizzle: Swizzle,
    pub oob_fill: OobFill,
}

fn bad(msg: impl Into<String>) -> SimError {
    SimError::TensorMap(msg.into())
}

impl TensorMap {
    /// "TMAP" as a little-endian `u32`.
    pub const MAGIC: u32 = 0x5041_4D54;
    /// Size of the encoding (a `CUtensorMap`).
    pub const BYTES: usize = 128;

    /// A validated tiled tensor map, like `cuTensorMapEncodeTiled`: `dims` and `box_dims` innermost
    /// first (1 to 5 entries, the same number), `strides` the byte strides of dims 1.. (one fewer).
    pub fn tiled(
        global_address: u64,
        elem_bytes: u8,
        dims: &[u64],
        strides: &[u64],
        box_dims: &[u32],
        swizzle: Swizzle,
        oob_fill: OobFill,
    ) -> Result<TensorMap, SimError> {
        let rank = dims.len();
        if !(1..=5).contains(&rank) || box_dims.len() != rank || strides.len() + 1 != rank {
            return Err(bad(format!(
                "rank {rank} with {} box dims and {} strides (want 1..=5 dims, as many box dims, one stride fewer)",
                box_dims.len(),
                strides.len()
            )));
        }
        let mut m = TensorMap {
            rank: rank as u32,
            global_address,
            global_dims: [1; 5],
            global_strides: [0; 4],
            box_dims: [1; 5],
            elem_bytes,
            swizzle,
            oob_fill,
        };
        m.global_dims[..rank].copy_from_slice(dims);
        m.global_strides[..rank - 1].copy_from_slice(strides);
        m.box_dims[..rank].copy_from_slice(box_dims);
        m.validate()?;
        Ok(m)
    }

    /// Checks the rules of `cuTensorMapEncodeTiled` (see the module docs).
    pub fn validate(&self) -> Result<(), SimError> {
        let rank = self.rank as usize;
        if !(1..=5).contains(&rank) {
            return Err(bad(format!("rank {rank} is not in 1..=5")));
        }
        if !matches!(self.elem_bytes, 1 | 2 | 4 | 8) {
            return Err(bad(format!("element size {} bytes is not 1, 2, 4 or 8", self.elem_bytes)));
        }
        if self.global_address % 16 != 0 {
            return Err(bad(format!("global address {:#x} is not 16-byte aligned", self.global_address)));
        }
        for (i, &d) in self.global_dims[..rank].iter().enumerate() {
            if d == 0 || d > 1 << 31 {
                return Err(bad(format!("global dim {i} is {d}, not in 1..=2^31")));
            }
        }
        for (i, &s) in self.global_strides[..rank - 1].iter().enumerate() {
            if s % 16 != 0 || s >= 1 << 40 {
                return Err(bad(format!("global stride {} is {s} bytes, not a multiple of 16 below 2^40", i + 1)));
            }
        }
        for (i, &b) in self.box_dims[..rank].iter().enumerate() {
            if !(1..=256).contains(&b) {
                return Err(bad(format!("box dim {i} is {b}, not in 1..=256")));
            }
        }
        let inner = self.box_dims[0] as usize * self.elem_bytes as usize;
        if inner % 16 != 0 {
            return Err(bad(format!("the box's inner extent is {inner} bytes, not a multiple of 16")));
        }
        let span = self.swizzle.span();
        if span != 0 && inner > span {
            return Err(bad(format!("the box's inner extent is {inner} bytes, more than the {span}-byte swizzle span")));
        }
        if self.oob_fill == OobFill::Nan && self.elem_bytes == 1 {
            return Err(bad("the NaN out-of-bounds fill needs a floating-point element size (2, 4 or 8 bytes)"));
        }
        Ok(())
    }

    /// Bytes of one box (what a tensor load delivers and signals with complete-tx).
    pub fn box_bytes(&self) -> usize {
        self.box_dims[..self.rank as usize].iter().map(|&b| b as usize).product::<usize>() * self.elem_bytes as usize
    }

    /// The 128-byte encoding (see the module docs). Does not validate: [`TensorMap::decode`] does.
    pub fn encode(&self) -> [u8; 128] {
        let mut out = [0u8; 128];
        out[0..4].copy_from_slice(&Self::MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&self.rank.to_le_bytes());
        out[8..16].copy_from_slice(&self.global_address.to_le_bytes());
        for (i, d) in self.global_dims.iter().enumerate() {
            out[16 + 8 * i..24 + 8 * i].copy_from_slice(&d.to_le_bytes());
        }
        for (i, s) in self.global_strides.iter().enumerate() {
            out[56 + 8 * i..64 + 8 * i].copy_from_slice(&s.to_le_bytes());
        }
        for (i, b) in self.box_dims.iter().enumerate() {
            out[88 + 4 * i..92 + 4 * i].copy_from_slice(&b.to_le_bytes());
        }
        out[108] = self.elem_bytes;
        out[109] = self.swizzle.code();
        out[110] = match self.oob_fill {
            OobFill::Zero => 0,
            OobFill::Nan => 1,
        };
        out
    }

    /// Decodes and validates the encoding (the first 128 bytes of `bytes`).
    pub fn decode(bytes: &[u8]) -> Result<TensorMap, SimError> {
        if bytes.len() < Self::BYTES {
            return Err(bad(format!("{} bytes, a tensor map has 128", bytes.len())));
        }
        let u32_at = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let magic = u32_at(0);
        if magic != Self::MAGIC {
            return Err(bad(format!(
                "magic {magic:#010x} is not {:#010x} (\"TMAP\"): not a simulator tensor map (build it with TensorMap::encode)",
                Self::MAGIC
            )));
        }
        let swizzle = match bytes[109] {
            0 => Swizzle::None,
            1 => Swizzle::B32,
            2 => Swizzle::B64,
            3 => Swizzle::B128,
            s => return Err(bad(format!("swizzle code {s} is not 0..=3"))),
        };
        let oob_fill = match bytes[110] {
            0 => OobFill::Zero,
            1 => OobFill::Nan,
            f => return Err(bad(format!("out-of-bounds fill code {f} is not 0 or 1"))),
        };
        if bytes[111..128].iter().any(|&b| b != 0) {
            return Err(bad("reserved bytes 111..128 are not zero"));
        }
        let mut m = TensorMap {
            rank: u32_at(4),
            global_address: u64_at(8),
            global_dims: [0; 5],
            global_strides: [0; 4],
            box_dims: [0; 5],
            elem_bytes: bytes[108],
            swizzle,
            oob_fill,
        };
        for i in 0..5 {
            m.global_dims[i] = u64_at(16 + 8 * i);
            m.box_dims[i] = u32_at(88 + 4 * i);
        }
        for i in 0..4 {
            m.global_strides[i] = u64_at(56 + 8 * i);
        }
        m.validate()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swizzle_matches_the_isa_tables() {
        // 128B: row r of 16-byte chunks (128-byte lines) holds chunk c at position c ^ (r % 8).
        for r in 0..16u64 {
            for c in 0..8u64 {
                assert_eq!(Swizzle::B128.apply(r * 128 + c * 16 + 5), r * 128 + ((c ^ (r % 8)) * 16) + 5);
                assert_eq!(Swizzle::B64.apply(r * 128 + c * 16), r * 128 + ((c ^ (r % 4)) * 16));
                assert_eq!(Swizzle::B32.apply(r * 128 + c * 16), r * 128 + ((c ^ (r % 2)) * 16));
                assert_eq!(Swizzle::None.apply(r * 128 + c * 16), r * 128 + c * 16);
            }
        }
    }

    #[test]
    fn encode_decode_round_trip_and_validation() {
        let m = TensorMap::tiled(0x7000_0000_0100, 2, &[100, 64, 3], &[256, 256 * 64], &[64, 32, 2], Swizzle::B128, OobFill::Zero).unwrap();
        let bytes = m.encode();
        assert_eq!(&bytes[0..4], b"TMAP");
        assert_eq!(TensorMap::decode(&bytes).unwrap(), m);
        assert_eq!(m.box_bytes(), 64 * 32 * 2 * 2);
        let err = |m: TensorMap| TensorMap::decode(&m.encode()).unwrap_err().to_string();
        assert!(err(TensorMap { global_address: 0x7000_0000_0108, ..m }).contains("16-byte aligned"));
        assert!(err(TensorMap { global_strides: [200, 256 * 64, 0, 0], ..m }).contains("multiple of 16"));
        assert!(err(TensorMap { box_dims: [72, 32, 2, 1, 1], ..m }).contains("swizzle span"));
        assert!(err(TensorMap { box_dims: [4, 32, 2, 1, 1], ..m }).contains("multiple of 16"));
        assert!(err(TensorMap { rank: 6, ..m }).contains("rank"));
        let mut b = bytes;
        b[0] = 0;
        assert!(TensorMap::decode(&b).unwrap_err().to_string().contains("magic"));
        assert!(TensorMap::tiled(0, 4, &[8], &[], &[4, 4], Swizzle::None, OobFill::Zero).is_err());
    }
}
