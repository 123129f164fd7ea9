//! The run directory's records: resolved config, environment, split, the per-epoch metrics
//! log (JSON lines) and the plots drawn from it.
//!
//! `metrics.jsonl` holds only values that a repeated run reproduces exactly (losses,
//! learning rates, Dice); wall-clock figures go to `timing.jsonl`, so two runs with the
//! same seed leave byte-identical metric logs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Files of a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The folder.
    pub root: PathBuf,
}

impl RunDir {
    /// The run at `root` (not created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }
    /// `config.json`: the resolved training configuration.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    /// `env.json`: the `lits env` report of the machine that trained.
    pub fn env(&self) -> PathBuf {
        self.root.join("env.json")
    }
    /// `split.json`: the training and validation case ids.
    pub fn split(&self) -> PathBuf {
        self.root.join("split.json")
    }
    /// `plans.json`: what preprocessing resolved to (spacing, intensity statistics), so
    /// `predict` prepares new scans exactly like the training data.
    pub fn plans(&self) -> PathBuf {
        self.root.join("plans.json")
    }
    /// `metrics.jsonl`: one [`EpochRecord`] per line.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    /// `timing.jsonl`: speed per epoch (differs between identical runs).
    pub fn timing(&self) -> PathBuf {
        self.root.join("timing.jsonl")
    }
    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// `checkpoints/last.ckpt`: everything needed to resume.
    pub fn last_checkpoint(&self) -> PathBuf {
        self.checkpoints().join("last.ckpt")
    }
    /// `best.safetensors`: weights of the best epoch, PyTorch names.
    pub fn best_weights(&self) -> PathBuf {
        self.root.join("best.safetensors")
    }
    /// `last.safetensors`: weights after the last finished epoch, PyTorch names.
    pub fn last_weights(&self) -> PathBuf {
        self.root.join("last.safetensors")
    }
    /// `plots/`: PNG curves.
    pub fn plots(&self) -> PathBuf {
        self.root.join("plots")
    }
}

/// Validation scores of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Mean over held-out cases of the liver Dice (label ≥ 1).
    pub liver_dice: f64,
    /// Mean over held-out cases of the tumor Dice (label 2).
    pub tumor_dice: f64,
    /// Mean of the two.
    pub mean_dice: f64,
    /// Per case: `(id, liver Dice, tumor Dice)`.
    pub cases: Vec<(u32, f64, f64)>,
}

impl Validation {
    /// The means of per-case scores `(id, liver Dice, tumor Dice)`.
    pub fn from_cases(cases: Vec<(u32, f64, f64)>) -> Self {
        let n = cases.len().max(1) as f64;
        let liver_dice = cases.iter().map(|c| c.1).sum::<f64>() / n;
        let tumor_dice = cases.iter().map(|c| c.2).sum::<f64>() / n;
        Validation { liver_dice, tumor_dice, mean_dice: (liver_dice + tumor_dice) / 2.0, cases }
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: u32,
    /// Optimiser steps so far.
    pub step: u64,
    /// Learning rate used during the epoch.
    pub lr: f64,
    /// Mean training loss of the epoch.
    pub train_loss: f64,
    /// Validation, when it ran after this epoch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val: Option<Validation>,
}

/// One line of `timing.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimingRecord {
    /// Epoch number, from 1.
    pub epoch: u32,
    /// Seconds of the epoch's training steps.
    pub train_seconds: f64,
    /// Seconds of its validation (0 without).
    pub val_seconds: f64,
    /// Training patches per second.
    pub patches_per_second: f64,
    /// Seconds the trainer waited for the patch loader.
    pub loader_wait_seconds: f64,
    /// Unix time in milliseconds at the end of the epoch.
    pub timestamp_ms: i64,
    /// Peak resident memory of this process during the epoch (training and validation), in
    /// bytes, where the system reports it (rank 0's in a data-parallel run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_resident_bytes: Option<u64>,
}

/// Keeps only the records of epochs up to `epoch` (a resumed run drops what the killed
/// run logged after its last checkpoint, then logs those epochs again). A torn last line
/// from a kill mid-write is dropped too.
pub fn truncate_after<T>(path: &Path, epoch: u32, epoch_of: impl Fn(&T) -> u32) -> Result<()>
where
    T: Serialize + for<'de> Deserialize<'de>,
{
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut out = Vec::new();
    for l in text.lines() {
        match lits_data::json::from_slice::<T>(l.as_bytes()) {
            Ok(r) if epoch_of(&r) <= epoch => {
                out.extend_from_slice(l.as_bytes());
                out.push(b'\n');
            }
            _ => {}
        }
    }
    lits_data::atomic::write_atomic(path, &out)?;
    Ok(())
}

/// Draws `plots/loss.png` and `plots/dice.png` from the metric records.
pub fn plot(run: &RunDir, records: &[EpochRecord]) -> Result<()> {
    use lits_eval::plot::{LineChart, Series};
    let dir = run.plots();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let loss = LineChart {
        title: "training loss".into(),
        y_label: "loss".into(),
        series: vec![Series { name: "train loss".into(), points: records.iter().map(|r| (f64::from(r.epoch), r.train_loss)).collect() }],
        ..LineChart::default()
    };
    loss.save_png(&dir.join("loss.png"))?;
    let val: Vec<(f64, &Validation)> = records.iter().filter_map(|r| r.val.as_ref().map(|v| (f64::from(r.epoch), v))).collect();
    let dice = LineChart {
        title: "validation Dice (whole held-out volumes)".into(),
        y_label: "Dice".into(),
        series: vec![
            Series { name: "liver".into(), points: val.iter().map(|(e, v)| (*e, v.liver_dice)).collect() },
            Series { name: "tumor".into(), points: val.iter().map(|(e, v)| (*e, v.tumor_dice)).collect() },
        ],
        y_range: Some((0.0, 1.0)),
        ..LineChart::default()
    };
    dice.save_png(&dir.join("dice.png"))?;
    Ok(())
}
