//! The training configuration (`configs/*.json`): every field documented, unknown fields
//! rejected, and every value checked before any work starts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use lits_data::patch::PatchConfig;
use lits_data::preprocess::PreprocessConfig;
use lits_data::store::StoreKind;
use lits_data::synth::SynthConfig;
use lits_data::Problems;
use lits_model::inference::SlidingWindowConfig;
use lits_model::loss::LossConfig;
use lits_model::UNetConfig;

use crate::dist::DistConfig;
use crate::error::{Error, Result};
use crate::optim::OptimizerConfig;
use crate::schedule::ScheduleConfig;

/// The libtorch device that `name` (`cpu`, `cuda` or `cuda:N`) names, when this machine
/// has it; else why not.
pub fn parse_device(name: &str) -> std::result::Result<tch::Device, String> {
    let d = name.trim();
    let bad = || format!("`{d}` is not `cpu`, `cuda` or `cuda:N`");
    let dev = match d {
        "cpu" => tch::Device::Cpu,
        "cuda" => tch::Device::Cuda(0),
        _ => match d.strip_prefix("cuda:") {
            Some(n) => tch::Device::Cuda(n.parse().map_err(|_| bad())?),
            None => return Err(bad()),
        },
    };
    if let tch::Device::Cuda(n) = dev {
        let count = if lits_model::backend::cuda_available() { tch::Cuda::device_count() } else { 0 };
        if n as i64 >= count {
            return Err(format!("`{d}` asked for, but this machine has {count} CUDA device(s)"));
        }
    }
    Ok(dev)
}

/// Where the cases come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// A dataset folder in LiTS or MSD Task03 layout. `null`: synthetic CT phantoms,
    /// generated on first use into the cache folder.
    pub dir: Option<PathBuf>,
    /// The phantoms made when `dir` is `null`.
    pub synth: SynthConfig,
    /// Which cases are held out for validation.
    pub split: SplitConfig,
    /// Folder for generated phantoms and preprocessed caches. `null`: `$LITS_CACHE_DIR`,
    /// else `$XDG_CACHE_HOME/lits`, else `~/.cache/lits`.
    pub cache_dir: Option<PathBuf>,
    /// Where the training cases are kept: `disk` (read from the prepared-case cache a patch
    /// at a time, held-out cases loaded one at a time to validate) or `memory` (every case
    /// loaded when the run starts). Both give the same batches and weights. Not written when
    /// `disk`, so a run's config hash (which its checkpoint records) is that of runs made
    /// before the choice existed, and they resume.
    #[serde(skip_serializing_if = "StoreKind::is_default")]
    pub store: StoreKind,
}

/// How the validation cases are chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SplitConfig {
    /// The original's 13 held-out LiTS ids (17, 64, 27, 114, 74, 45, 61, 38, 106, 100,
    /// 117, 51, 62).
    Original,
    /// These case ids are held out.
    Ids {
        /// Held-out case ids.
        val: Vec<u32>,
    },
    /// A seeded random share of the cases (at least one) is held out.
    Fraction {
        /// Share held out, in (0, 1).
        val_fraction: f64,
    },
    /// Fold `fold` of a seeded `folds`-fold split.
    KFold {
        /// Number of folds.
        folds: usize,
        /// Which fold is held out (0-based).
        fold: usize,
    },
    /// A split file (JSON with `train` and `val` id lists).
    File {
        /// The file, relative to the config file's folder.
        path: PathBuf,
    },
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig::Fraction { val_fraction: 0.2 }
    }
}

/// Validation on whole held-out volumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Validate after every `every` epochs (and after the last).
    pub every: u32,
    /// Sliding-window inference over each held-out volume.
    pub sliding_window: SlidingWindowConfig,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig { every: 10, sliding_window: SlidingWindowConfig::default() }
    }
}

/// Stop when the validation score has not improved for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopConfig {
    /// Validations without improvement of the mean foreground Dice before stopping.
    pub patience: u32,
}

/// Which model is "best".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BestBy {
    /// Lowest mean training loss of an epoch (the original's choice).
    TrainLoss,
    /// Highest mean foreground Dice of a validation.
    ValDice,
    /// The last epoch's weights (nnU-Net's `checkpoint_final`). With a handful of validation
    /// cases, a Dice that scores a tumor-free case 1 when nothing is predicted can make an
    /// early epoch that finds no tumor anywhere the "best".
    Last,
}

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Name of the run (run folder prefix, MLflow run name).
    pub name: String,
    /// The master seed: every generator (libtorch, patch sampling, augmentation, splits,
    /// phantoms) derives from it.
    pub seed: u64,
    /// Deterministic algorithms, cuDNN deterministic on and benchmark off. `false` trades
    /// bit-for-bit repeatability for speed; the run records which.
    pub deterministic: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads (0: the number of CPUs). Fixed and recorded, because
    /// results depend on it.
    pub threads: usize,
    /// Background threads cutting patches.
    pub loader_workers: usize,
    /// The data.
    pub data: DataConfig,
    /// Preprocessing of every case.
    pub preprocess: PreprocessConfig,
    /// Training patches and augmentation.
    pub patches: PatchConfig,
    /// The network.
    pub model: UNetConfig,
    /// The loss.
    pub loss: LossConfig,
    /// The optimiser.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// Number of epochs.
    pub epochs: u32,
    /// Batches per epoch (an epoch is a fixed number of patches, not a pass over the data).
    pub steps_per_epoch: u32,
    /// Validation.
    pub validation: ValidationConfig,
    /// How the best checkpoint is chosen.
    pub best_by: BestBy,
    /// Optional early stop.
    pub early_stop: Option<EarlyStopConfig>,
    /// How the ranks of a data-parallel run work together (see [`crate::dist`]). Not
    /// written when default, so the config hash of runs made before it existed is kept.
    #[serde(skip_serializing_if = "DistConfig::is_default")]
    pub distributed: DistConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            name: "lits".into(),
            seed: 0,
            deterministic: true,
            device: "cpu".into(),
            threads: 0,
            loader_workers: 2,
            data: DataConfig::default(),
            preprocess: PreprocessConfig::default(),
            patches: PatchConfig::default(),
            model: UNetConfig::default(),
            loss: LossConfig::default(),
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            epochs: 100,
            steps_per_epoch: 50,
            validation: ValidationConfig::default(),
            best_by: BestBy::ValDice,
            early_stop: None,
            distributed: DistConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Reads a config file; relative paths inside it are taken from the file's folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let mut cfg: TrainConfig =
            lits_data::json::from_slice(&text).map_err(|e| Error::invalid(path, format!("bad training config: {e}")))?;
        // Paths in a config file are relative to the file.
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(d) = &cfg.data.dir {
            cfg.data.dir = Some(base.join(d));
        }
        if let Some(d) = &cfg.data.cache_dir {
            cfg.data.cache_dir = Some(base.join(d));
        }
        if let SplitConfig::File { path: p } = &cfg.data.split {
            cfg.data.split = SplitConfig::File { path: base.join(p) };
        }
        cfg.absolutize_paths()?;
        Ok(cfg)
    }

    /// Makes every path of the config absolute (against the working directory), so that the
    /// run's recorded `config.json` means the same from any directory.
    pub fn absolutize_paths(&mut self) -> Result<()> {
        let abs = crate::data::absolute;
        if let Some(d) = &self.data.dir {
            self.data.dir = Some(abs(d)?);
        }
        if let Some(d) = &self.data.cache_dir {
            self.data.cache_dir = Some(abs(d)?);
        }
        if let SplitConfig::File { path } = &self.data.split {
            self.data.split = SplitConfig::File { path: abs(path)? };
        }
        Ok(())
    }

    /// The libtorch device named by [`TrainConfig::device`].
    pub fn torch_device(&self) -> Result<tch::Device> {
        parse_device(&self.device).map_err(|msg| Error::config("device", msg))
    }

    /// Checks every value that can be checked without the data, before anything is read
    /// or generated; every problem is reported at once, each under its field name.
    pub fn validate(&self) -> Result<()> {
        let mut p = Problems::new();
        p.under("model", |p| self.model.check(p));
        self.optimizer.check(&mut p);
        self.schedule.check(&mut p);
        match self.loss.build() {
            Ok(_) => {}
            Err(lits_model::error::Error::Config { field, msg }) => p.add(format!("loss.{field}"), msg),
            Err(e) => p.add("loss", e.to_string()),
        }
        p.require(self.loss.class_weights.len() as i64 == self.model.num_classes, "loss.class_weights", || {
            format!("has {} weights for {} classes", self.loss.class_weights.len(), self.model.num_classes)
        });
        p.under("preprocess", |p| self.preprocess.check(p));
        p.under("patches", |p| self.patches.check(p));
        p.under("validation.sliding_window", |p| self.validation.sliding_window.check(p));
        p.under("distributed", |p| self.distributed.check(p));
        if self.data.dir.is_none() {
            p.under("data.synth", |p| self.data.synth.check(p));
        }
        for (field, v) in [("epochs", self.epochs), ("steps_per_epoch", self.steps_per_epoch), ("validation.every", self.validation.every)]
        {
            p.require(v >= 1, field, || "must be at least 1".into());
        }
        // The U-Net halves its input twice: every patch it sees must divide by 4.
        let sides = [
            ("patches.patch", self.patches.patch.map(|n| n as i64)),
            ("validation.sliding_window.patch", self.validation.sliding_window.patch),
        ];
        for (field, patch) in sides {
            for (a, &n) in patch.iter().enumerate() {
                p.require(n > 0 && n % 4 == 0, format!("{field}[{a}]"), || {
                    format!("must be a positive multiple of 4 (the U-Net halves it twice), got {n}")
                });
            }
        }
        match &self.data.split {
            SplitConfig::Fraction { val_fraction } => {
                p.require(*val_fraction > 0.0 && *val_fraction < 1.0, "data.split.val_fraction", || {
                    format!("must be in (0, 1), got {val_fraction}")
                });
            }
            SplitConfig::KFold { folds, fold } => {
                p.require(*folds >= 2 && fold < folds, "data.split", || format!("fold {fold} of {folds} folds does not exist"));
            }
            SplitConfig::File { path } => {
                p.require(path.is_file(), "data.split.path", || format!("{} is not a file", path.display()));
            }
            SplitConfig::Original | SplitConfig::Ids { .. } => {}
        }
        if let Some(dir) = &self.data.dir {
            p.require(dir.is_dir(), "data.dir", || format!("{} is not a folder", dir.display()));
        }
        if let Err(msg) = parse_device(&self.device) {
            p.add("device", msg);
        }
        p.require(self.threads <= 4096, "threads", || format!("{} threads is not a thread count", self.threads));
        p.require(self.loader_workers <= 256, "loader_workers", || format!("{} is more than 256", self.loader_workers));
        if let Some(e) = &self.early_stop {
            p.require(e.patience >= 1, "early_stop.patience", || "must be at least 1".into());
            p.require(self.best_by != BestBy::Last, "early_stop", || {
                "cannot stop a run whose best epoch is its last (`best_by: \"last\"`): every epoch improves on it; use `val_dice` or `train_loss`".into()
            });
        }
        Ok(p.into_result()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_config_parses_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let mut c = TrainConfig::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
                // The LiTS configs name a data folder and a GPU this machine need not have.
                c.data.dir = None;
                c.device = "cpu".into();
                c.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        seen.sort();
        assert_eq!(seen, ["lits-patch.json", "mlf-core-lits.json", "quickstart.json"]);
    }

    #[test]
    fn the_mlf_core_config_is_the_original_setup() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let c = TrainConfig::from_file(&dir.join("mlf-core-lits.json")).unwrap();
        assert_eq!(c.patches.patch, [128, 128, 128]);
        assert_eq!(c.patches.batch_size, 4);
        assert_eq!(c.epochs, 1201);
        assert_eq!(c.optimizer.lr(), 1e-4);
        assert_eq!(c.loss.class_weights, [0.2, 1.0, 2.5]);
        assert_eq!(c.model.dropout, 0.25);
        assert_eq!(c.validation.every, 10);
        assert!(matches!(c.schedule, ScheduleConfig::Plateau { patience: 10, .. }));
        assert!(matches!(c.preprocess, PreprocessConfig::Mlfcore(_)));
        assert_eq!(c.data.split, SplitConfig::Original);
    }

    #[test]
    fn unknown_fields_are_rejected_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(&p, r#"{"epochs": 3, "learning_rate": 0.1}"#).unwrap();
        let e = TrainConfig::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("c.json") && e.contains("learning_rate"), "{e}");
    }

    #[test]
    fn negative_lr_is_refused() {
        let c = TrainConfig {
            optimizer: OptimizerConfig::Adam { lr: -1e-4, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0 },
            ..TrainConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("optimizer.lr"), "{e}");
    }

    #[test]
    fn early_stop_with_the_last_epoch_as_best_is_refused() {
        let c = TrainConfig { best_by: BestBy::Last, early_stop: Some(EarlyStopConfig { patience: 3 }), ..TrainConfig::default() };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("early_stop") && e.contains("last"), "{e}");
        assert!(TrainConfig { early_stop: None, ..c }.validate().is_ok());
    }

    #[test]
    fn missing_data_folder_is_refused() {
        let mut c = TrainConfig::default();
        c.data.dir = Some("/nonexistent/lits-data".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("data.dir") && e.contains("/nonexistent/lits-data"), "{e}");
    }

    #[test]
    fn odd_patch_is_refused() {
        let mut c = TrainConfig::default();
        c.patches.patch = [64, 30, 64];
        assert!(c.validate().unwrap_err().to_string().contains("patches.patch[1]"));
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let mut c = TrainConfig::default();
        c.patches.foreground_fraction = 1.5;
        c.patches.augment.scale = 2.0;
        c.validation.sliding_window.patch = [30, 30, 30];
        c.model.base_channels = 0;
        c.epochs = 0;
        let e = c.validate().unwrap_err().to_string();
        for field in [
            "`patches.foreground_fraction`",
            "`patches.augment.scale`",
            "`validation.sliding_window.patch[0]`",
            "`model.base_channels`",
            "`epochs`",
        ] {
            assert!(e.contains(field), "{field} missing from: {e}");
        }
    }

    #[test]
    fn sizes_that_cannot_be_allocated_are_refused() {
        let mut c = TrainConfig::default();
        c.data.synth.in_plane_voxels = [2048, 2048];
        c.data.synth.slices = [2048, 2048];
        c.model.base_channels = 1 << 20;
        c.patches.patch = [4096, 4096, 4096];
        let e = c.validate().unwrap_err().to_string();
        for field in ["`data.synth.in_plane_voxels`", "`model.base_channels`", "`patches.patch`"] {
            assert!(e.contains(field), "{field} missing from: {e}");
        }
    }

    #[test]
    fn devices_parse() {
        let mut c = TrainConfig::default();
        assert_eq!(c.torch_device().unwrap(), tch::Device::Cpu);
        c.device = "gpu".into();
        assert!(c.torch_device().unwrap_err().to_string().contains("`gpu`"));
    }
}
