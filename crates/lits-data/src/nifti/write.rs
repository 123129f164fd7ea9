//! Writing `.nii.gz` (or `.nii`) with the source's geometry, atomically: the bytes go to a
//! temporary file beside the target, are synced, and only then renamed over the final name,
//! so a failure never leaves a half-written file there.

use std::path::Path;

use ndarray::Array3;

use super::geometry::{affines_close, Geometry, UNITS_MM};
use super::header::{encode, Datatype, DATA_OFFSET};
use crate::atomic::write_atomic;
use crate::{Error, Image, Labels, Result, Volume};

/// gzip level for written files: libdeflate's default balance of size and speed.
const GZIP_LEVEL: i32 = 6;

/// How to store an image's voxels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ImageDtype {
    /// float32, unscaled.
    F32,
    /// int16 with `value = stored * slope + inter`; each value is rounded (half to even) to
    /// the nearest representable one, and a value outside the int16 range is an error.
    I16 {
        /// `scl_slope` (finite, non-zero).
        slope: f32,
        /// `scl_inter` (finite).
        inter: f32,
    },
}

/// Write an image atomically with the geometry of `geom` (see [`write_labels`]).
pub fn write_image(path: &Path, img: &Image, geom: &Geometry, dtype: ImageDtype) -> Result<()> {
    let kind = Kind::of(path)?;
    let g = geometry_for(img, geom);
    let shape = check_shape(path, img.shape())?;
    let bytes = match dtype {
        ImageDtype::F32 => {
            let bad = img.data.iter().filter(|v| !v.is_finite()).count();
            if bad > 0 {
                return Err(Error::invalid(path, format!("refusing to write {bad} NaN or infinite voxel(s)")));
            }
            file_bytes(shape, Datatype::F32, 1.0, 0.0, &g, &img.data, |v, out| out.extend_from_slice(&v.to_le_bytes()))
        }
        ImageDtype::I16 { slope, inter } => {
            if !slope.is_finite() || slope == 0.0 || !inter.is_finite() {
                return Err(Error::invalid(
                    path,
                    format!("int16 scaling needs a finite non-zero slope and a finite intercept, got {slope} and {inter}"),
                ));
            }
            let (s, i) = (f64::from(slope), f64::from(inter));
            let q = |v: f32| ((f64::from(v) - i) / s).round_ties_even();
            let fits = |v: &f32| v.is_finite() && (f64::from(i16::MIN)..=f64::from(i16::MAX)).contains(&q(*v));
            if let Some((idx, v)) = img.data.indexed_iter().find(|(_, v)| !fits(v)) {
                let bad = img.data.iter().filter(|v| !fits(v)).count();
                return Err(Error::invalid(
                    path,
                    format!(
                        "{bad} voxel(s) do not fit int16 with slope {slope} and intercept {inter} (first: {v} at [{}, {}, {}])",
                        idx.0, idx.1, idx.2
                    ),
                ));
            }
            file_bytes(shape, Datatype::I16, slope, inter, &g, &img.data, |v, out| out.extend_from_slice(&(q(*v) as i16).to_le_bytes()))
        }
    };
    kind.write(path, &bytes)
}

/// Write a label map atomically as uint8.
///
/// The header keeps `geom` exactly (sform and qform with their codes, pixdim, units) when
/// the volume's affine is `geom.affine` (to 1e-6); a volume on another grid gets a geometry
/// built from its own affine, keeping `geom`'s codes and units.
pub fn write_labels(path: &Path, labels: &Labels, geom: &Geometry) -> Result<()> {
    let kind = Kind::of(path)?;
    let g = geometry_for(labels, geom);
    let shape = check_shape(path, labels.shape())?;
    let bytes = file_bytes(shape, Datatype::U8, 1.0, 0.0, &g, &labels.data, |v, out| out.push(*v));
    kind.write(path, &bytes)
}

/// The geometry to write `v` with: `geom` when it describes `v`'s grid, else one made from
/// `v`'s affine with `geom`'s codes and units.
fn geometry_for<T>(v: &Volume<T>, geom: &Geometry) -> Geometry {
    if affines_close(&v.affine, &geom.affine, 1e-6) {
        return geom.clone();
    }
    let mut g = Geometry::from_affine(v.affine);
    if geom.sform_code > 0 {
        g.sform_code = geom.sform_code;
    }
    if geom.qform_code > 0 {
        g.qform_code = geom.qform_code;
    }
    if geom.xyzt_units & 0x07 != 0 {
        g.xyzt_units = geom.xyzt_units;
    } else {
        g.xyzt_units = UNITS_MM;
    }
    g.pixdim[4..].copy_from_slice(&geom.pixdim[4..]);
    g
}

fn check_shape(path: &Path, shape: [usize; 3]) -> Result<[usize; 3]> {
    if shape.iter().any(|&d| d == 0 || d > i16::MAX as usize) {
        return Err(Error::invalid(path, format!("shape {shape:?} cannot be stored: NIfTI-1 dimensions are 1..=32767")));
    }
    Ok(shape)
}

/// Header followed by the voxels in file order (`i` fastest), each appended by `put`.
fn file_bytes<T>(
    shape: [usize; 3],
    dt: Datatype,
    slope: f32,
    inter: f32,
    g: &Geometry,
    data: &Array3<T>,
    put: impl Fn(&T, &mut Vec<u8>),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(DATA_OFFSET + data.len() * dt.size());
    out.extend_from_slice(&encode(shape, dt, slope, inter, g));
    // The reversed-axes view iterates k slowest and i fastest: NIfTI's order.
    for v in data.t().iter() {
        put(v, &mut out);
    }
    out
}

/// Plain `.nii` or gzip-compressed `.nii.gz`, from the file name.
enum Kind {
    Nii,
    NiiGz,
}

impl Kind {
    fn of(path: &Path) -> Result<Kind> {
        let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        if name.ends_with(".nii.gz") {
            Ok(Kind::NiiGz)
        } else if name.ends_with(".nii") {
            Ok(Kind::Nii)
        } else {
            Err(Error::invalid(path, "output file name must end in .nii.gz or .nii"))
        }
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        match self {
            Kind::Nii => write_atomic(path, bytes),
            Kind::NiiGz => {
                let lvl = libdeflater::CompressionLvl::new(GZIP_LEVEL).expect("valid gzip level");
                let mut c = libdeflater::Compressor::new(lvl);
                let mut gz = vec![0u8; c.gzip_compress_bound(bytes.len())];
                let n = c.gzip_compress(bytes, &mut gz).map_err(|e| Error::invalid(path, format!("gzip compression failed: {e}")))?;
                gz.truncate(n);
                write_atomic(path, &gz)
            }
        }
    }
}
