//! Bounding boxes, cropping to the body or to the liver, and pasting results back.
//!
//! A crop keeps the world position of every voxel: the cropped volume's affine is moved to
//! the box's first voxel, so a crop lines up with its source in any viewer. [`CropRecord`]
//! holds what [`paste`] needs to put a prediction made on the crop back into the full grid.

use ndarray::{s, Array3, ArrayView3};
use serde::{Deserialize, Serialize};

use crate::resample::Grid;
use crate::{Error, Image, Labels, Result, Volume};

/// A box of voxels `lo[a] .. hi[a]` along each axis (`hi` exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BBox {
    /// First voxel inside, per axis.
    pub lo: [usize; 3],
    /// One past the last voxel inside, per axis.
    pub hi: [usize; 3],
}

impl BBox {
    /// The smallest box holding both.
    pub fn union(&self, other: &BBox) -> BBox {
        let mut u = *self;
        for a in 0..3 {
            u.lo[a] = u.lo[a].min(other.lo[a]);
            u.hi[a] = u.hi[a].max(other.hi[a]);
        }
        u
    }

    /// The whole of a volume of shape `shape`.
    pub fn full(shape: [usize; 3]) -> Self {
        BBox { lo: [0; 3], hi: shape }
    }

    /// The smallest box holding every voxel for which `keep` is true; `None` if none is.
    pub fn of<T>(data: &Array3<T>, keep: impl Fn(&T) -> bool) -> Option<Self> {
        let mut lo = [usize::MAX; 3];
        let mut hi = [0usize; 3];
        for ((i, j, k), v) in data.indexed_iter() {
            if keep(v) {
                for (a, x) in [i, j, k].into_iter().enumerate() {
                    lo[a] = lo[a].min(x);
                    hi[a] = hi[a].max(x + 1);
                }
            }
        }
        (lo[0] != usize::MAX).then_some(BBox { lo, hi })
    }

    /// Shape of the box.
    pub fn shape(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.hi[a] - self.lo[a])
    }

    /// The box grown by `margin` voxels on every side, kept inside `shape`.
    pub fn grow(&self, margin: [usize; 3], shape: [usize; 3]) -> Self {
        BBox { lo: [0, 1, 2].map(|a| self.lo[a].saturating_sub(margin[a])), hi: [0, 1, 2].map(|a| (self.hi[a] + margin[a]).min(shape[a])) }
    }

    /// Whether the box is non-empty and lies inside `shape`.
    pub fn fits(&self, shape: [usize; 3]) -> bool {
        (0..3).all(|a| self.lo[a] < self.hi[a] && self.hi[a] <= shape[a])
    }
}

/// Margins in mm turned into whole voxels (rounded up) for a spacing.
pub fn margin_voxels(margin_mm: [f64; 3], spacing: [f64; 3]) -> [usize; 3] {
    [0, 1, 2].map(|a| (margin_mm[a].max(0.0) / spacing[a]).ceil() as usize)
}

/// What to crop a case to before resampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Crop {
    /// Keep the whole volume.
    #[default]
    None,
    /// The box of voxels above `threshold` HU (air is about −1000, fat about −100), grown by
    /// `margin_mm`. The scanner table, if above the threshold, stays in the box.
    Body {
        /// Intensity in HU above which a voxel counts as body.
        #[serde(default = "default_body_threshold")]
        threshold: f32,
        /// Margin in mm added on every side, per axis.
        #[serde(default)]
        margin_mm: [f64; 3],
    },
    /// The box of the reference liver (label ≥ 1), grown by `margin_mm`. Needs labels, so it
    /// is for training data; a case without liver is kept whole.
    Liver {
        /// Margin in mm added on every side, per axis.
        #[serde(default = "default_liver_margin")]
        margin_mm: [f64; 3],
    },
}

fn default_body_threshold() -> f32 {
    -500.0
}

fn default_liver_margin() -> [f64; 3] {
    [10.0; 3]
}

/// Where a crop came from: enough to paste a result on the crop back into the full grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CropRecord {
    /// The box in the source grid.
    pub bbox: BBox,
    /// The source grid.
    pub source: Grid,
}

impl Crop {
    /// The box this crop keeps for a case.
    pub fn bbox(&self, img: &Image, labels: Option<&Labels>) -> Result<BBox> {
        let shape = img.shape();
        let grown =
            |b: Option<BBox>, margin_mm: [f64; 3]| b.map_or(BBox::full(shape), |b| b.grow(margin_voxels(margin_mm, img.spacing), shape));
        match self {
            Crop::None => Ok(BBox::full(shape)),
            Crop::Body { threshold, margin_mm } => Ok(grown(BBox::of(&img.data, |&v| v > *threshold), *margin_mm)),
            Crop::Liver { margin_mm } => {
                let labels = labels
                    .ok_or_else(|| Error::Config { field: "crop".into(), msg: "cropping to the liver needs the case's labels".into() })?;
                Ok(grown(BBox::of(&labels.data, |&l| l >= 1), *margin_mm))
            }
        }
    }
}

/// The part of `v` inside `bbox`, with its affine moved to the box's first voxel.
///
/// Panics if the box does not fit the volume.
pub fn crop<T: Clone>(v: &Volume<T>, bbox: &BBox) -> Volume<T> {
    assert!(bbox.fits(v.shape()), "{bbox:?} does not fit {:?}", v.shape());
    let data = v.data.slice(s![bbox.lo[0]..bbox.hi[0], bbox.lo[1]..bbox.hi[1], bbox.lo[2]..bbox.hi[2]]).to_owned();
    Volume { data, spacing: v.spacing, affine: shift_origin(&v.affine, bbox.lo.map(|x| x as f64)) }
}

/// The affine of a grid whose voxel 0 is voxel `offset` (in index units) of `affine`.
pub fn shift_origin(affine: &[[f64; 4]; 4], offset: [f64; 3]) -> [[f64; 4]; 4] {
    let mut out = *affine;
    for (r, row) in out.iter_mut().enumerate().take(3) {
        row[3] += (0..3).map(|c| affine[r][c] * offset[c]).sum::<f64>();
    }
    out
}

/// The `shape`-sized block of `a` whose first voxel is `start` (which may lie outside, on
/// either side), `fill` where the block leaves `a`.
pub fn padded_block<T: Copy>(a: ArrayView3<'_, T>, start: [i64; 3], shape: [usize; 3], fill: T) -> Array3<T> {
    let mut out = Array3::from_elem(shape, fill);
    let dims = a.shape();
    if let Some(Overlap { src, dst }) = overlap([dims[0], dims[1], dims[2]], start, shape) {
        out.slice_mut(s![dst[0].0..dst[0].1, dst[1].0..dst[1].1, dst[2].0..dst[2].1]).assign(&a.slice(s![
            src[0].0..src[0].1,
            src[1].0..src[1].1,
            src[2].0..src[2].1
        ]));
    }
    out
}

/// Where a block and a volume overlap, as index ranges `(from, to)` per axis in the
/// volume (`src`) and in the block (`dst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overlap {
    pub src: [(usize, usize); 3],
    pub dst: [(usize, usize); 3],
}

/// The overlap of the `shape`-sized block starting at `start` with a volume of `volume`
/// voxels; `None` when they do not meet. The one computation of what [`padded_block`] and
/// the training store's windowed reads copy, so both cut the same voxels.
pub(crate) fn overlap(volume: [usize; 3], start: [i64; 3], shape: [usize; 3]) -> Option<Overlap> {
    let mut src = [(0usize, 0usize); 3];
    let mut dst = [(0usize, 0usize); 3];
    for ax in 0..3 {
        let lo = start[ax].max(0);
        let hi = (start[ax] + shape[ax] as i64).min(volume[ax] as i64);
        if lo >= hi {
            return None;
        }
        src[ax] = (lo as usize, hi as usize);
        dst[ax] = ((lo - start[ax]) as usize, (hi - start[ax]) as usize);
    }
    Some(Overlap { src, dst })
}

/// Puts `part` (a result on a crop) back at `record.bbox` of a volume on `record.source`,
/// everything else `fill`.
pub fn paste<T: Clone>(part: &Volume<T>, record: &CropRecord, fill: T) -> Result<Volume<T>> {
    if part.shape() != record.bbox.shape() || !record.bbox.fits(record.source.shape) {
        return Err(Error::Config {
            field: "crop".into(),
            msg: format!(
                "a result of shape {:?} cannot be pasted at {:?} into a volume of shape {:?}",
                part.shape(),
                record.bbox,
                record.source.shape
            ),
        });
    }
    let mut data = Array3::from_elem(record.source.shape, fill);
    let b = &record.bbox;
    data.slice_mut(s![b.lo[0]..b.hi[0], b.lo[1]..b.hi[1], b.lo[2]..b.hi[2]]).assign(&part.data);
    Ok(Volume { data, spacing: record.source.spacing, affine: record.source.affine })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        let mut d = Array3::<u8>::zeros((10, 8, 6));
        d[[3, 2, 1]] = 1;
        d[[5, 4, 3]] = 2;
        Volume::with_spacing(d, [2.0, 2.0, 5.0])
    }

    #[test]
    fn bbox_covers_exactly_the_selected_voxels() {
        let l = labels();
        assert_eq!(BBox::of(&l.data, |&v| v >= 1), Some(BBox { lo: [3, 2, 1], hi: [6, 5, 4] }));
        assert_eq!(BBox::of(&l.data, |&v| v == 2), Some(BBox { lo: [5, 4, 3], hi: [6, 5, 4] }));
        assert_eq!(BBox::of(&l.data, |&v| v > 2), None);
    }

    #[test]
    fn liver_crop_grows_by_the_margin_in_mm_and_stays_inside() {
        let l = labels();
        let img = l.map_data(l.data.mapv(|v| v as f32));
        let b = Crop::Liver { margin_mm: [3.0, 2.0, 10.0] }.bbox(&img, Some(&l)).unwrap();
        // 3 mm at 2 mm/voxel is 2 voxels; 10 mm at 5 mm is 2 voxels, clipped at 0 and 6.
        assert_eq!(b, BBox { lo: [1, 1, 0], hi: [8, 6, 6] });
        assert!(Crop::Liver { margin_mm: [0.0; 3] }.bbox(&img, None).is_err());
    }

    #[test]
    fn body_crop_uses_the_threshold() {
        let mut d = Array3::from_elem((6, 6, 3), -1000.0f32);
        d[[2, 3, 1]] = 40.0;
        d[[4, 3, 1]] = -100.0;
        let img = Volume::with_spacing(d, [1.0; 3]);
        let b = Crop::Body { threshold: -500.0, margin_mm: [0.0; 3] }.bbox(&img, None).unwrap();
        assert_eq!(b, BBox { lo: [2, 3, 1], hi: [5, 4, 2] });
    }

    #[test]
    fn crop_keeps_world_positions_and_paste_restores_the_volume() {
        let mut l = labels();
        l.affine[0][3] = -50.0;
        l.affine[0][1] = 0.3; // shear to check the full affine is used
        let b = BBox { lo: [3, 2, 1], hi: [6, 5, 4] };
        let c = crop(&l, &b);
        assert_eq!(c.shape(), [3, 3, 3]);
        assert_eq!(c.data[[0, 0, 0]], 1);
        // World position of cropped voxel (0,0,0) = source voxel (3,2,1).
        let world = |a: &[[f64; 4]; 4], p: [f64; 3]| -> Vec<f64> {
            (0..3).map(|r| (0..3).map(|k| a[r][k] * p[k]).sum::<f64>() + a[r][3]).collect()
        };
        assert_eq!(world(&c.affine, [0.0; 3]), world(&l.affine, [3.0, 2.0, 1.0]));
        let rec = CropRecord { bbox: b, source: Grid::of(&l) };
        let back = paste(&c, &rec, 0).unwrap();
        assert_eq!(back, l);
        let wrong = crop(&l, &BBox { lo: [0; 3], hi: [2, 2, 2] });
        assert!(paste(&wrong, &rec, 0).is_err());
    }

    #[test]
    fn padded_block_fills_outside_on_both_sides() {
        let a = Array3::from_shape_fn((3, 2, 2), |(i, j, k)| (100 * i + 10 * j + k) as i32);
        let b = padded_block(a.view(), [-1, 1, 0], [5, 2, 1], -1);
        let got: Vec<i32> = b.iter().copied().collect();
        assert_eq!(got, vec![-1, -1, 10, -1, 110, -1, 210, -1, -1, -1]);
        assert!(padded_block(a.view(), [3, 0, 0], [1, 1, 1], 7).iter().all(|&v| v == 7));
    }

    #[test]
    fn crop_config_parses_with_defaults() {
        let c: Crop = serde_json::from_str(r#"{"kind": "body"}"#).unwrap();
        assert_eq!(c, Crop::Body { threshold: -500.0, margin_mm: [0.0; 3] });
        let c: Crop = serde_json::from_str(r#"{"kind": "liver"}"#).unwrap();
        assert_eq!(c, Crop::Liver { margin_mm: [10.0; 3] });
        assert!(serde_json::from_str::<Crop>(r#"{"kind": "liver", "margin": 3}"#).is_err());
    }
}
