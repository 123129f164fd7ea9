//! CT intensity normalisation and the dataset statistics it needs.
//!
//! Two schemes: a fixed Hounsfield window mapped to `[0, 1]` (MONAI's
//! `ScaleIntensityRange`), or nnU-Net's CT scheme (Isensee et al., *nnU-Net*, Nature Methods
//! 2021): clip to the 0.5 and 99.5 percentiles of the foreground voxels of the whole training
//! set, then subtract their mean and divide by their standard deviation.
//!
//! Statistics are gathered per case ([`CaseStats`]) and merged ([`IntensityStats::merge`]),
//! so a dataset cache can keep them per case and recompute the dataset's figures without
//! touching the images again. Mean and standard deviation are exact over every foreground
//! voxel (Chan et al.'s pairwise update); percentiles come from an evenly strided sample of at
//! most [`SAMPLES_PER_CASE`] foreground voxels per case, as nnU-Net also samples (10 000 per
//! case), with numpy's default linear interpolation between order statistics.

use serde::{Deserialize, Serialize};

use crate::{Error, Image, Labels, Result};

/// Foreground voxels kept per case for the percentiles.
pub const SAMPLES_PER_CASE: usize = 10_000;

/// How intensities are normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Intensity {
    /// Leave intensities as they are (Hounsfield units).
    None,
    /// Clip to `[lower, upper]` (HU) and map that window linearly onto `[0, 1]`.
    Window {
        /// Lower end of the window in HU (e.g. -200 for an abdominal window).
        lower: f32,
        /// Upper end of the window in HU (e.g. 300).
        upper: f32,
    },
    /// nnU-Net's CT scheme: clip to the dataset's foreground percentiles, then z-score with
    /// the foreground mean and standard deviation.
    ForegroundZScore {
        /// Lower clipping percentile, 0..100 (nnU-Net: 0.5).
        #[serde(default = "default_lower_percentile")]
        lower_percentile: f64,
        /// Upper clipping percentile, 0..100 (nnU-Net: 99.5).
        #[serde(default = "default_upper_percentile")]
        upper_percentile: f64,
        /// The statistics themselves, when known: `lits train` writes those of the training
        /// cases here in the run's `config.json`, so that the config alone normalises a scan
        /// as training did. Given in a config, the dataset's statistics are not collected.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stats: Option<ZScoreStats>,
    },
}

/// The numbers a foreground z-score applies (nnU-Net's `foreground_intensity_properties`):
/// clip to `[lower, upper]`, subtract `mean`, divide by `std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZScoreStats {
    /// The lower clipping percentile's value (HU).
    pub lower: f32,
    /// The upper clipping percentile's value (HU).
    pub upper: f32,
    /// The foreground mean (HU).
    pub mean: f32,
    /// The foreground standard deviation (HU).
    pub std: f32,
}

impl ZScoreStats {
    /// The statistics a resolved z-score normaliser applies.
    pub fn of(n: &Normaliser) -> Option<Self> {
        n.clip.map(|[lower, upper]| ZScoreStats { lower, upper, mean: n.shift, std: n.scale })
    }
}

fn default_lower_percentile() -> f64 {
    0.5
}

fn default_upper_percentile() -> f64 {
    99.5
}

impl Default for Intensity {
    /// nnU-Net's CT scheme with its percentiles.
    fn default() -> Self {
        Intensity::ForegroundZScore {
            lower_percentile: default_lower_percentile(),
            upper_percentile: default_upper_percentile(),
            stats: None,
        }
    }
}

impl Intensity {
    /// Whether [`Intensity::resolve`] needs dataset statistics.
    pub fn needs_stats(&self) -> bool {
        matches!(self, Intensity::ForegroundZScore { stats: None, .. })
    }

    /// This scheme with the statistics of `normaliser` (what [`Intensity::resolve`] made of
    /// it) written in, so that it resolves to the same normaliser without any data; schemes
    /// that need no statistics are returned as they are.
    pub fn with_stats(&self, normaliser: &Normaliser) -> Intensity {
        match self {
            Intensity::ForegroundZScore { lower_percentile, upper_percentile, stats: None } => Intensity::ForegroundZScore {
                lower_percentile: *lower_percentile,
                upper_percentile: *upper_percentile,
                stats: ZScoreStats::of(normaliser),
            },
            other => other.clone(),
        }
    }

    /// This scheme without written-in statistics (what it is before any data).
    pub fn without_stats(&self) -> Intensity {
        match self {
            Intensity::ForegroundZScore { lower_percentile, upper_percentile, .. } => {
                Intensity::ForegroundZScore { lower_percentile: *lower_percentile, upper_percentile: *upper_percentile, stats: None }
            }
            other => other.clone(),
        }
    }

    /// Checks the numbers without any data.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Intensity::None => Ok(()),
            Intensity::Window { lower, upper } => {
                if lower.is_finite() && upper.is_finite() && lower < upper {
                    Ok(())
                } else {
                    Err(config("intensity", format!("window [{lower}, {upper}] must have lower < upper")))
                }
            }
            Intensity::ForegroundZScore { lower_percentile: lo, upper_percentile: hi, stats } => {
                if let Some(ZScoreStats { lower, upper, mean, std }) = stats {
                    if ![lower, upper, mean, std].iter().all(|v| v.is_finite()) || lower > upper || std <= 0.0 {
                        return Err(config(
                            "intensity.stats",
                            format!(
                                "lower {lower}, upper {upper}, mean {mean}, std {std}: need finite numbers, lower <= upper and std > 0"
                            ),
                        ));
                    }
                }
                if (0.0..=100.0).contains(&lo) && (0.0..=100.0).contains(&hi) && lo < hi {
                    Ok(())
                } else {
                    Err(config("intensity", format!("percentiles {lo} and {hi} must lie in 0..100 with lower < upper")))
                }
            }
        }
    }

    /// The concrete transform, given the dataset's statistics where the scheme needs them.
    pub fn resolve(&self, stats: Option<&IntensityStats>) -> Result<Normaliser> {
        self.validate()?;
        match *self {
            Intensity::None => Ok(Normaliser::IDENTITY),
            Intensity::Window { lower, upper } => Ok(Normaliser { clip: Some([lower, upper]), shift: lower, scale: upper - lower }),
            Intensity::ForegroundZScore { stats: Some(z), .. } => {
                Ok(Normaliser { clip: Some([z.lower, z.upper]), shift: z.mean, scale: z.std.max(1e-8) })
            }
            Intensity::ForegroundZScore { lower_percentile, upper_percentile, stats: None } => {
                let stats = stats
                    .filter(|s| s.count > 0)
                    .ok_or_else(|| config("intensity", "foreground z-score needs foreground voxels in the dataset, found none"))?;
                Ok(Normaliser {
                    clip: Some([stats.percentile(lower_percentile) as f32, stats.percentile(upper_percentile) as f32]),
                    shift: stats.mean as f32,
                    // A constant foreground would divide by zero; keep the values finite.
                    scale: (stats.std as f32).max(1e-8),
                })
            }
        }
    }
}

fn config(field: &str, msg: impl Into<String>) -> Error {
    Error::Config { field: field.into(), msg: msg.into() }
}

/// `value ↦ (clamp(value, clip) − shift) / scale`: a resolved normalisation, stored with
/// the preprocessed data so training and inference apply the same one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normaliser {
    /// Clipping range applied first, if any.
    pub clip: Option<[f32; 2]>,
    /// Subtracted after clipping.
    pub shift: f32,
    /// Divided by last (positive).
    pub scale: f32,
}

impl Normaliser {
    /// Leaves values unchanged.
    pub const IDENTITY: Normaliser = Normaliser { clip: None, shift: 0.0, scale: 1.0 };

    /// Normalises `values` in place, on the rayon pool for large inputs.
    pub fn apply(&self, values: &mut [f32]) {
        use rayon::prelude::*;
        if *self == Normaliser::IDENTITY {
            return;
        }
        let inv = 1.0 / self.scale;
        let (lo, hi) = match self.clip {
            Some([lo, hi]) => (lo, hi),
            None => (f32::NEG_INFINITY, f32::INFINITY),
        };
        values.par_chunks_mut(1 << 16).for_each(|chunk| {
            for v in chunk {
                *v = (v.clamp(lo, hi) - self.shift) * inv;
            }
        });
    }

    /// Normalises an image in place.
    pub fn apply_image(&self, img: &mut Image) {
        match img.data.as_slice_mut() {
            Some(s) => self.apply(s),
            None => img.data.mapv_inplace(|v| {
                let mut x = [v];
                self.apply(&mut x);
                x[0]
            }),
        }
    }
}

/// Foreground intensity statistics of one case: exact moments plus a strided sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseStats {
    /// Foreground voxels counted.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Sum of squared deviations from the mean (for the variance).
    pub m2: f64,
    /// Smallest foreground value.
    pub min: f32,
    /// Largest foreground value.
    pub max: f32,
    /// Up to [`SAMPLES_PER_CASE`] foreground values, evenly strided through the volume.
    #[serde(skip)]
    pub samples: Vec<f32>,
}

impl CaseStats {
    /// Statistics of the voxels of `img` where `labels` is not 0.
    ///
    /// Panics if the shapes differ (callers check geometry first).
    pub fn collect(img: &Image, labels: &Labels) -> Self {
        assert_eq!(img.shape(), labels.shape(), "image and labels must have the same shape");
        let count = labels.data.iter().filter(|&&l| l != 0).count();
        let stride = count.div_ceil(SAMPLES_PER_CASE).max(1);
        let mut s = CaseStats {
            count: 0,
            mean: 0.0,
            m2: 0.0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            samples: Vec::with_capacity(count.min(SAMPLES_PER_CASE)),
        };
        let mut seen = 0usize;
        for (&v, &l) in img.data.iter().zip(labels.data.iter()) {
            if l == 0 {
                continue;
            }
            if seen.is_multiple_of(stride) {
                s.samples.push(v);
            }
            seen += 1;
            // Welford's update.
            s.count += 1;
            let d = v as f64 - s.mean;
            s.mean += d / s.count as f64;
            s.m2 += d * (v as f64 - s.mean);
            s.min = s.min.min(v);
            s.max = s.max.max(v);
        }
        if s.count == 0 {
            // Finite placeholders keep the JSON readable; merging skips empty cases.
            (s.min, s.max) = (0.0, 0.0);
        }
        s
    }
}

/// Foreground intensity statistics of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntensityStats {
    /// Foreground voxels counted.
    pub count: u64,
    /// Mean of every foreground voxel.
    pub mean: f64,
    /// Standard deviation (population) of every foreground voxel.
    pub std: f64,
    /// Smallest foreground value.
    pub min: f32,
    /// Largest foreground value.
    pub max: f32,
    /// 0.5th percentile of the foreground (what nnU-Net's fingerprint records).
    pub percentile_00_5: f64,
    /// 99.5th percentile of the foreground.
    pub percentile_99_5: f64,
    /// The merged per-case samples, sorted ascending (for other percentiles).
    #[serde(skip)]
    pub sorted_samples: Vec<f32>,
}

impl IntensityStats {
    /// Merges per-case statistics (Chan et al.'s parallel variance update).
    pub fn merge<'a>(cases: impl IntoIterator<Item = &'a CaseStats>) -> Self {
        let (mut n, mut mean, mut m2) = (0u64, 0.0f64, 0.0f64);
        let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
        let mut samples = Vec::new();
        for c in cases {
            if c.count == 0 {
                continue;
            }
            let total = n + c.count;
            let d = c.mean - mean;
            mean += d * c.count as f64 / total as f64;
            m2 += c.m2 + d * d * n as f64 * c.count as f64 / total as f64;
            n = total;
            min = min.min(c.min);
            max = max.max(c.max);
            samples.extend_from_slice(&c.samples);
        }
        samples.sort_by(f32::total_cmp);
        let std = if n > 0 { (m2 / n as f64).sqrt() } else { 0.0 };
        let mut s =
            IntensityStats { count: n, mean, std, min, max, percentile_00_5: f64::NAN, percentile_99_5: f64::NAN, sorted_samples: samples };
        if n == 0 {
            // Nothing to describe: zeros rather than NaN and infinities, which JSON cannot hold.
            (s.min, s.max, s.percentile_00_5, s.percentile_99_5) = (0.0, 0.0, 0.0, 0.0);
        } else {
            s.percentile_00_5 = s.percentile(0.5);
            s.percentile_99_5 = s.percentile(99.5);
        }
        s
    }

    /// The `p`-th percentile (0..100) of the samples, interpolated linearly between order
    /// statistics like `numpy.percentile`'s default. NaN without samples.
    pub fn percentile(&self, p: f64) -> f64 {
        crate::percentile::of_sorted(&self.sorted_samples, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Volume;
    use ndarray::Array3;

    fn case(values: &[f32], labels: &[u8]) -> (Image, Labels) {
        let n = values.len();
        (
            Volume::with_spacing(Array3::from_shape_vec((n, 1, 1), values.to_vec()).unwrap(), [1.0; 3]),
            Volume::with_spacing(Array3::from_shape_vec((n, 1, 1), labels.to_vec()).unwrap(), [1.0; 3]),
        )
    }

    #[test]
    fn window_maps_the_window_onto_unit_range() {
        let n = Intensity::Window { lower: -200.0, upper: 300.0 }.resolve(None).unwrap();
        let mut v = [-1000.0, -200.0, 50.0, 300.0, 2000.0];
        n.apply(&mut v);
        assert_eq!(v, [0.0, 0.0, 0.5, 1.0, 1.0]);
    }

    #[test]
    fn bad_windows_and_percentiles_are_refused() {
        assert!(Intensity::Window { lower: 10.0, upper: 10.0 }.validate().is_err());
        let bad = Intensity::ForegroundZScore { lower_percentile: 99.5, upper_percentile: 0.5, stats: None };
        assert!(bad.validate().is_err());
        assert!(Intensity::default().resolve(None).is_err());
    }

    #[test]
    fn case_stats_count_only_foreground() {
        let (img, lab) = case(&[-1000.0, 40.0, 60.0, 80.0, -1000.0], &[0, 1, 1, 2, 0]);
        let s = CaseStats::collect(&img, &lab);
        assert_eq!(s.count, 3);
        assert!((s.mean - 60.0).abs() < 1e-12);
        assert!((s.m2 - 800.0).abs() < 1e-9);
        assert_eq!((s.min, s.max), (40.0, 80.0));
        assert_eq!(s.samples, vec![40.0, 60.0, 80.0]);
    }

    #[test]
    fn merged_moments_equal_the_moments_of_the_union() {
        let (a, la) = case(&[1.0, 2.0, 3.0, 10.0], &[1, 1, 1, 0]);
        let (b, lb) = case(&[4.0, 5.0, 6.0, 7.0, 8.0], &[1, 1, 2, 2, 1]);
        let m = IntensityStats::merge(&[CaseStats::collect(&a, &la), CaseStats::collect(&b, &lb)]);
        // Union 1..=8: mean 4.5, population variance 5.25.
        assert_eq!(m.count, 8);
        assert!((m.mean - 4.5).abs() < 1e-12);
        assert!((m.std - 5.25f64.sqrt()).abs() < 1e-12);
        // numpy.percentile(range(1, 9), [0.5, 50, 99.5]) = 1.035, 4.5, 7.965
        assert!((m.percentile(0.5) - 1.035).abs() < 1e-9);
        assert!((m.percentile(50.0) - 4.5).abs() < 1e-9);
        assert!((m.percentile(99.5) - 7.965).abs() < 1e-9);
    }

    #[test]
    fn zscore_clips_to_percentiles_then_standardises() {
        let (a, la) = case(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &[1; 8]);
        let stats = IntensityStats::merge(&[CaseStats::collect(&a, &la)]);
        let n = Intensity::default().resolve(Some(&stats)).unwrap();
        let mut v = [-100.0, 4.5, 100.0];
        n.apply(&mut v);
        let sd = 5.25f32.sqrt();
        assert!((v[0] - (1.035 - 4.5) / sd).abs() < 1e-5);
        assert!(v[1].abs() < 1e-6);
        assert!((v[2] - (7.965 - 4.5) / sd).abs() < 1e-5);
    }

    #[test]
    fn written_in_statistics_resolve_to_the_same_normaliser_through_json() {
        // Awkward values, so that a rounding on the way (f64, text) would show.
        let (a, la) = case(&[-13.7, 2.1, 3.3, 41.9, 57.01, 66.6, 70.0, 1234.5], &[1; 8]);
        let stats = IntensityStats::merge(&[CaseStats::collect(&a, &la)]);
        let scheme = Intensity::default();
        let n = scheme.resolve(Some(&stats)).unwrap();
        let written = scheme.with_stats(&n);
        assert!(scheme.needs_stats() && !written.needs_stats());
        let back: Intensity = serde_json::from_str(&serde_json::to_string(&written).unwrap()).unwrap();
        assert_eq!(back, written);
        assert_eq!(back.resolve(None).unwrap(), n);
        // Statistics are written in once; a window has none to write.
        assert_eq!(written.with_stats(&Normaliser::IDENTITY), written);
        let window = Intensity::Window { lower: -200.0, upper: 300.0 };
        assert_eq!(window.with_stats(&n), window);
        // Impossible statistics are refused, naming the field.
        let bad = Intensity::ForegroundZScore {
            lower_percentile: 0.5,
            upper_percentile: 99.5,
            stats: Some(ZScoreStats { lower: 10.0, upper: 0.0, mean: 5.0, std: 1.0 }),
        };
        assert!(bad.validate().unwrap_err().to_string().contains("intensity.stats"));
    }

    #[test]
    fn statistics_without_foreground_survive_json() {
        let (img, lab) = case(&[1.0, 2.0], &[0, 0]);
        let c = CaseStats::collect(&img, &lab);
        let back: CaseStats = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!((back.count, back.min, back.max), (0, 0.0, 0.0));
        let m = IntensityStats::merge(&[c]);
        let back: IntensityStats = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!((back.count, back.percentile_99_5), (0, 0.0));
    }

    #[test]
    fn sampling_is_strided_and_bounded() {
        let n = 3 * SAMPLES_PER_CASE + 7;
        let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let (img, lab) = case(&values, &vec![1; n]);
        let s = CaseStats::collect(&img, &lab);
        assert!(s.samples.len() <= SAMPLES_PER_CASE);
        assert_eq!(&s.samples[..3], &[0.0, 4.0, 8.0]);
    }

    #[test]
    fn intensity_config_round_trips_and_rejects_unknown_fields() {
        let i: Intensity = serde_json::from_str(r#"{"kind": "window", "lower": -200, "upper": 300}"#).unwrap();
        assert_eq!(i, Intensity::Window { lower: -200.0, upper: 300.0 });
        let d: Intensity = serde_json::from_str(r#"{"kind": "foreground_z_score"}"#).unwrap();
        assert_eq!(d, Intensity::default());
        assert!(serde_json::from_str::<Intensity>(r#"{"kind": "window", "lower": 0, "upper": 1, "x": 2}"#).is_err());
    }
}
