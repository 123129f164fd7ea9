//! Resampling volumes to a new voxel grid: to a target spacing, and back to the original grid.
//!
//! # Grid convention
//!
//! A voxel index `i` stands for the voxel *centre* at world position `affine · i` (NIfTI and
//! ITK agree on this). Resampling evaluates the source at the world position of every target
//! voxel centre, so any two grids related by an axis-aligned affine map can be resampled into
//! each other, and going back to an original grid uses that grid's own shape and affine
//! ([`Grid::of`]), which makes the round trip land on exactly the original geometry.
//!
//! Two ways of choosing the target grid for a spacing are offered ([`Alignment`]):
//!
//! - [`Alignment::Origin`] (the default): the first voxel centre stays where it was, the
//!   spacing is exactly the target, and the shape is `round(n · s / t)` per axis. This is what
//!   SimpleITK's `ResampleImageFilter` computes when given the input's origin and direction,
//!   the target spacing and that size: source index `x = i · t / s`.
//! - [`Alignment::Corners`]: the first and last voxel centres stay where they were, the shape
//!   is `round(n · s / t)` and the spacing becomes `s · (n − 1) / (m − 1)`, close to the
//!   target. This is `scipy.ndimage.zoom(…, zoom = s / t, grid_mode=False)`:
//!   source index `x = i · (n − 1) / (m − 1)`.
//!
//! Points beyond the last source voxel centre take the edge value (scipy's `mode="nearest"`;
//! ITK returns its default value there instead, beyond half a voxel outside). Images are
//! interpolated trilinearly, as three separable one-dimensional passes (exactly trilinear on
//! an axis-aligned grid, and it reads the source once per axis instead of eight times per
//! voxel). Label maps use the nearest voxel (ties rounded up, as ITK does) or linear
//! interpolation of each label's indicator followed by the arg-max ([`LabelInterp`]). All
//! passes run on the rayon thread pool.

use ndarray::{Array3, ArrayView3};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Image, Labels, Result, Volume};

/// Where the target grid is anchored when resampling to a spacing. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Alignment {
    /// First voxel centre kept, spacing exactly the target (SimpleITK with the input origin).
    #[default]
    Origin,
    /// First and last voxel centres kept, spacing close to the target
    /// (`scipy.ndimage.zoom(grid_mode=False)`).
    Corners,
}

/// How label maps are interpolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelInterp {
    /// The label of the nearest source voxel.
    #[default]
    Nearest,
    /// Trilinear interpolation of each label's indicator, then the label with the largest
    /// weight (the lowest label on a tie). Smoother boundaries when upsampling.
    LinearOneHot,
}

/// A voxel grid: shape, voxel size and voxel-to-world affine, as carried by a [`Volume`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    /// Shape `[i, j, k]`.
    pub shape: [usize; 3],
    /// Voxel size in mm along `i`, `j`, `k`.
    pub spacing: [f64; 3],
    /// Voxel-to-world affine, row-major 4×4.
    pub affine: [[f64; 4]; 4],
}

impl Grid {
    /// The grid a volume lives on (to resample a result back onto it).
    pub fn of<T>(v: &Volume<T>) -> Self {
        Grid { shape: v.shape(), spacing: v.spacing, affine: v.affine }
    }

    /// The grid with voxel size `target` (mm, per axis) covering the same region as `self`.
    pub fn with_spacing(&self, target: [f64; 3], align: Alignment) -> Result<Self> {
        let mut out = self.clone();
        for a in 0..3 {
            let (n, s, t) = (self.shape[a], self.spacing[a], target[a]);
            if !(t.is_finite() && t > 0.0) {
                return Err(Error::Config {
                    field: "spacing".into(),
                    msg: format!("target spacing {t} along axis {a} must be a positive number"),
                });
            }
            if !(s.is_finite() && s > 0.0) {
                return Err(Error::Config {
                    field: "spacing".into(),
                    msg: format!("source spacing {s} along axis {a} must be a positive number"),
                });
            }
            // NIfTI stores spacings as float32: a target equal to the source spacing at that
            // precision leaves the axis alone rather than interpolating by 1e-8 of a voxel.
            if ((t - s) / s).abs() < 1e-6 {
                continue;
            }
            // round(n · (s / t)) with ties to even, as scipy.ndimage.zoom computes its shape.
            let m = ((n as f64 * (s / t)).round_ties_even() as usize).max(1);
            let scale = match align {
                Alignment::Origin => t / s,
                // A single output voxel sits on the first source voxel.
                Alignment::Corners if m == 1 => 1.0,
                // A single source voxel has no second corner to keep: its centre stays and
                // the target spacing is used (a scale of 0 would stack every output voxel
                // on one point, a singular grid that nothing can be restored from).
                Alignment::Corners if n == 1 => t / s,
                Alignment::Corners => (n as f64 - 1.0) / (m as f64 - 1.0),
            };
            out.shape[a] = m;
            out.spacing[a] = match align {
                Alignment::Origin => t,
                Alignment::Corners => s * scale,
            };
            for row in out.affine.iter_mut().take(3) {
                row[a] *= scale;
            }
        }
        Ok(out)
    }
}

/// Per target axis: source index `x = scale · i + offset`.
#[derive(Debug, Clone, Copy)]
struct AxisMap {
    scale: f64,
    offset: f64,
}

/// How target grid indices map onto source indices; only axis-aligned maps (scalings,
/// shifts and flips along each axis) are supported.
fn axis_maps(src: &Grid, dst: &Grid) -> Result<[AxisMap; 3]> {
    let inv = crate::affine::invert(&src.affine)
        .ok_or_else(|| Error::Config { field: "affine".into(), msg: "the source affine is singular".into() })?;
    let m = crate::affine::mul(&inv, &dst.affine);
    let mut maps = [AxisMap { scale: 1.0, offset: 0.0 }; 3];
    for r in 0..3 {
        for c in 0..3 {
            let tol = 1e-6 * (m[r][r].abs() + m[c][c].abs()).max(1e-12);
            if r != c && m[r][c].abs() > tol {
                return Err(Error::Config {
                    field: "affine".into(),
                    msg: "source and target grids are rotated against each other; only \
                          axis-aligned resampling is supported (reorient first)"
                        .into(),
                });
            }
        }
        maps[r] = AxisMap { scale: m[r][r], offset: m[r][3] };
    }
    Ok(maps)
}

/// Linear interpolation taps along one axis: `value = (1 − w) · src[i0] + w · src[i0 + 1]`,
/// with `i0 + 1` clamped to the axis (edge values beyond the last centre).
#[derive(Debug, Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    w: f32,
}

fn linear_taps(map: AxisMap, n_src: usize, n_dst: usize) -> Vec<Tap> {
    let last = n_src - 1;
    (0..n_dst)
        .map(|i| {
            let x = (map.scale * i as f64 + map.offset).clamp(0.0, last as f64);
            let i0 = (x.floor() as usize).min(last);
            let i1 = (i0 + 1).min(last);
            Tap { i0, i1, w: (x - i0 as f64) as f32 }
        })
        .collect()
}

fn nearest_index(map: AxisMap, n_src: usize, n_dst: usize) -> Vec<usize> {
    let last = (n_src - 1) as f64;
    (0..n_dst)
        .map(|i| {
            // floor(x + 0.5): ties go up, as ITK's nearest-neighbour interpolator does.
            let x = map.scale * i as f64 + map.offset;
            (x + 0.5).floor().clamp(0.0, last) as usize
        })
        .collect()
}

/// Work items smaller than this many output values are not split further across threads.
const MIN_TASK: usize = 1 << 14;

/// One linear pass along `axis`, seen as `[outer, n, inner]` → `[outer, m, inner]`.
fn linear_pass(src: &[f32], shape: [usize; 3], axis: usize, taps: &[Tap]) -> Vec<f32> {
    let n = shape[axis];
    let m = taps.len();
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = crate::buffer::volume_buffer::<f32>(outer * m * inner);
    if inner == 1 {
        // Along the contiguous axis: one gather per output value, a row per task item.
        out.par_chunks_mut(m).with_min_len((MIN_TASK / m.max(1)).max(1)).enumerate().for_each(|(o, row)| {
            let s = &src[o * n..(o + 1) * n];
            for (v, t) in row.iter_mut().zip(taps) {
                *v = s[t.i0] + t.w * (s[t.i1] - s[t.i0]);
            }
        });
    } else {
        // Across rows or planes: blends of two contiguous source lines.
        out.par_chunks_mut(inner).with_min_len((MIN_TASK / inner).max(1)).enumerate().for_each(|(row, dst)| {
            let (o, t) = (row / m, taps[row % m]);
            let a = &src[(o * n + t.i0) * inner..][..inner];
            if t.w == 0.0 || t.i0 == t.i1 {
                dst.copy_from_slice(a);
            } else {
                let b = &src[(o * n + t.i1) * inner..][..inner];
                for ((d, x), y) in dst.iter_mut().zip(a).zip(b) {
                    *d = x + t.w * (y - x);
                }
            }
        });
    }
    out
}

fn standard(view: ArrayView3<'_, f32>) -> std::borrow::Cow<'_, [f32]> {
    match view.to_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(view.iter().copied().collect()),
    }
}

/// Resamples an image onto `grid` by trilinear interpolation.
pub fn resample_image(img: &Image, grid: &Grid) -> Result<Image> {
    let maps = axis_maps(&Grid::of(img), grid)?;
    let src_shape = img.shape();
    check_nonempty(src_shape, grid.shape)?;
    // Shrink the most-reduced axes first so later passes touch fewer values.
    let mut order = [0usize, 1, 2];
    order.sort_by(|&a, &b| {
        let ra = grid.shape[a] as f64 / src_shape[a] as f64;
        let rb = grid.shape[b] as f64 / src_shape[b] as f64;
        ra.total_cmp(&rb)
    });
    let mut shape = src_shape;
    let mut data = standard(img.data.view());
    for &axis in &order {
        let taps = linear_taps(maps[axis], shape[axis], grid.shape[axis]);
        let identity = shape[axis] == grid.shape[axis] && taps.iter().enumerate().all(|(i, t)| t.i0 == i && t.w == 0.0);
        if identity {
            continue;
        }
        data = std::borrow::Cow::Owned(linear_pass(&data, shape, axis, &taps));
        shape[axis] = grid.shape[axis];
    }
    let data = Array3::from_shape_vec(grid.shape, data.into_owned()).expect("passes produce the target shape");
    Ok(Volume { data, spacing: grid.spacing, affine: grid.affine })
}

/// Resamples a label map onto `grid`.
pub fn resample_labels(lab: &Labels, grid: &Grid, interp: LabelInterp) -> Result<Labels> {
    let maps = axis_maps(&Grid::of(lab), grid)?;
    let src_shape = lab.shape();
    check_nonempty(src_shape, grid.shape)?;
    let [_, nj, nk] = grid.shape;
    let mut out = crate::buffer::volume_buffer::<u8>(grid.shape.iter().product());
    let src = &lab.data;
    match interp {
        LabelInterp::Nearest => {
            let idx: Vec<Vec<usize>> = (0..3).map(|a| nearest_index(maps[a], src_shape[a], grid.shape[a])).collect();
            out.par_chunks_mut(nk).with_min_len((MIN_TASK / nk).max(1)).enumerate().for_each(|(row, dst)| {
                let (si, sj) = (idx[0][row / nj], idx[1][row % nj]);
                for (d, &sk) in dst.iter_mut().zip(&idx[2]) {
                    *d = src[[si, sj, sk]];
                }
            });
        }
        LabelInterp::LinearOneHot => {
            let n_labels = lab.data.iter().copied().max().unwrap_or(0) as usize + 1;
            let taps: Vec<Vec<Tap>> = (0..3).map(|a| linear_taps(maps[a], src_shape[a], grid.shape[a])).collect();
            out.par_chunks_mut(nk).with_min_len((MIN_TASK / nk).max(1)).enumerate().for_each(|(row, dst)| {
                let (ti, tj) = (taps[0][row / nj], taps[1][row % nj]);
                let mut weight = vec![0.0f32; n_labels];
                for (d, tk) in dst.iter_mut().zip(&taps[2]) {
                    weight.iter_mut().for_each(|w| *w = 0.0);
                    for (si, wi) in [(ti.i0, 1.0 - ti.w), (ti.i1, ti.w)] {
                        for (sj, wj) in [(tj.i0, 1.0 - tj.w), (tj.i1, tj.w)] {
                            for (sk, wk) in [(tk.i0, 1.0 - tk.w), (tk.i1, tk.w)] {
                                weight[src[[si, sj, sk]] as usize] += wi * wj * wk;
                            }
                        }
                    }
                    let mut best = 0;
                    for (l, &w) in weight.iter().enumerate() {
                        if w > weight[best] {
                            best = l;
                        }
                    }
                    *d = best as u8;
                }
            });
        }
    }
    let data = Array3::from_shape_vec(grid.shape, out).expect("target shape");
    Ok(Volume { data, spacing: grid.spacing, affine: grid.affine })
}

fn check_nonempty(src: [usize; 3], dst: [usize; 3]) -> Result<()> {
    if src.contains(&0) || dst.contains(&0) {
        return Err(Error::Config {
            field: "shape".into(),
            msg: format!("cannot resample between shapes {src:?} and {dst:?}: an axis is empty"),
        });
    }
    Ok(())
}

/// Resamples an image to voxel size `target` (mm per axis) by trilinear interpolation.
pub fn image_to_spacing(img: &Image, target: [f64; 3], align: Alignment) -> Result<Image> {
    resample_image(img, &Grid::of(img).with_spacing(target, align)?)
}

/// Resamples a label map to voxel size `target` (mm per axis).
pub fn labels_to_spacing(lab: &Labels, target: [f64; 3], align: Alignment, interp: LabelInterp) -> Result<Labels> {
    resample_labels(lab, &Grid::of(lab).with_spacing(target, align)?, interp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    fn ramp(shape: [usize; 3], spacing: [f64; 3]) -> Image {
        let data = Array3::from_shape_fn(shape, |(i, j, k)| (3 * i) as f32 + 0.5 * j as f32 - 2.0 * k as f32);
        Volume::with_spacing(data, spacing)
    }

    #[test]
    fn identity_grid_returns_the_same_image() {
        let img = ramp([4, 5, 6], [0.8, 0.8, 2.0]);
        let out = resample_image(&img, &Grid::of(&img)).unwrap();
        assert_eq!(out, img);
    }

    #[test]
    fn linear_functions_are_reproduced_inside_the_volume() {
        // Trilinear interpolation is exact on an affine function of the indices.
        let img = ramp([7, 6, 5], [1.0, 1.0, 3.0]);
        let out = image_to_spacing(&img, [0.5, 0.75, 1.0], Alignment::Corners).unwrap();
        assert_eq!(out.shape(), [14, 8, 15]);
        let g = Grid::of(&img).with_spacing([0.5, 0.75, 1.0], Alignment::Corners).unwrap();
        for ((i, j, k), &v) in out.data.indexed_iter() {
            let x = [i, j, k].map(|t| t as f64);
            let s = [0, 1, 2].map(|a| x[a] * (img.shape()[a] - 1) as f64 / (g.shape[a] - 1) as f64);
            let want = 3.0 * s[0] + 0.5 * s[1] - 2.0 * s[2];
            assert!((v as f64 - want).abs() < 1e-4, "{v} vs {want} at {i},{j},{k}");
        }
    }

    #[test]
    fn origin_alignment_keeps_the_origin_and_sets_the_spacing() {
        let mut img = ramp([10, 10, 4], [0.7, 0.7, 5.0]);
        img.affine[0][3] = -100.0;
        img.affine[2][3] = 30.0;
        img.affine[1][1] = -0.7; // a flipped axis stays flipped
        let out = image_to_spacing(&img, [1.5, 1.5, 1.5], Alignment::Origin).unwrap();
        assert_eq!(out.shape(), [5, 5, 13]);
        assert_eq!(out.spacing, [1.5, 1.5, 1.5]);
        assert!((out.affine[0][0] - 1.5).abs() < 1e-12);
        assert!((out.affine[1][1] + 1.5).abs() < 1e-12);
        assert_eq!(out.affine[0][3], -100.0);
        assert_eq!(out.affine[2][3], 30.0);
        // Voxel (1, 0, 0) sits 1.5 mm along i: source index 1.5 / 0.7.
        let want = 3.0 * (1.5 / 0.7) as f32;
        assert!((out.data[[1, 0, 0]] - want).abs() < 1e-4);
    }

    #[test]
    fn round_trip_lands_on_the_original_grid() {
        let img = ramp([9, 8, 3], [0.9, 0.9, 4.0]);
        let down = image_to_spacing(&img, [2.0, 2.0, 2.0], Alignment::Origin).unwrap();
        let back = resample_image(&down, &Grid::of(&img)).unwrap();
        assert_eq!(back.shape(), img.shape());
        assert_eq!(back.affine, img.affine);
        assert_eq!(back.spacing, img.spacing);
        // Upsample by an integer factor and back: the original voxels are hit exactly.
        let up = image_to_spacing(&img, [0.45, 0.45, 2.0], Alignment::Origin).unwrap();
        let back = resample_image(&up, &Grid::of(&img)).unwrap();
        for (a, b) in back.data.iter().zip(img.data.iter()) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn nearest_labels_keep_values_and_round_trip_exactly_on_integer_factors() {
        let data = Array3::from_shape_fn((4, 4, 2), |(i, j, k)| ((i + j + k) % 3) as u8);
        let lab = Volume::with_spacing(data, [1.0, 1.0, 2.0]);
        let up = labels_to_spacing(&lab, [0.5, 0.5, 1.0], Alignment::Origin, LabelInterp::Nearest).unwrap();
        assert_eq!(up.shape(), [8, 8, 4]);
        // Target voxel 2t sits exactly on source voxel t.
        assert_eq!(up.data[[2, 4, 2]], lab.data[[1, 2, 1]]);
        let back = resample_labels(&up, &Grid::of(&lab), LabelInterp::Nearest).unwrap();
        assert_eq!(back, lab);
    }

    #[test]
    fn one_hot_linear_takes_the_majority_and_the_lowest_on_ties() {
        // Along i: 0 0 2 2; the centre of the upsampled grid between voxels 1 and 2 is a tie.
        let data = Array3::from_shape_fn((4, 1, 1), |(i, _, _)| if i < 2 { 0 } else { 2 });
        let lab = Volume::with_spacing(data, [1.0, 1.0, 1.0]);
        let g = Grid { shape: [7, 1, 1], ..Grid::of(&lab).with_spacing([0.5, 1.0, 1.0], Alignment::Origin).unwrap() };
        let out = resample_labels(&lab, &g, LabelInterp::LinearOneHot).unwrap();
        // Source positions 0, .5, 1, 1.5, 2, 2.5, 3.
        assert_eq!(out.data.iter().copied().collect::<Vec<_>>(), vec![0, 0, 0, 0, 2, 2, 2]);
    }

    #[test]
    fn a_target_equal_to_the_float32_spacing_leaves_the_axis_alone() {
        let img = ramp([5, 4, 3], [0.8f32 as f64, 1.0, 2.5]);
        let g = Grid::of(&img).with_spacing([0.8, 0.5, 2.5], Alignment::Origin).unwrap();
        assert_eq!((g.shape, g.spacing[0]), ([5, 8, 3], 0.8f32 as f64));
        let out = resample_image(&img, &g).unwrap();
        assert_eq!(out.data.slice(ndarray::s![.., 0, ..]), img.data.slice(ndarray::s![.., 0, ..]));
    }

    #[test]
    fn a_single_voxel_axis_refined_with_corners_keeps_an_invertible_grid() {
        // Found by the restore property test (tests/properties.rs): the corners rule gave this
        // axis a spacing of 0, and restoring a prediction failed on a singular affine.
        let lab = Volume::with_spacing(Array3::<u8>::ones((1, 3, 2)), [2.0, 1.0, 1.0]);
        let g = Grid::of(&lab).with_spacing([1.0, 1.0, 1.0], Alignment::Corners).unwrap();
        assert_eq!((g.shape, g.spacing[0], g.affine[0][0]), ([2, 3, 2], 1.0, 1.0));
        let up = resample_labels(&lab, &g, LabelInterp::Nearest).unwrap();
        assert_eq!(resample_labels(&up, &Grid::of(&lab), LabelInterp::Nearest).unwrap(), lab);
    }

    #[test]
    fn rotated_grids_are_refused() {
        let img = ramp([3, 3, 3], [1.0, 1.0, 1.0]);
        let mut g = Grid::of(&img);
        g.affine[0] = [0.0, 1.0, 0.0, 0.0];
        g.affine[1] = [1.0, 0.0, 0.0, 0.0];
        let err = resample_image(&img, &g).unwrap_err().to_string();
        assert!(err.contains("axis-aligned"), "{err}");
    }

    #[test]
    fn bad_target_spacing_is_a_config_error() {
        let img = ramp([3, 3, 3], [1.0, 1.0, 1.0]);
        assert!(image_to_spacing(&img, [1.0, 0.0, 1.0], Alignment::Origin).is_err());
        assert!(image_to_spacing(&img, [1.0, f64::NAN, 1.0], Alignment::Origin).is_err());
    }
}
