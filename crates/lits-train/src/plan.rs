//! The plan of a run, made once: the dataset surveyed (every file name, pair and header,
//! no voxel), the median spacing, each case's prepared shape, the split, the normaliser
//! where it needs no statistics, whether the patch and window fit, and what an epoch will
//! cost. `lits plan` prints it; `lits train` makes the same plan, prepares the cases it
//! names, and records it, resolved, as the run's `plans.json` with absolute paths (as
//! nnU-Net's plan-and-preprocess writes `nnUNetPlans.json`). Resume, `predict --run` and
//! `evaluate --run` read that record and never survey the dataset again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use lits_data::cache::{self, Failure, Pair};
use lits_data::dataset::Split;
use lits_data::intensity::{IntensityStats, Normaliser};
use lits_data::preprocess::PreprocessConfig;
use lits_model::UNet3d;

use crate::config::TrainConfig;
use crate::data;
use crate::error::{Error, Result};

/// Version of the `plans.json` record.
pub const VERSION: u32 = 2;

/// A case of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedCase {
    /// The case number.
    pub id: u32,
    /// The scan (absolute).
    pub image: PathBuf,
    /// Its labels (absolute).
    pub label: PathBuf,
    /// The scan's shape as stored.
    pub source_shape: [usize; 3],
    /// The scan's voxel size as stored (mm).
    pub source_spacing: [f64; 3],
    /// Its shape once resampled, before any crop (an upper bound of the prepared shape).
    pub prepared_shape: [usize; 3],
}

/// What an epoch is estimated to cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Training patches per epoch (`steps_per_epoch × batch_size`).
    pub patches_per_epoch: u64,
    /// The prepared cases held in memory while training (float32 image and uint8 labels,
    /// uncropped: an upper bound): every planned case with the memory store, the largest
    /// one (validated one at a time) with the disk store.
    pub prepared_bytes: u64,
    /// Activations one training step keeps for its backward pass (see [`activation_floats_per_voxel`]).
    pub activation_bytes: u64,
}

/// The plan of a run (module docs); recorded as `plans.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`VERSION`] (1: a record of before plans held cases and split).
    #[serde(default = "version_1")]
    pub version: u32,
    /// The dataset folder, absolute.
    pub dataset: PathBuf,
    /// The prepared-case cache of this dataset and preprocessing, absolute.
    #[serde(default)]
    pub cache: Option<PathBuf>,
    /// The preprocessing configuration.
    pub preprocess: PreprocessConfig,
    /// The dataset's median working spacing (used when the config names none).
    pub median_spacing: Option<[f64; 3]>,
    /// Every usable case of the dataset.
    #[serde(default)]
    pub cases: Vec<PlannedCase>,
    /// Files of the dataset that make no case.
    #[serde(default)]
    pub failed: Vec<Failure>,
    /// Which cases train, validate and test.
    #[serde(default)]
    pub split: Option<Split>,
    /// The intensity normalisation: resolved when planned where it needs no statistics,
    /// else once the training cases are prepared (always in a run's record).
    pub normaliser: Option<Normaliser>,
    /// Foreground intensity statistics of the training cases (when collected).
    pub intensity_stats: Option<IntensityStats>,
    /// What an epoch costs.
    #[serde(default)]
    pub estimate: Option<Estimate>,
}

fn version_1() -> u32 {
    1
}

impl Plan {
    /// The image/label pairs of every planned case.
    pub fn pairs(&self) -> Vec<Pair> {
        self.cases.iter().map(|c| Pair { id: c.id, image: c.image.clone(), label: c.label.clone() }).collect()
    }

    /// The planned case `id`.
    pub fn case(&self, id: u32) -> Option<&PlannedCase> {
        self.cases.iter().find(|c| c.id == id)
    }

    /// Whether the record holds the cases and split (written by this version of lits).
    pub fn is_complete(&self) -> bool {
        self.version >= VERSION && self.split.is_some() && self.cache.is_some()
    }
}

/// Makes the plan of `cfg` (module docs): every problem of the config refused before the
/// dataset is read (and before phantoms are generated), one survey of the dataset.
pub fn plan(cfg: &TrainConfig) -> Result<Plan> {
    cfg.validate()?;
    if cfg.data.dir.is_none() {
        // Phantoms not made yet: what fits is worked out from their config.
        data::check_patch_fits_phantoms(cfg)?;
    }
    let dir = data::dataset_dir(cfg)?;
    let survey = cache::survey(&dir, &cfg.preprocess)?;
    let mut cases = Vec::with_capacity(survey.cases.len());
    let mut failed = survey.failed.clone();
    for c in &survey.cases {
        let g = &c.header.geometry;
        match cfg.preprocess.uncropped_shape(c.header.shape, g.spacing(), &g.affine, survey.median_spacing) {
            Ok(prepared_shape) => cases.push(PlannedCase {
                id: c.pair.id,
                image: c.pair.image.clone(),
                label: c.pair.label.clone(),
                source_shape: c.header.shape,
                source_spacing: g.spacing(),
                prepared_shape,
            }),
            Err(e) => failed.push(Failure { id: Some(c.pair.id), path: c.pair.image.clone(), problem: e.to_string() }),
        }
    }
    let ids: Vec<u32> = cases.iter().map(|c| c.id).collect();
    if ids.is_empty() {
        let list: Vec<String> = failed.iter().map(|f| f.to_string()).collect();
        return Err(Error::invalid(&dir, format!("holds no usable case:\n  {}", list.join("\n  "))));
    }
    let split = data::resolve_split(cfg, &dir, &ids)?;
    let bound = [0, 1, 2].map(|a| cases.iter().map(|c| c.prepared_shape[a]).max().unwrap_or(0));
    if cfg.data.dir.is_some() {
        data::check_patch_fits(cfg, &dir, bound)?;
    }
    let intensity = cfg.preprocess.intensity();
    let normaliser = if intensity.needs_stats() { None } else { Some(intensity.resolve(None)?) };
    let planned: Vec<&PlannedCase> = cases.iter().filter(|c| split.all_ids().any(|i| i == c.id)).collect();
    let estimate = Estimate {
        patches_per_epoch: u64::from(cfg.steps_per_epoch) * cfg.patches.batch_size as u64,
        prepared_bytes: {
            let bytes = planned.iter().map(|c| c.prepared_shape.iter().product::<usize>() as u64 * 5);
            match cfg.data.store {
                lits_data::store::StoreKind::Memory => bytes.sum(),
                lits_data::store::StoreKind::Disk => bytes.max().unwrap_or(0),
            }
        },
        activation_bytes: (activation_floats_per_voxel(cfg.model.base_channels)
            * cfg.patches.patch.iter().product::<usize>() as f64
            * cfg.patches.batch_size as f64
            * 4.0) as u64,
    };
    Ok(Plan {
        version: VERSION,
        cache: Some(data::prepared_dir(cfg, &dir, survey.median_spacing)),
        dataset: dir,
        preprocess: cfg.preprocess.clone(),
        median_spacing: survey.median_spacing,
        cases,
        failed,
        split: Some(split),
        normaliser,
        intensity_stats: None,
        estimate: Some(estimate),
    })
}

/// Float32 values the U-Net keeps per input voxel of a training step for its backward pass:
/// in each 3×3×3 block the convolution, BatchNorm and ReLU outputs of both convolutions
/// (6 per output channel), at full resolution for `inc` and `up2` (with `up2`'s upsampled
/// and concatenated input, 3 channels per base channel), at 1/8 for `down1` and `up1`
/// (with its 6-channel concatenation), at 1/64 for `down2` and `mid`. An estimate: the
/// allocator and libtorch's workspace come on top.
pub fn activation_floats_per_voxel(base_channels: i64) -> f64 {
    let c = base_channels as f64;
    let full = 6.0 * c + 6.0 * c + 3.0 * c;
    let eighth = (6.0 * 2.0 * c + 6.0 * 2.0 * c + 6.0 * c) / 8.0;
    let sixty_fourth = (6.0 * 4.0 * c + 6.0 * 4.0 * c) / 64.0;
    full + eighth + sixty_fourth
}

/// Seconds a training epoch of `cfg` is estimated to take on its device (the CPU when that
/// device is missing): a forward pass of the run's U-Net on a 32³ input is timed after a
/// warm-up and scaled by voxels to the epoch's patches, times 3 for the backward pass
/// (convolution cost grows linearly with voxels).
pub fn time_epoch(cfg: &TrainConfig) -> Result<f64> {
    let device = cfg.torch_device().unwrap_or(tch::Device::Cpu);
    let vs = nn::VarStore::new(device);
    let net = UNet3d::new(&vs.root(), &cfg.model);
    let side = 32i64;
    let x = Tensor::zeros([1, cfg.model.in_channels, side, side, side], (Kind::Float, device));
    let seconds = tch::no_grad(|| {
        let _ = net.forward_t(&x, false);
        let t0 = Instant::now();
        let y = net.forward_t(&x, false);
        let _ = y.sum(Kind::Float).double_value(&[]);
        t0.elapsed().as_secs_f64()
    });
    let voxels = cfg.patches.patch.iter().product::<usize>() as f64;
    let per_patch = seconds * voxels / (side * side * side) as f64 * 3.0;
    Ok(per_patch * cfg.patches.batch_size as f64 * f64::from(cfg.steps_per_epoch))
}

/// Writes a plan as the text `lits plan` prints.
pub fn describe(plan: &Plan, cfg: &TrainConfig, epoch_seconds: Option<f64>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let mib = |b: u64| b.div_ceil(1 << 20);
    let _ = writeln!(s, "dataset: {}", plan.dataset.display());
    let _ = writeln!(s, "cases: {} usable, {} failed", plan.cases.len(), plan.failed.len());
    for f in &plan.failed {
        let _ = writeln!(s, "  failed: {f}");
    }
    if let Some(split) = &plan.split {
        let ids = |v: &[u32]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
        let _ = writeln!(s, "split: {} train, {} val ({}), {} test", split.train.len(), split.val.len(), ids(&split.val), split.test.len());
    }
    match plan.median_spacing {
        Some(m) => {
            let _ = writeln!(s, "median spacing: {:.3} x {:.3} x {:.3} mm", m[0], m[1], m[2]);
        }
        None => {
            let _ = writeln!(s, "median spacing: not needed");
        }
    }
    let _ = writeln!(
        s,
        "preprocess: {}",
        lits_data::json::to_vec(&plan.preprocess).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    );
    if !plan.cases.is_empty() {
        let min = [0, 1, 2].map(|a| plan.cases.iter().map(|c| c.prepared_shape[a]).min().unwrap_or(0));
        let max = [0, 1, 2].map(|a| plan.cases.iter().map(|c| c.prepared_shape[a]).max().unwrap_or(0));
        let _ = writeln!(s, "prepared shapes (before crop): {min:?} to {max:?}");
    }
    for c in &plan.cases {
        let _ = writeln!(
            s,
            "  case {}: {:?} at {:.3} x {:.3} x {:.3} mm -> {:?}",
            c.id, c.source_shape, c.source_spacing[0], c.source_spacing[1], c.source_spacing[2], c.prepared_shape
        );
    }
    let _ = writeln!(
        s,
        "normaliser: {}",
        match &plan.normaliser {
            Some(n) => format!("{n:?}"),
            None => "from the training cases' foreground, when they are prepared".into(),
        }
    );
    let _ = writeln!(s, "patch: {:?}, batch {}", cfg.patches.patch, cfg.patches.batch_size);
    if let Some(e) = &plan.estimate {
        let _ = writeln!(s, "patches per epoch: {} ({} steps)", e.patches_per_epoch, cfg.steps_per_epoch);
        let _ = writeln!(
            s,
            "memory: prepared cases {} MiB, activations of a step {} MiB (estimates)",
            mib(e.prepared_bytes),
            mib(e.activation_bytes)
        );
    }
    if let Some(t) = epoch_seconds {
        let _ = writeln!(s, "time per epoch: about {t:.1} s on {} (estimate; validation not included)", cfg.device);
    }
    s
}

/// Reads a run's `plans.json`.
pub fn read(path: &Path) -> Result<Plan> {
    Ok(lits_data::json::read(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_grow_with_the_width() {
        let a = activation_floats_per_voxel(8);
        assert!((activation_floats_per_voxel(32) - 4.0 * a).abs() < 1e-9);
        // 15c at full resolution, 3.75c at 1/8, 0.75c at 1/64.
        assert!((a - 19.5 * 8.0).abs() < 1e-9, "{a}");
    }
}
