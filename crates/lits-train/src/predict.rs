//! Segmenting new scans with a trained run.
//!
//! A scan is read with its geometry, prepared exactly like the run's training data (the
//! config's preprocessing, the median spacing and intensity normaliser recorded in
//! `plans.json`), segmented by sliding-window inference, and its class probabilities are
//! brought back onto the scan's own grid before the argmax, so the mask written has the
//! input's shape and header geometry. Post-processing keeps the largest 26-connected
//! component of liver (labels ≥ 1, as MONAI's `KeepLargestConnectedComponent` with its
//! default full connectivity), which leaves tumor only inside that liver.
//!
//! The bare mode (no preprocessing, no post-processing) runs the network on the stored,
//! scaled voxels and writes exactly its argmax, for parity checks against PyTorch.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use ndarray::Array3;
use tch::{nn, Device, Kind, Tensor};

use lits_data::nifti::{self, ImageDtype};
use lits_data::{Image, Labels, Volume};
use lits_model::inference;
use lits_model::UNet3d;

use crate::config::TrainConfig;
use crate::data::Plans;
use crate::error::{Error, Result};
use crate::runlog::RunDir;

/// What [`Predictor::predict_file`] does besides the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PredictOptions {
    /// Keep the largest connected liver component (tumor only inside it).
    pub postprocess: bool,
    /// Prepare the scan as in training; off, the network sees the stored voxels.
    pub preprocess: bool,
    /// Also write float32 probabilities, one file per class.
    pub probabilities: bool,
    /// Average over the eight mirrorings of each window.
    pub tta: bool,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions { postprocess: true, preprocess: true, probabilities: false, tta: false }
    }
}

/// A trained network with the preprocessing it was trained with.
pub struct Predictor {
    // The variables must outlive the network built on them.
    _vs: nn::VarStore,
    net: UNet3d,
    cfg: TrainConfig,
    plans: Option<Plans>,
    device: Device,
}

impl std::fmt::Debug for Predictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictor").field("model", self.net.config()).field("device", &self.device).finish()
    }
}

impl Predictor {
    /// The model of a run directory: `best.safetensors` (or `last.safetensors` when no
    /// validation picked a best epoch), `config.json` and `plans.json`.
    pub fn from_run(run_dir: &Path) -> Result<Self> {
        let run = RunDir::new(run_dir);
        let weights = if run.best_weights().is_file() { run.best_weights() } else { run.last_weights() };
        if !weights.is_file() {
            return Err(Error::invalid(run_dir, "holds neither best.safetensors nor last.safetensors: not a finished run"));
        }
        let plans: Plans = run.read_json(&run.plans())?;
        Self::load(&weights, &run.config(), Some(plans))
    }

    /// A model from a weights file and a training config. Preprocessing statistics come
    /// from a `plans.json` next to the config when there is one; without it only
    /// preprocessing that needs no dataset statistics can run.
    pub fn from_files(weights: &Path, config: &Path) -> Result<Self> {
        let plans_path = config.parent().unwrap_or(Path::new(".")).join("plans.json");
        let plans = if plans_path.is_file() {
            let text = std::fs::read(&plans_path).map_err(|e| Error::io(&plans_path, e))?;
            Some(serde_json::from_slice(&text).map_err(|e| Error::invalid(&plans_path, e.to_string()))?)
        } else {
            None
        };
        Self::load(weights, config, plans)
    }

    fn load(weights: &Path, config: &Path, plans: Option<Plans>) -> Result<Self> {
        let cfg = TrainConfig::from_file(config)?;
        let device = cfg.torch_device()?;
        let mut vs = nn::VarStore::new(device);
        let net = UNet3d::new(&vs.root(), &cfg.model);
        lits_model::weights::load_safetensors(&mut vs, weights)?;
        Ok(Predictor { _vs: vs, net, cfg, plans, device })
    }

    /// Segments `input` and writes the mask into `out_dir` (see [`output_name`]); returns
    /// its path. With [`PredictOptions::probabilities`], `<name>_prob<class>.nii.gz` too.
    pub fn predict_file(&self, input: &Path, out_dir: &Path, opts: &PredictOptions) -> Result<PathBuf> {
        let (image, geom) = nifti::read_image(input)?;
        let probs = self.probabilities(&image, opts).map_err(|e| match e {
            // Name the scan in errors that would otherwise only name a field.
            Error::Config { field, msg } => Error::invalid(input, format!("{field}: {msg}")),
            Error::Data(lits_data::Error::Config { field, msg }) => Error::invalid(input, format!("{field}: {msg}")),
            other => other,
        })?;
        let mut labels = argmax(&probs, &image);
        if opts.postprocess {
            keep_largest_liver(&mut labels.data);
        }
        std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
        let name = output_name(input);
        let out = out_dir.join(&name);
        nifti::write_labels(&out, &labels, &geom)?;
        if opts.probabilities {
            let stem = name.trim_end_matches(".nii.gz");
            for (c, p) in probs.into_iter().enumerate() {
                let path = out_dir.join(format!("{stem}_prob{c}.nii.gz"));
                nifti::write_image(&path, &p, &geom, ImageDtype::F32)?;
            }
        }
        Ok(out)
    }

    /// Class probabilities of `image` on its own grid, one volume per class.
    pub fn probabilities(&self, image: &Image, opts: &PredictOptions) -> Result<Vec<Image>> {
        let mut sw = self.cfg.validation.sliding_window.clone();
        sw.mirror_tta = opts.tta;
        if !opts.preprocess {
            return self.infer(image, &sw);
        }
        let (preprocess, median, normaliser) = match &self.plans {
            Some(p) => (p.preprocess.clone(), p.median_spacing, p.normaliser),
            None => (self.cfg.preprocess.clone(), None, self.cfg.preprocess.intensity().resolve(None)?),
        };
        let mut prepared = preprocess.prepare(image, None, median)?;
        normaliser.apply_image(&mut prepared.image);
        let probs = self.infer(&prepared.image, &sw)?;
        drop(prepared.image);
        probs
            .iter()
            .enumerate()
            .map(|(c, p)| Ok(prepared.record.restore_image(p, if c == 0 { 1.0 } else { 0.0 })?))
            .collect()
    }

    /// Sliding-window softmax of a single-channel volume, split per class.
    fn infer(&self, image: &Image, sw: &inference::SlidingWindowConfig) -> Result<Vec<Image>> {
        let [d, h, w] = image.shape().map(|s| s as i64);
        let owned;
        let slice = match image.data.as_slice() {
            Some(s) => s,
            None => {
                owned = image.data.as_standard_layout().into_owned();
                owned.as_slice().expect("standard layout")
            }
        };
        let x = Tensor::from_slice(slice).view([1, d, h, w]).to_device(self.device);
        let probs = tch::no_grad(|| inference::predict(&self.net, &x, sw))?.to_device(Device::Cpu).to_kind(Kind::Float);
        let shape = image.shape();
        (0..probs.size()[0])
            .map(|c| {
                let ch = probs.get(c).contiguous();
                let v: Vec<f32> = Vec::<f32>::try_from(ch.view([-1]))?;
                let data = Array3::from_shape_vec(shape, v).expect("softmax has the volume's shape");
                Ok(Volume { data, spacing: image.spacing, affine: image.affine })
            })
            .collect()
    }
}

/// The most probable class per voxel (the first on ties), on `like`'s grid.
fn argmax(probs: &[Image], like: &Image) -> Labels {
    let mut data = Array3::<u8>::zeros(like.shape());
    let mut best = probs[0].data.clone();
    for (c, p) in probs.iter().enumerate().skip(1) {
        ndarray::Zip::from(&mut data).and(&mut best).and(&p.data).for_each(|l, b, &v| {
            if v > *b {
                *b = v;
                *l = c as u8;
            }
        });
    }
    Volume { data, spacing: like.spacing, affine: like.affine }
}

/// Zeroes every liver voxel (label ≥ 1) outside the largest 26-connected liver component;
/// tumor outside it goes with it. Ties keep the component found first in C order.
pub fn keep_largest_liver(labels: &mut Array3<u8>) {
    let [n0, n1, n2] = [labels.dim().0, labels.dim().1, labels.dim().2];
    let mut comp = Array3::<u32>::zeros((n0, n1, n2));
    let (mut best, mut best_size, mut next) = (0u32, 0usize, 0u32);
    let mut queue = VecDeque::new();
    for start in ndarray::indices((n0, n1, n2)) {
        if labels[start] == 0 || comp[start] != 0 {
            continue;
        }
        next += 1;
        comp[start] = next;
        queue.push_back(start);
        let mut size = 0usize;
        while let Some((i, j, k)) = queue.pop_front() {
            size += 1;
            for di in -1i64..=1 {
                for dj in -1i64..=1 {
                    for dk in -1i64..=1 {
                        let q = (i as i64 + di, j as i64 + dj, k as i64 + dk);
                        if q.0 < 0 || q.1 < 0 || q.2 < 0 || q.0 >= n0 as i64 || q.1 >= n1 as i64 || q.2 >= n2 as i64 {
                            continue;
                        }
                        let q = (q.0 as usize, q.1 as usize, q.2 as usize);
                        if labels[q] != 0 && comp[q] == 0 {
                            comp[q] = next;
                            queue.push_back(q);
                        }
                    }
                }
            }
        }
        if size > best_size {
            best = next;
            best_size = size;
        }
    }
    ndarray::Zip::from(labels).and(&comp).for_each(|l, &c| {
        if c != best {
            *l = 0;
        }
    });
}

/// The mask's file name for an input: LiTS `volume-N.nii[.gz]` becomes
/// `segmentation-N.nii.gz`, anything else `<stem>_seg.nii.gz`.
pub fn output_name(input: &Path) -> String {
    let file = input.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = file.strip_suffix(".nii.gz").or_else(|| file.strip_suffix(".nii")).unwrap_or(&file);
    match stem.strip_prefix("volume-") {
        Some(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => format!("segmentation-{id}.nii.gz"),
        _ => format!("{stem}_seg.nii.gz"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_input() {
        assert_eq!(output_name(Path::new("d/volume-3.nii.gz")), "segmentation-3.nii.gz");
        assert_eq!(output_name(Path::new("volume-12.nii")), "segmentation-12.nii.gz");
        assert_eq!(output_name(Path::new("scan.nii.gz")), "scan_seg.nii.gz");
        assert_eq!(output_name(Path::new("volume-x.nii")), "volume-x_seg.nii.gz");
    }

    #[test]
    fn largest_liver_is_kept_with_its_tumor_diagonal_counts() {
        let mut l = Array3::<u8>::zeros((6, 6, 6));
        // Component A: 3 voxels joined only through corners (26-connected), one tumor.
        l[[0, 0, 0]] = 1;
        l[[1, 1, 1]] = 2;
        l[[2, 2, 2]] = 1;
        // Component B: 2 voxels, one a tumor, far away.
        l[[5, 5, 4]] = 1;
        l[[5, 5, 5]] = 2;
        keep_largest_liver(&mut l);
        assert_eq!(l[[0, 0, 0]], 1);
        assert_eq!(l[[1, 1, 1]], 2);
        assert_eq!(l[[2, 2, 2]], 1);
        assert_eq!(l[[5, 5, 4]], 0);
        assert_eq!(l[[5, 5, 5]], 0);
        assert_eq!(l.iter().filter(|&&v| v > 0).count(), 3);
    }
}
