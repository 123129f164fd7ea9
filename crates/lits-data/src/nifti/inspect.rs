//! What `lits inspect` reports about a NIfTI file: header facts and statistics of the scaled
//! voxels. The serialised field names are a stable interface (docs/inspect.md).

use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use super::geometry::AffineSource;
use super::read::{read_image_and_header, ReadOptions};
use crate::orient::orientation_code;
use crate::Result;

/// Facts about one NIfTI file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inspection {
    /// The path as given.
    pub file: String,
    /// Array shape `[i, j, k]`.
    pub shape: [usize; 3],
    /// Stored datatype (numpy name).
    pub datatype: &'static str,
    /// `"little"` or `"big"`.
    pub byte_order: &'static str,
    /// Whether the file is gzip-compressed.
    pub gzip: bool,
    /// Voxel size along `i`, `j`, `k` (`|pixdim[1..=3]|`).
    pub spacing: [f64; 3],
    /// Spatial unit from `xyzt_units` (`"mm"`, `"m"`, `"um"` or `"unknown"`).
    pub spatial_unit: &'static str,
    /// Voxel-to-world affine, row-major.
    pub affine: [[f64; 4]; 4],
    /// Where the affine comes from: `"sform"`, `"qform"` or `"pixdim"`.
    pub affine_source: &'static str,
    /// `sform_code`.
    pub sform_code: i16,
    /// `qform_code`.
    pub qform_code: i16,
    /// Orientation code of the affine (`"RAS"`, `"LPS"`, ...).
    pub orientation: String,
    /// `scl_slope` when scaling applies, else `null`.
    pub scl_slope: Option<f32>,
    /// `scl_inter` when scaling applies, else `null`.
    pub scl_inter: Option<f32>,
    /// Smallest finite scaled voxel value (`null` if none is finite).
    pub min: Option<f64>,
    /// Largest finite scaled voxel value.
    pub max: Option<f64>,
    /// Mean of the finite scaled voxel values.
    pub mean: Option<f64>,
    /// Sum of the finite scaled voxel values.
    pub sum: f64,
    /// Number of NaN or infinite voxels.
    pub non_finite: usize,
}

/// Inspect `path`: read its header and all voxels (scaled as [`read_image`](super::read_image)
/// reads them, NaN and infinite values counted instead of refused).
pub fn inspect(path: &Path) -> Result<Inspection> {
    let opts = ReadOptions { keep_non_finite: true, ..Default::default() };
    let (img, header) = read_image_and_header(path, &opts)?;
    let geom = &header.geometry;
    let data = img.data.as_slice_memory_order().expect("read_image returns contiguous data");
    // (count, min, max, sum) over the finite values, in parallel.
    let (finite, min, max, sum) = data
        .par_iter()
        .filter(|v| v.is_finite())
        .fold(
            || (0usize, f64::INFINITY, f64::NEG_INFINITY, 0f64),
            |(n, lo, hi, s), &v| {
                let v = f64::from(v);
                (n + 1, lo.min(v), hi.max(v), s + v)
            },
        )
        .reduce(|| (0, f64::INFINITY, f64::NEG_INFINITY, 0.0), |a, b| (a.0 + b.0, a.1.min(b.1), a.2.max(b.2), a.3 + b.3));
    let some = |v: f64| (finite > 0).then_some(v);
    Ok(Inspection {
        file: path.display().to_string(),
        shape: header.shape,
        datatype: header.datatype.name(),
        byte_order: header.byte_order.name(),
        gzip: header.gzip,
        spacing: img.spacing,
        spatial_unit: match geom.xyzt_units & 0x07 {
            1 => "m",
            2 => "mm",
            3 => "um",
            _ => "unknown",
        },
        affine: img.affine,
        affine_source: match geom.affine_source() {
            AffineSource::Sform => "sform",
            AffineSource::Qform => "qform",
            AffineSource::Pixdim => "pixdim",
        },
        sform_code: geom.sform_code,
        qform_code: geom.qform_code,
        orientation: orientation_code(&img.affine),
        scl_slope: header.scaling().map(|s| s.0),
        scl_inter: header.scaling().map(|s| s.1),
        min: some(min),
        max: some(max),
        mean: some(sum / finite.max(1) as f64),
        sum,
        non_finite: data.len() - finite,
    })
}

impl Inspection {
    /// A few aligned lines for people.
    pub fn to_text(&self) -> String {
        let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v}"));
        let [a, b, c] = self.shape;
        // Spacing comes from f32 header fields; print it at that precision.
        let [x, y, z] = self.spacing.map(|v| v as f32);
        let mut s = format!("{}\n", self.file);
        s += &format!("  shape        {a} x {b} x {c}\n");
        s += &format!("  datatype     {} ({}-endian{})\n", self.datatype, self.byte_order, if self.gzip { ", gzip" } else { "" });
        s += &format!("  spacing      {x} x {y} x {z} {}\n", self.spatial_unit);
        s += &format!(
            "  orientation  {} (affine from {}; sform_code {}, qform_code {})\n",
            self.orientation, self.affine_source, self.sform_code, self.qform_code
        );
        for (r, row) in self.affine.iter().enumerate() {
            let label = if r == 0 { "affine" } else { "" };
            s += &format!("  {label:<12} [{}]\n", row.iter().map(|v| format!("{v:>10.4}")).collect::<Vec<_>>().join(" "));
        }
        s += &match (self.scl_slope, self.scl_inter) {
            (Some(sl), Some(it)) => format!("  scaling      value = stored * {sl} + {it}\n"),
            _ => "  scaling      none\n".to_string(),
        };
        s += &format!("  values       min {}  max {}  mean {}  sum {}\n", num(self.min), num(self.max), num(self.mean), self.sum);
        if self.non_finite > 0 {
            s += &format!("  non-finite   {} voxel(s) NaN or infinite\n", self.non_finite);
        }
        s
    }
}
