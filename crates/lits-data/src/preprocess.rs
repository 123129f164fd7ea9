//! Per-case preprocessing: what turns a scan (and its labels) into what the network eats.
//!
//! Two modes, chosen by [`PreprocessConfig`]:
//!
//! - [`PreprocessConfig::Spacing`]: reorient to RAS, crop ([`Crop`]), resample to a target
//!   spacing (trilinear images, nearest or one-hot-linear labels; see [`crate::resample`]),
//!   and normalise intensities ([`Intensity`]; applied when the data is loaded, with
//!   statistics of the whole dataset, so one changed case does not invalidate the others).
//! - [`PreprocessConfig::Mlfcore`]: the original mlf-core project's 128³ cubes, step by step
//!   (see [`mlfcore_cube`]).
//!
//! Every prepared case carries a [`CaseRecord`] that takes a prediction on the prepared grid
//! back to the source scan's grid.

use std::borrow::Cow;

use ndarray::Array3;
use serde::{Deserialize, Serialize};

use crate::crop::{self, padded_block, BBox, Crop, CropRecord};
use crate::intensity::{Intensity, Normaliser};
use crate::orient;
use crate::resample::{self, Alignment, Grid, LabelInterp};
use crate::{Error, Image, Labels, Problems, Result, Volume};

/// How a dataset is preprocessed. Written as JSON with a `mode` field, e.g.
/// `{"mode": "spacing", "target_spacing": [1.5, 1.5, 1.5]}` or `{"mode": "mlfcore"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum PreprocessConfig {
    /// Resample to a spacing, crop, normalise (nnU-Net style).
    Spacing(SpacingConfig),
    /// The original project's fixed 128³ cubes around the liver.
    Mlfcore(MlfcoreConfig),
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig::Spacing(SpacingConfig::default())
    }
}

/// Settings of [`PreprocessConfig::Spacing`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpacingConfig {
    /// Reorient every case to RAS first (axes permuted and flipped, never interpolated), so
    /// the spacing and patch axes mean the same thing for every case. Default true.
    pub canonical: bool,
    /// Voxel size in mm along the (reoriented) axes; `null` or absent: the median spacing of
    /// the dataset, per axis, as nnU-Net chooses it.
    pub target_spacing: Option<[f64; 3]>,
    /// Where the resampled grid is anchored (default `origin`).
    pub alignment: Alignment,
    /// How labels are resampled (default `nearest`).
    pub label_interp: LabelInterp,
    /// Intensity normalisation (default nnU-Net's foreground z-score).
    pub intensity: Intensity,
    /// Cropping before resampling (default none).
    pub crop: Crop,
}

impl Default for SpacingConfig {
    fn default() -> Self {
        SpacingConfig {
            canonical: true,
            target_spacing: None,
            alignment: Alignment::default(),
            label_interp: LabelInterp::default(),
            intensity: Intensity::default(),
            crop: Crop::default(),
        }
    }
}

/// The edge of the largest cube the mlf-core mode may cut (the original's is 128).
pub const MAX_CUBE: usize = 512;

/// The most voxels a prepared case may have (4 GiB of float32, about 8 times a LiTS scan
/// at 0.8 × 0.8 × 1.5 mm); a header that asks for more is broken, and is refused before
/// anything is allocated.
pub const MAX_PREPARED_VOXELS: u64 = 1 << 30;

/// Settings of [`PreprocessConfig::Mlfcore`]; the defaults are the original's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlfcoreConfig {
    /// Slices along the third axis after padding or centre-cropping (original: 512).
    pub slices: usize,
    /// Edge of the cube cut after 2×2×2 pooling (original: 128).
    pub cube: usize,
}

impl Default for MlfcoreConfig {
    fn default() -> Self {
        MlfcoreConfig { slices: 512, cube: 128 }
    }
}

impl PreprocessConfig {
    /// Reads a config from JSON text; `origin` names the file in errors.
    pub fn from_json(text: &str, origin: &std::path::Path) -> Result<Self> {
        let cfg: PreprocessConfig =
            serde_json::from_str(text).map_err(|e| Error::invalid(origin, format!("bad preprocessing config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the numbers without any data (every problem at once).
    pub fn validate(&self) -> Result<()> {
        let mut p = Problems::new();
        self.check(&mut p);
        p.into_result()
    }

    /// Records every value that cannot work, without any data.
    pub fn check(&self, p: &mut Problems) {
        match self {
            PreprocessConfig::Spacing(c) => {
                if let Some(t) = c.target_spacing {
                    p.require(t.iter().all(|v| v.is_finite() && *v > 0.0), "target_spacing", || {
                        format!("{t:?} must be three positive numbers (mm)")
                    });
                }
                p.take("intensity", c.intensity.validate());
            }
            PreprocessConfig::Mlfcore(c) => {
                p.require(c.slices > 0 && c.slices % 2 == 0 && c.slices <= 2 * MAX_CUBE, "slices", || {
                    format!("{} must be a positive even number (it is pooled 2×2×2) up to {}", c.slices, 2 * MAX_CUBE)
                });
                p.require((1..=MAX_CUBE).contains(&c.cube), "cube", || format!("{} must be in 1..={MAX_CUBE}", c.cube));
            }
        }
    }

    /// Whether the mode reorients cases to RAS before anything else.
    pub fn canonical(&self) -> bool {
        matches!(self, PreprocessConfig::Spacing(c) if c.canonical)
    }

    /// The intensity scheme (the original used none).
    pub fn intensity(&self) -> Intensity {
        match self {
            PreprocessConfig::Spacing(c) => c.intensity.clone(),
            PreprocessConfig::Mlfcore(_) => Intensity::None,
        }
    }

    /// This config with what the dataset resolved written in: the target spacing (the
    /// dataset's `median_spacing` where none is set) and the intensity statistics of
    /// `normaliser`, so that it prepares and normalises a scan as training did without the
    /// dataset. A run's `config.json` holds this form.
    pub fn resolved(&self, median_spacing: Option<[f64; 3]>, normaliser: Option<&Normaliser>) -> PreprocessConfig {
        match self {
            PreprocessConfig::Spacing(c) => PreprocessConfig::Spacing(SpacingConfig {
                target_spacing: c.target_spacing.or(median_spacing),
                intensity: normaliser.map_or_else(|| c.intensity.clone(), |n| c.intensity.with_stats(n)),
                ..c.clone()
            }),
            other => other.clone(),
        }
    }

    /// What a case's prepared voxels depend on, the key of the prepared-case cache: this
    /// config with its target spacing resolved and no intensity statistics (they apply when
    /// cached voxels are loaded). A config and its [`PreprocessConfig::resolved`] form have
    /// the same key.
    pub fn preparation_key(&self, median_spacing: Option<[f64; 3]>) -> PreprocessConfig {
        match self.resolved(median_spacing, None) {
            PreprocessConfig::Spacing(c) => PreprocessConfig::Spacing(SpacingConfig { intensity: c.intensity.without_stats(), ..c }),
            other => other,
        }
    }

    /// Whether the dataset's median spacing must be known before preparing a case.
    pub fn needs_median_spacing(&self) -> bool {
        matches!(self, PreprocessConfig::Spacing(SpacingConfig { target_spacing: None, .. }))
    }

    /// Prepares one case. `median_spacing` is the dataset's (on the axes the mode works on),
    /// needed when [`PreprocessConfig::needs_median_spacing`]. Image and labels must share
    /// a grid (the caller checks and reports that per case).
    pub fn prepare(&self, image: &Image, labels: Option<&Labels>, median_spacing: Option<[f64; 3]>) -> Result<Prepared> {
        if let Some(l) = labels {
            assert_eq!(l.shape(), image.shape(), "image and labels must share a grid");
        }
        // The grid is bounded before anything is allocated.
        self.uncropped_shape(image.shape(), image.spacing, &image.affine, median_spacing)?;
        match self {
            PreprocessConfig::Spacing(c) => prepare_spacing(c, c.target(median_spacing)?, image, labels),
            PreprocessConfig::Mlfcore(c) => Ok(mlfcore_cube(c, image, labels)),
        }
    }

    /// The shape a scan of `shape` (voxel size `spacing`, voxel-to-world `affine`) has once
    /// prepared, cropping left out (so an upper bound where the mode crops);
    /// `median_spacing` as for [`PreprocessConfig::prepare`]. Reads no voxel, so a header
    /// that asks for an impossible grid can be refused before any work.
    pub fn uncropped_shape(
        &self,
        shape: [usize; 3],
        spacing: [f64; 3],
        affine: &[[f64; 4]; 4],
        median_spacing: Option<[f64; 3]>,
    ) -> Result<[usize; 3]> {
        match self {
            PreprocessConfig::Mlfcore(c) => Ok([c.cube; 3]),
            PreprocessConfig::Spacing(c) => {
                let grid = Grid {
                    shape: if c.canonical { orient::canonical_order(shape, affine) } else { shape },
                    spacing: working_spacing(self, spacing, affine),
                    affine: *affine,
                };
                let out = grid.with_spacing(c.target(median_spacing)?, c.alignment)?.shape;
                let voxels = out.iter().fold(1u64, |n, &a| n.saturating_mul(a as u64));
                if voxels > MAX_PREPARED_VOXELS {
                    return Err(Error::Config {
                        field: "spacing".into(),
                        msg: format!(
                            "voxel size {spacing:?} mm would be resampled to a {out:?} grid ({voxels} voxels, more than {MAX_PREPARED_VOXELS}): check the header's pixdim"
                        ),
                    });
                }
                Ok(out)
            }
        }
    }
}

impl SpacingConfig {
    /// The spacing cases are resampled to: the configured one, else the dataset's median.
    fn target(&self, median_spacing: Option<[f64; 3]>) -> Result<[f64; 3]> {
        self.target_spacing.or(median_spacing).ok_or_else(|| Error::Config {
            field: "target_spacing".into(),
            msg: "not set, and the dataset's median spacing is not known".into(),
        })
    }
}

/// A prepared case and how to map results back to its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The image (intensities not yet normalised in spacing mode).
    pub image: Image,
    /// The labels, when the case has them.
    pub labels: Option<Labels>,
    /// How the prepared grid relates to the source grid.
    pub record: CaseRecord,
}

/// How a prepared grid was made from the source grid, to bring predictions back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum CaseRecord {
    /// Spacing mode: reorient (optional), crop, resample.
    Spacing {
        /// The scan's own grid.
        source: Grid,
        /// Whether the case was reoriented to RAS.
        canonical: bool,
        /// The crop, on the (reoriented) source grid.
        crop: CropRecord,
        /// The grid the cropped region was resampled onto.
        prepared: Grid,
    },
    /// Mlfcore mode: slices padded or cropped, pooled, cube cut.
    Mlfcore {
        /// The scan's own grid.
        source: Grid,
        /// Slices added before the first source slice (negative: cropped away).
        slice_offset: i64,
        /// First pooled voxel of the cube per axis (may be negative: zero-filled).
        cube_start: [i64; 3],
        /// The cube's grid.
        prepared: Grid,
    },
}

impl CaseRecord {
    /// The grid of the prepared case.
    pub fn prepared(&self) -> &Grid {
        match self {
            CaseRecord::Spacing { prepared, .. } | CaseRecord::Mlfcore { prepared, .. } => prepared,
        }
    }

    /// The scan's own grid.
    pub fn source(&self) -> &Grid {
        match self {
            CaseRecord::Spacing { source, .. } | CaseRecord::Mlfcore { source, .. } => source,
        }
    }

    /// A label map on the prepared grid (a prediction) brought back onto the source grid,
    /// with the source's affine: resampled back (nearest), pasted into the crop, reoriented
    /// back. In mlfcore mode each cube voxel fills its 2×2×2 block; outside the cube is 0.
    pub fn restore_labels(&self, pred: &Labels) -> Result<Labels> {
        let v = self.restore(pred, 0u8, |v, g| resample::resample_labels(v, g, LabelInterp::Nearest))?;
        Ok(self.to_source(v))
    }

    /// A float map on the prepared grid (one class's probabilities) brought back onto the
    /// source grid like [`CaseRecord::restore_labels`], but resampled trilinearly; voxels
    /// outside the prepared region get `fill` (1 for background, 0 for other classes).
    pub fn restore_image(&self, pred: &Image, fill: f32) -> Result<Image> {
        Ok(self.to_source(self.restore_image_oriented(pred, fill)?))
    }

    /// [`CaseRecord::restore_image`] short of its last step: the map on the source grid but
    /// still in RAS order where the case was reoriented. For combining several maps (the
    /// argmax over classes) before one [`CaseRecord::to_source`], instead of reorienting
    /// each.
    pub fn restore_image_oriented(&self, pred: &Image, fill: f32) -> Result<Image> {
        self.restore(pred, fill, resample::resample_image)
    }

    /// A volume on the grid of [`CaseRecord::restore_image_oriented`] taken to the source's
    /// own axes and geometry; no copy where the case was not reoriented.
    pub fn to_source<T: Clone>(&self, v: Volume<T>) -> Volume<T> {
        match self.reoriented_from() {
            Some(source) => undo_canonical(&v, source),
            None => v,
        }
    }

    /// [`CaseRecord::to_source`] of a borrowed volume: itself where the case was not
    /// reoriented, else one reoriented copy.
    pub fn to_source_ref<'a, T: Clone>(&self, v: &'a Volume<T>) -> Cow<'a, Volume<T>> {
        match self.reoriented_from() {
            Some(source) => Cow::Owned(undo_canonical(v, source)),
            None => Cow::Borrowed(v),
        }
    }

    /// The source grid, where restored volumes are in RAS order and must be reoriented.
    fn reoriented_from(&self) -> Option<&Grid> {
        match self {
            CaseRecord::Spacing { source, canonical: true, .. } if !orient::is_ras(&source.affine) => Some(source),
            CaseRecord::Spacing { .. } | CaseRecord::Mlfcore { .. } => None,
        }
    }

    /// The shared path of the restores up to the reorientation; `resample` maps the
    /// prepared grid onto the crop.
    fn restore<T: Clone>(&self, pred: &Volume<T>, fill: T, resample: impl Fn(&Volume<T>, &Grid) -> Result<Volume<T>>) -> Result<Volume<T>> {
        if pred.shape() != self.prepared().shape {
            return Err(Error::Config {
                field: "prediction".into(),
                msg: format!("shape {:?} is not the prepared shape {:?}", pred.shape(), self.prepared().shape),
            });
        }
        match self {
            CaseRecord::Spacing { crop: rec, .. } => {
                let prepared = self.prepared();
                let on_prepared = if pred.spacing == prepared.spacing && pred.affine == prepared.affine {
                    Cow::Borrowed(pred)
                } else {
                    Cow::Owned(Volume { data: pred.data.clone(), spacing: prepared.spacing, affine: prepared.affine })
                };
                let on_crop = resample(&on_prepared, &crop_grid(rec))?;
                drop(on_prepared);
                if rec.bbox == BBox::full(rec.source.shape) {
                    Ok(Volume { data: on_crop.data, spacing: rec.source.spacing, affine: rec.source.affine })
                } else {
                    crop::paste(&on_crop, rec, fill)
                }
            }
            CaseRecord::Mlfcore { source, slice_offset, cube_start, .. } => {
                let mut data = Array3::from_elem(source.shape, fill);
                let n = source.shape;
                // Cube voxels map to disjoint 2×2×2 blocks, so the order of writes is free.
                for ((a, b, c), v) in pred.data.indexed_iter() {
                    let p = [a as i64 + cube_start[0], b as i64 + cube_start[1], c as i64 + cube_start[2]];
                    for di in 0..2 {
                        for dj in 0..2 {
                            for dk in 0..2 {
                                let q = [2 * p[0] + di, 2 * p[1] + dj, 2 * p[2] + dk - slice_offset];
                                if (0..3).all(|x| q[x] >= 0 && (q[x] as usize) < n[x]) {
                                    data[[q[0] as usize, q[1] as usize, q[2] as usize]] = v.clone();
                                }
                            }
                        }
                    }
                }
                Ok(Volume { data, spacing: source.spacing, affine: source.affine })
            }
        }
    }
}

/// A volume on the RAS grid of `source` taken back to `source`'s own axes (the inverse of
/// [`orient::to_canonical`], worked out from the source affine alone).
fn undo_canonical<T: Clone>(v: &Volume<T>, source: &Grid) -> Volume<T> {
    let ornt = orient::io_orientation(&source.affine);
    let mut view = v.data.view();
    for &(w, d) in &ornt {
        if d < 0 {
            view.invert_axis(ndarray::Axis(w));
        }
    }
    // Source axis a is canonical axis ornt[a].0.
    let data = view.permuted_axes(ornt.map(|(w, _)| w)).as_standard_layout().into_owned();
    assert_eq!(data.shape(), source.shape, "prediction must lie on the reoriented source grid");
    Volume { data, spacing: source.spacing, affine: source.affine }
}

/// The grid of the cropped region of a crop record.
fn crop_grid(rec: &CropRecord) -> Grid {
    Grid {
        shape: rec.bbox.shape(),
        spacing: rec.source.spacing,
        affine: crop::shift_origin(&rec.source.affine, rec.bbox.lo.map(|x| x as f64)),
    }
}

/// Spacing mode on one case, given the resolved target spacing.
pub fn prepare_spacing(cfg: &SpacingConfig, target: [f64; 3], image: &Image, labels: Option<&Labels>) -> Result<Prepared> {
    let source = Grid::of(image);
    // Borrowed where nothing changes, and each intermediate dropped once used: a CT is
    // hundreds of MB, so a needless copy is what sets the peak memory.
    let reorient = cfg.canonical && !orient::is_ras(&image.affine);
    let (image, labels): (Cow<'_, Image>, Option<Cow<'_, Labels>>) = if reorient {
        (Cow::Owned(orient::to_canonical(image).0), labels.map(|l| Cow::Owned(orient::to_canonical(l).0)))
    } else {
        (Cow::Borrowed(image), labels.map(Cow::Borrowed))
    };
    let bbox = cfg.crop.bbox(&image, labels.as_deref())?;
    let crop_rec = CropRecord { bbox, source: Grid::of(&*image) };
    let (image, labels) = if bbox == BBox::full(image.shape()) {
        (image, labels)
    } else {
        let cropped = Cow::Owned(crop::crop(&image, &bbox));
        (cropped, labels.map(|l| Cow::Owned(crop::crop(&l, &bbox))))
    };
    let grid = Grid::of(&*image).with_spacing(target, cfg.alignment)?;
    let resampled = resample::resample_image(&image, &grid)?;
    drop(image);
    let labels = labels.map(|l| resample::resample_labels(&l, &grid, cfg.label_interp)).transpose()?;
    let image = resampled;
    Ok(Prepared { image, labels, record: CaseRecord::Spacing { source, canonical: cfg.canonical, crop: crop_rec, prepared: grid } })
}

/// The original project's cube, REFERENCE §3:
///
/// 1. the scan as read (f32, scaling applied), in the file's axis order (the original did not
///    reorient);
/// 2. along the third axis, pad to `slices` (image with its minimum, labels with 0; half the
///    extra before, half after, the odd one after) or centre-crop to `slices` (the odd one
///    cut from the end);
/// 3. 2×2×2 mean pooling of both (an odd trailing voxel is dropped); labels: the mean
///    rounded half to even, clipped to 0..2;
/// 4. the centre of the liver's bounding box, `floor((first + last) / 2)` per axis over
///    pooled labels ≥ 1, and the `cube`³ block `centre − cube/2 .. centre + cube/2`, zero
///    where it leaves the volume.
///
/// Where the original misbehaves: when the block starts before index 0 its slicing wrapped
/// around (a negative Python start) and it then zero-padded at the high end, shifting the
/// liver off-centre; here the block stays centred on the liver and is zero-filled on
/// whichever side it leaves the volume, exactly as the original does at the high end. A case
/// without liver (or without labels) is centred on the middle of the pooled volume.
pub fn mlfcore_cube(cfg: &MlfcoreConfig, image: &Image, labels: Option<&Labels>) -> Prepared {
    let source = Grid::of(image);
    let n = image.shape();
    let min = image.data.iter().copied().fold(f32::INFINITY, f32::min);
    // Step 2: padded index q of source slice k is k + offset.
    let offset: i64 = if n[2] <= cfg.slices { ((cfg.slices - n[2]) / 2) as i64 } else { -(((n[2] - cfg.slices) / 2) as i64) };
    // Step 3 shape: pooled voxel p covers padded voxels 2p and 2p + 1.
    let pooled = [n[0] / 2, n[1] / 2, cfg.slices / 2];
    let source_slice = |q: usize| -> Option<usize> {
        let k = q as i64 - offset;
        (0..n[2] as i64).contains(&k).then_some(k as usize)
    };
    let img = Array3::from_shape_fn(pooled, |(i, j, k)| {
        let mut sum = 0.0f64;
        for q in [2 * k, 2 * k + 1] {
            for (di, dj) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                sum += match source_slice(q) {
                    Some(sk) => image.data[[2 * i + di, 2 * j + dj, sk]] as f64,
                    None => min as f64,
                };
            }
        }
        (sum / 8.0) as f32
    });
    let lab = labels.map(|l| {
        Array3::from_shape_fn(pooled, |(i, j, k)| {
            let mut sum = 0u32;
            for q in [2 * k, 2 * k + 1] {
                if let Some(sk) = source_slice(q) {
                    for (di, dj) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        sum += l.data[[2 * i + di, 2 * j + dj, sk]] as u32;
                    }
                }
            }
            (sum as f64 / 8.0).round_ties_even().clamp(0.0, 2.0) as u8
        })
    });
    // Step 4.
    let centre: [i64; 3] = match lab.as_ref().and_then(|l| BBox::of(l, |&v| v >= 1)) {
        Some(b) => [0, 1, 2].map(|a| ((b.lo[a] + b.hi[a] - 1) / 2) as i64),
        None => pooled.map(|p| (p / 2) as i64),
    };
    let half = (cfg.cube / 2) as i64;
    let start = centre.map(|c| c - half);
    let img = padded_block(img.view(), start, [cfg.cube; 3], 0.0);
    let lab = lab.map(|l| padded_block(l.view(), start, [cfg.cube; 3], 0));

    // Cube voxel o is padded-and-pooled voxel o + start, centred on source index
    // 2 (o + start) + 0.5 (minus the slice offset along k).
    let mut t = [[0.0; 4]; 4];
    t[3][3] = 1.0;
    for a in 0..3 {
        t[a][a] = 2.0;
        t[a][3] = 2.0 * start[a] as f64 + 0.5 - if a == 2 { offset as f64 } else { 0.0 };
    }
    let affine = crate::affine::mul(&image.affine, &t);
    let spacing = image.spacing.map(|s| 2.0 * s);
    let prepared = Grid { shape: [cfg.cube; 3], spacing, affine };
    Prepared {
        image: Volume { data: img, spacing, affine },
        labels: lab.map(|data| Volume { data, spacing, affine }),
        record: CaseRecord::Mlfcore { source, slice_offset: offset, cube_start: start, prepared },
    }
}

/// The per-axis median of spacings (the mean of the two middle values for an even count).
pub fn median_spacing(spacings: &[[f64; 3]]) -> Option<[f64; 3]> {
    if spacings.is_empty() {
        return None;
    }
    Some([0, 1, 2].map(|a| {
        let mut v: Vec<f64> = spacings.iter().map(|s| s[a]).collect();
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    }))
}

/// The spacing a case has on the axes the mode works on (reoriented to RAS when the mode
/// reorients), from its affine and spacing alone.
pub fn working_spacing(cfg: &PreprocessConfig, spacing: [f64; 3], affine: &[[f64; 4]; 4]) -> [f64; 3] {
    if cfg.canonical() {
        orient::canonical_order(spacing, affine)
    } else {
        spacing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::s;

    fn case(shape: [usize; 3], liver: BBox) -> (Image, Labels) {
        let img = Array3::from_shape_fn(shape, |(i, j, k)| (i * 100 + j * 10 + k) as f32 - 500.0);
        let lab = Array3::from_shape_fn(shape, |(i, j, k)| {
            let inside = (0..3).all(|a| [i, j, k][a] >= liver.lo[a] && [i, j, k][a] < liver.hi[a]);
            u8::from(inside) + u8::from(inside && i == liver.lo[0])
        });
        (Volume::with_spacing(img, [0.8, 0.8, 2.0]), Volume::with_spacing(lab, [0.8, 0.8, 2.0]))
    }

    #[test]
    fn configs_parse_with_defaults_and_reject_unknown_fields() {
        let c: PreprocessConfig = serde_json::from_str(r#"{"mode": "mlfcore"}"#).unwrap();
        assert_eq!(c, PreprocessConfig::Mlfcore(MlfcoreConfig { slices: 512, cube: 128 }));
        let c: PreprocessConfig =
            serde_json::from_str(r#"{"mode": "spacing", "target_spacing": [1.5, 1.5, 2], "crop": {"kind": "liver"}}"#).unwrap();
        let PreprocessConfig::Spacing(s) = c else { panic!("spacing mode") };
        assert_eq!(s.target_spacing, Some([1.5, 1.5, 2.0]));
        assert!(s.canonical);
        assert_eq!(s.intensity, Intensity::default());
        let p = std::path::Path::new("cfg.json");
        for bad in [
            r#"{"mode": "spacing", "target_spacing": [1, 1, 1], "spcing": 2}"#,
            r#"{"mode": "mlfcore", "cube": 64, "pool": 2}"#,
            r#"{"mode": "nnunet"}"#,
            r#"{"mode": "spacing", "target_spacing": [1, 0, 1]}"#,
            r#"{"mode": "mlfcore", "slices": 511}"#,
        ] {
            let err = PreprocessConfig::from_json(bad, p).unwrap_err().to_string();
            assert!(err.contains("cfg.json") || err.contains("config field"), "{bad}: {err}");
        }
    }

    #[test]
    fn mlfcore_cube_is_centred_on_the_liver_and_keeps_world_positions() {
        let cfg = MlfcoreConfig { slices: 16, cube: 8 };
        let (img, lab) = case([20, 18, 11], BBox { lo: [4, 6, 2], hi: [12, 14, 9] });
        let p = mlfcore_cube(&cfg, &img, Some(&lab));
        assert_eq!(p.image.shape(), [8, 8, 8]);
        let CaseRecord::Mlfcore { slice_offset, cube_start, .. } = p.record.clone() else { panic!() };
        // 11 slices padded to 16: 2 before, 3 after.
        assert_eq!(slice_offset, 2);
        // Pooled liver: i 2..=5 → 3, j 3..=6 → 4, k (2+2)/2=2..=(8+2)/2=5 → 3; start = c − 4.
        assert_eq!(cube_start, [-1, 0, -1]);
        // Cube voxel (1, 0, 1) is pooled (0, 0, 0): source i 0..2, j 0..2, padded k 0..2 are
        // both padding, so the mean is the image minimum.
        assert_eq!(p.image.data[[1, 0, 1]], -500.0);
        assert_eq!(p.image.data[[0, 0, 0]], 0.0);
        // Cube voxel (2, 2, 2) = pooled (1, 2, 1) = source i 2..4, j 4..6, k {0, 1}.
        let want = img.data.slice(s![2..4, 4..6, 0..2]).sum() / 8.0;
        assert_eq!(p.image.data[[2, 2, 2]], want);
        // World position of cube voxel (2, 2, 2) is the centre of that 2×2×2 block.
        let w = |a: &[[f64; 4]; 4], x: [f64; 3]| [0, 1, 2].map(|r| (0..3).map(|c| a[r][c] * x[c]).sum::<f64>() + a[r][3]);
        let (a, b) = (w(&p.image.affine, [2.0, 2.0, 2.0]), w(&img.affine, [2.5, 4.5, 0.5]));
        assert!((0..3).all(|r| (a[r] - b[r]).abs() < 1e-12), "{a:?} vs {b:?}");
        assert_eq!(p.image.spacing, [1.6, 1.6, 4.0]);
    }

    #[test]
    fn mlfcore_labels_round_half_to_even() {
        let cfg = MlfcoreConfig { slices: 2, cube: 2 };
        let img = Volume::with_spacing(Array3::<f32>::zeros((4, 2, 2)), [1.0; 3]);
        let mut lab = Array3::<u8>::zeros((4, 2, 2));
        // First 2×2×2 block: four 1s, mean 0.5 → 0.
        lab.slice_mut(s![0..2, .., 0]).fill(1);
        // Second block: six 2s and two 0s, mean 1.5 → 2.
        lab.slice_mut(s![2..4, .., ..]).fill(2);
        lab[[3, 1, 1]] = 0;
        lab[[2, 0, 0]] = 0;
        let p = mlfcore_cube(&cfg, &img, Some(&Volume::with_spacing(lab, [1.0; 3])));
        let CaseRecord::Mlfcore { cube_start, .. } = p.record else { panic!() };
        // Pooled [0, 2] along i: the liver is pooled voxel (1, 0, 0), the cube starts one
        // voxel before it on every axis.
        assert_eq!(cube_start, [0, -1, -1]);
        let cube = p.labels.unwrap().data;
        assert_eq!(cube[[0, 1, 1]], 0);
        assert_eq!(cube[[1, 1, 1]], 2);
        assert_eq!(cube.iter().map(|&v| v as u32).sum::<u32>(), 2);
    }

    #[test]
    fn mlfcore_restore_puts_the_cube_back_in_place() {
        let cfg = MlfcoreConfig { slices: 8, cube: 4 };
        let (img, lab) = case([12, 10, 13], BBox { lo: [2, 2, 3], hi: [8, 8, 9] });
        let p = mlfcore_cube(&cfg, &img, Some(&lab));
        let back = p.record.restore_labels(p.labels.as_ref().unwrap()).unwrap();
        assert_eq!(back.shape(), img.shape());
        assert_eq!(back.affine, img.affine);
        // Slices 13 → 8: crop 2 from the start. A source voxel whose 2×2×2 block is all
        // liver and inside the cube comes back as liver.
        assert_eq!(back.data[[4, 4, 5]], 1);
        assert_eq!(back.data[[0, 0, 0]], 0);
    }

    #[test]
    fn spacing_mode_reorients_crops_resamples_and_restores() {
        let (mut img, lab) = case([16, 12, 6], BBox { lo: [4, 4, 1], hi: [12, 8, 5] });
        // An LPS-like affine: i runs to the left, j to the posterior.
        img.affine[0][0] = -0.8;
        img.affine[1][1] = -0.8;
        let lab = img.map_data(lab.data.clone());
        let cfg =
            SpacingConfig { target_spacing: Some([1.6, 1.6, 2.0]), crop: Crop::Liver { margin_mm: [0.0; 3] }, ..SpacingConfig::default() };
        let cfg = PreprocessConfig::Spacing(cfg);
        let p = cfg.prepare(&img, Some(&lab), None).unwrap();
        assert_eq!(p.image.shape(), [4, 2, 4]);
        assert_eq!(p.image.spacing, [1.6, 1.6, 2.0]);
        // RAS: first axis grows to the right.
        assert!(p.image.affine[0][0] > 0.0 && p.image.affine[1][1] > 0.0);
        let back = p.record.restore_labels(p.labels.as_ref().unwrap()).unwrap();
        assert_eq!((back.shape(), back.affine), (img.shape(), img.affine));
        // Inside the crop the label survives the 2× down and back; outside it is 0.
        assert_eq!(back.data[[6, 6, 2]], 1);
        assert_eq!(back.data[[0, 0, 0]], 0);
        assert_eq!(working_spacing(&cfg, [0.7, 0.8, 2.0], &img.affine), [0.7, 0.8, 2.0]);
    }

    #[test]
    fn uncropped_shape_is_the_prepared_shape_without_reading_voxels() {
        let (mut img, _) = case([16, 12, 6], BBox::full([16, 12, 6]));
        // Stored axes (j, i, k) of RAS: the first array axis runs along y.
        img.affine = [[0.0, 0.8, 0.0, 0.0], [0.8, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
        let cfg = PreprocessConfig::Spacing(SpacingConfig { target_spacing: Some([1.6, 0.8, 1.0]), ..SpacingConfig::default() });
        let p = cfg.prepare(&img, None, None).unwrap();
        let bound = cfg.uncropped_shape(img.shape(), img.spacing, &img.affine, None).unwrap();
        assert_eq!(bound, p.image.shape());
        assert_eq!(bound, [6, 16, 12]);
        let none = PreprocessConfig::Spacing(SpacingConfig::default());
        let e = none.uncropped_shape(img.shape(), img.spacing, &img.affine, None).unwrap_err();
        assert!(e.to_string().contains("target_spacing"), "{e}");
        let cube = PreprocessConfig::Mlfcore(MlfcoreConfig { slices: 8, cube: 4 });
        assert_eq!(cube.uncropped_shape(img.shape(), img.spacing, &img.affine, None).unwrap(), [4; 3]);
    }

    #[test]
    fn ras_scan_without_crop_restores_probabilities_exactly_in_place() {
        // Same spacing: nothing is interpolated, so the restored map is the prepared one.
        let (img, _) = case([8, 6, 4], BBox::full([8, 6, 4]));
        let cfg = PreprocessConfig::Spacing(SpacingConfig { target_spacing: Some(img.spacing), ..SpacingConfig::default() });
        let p = cfg.prepare(&img, None, None).unwrap();
        assert_eq!(p.image.data, img.data);
        let back = p.record.restore_image(&p.image, 1.0).unwrap();
        assert_eq!(back, img);
    }

    #[test]
    fn median_spacing_per_axis() {
        let m = median_spacing(&[[0.7, 0.7, 5.0], [0.9, 0.8, 1.0], [0.8, 0.6, 2.5], [1.0, 1.0, 0.7]]).unwrap();
        let want = [0.85, 0.75, 1.75];
        assert!((0..3).all(|a| (m[a] - want[a]).abs() < 1e-12), "{m:?}");
        assert_eq!(median_spacing(&[]), None);
    }
}
