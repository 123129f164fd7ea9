//! The NIfTI-1 header: parsed with the `nifti` crate, then checked field by field so that
//! every problem is refused with a sentence, and encoded again for writing.

use std::path::Path;

use super::geometry::Geometry;
use crate::{Error, Result};

/// Size of a NIfTI-1 header in bytes.
pub const HEADER_SIZE: usize = 348;
/// Header plus the 4-byte extension flag: where a written file's voxels start.
pub(crate) const DATA_OFFSET: usize = 352;
/// Size of a NIfTI-2 header, recognised to refuse it by name.
const NIFTI2_HEADER_SIZE: i32 = 540;

/// Voxel datatypes lits reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    /// `uint8` (code 2).
    U8,
    /// `int8` (code 256).
    I8,
    /// `uint16` (code 512).
    U16,
    /// `int16` (code 4).
    I16,
    /// `uint32` (code 768).
    U32,
    /// `int32` (code 8).
    I32,
    /// `float32` (code 16).
    F32,
    /// `float64` (code 64).
    F64,
}

impl Datatype {
    /// The datatype of a NIfTI `datatype` code, or a sentence saying why it is not read.
    fn from_code(code: i16) -> std::result::Result<Self, String> {
        Ok(match code {
            2 => Datatype::U8,
            256 => Datatype::I8,
            512 => Datatype::U16,
            4 => Datatype::I16,
            768 => Datatype::U32,
            8 => Datatype::I32,
            16 => Datatype::F32,
            64 => Datatype::F64,
            _ => {
                let name = match code {
                    0 => "unknown",
                    1 => "binary (1 bit)",
                    32 => "complex64",
                    128 => "RGB24",
                    1024 => "int64",
                    1280 => "uint64",
                    1536 => "float128",
                    1792 => "complex128",
                    2048 => "complex256",
                    2304 => "RGBA32",
                    _ => "not a NIfTI datatype",
                };
                return Err(format!(
                    "unsupported datatype {name} (code {code}); lits reads uint8, int8, uint16, int16, \
                     uint32, int32, float32 and float64"
                ));
            }
        })
    }

    /// The NIfTI `datatype` code.
    pub fn code(self) -> i16 {
        match self {
            Datatype::U8 => 2,
            Datatype::I8 => 256,
            Datatype::U16 => 512,
            Datatype::I16 => 4,
            Datatype::U32 => 768,
            Datatype::I32 => 8,
            Datatype::F32 => 16,
            Datatype::F64 => 64,
        }
    }

    /// Bytes per voxel.
    pub fn size(self) -> usize {
        match self {
            Datatype::U8 | Datatype::I8 => 1,
            Datatype::U16 | Datatype::I16 => 2,
            Datatype::U32 | Datatype::I32 | Datatype::F32 => 4,
            Datatype::F64 => 8,
        }
    }

    /// numpy's name for it (`"int16"`, `"float32"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Datatype::U8 => "uint8",
            Datatype::I8 => "int8",
            Datatype::U16 => "uint16",
            Datatype::I16 => "int16",
            Datatype::U32 => "uint32",
            Datatype::I32 => "int32",
            Datatype::F32 => "float32",
            Datatype::F64 => "float64",
        }
    }

    /// Whether the voxels are floating point (and so may be NaN or infinite).
    pub fn is_float(self) -> bool {
        matches!(self, Datatype::F32 | Datatype::F64)
    }
}

/// Byte order of a file's header and voxels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// Little-endian (what lits writes).
    Little,
    /// Big-endian.
    Big,
}

impl ByteOrder {
    /// `"little"` or `"big"`.
    pub fn name(self) -> &'static str {
        match self {
            ByteOrder::Little => "little",
            ByteOrder::Big => "big",
        }
    }
}

/// What a NIfTI-1 header says, checked: everything needed to read the voxels.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Array shape `[i, j, k]` (trailing singleton dimensions dropped, missing ones 1).
    pub shape: [usize; 3],
    /// Voxel datatype.
    pub datatype: Datatype,
    /// Byte order of the file.
    pub byte_order: ByteOrder,
    /// Whether the file is gzip-compressed (recognised from its content).
    pub gzip: bool,
    /// Byte offset of the voxels in the (decompressed) file.
    pub vox_offset: usize,
    /// `scl_slope` as stored.
    pub scl_slope: f32,
    /// `scl_inter` as stored.
    pub scl_inter: f32,
    /// Geometry (affine, sform, qform, pixdim, units).
    pub geometry: Geometry,
}

impl Header {
    /// Number of voxels.
    pub fn voxels(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Bytes of voxel data the header promises.
    pub fn data_bytes(&self) -> u64 {
        self.voxels() * self.datatype.size() as u64
    }

    /// The scaling applied to stored values (nibabel's rule: used when the slope is finite
    /// and non-zero), or `None` when values are read as stored.
    pub fn scaling(&self) -> Option<(f32, f32)> {
        let (s, i) = (self.scl_slope, self.scl_inter);
        if s.is_finite() && s != 0.0 && !(s == 1.0 && i == 0.0) {
            Some((s, i))
        } else {
            None
        }
    }

    /// Parse and check the header at the start of `bytes` (at least the first 348 bytes of
    /// the decompressed file, if the file has them) of the file `path`.
    pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Header> {
        let bad = |msg: String| Error::invalid(path, msg);
        if bytes.len() < 4 {
            return Err(bad(format!("not a NIfTI file: only {} bytes long", bytes.len())));
        }
        let size_le = i32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
        let size_be = i32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"));
        if size_le == NIFTI2_HEADER_SIZE || size_be == NIFTI2_HEADER_SIZE {
            return Err(bad("NIfTI-2 files are not supported; convert it to NIfTI-1 (e.g. with nibabel)".into()));
        }
        if size_le != HEADER_SIZE as i32 && size_be != HEADER_SIZE as i32 {
            return Err(bad(format!("not a NIfTI-1 file: header size field is {size_le}, expected {HEADER_SIZE}")));
        }
        if bytes.len() < HEADER_SIZE {
            return Err(bad(format!("header cut short: {} of {HEADER_SIZE} bytes", bytes.len())));
        }
        match &bytes[344..348] {
            b"n+1\0" => {}
            b"ni1\0" => return Err(bad("header of a .hdr/.img pair; lits reads single-file .nii and .nii.gz".into())),
            m => return Err(bad(format!("wrong magic {:?}, expected \"n+1\"", String::from_utf8_lossy(m)))),
        }
        let h = nifti::NiftiHeader::from_reader(&bytes[..HEADER_SIZE]).map_err(|e| bad(format!("cannot parse the NIfTI-1 header: {e}")))?;
        // The crate picks the byte order from dim[0]; sizeof_hdr tells us which is right.
        if h.sizeof_hdr != HEADER_SIZE as i32 {
            return Err(bad(format!("dim[0] = {} is not a number of dimensions 1..7", h.dim[0] as i16)));
        }
        let byte_order = match h.endianness {
            nifti::Endianness::Little => ByteOrder::Little,
            nifti::Endianness::Big => ByteOrder::Big,
        };
        let ndim = h.dim[0] as i16;
        if !(1..=7).contains(&ndim) {
            return Err(bad(format!("dim[0] = {ndim} is not a number of dimensions 1..7")));
        }
        let mut shape = [1usize; 3];
        for a in 1..=ndim as usize {
            // NIfTI-1 dims are signed 16-bit; the crate hands them over as u16.
            let d = h.dim[a] as i16;
            if d <= 0 {
                return Err(bad(format!("dimension {a} is {d}; every dimension must be at least 1")));
            }
            if a <= 3 {
                shape[a - 1] = d as usize;
            } else if d > 1 {
                return Err(bad(format!(
                    "dimension {a} has {d} entries (shape {:?}); lits reads 3-D volumes, or 4-D with a single time point",
                    &h.dim[1..=ndim as usize].iter().map(|&v| v as i16).collect::<Vec<_>>()
                )));
            }
        }
        let datatype = Datatype::from_code(h.datatype).map_err(bad)?;
        let off = h.vox_offset;
        if !off.is_finite() || off < DATA_OFFSET as f32 || off.fract() != 0.0 {
            return Err(bad(format!("vox_offset {off} is not a whole number of bytes at or after the header's end ({DATA_OFFSET})")));
        }
        if h.scl_slope.is_finite() && h.scl_slope != 0.0 && !h.scl_inter.is_finite() {
            return Err(bad(format!("scl_slope is {} but scl_inter is {}", h.scl_slope, h.scl_inter)));
        }
        let mut geometry = Geometry {
            affine: [[0.0; 4]; 4],
            sform_code: h.sform_code,
            srow: [h.srow_x, h.srow_y, h.srow_z],
            qform_code: h.qform_code,
            quatern: [h.quatern_b, h.quatern_c, h.quatern_d],
            qoffset: [h.quatern_x, h.quatern_y, h.quatern_z],
            pixdim: h.pixdim,
            xyzt_units: h.xyzt_units,
        };
        geometry.affine = geometry.best_affine(shape).map_err(bad)?;
        if geometry.affine.iter().flatten().any(|v| !v.is_finite()) {
            return Err(bad(format!("the affine has NaN or infinite entries: {:?}", geometry.affine)));
        }
        Ok(Header {
            shape,
            datatype,
            byte_order,
            gzip: false,
            vox_offset: off as usize,
            scl_slope: h.scl_slope,
            scl_inter: h.scl_inter,
            geometry,
        })
    }
}

/// The 352 bytes (header and an empty extension flag) that start a little-endian
/// single-file NIfTI-1 volume of `shape` and `datatype` with the given scaling and geometry.
pub(crate) fn encode(shape: [usize; 3], datatype: Datatype, slope: f32, inter: f32, g: &Geometry) -> [u8; DATA_OFFSET] {
    let mut b = [0u8; DATA_OFFSET];
    let mut put = |off: usize, bytes: &[u8]| b[off..off + bytes.len()].copy_from_slice(bytes);
    put(0, &(HEADER_SIZE as i32).to_le_bytes());
    put(38, b"r");
    let mut dim = [1i16; 8];
    dim[0] = 3;
    for a in 0..3 {
        dim[a + 1] = shape[a] as i16;
    }
    for (a, d) in dim.iter().enumerate() {
        put(40 + 2 * a, &d.to_le_bytes());
    }
    put(70, &datatype.code().to_le_bytes());
    put(72, &(8 * datatype.size() as i16).to_le_bytes());
    for (a, p) in g.pixdim.iter().enumerate() {
        put(76 + 4 * a, &p.to_le_bytes());
    }
    put(108, &(DATA_OFFSET as f32).to_le_bytes());
    put(112, &slope.to_le_bytes());
    put(116, &inter.to_le_bytes());
    put(123, &[g.xyzt_units]);
    put(148, b"lits");
    put(252, &g.qform_code.to_le_bytes());
    put(254, &g.sform_code.to_le_bytes());
    for (a, v) in g.quatern.iter().chain(&g.qoffset).enumerate() {
        put(256 + 4 * a, &v.to_le_bytes());
    }
    for (a, v) in g.srow.iter().flatten().enumerate() {
        put(280 + 4 * a, &v.to_le_bytes());
    }
    put(344, b"n+1\0");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nifti::geometry::identity4;

    fn sample() -> (Geometry, [u8; DATA_OFFSET]) {
        let mut a = identity4();
        a[0][0] = -0.75;
        a[1][1] = -0.75;
        a[2][2] = 2.5;
        a[0][3] = 190.0;
        let g = Geometry::from_affine(a);
        let bytes = encode([5, 6, 7], Datatype::I16, 2.0, -1024.0, &g);
        (g, bytes)
    }

    #[test]
    fn encode_then_parse_gives_the_same_header() {
        let (g, bytes) = sample();
        let h = Header::parse(Path::new("x.nii"), &bytes).unwrap();
        assert_eq!(h.shape, [5, 6, 7]);
        assert_eq!(h.datatype, Datatype::I16);
        assert_eq!(h.byte_order, ByteOrder::Little);
        assert_eq!(h.vox_offset, DATA_OFFSET);
        assert_eq!(h.scaling(), Some((2.0, -1024.0)));
        assert_eq!(h.geometry, g);
    }

    #[test]
    fn each_broken_field_is_named() {
        let cases: Vec<(usize, Vec<u8>, &str)> = vec![
            (0, 100i32.to_le_bytes().to_vec(), "header size field is 100"),
            (0, 540i32.to_le_bytes().to_vec(), "NIfTI-2"),
            (344, b"ni1\0".to_vec(), ".hdr/.img pair"),
            (344, b"abc\0".to_vec(), "wrong magic"),
            (42, 0i16.to_le_bytes().to_vec(), "dimension 1 is 0"),
            (40, 4i16.to_le_bytes().to_vec(), "dimension 4 has"),
            (70, 32i16.to_le_bytes().to_vec(), "complex64"),
            (70, 128i16.to_le_bytes().to_vec(), "RGB24"),
            (108, 10f32.to_le_bytes().to_vec(), "vox_offset 10"),
            (116, f32::NAN.to_le_bytes().to_vec(), "scl_inter is NaN"),
        ];
        for (off, patch, want) in cases {
            let (_, mut bytes) = sample();
            bytes[off..off + patch.len()].copy_from_slice(&patch);
            if off == 40 {
                bytes[48..50].copy_from_slice(&3i16.to_le_bytes()); // dim[4] = 3 time points
            }
            let err = Header::parse(Path::new("bad.nii"), &bytes).unwrap_err().to_string();
            assert!(err.starts_with("bad.nii: ") && err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn big_endian_headers_are_read() {
        let (g, le) = sample();
        let mut be = le;
        // Swap every multi-byte field: i32 at 0, 16 bit dims to slice_start, f32 pixdim to
        // glmin, i16 codes, f32 quatern and srow.
        let swap = |b: &mut [u8; DATA_OFFSET], off: usize, n: usize| b[off..off + n].reverse();
        swap(&mut be, 0, 4);
        for off in (40..56).step_by(2).chain((68..76).step_by(2)).chain([120, 252, 254]) {
            swap(&mut be, off, 2);
        }
        for off in (56..68).step_by(4).chain((76..120).step_by(4)).chain((124..148).step_by(4)).chain((256..328).step_by(4)) {
            swap(&mut be, off, 4);
        }
        let h = Header::parse(Path::new("be.nii"), &be).unwrap();
        assert_eq!(h.byte_order, ByteOrder::Big);
        assert_eq!(h.shape, [5, 6, 7]);
        assert_eq!(h.geometry, g);
    }
}
