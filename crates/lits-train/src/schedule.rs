//! Learning-rate schedules: the original's ReduceLROnPlateau, nnU-Net's poly, constant.
//! Their whole state is plain numbers, saved in every checkpoint.

use serde::{Deserialize, Serialize};

use lits_data::Problems;

/// Which schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// The learning rate stays as the optimiser's.
    Constant,
    /// `torch.optim.lr_scheduler.ReduceLROnPlateau` in mode `min` with relative threshold,
    /// stepped once per epoch on the epoch's mean training loss (as the original did).
    Plateau {
        /// Multiplier applied on a plateau.
        #[serde(default = "default_factor")]
        factor: f64,
        /// Epochs without improvement tolerated before reducing.
        #[serde(default = "default_patience")]
        patience: u32,
        /// Relative improvement that counts as better.
        #[serde(default = "default_threshold")]
        threshold: f64,
        /// Lower bound of the learning rate.
        #[serde(default = "default_min_lr")]
        min_lr: f64,
    },
    /// nnU-Net's polynomial decay: `lr0 · (1 − epoch / epochs)^power`.
    Poly {
        /// Exponent.
        #[serde(default = "default_power")]
        power: f64,
    },
}

fn default_factor() -> f64 {
    0.1
}
fn default_patience() -> u32 {
    10
}
fn default_threshold() -> f64 {
    1e-4
}
fn default_min_lr() -> f64 {
    1e-6
}
fn default_power() -> f64 {
    0.9
}

impl Default for ScheduleConfig {
    /// The original's plateau schedule.
    fn default() -> Self {
        ScheduleConfig::Plateau {
            factor: default_factor(),
            patience: default_patience(),
            threshold: default_threshold(),
            min_lr: default_min_lr(),
        }
    }
}

impl ScheduleConfig {
    /// Records every value that cannot work, under `schedule.`.
    pub fn check(&self, p: &mut Problems) {
        match self {
            ScheduleConfig::Constant => {}
            ScheduleConfig::Plateau { factor, threshold, min_lr, .. } => {
                p.require(*factor > 0.0 && *factor < 1.0, "schedule.factor", || format!("must be in (0, 1), got {factor}"));
                p.require(threshold.is_finite() && *threshold >= 0.0, "schedule.threshold", || {
                    format!("must be 0 or positive, got {threshold}")
                });
                p.require(min_lr.is_finite() && *min_lr >= 0.0, "schedule.min_lr", || format!("must be 0 or positive, got {min_lr}"));
            }
            ScheduleConfig::Poly { power } => {
                p.require(power.is_finite() && *power > 0.0, "schedule.power", || format!("must be positive, got {power}"));
            }
        }
    }
}

/// A schedule's running state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    cfg: ScheduleConfig,
    base_lr: f64,
    epochs: u32,
    /// Current learning rate.
    pub lr: f64,
    /// Lowest training loss so far (plateau); `None` before the first epoch ends, where
    /// PyTorch starts from infinity (which JSON, and so a checkpoint, cannot hold).
    best: Option<f64>,
    bad_epochs: u32,
}

impl Schedule {
    /// A schedule starting at `base_lr` for a run of `epochs` epochs.
    pub fn new(cfg: ScheduleConfig, base_lr: f64, epochs: u32) -> Self {
        Schedule { cfg, base_lr, epochs, lr: base_lr, best: None, bad_epochs: 0 }
    }

    /// The learning rate for epoch `epoch` (0-based), before it starts.
    pub fn lr_for_epoch(&self, epoch: u32) -> f64 {
        match self.cfg {
            ScheduleConfig::Poly { power } => self.base_lr * (1.0 - f64::from(epoch) / f64::from(self.epochs.max(1))).max(0.0).powf(power),
            _ => self.lr,
        }
    }

    /// Records the end of an epoch with its mean training loss.
    pub fn end_epoch(&mut self, epoch: u32, train_loss: f64) {
        match self.cfg {
            ScheduleConfig::Constant => {}
            ScheduleConfig::Poly { .. } => self.lr = self.lr_for_epoch(epoch + 1),
            ScheduleConfig::Plateau { factor, patience, threshold, min_lr } => {
                if self.best.is_none_or(|best| train_loss < best * (1.0 - threshold)) {
                    self.best = Some(train_loss);
                    self.bad_epochs = 0;
                } else {
                    self.bad_epochs += 1;
                }
                if self.bad_epochs > patience {
                    let new = (self.lr * factor).max(min_lr);
                    // PyTorch ignores reductions smaller than its eps of 1e-8.
                    if self.lr - new > 1e-8 {
                        self.lr = new;
                    }
                    self.bad_epochs = 0;
                }
            }
        }
    }
}

#[cfg(test)]
impl Schedule {
    /// A schedule in any state, for property tests of what stores it.
    pub(crate) fn with_state(cfg: ScheduleConfig, base_lr: f64, epochs: u32, lr: f64, best: Option<f64>, bad_epochs: u32) -> Self {
        Schedule { cfg, base_lr, epochs, lr, best, bad_epochs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plateau_reduces_after_patience_like_pytorch() {
        // torch: opt lr 1.0, ReduceLROnPlateau(factor=0.5, patience=2); losses 1,1,1,1,1
        // give lrs after each step 1, 1, 1, 0.5, 0.5 (the 4th bad epoch exceeds patience 2
        // counting the first value as an improvement over inf).
        let cfg = ScheduleConfig::Plateau { factor: 0.5, patience: 2, threshold: 1e-4, min_lr: 0.0 };
        let mut s = Schedule::new(cfg, 1.0, 100);
        let mut lrs = vec![];
        for e in 0..5 {
            s.end_epoch(e, 1.0);
            lrs.push(s.lr);
        }
        assert_eq!(lrs, [1.0, 1.0, 1.0, 0.5, 0.5]);
    }

    #[test]
    fn plateau_respects_min_lr() {
        let cfg = ScheduleConfig::Plateau { factor: 0.1, patience: 0, threshold: 1e-4, min_lr: 1e-3 };
        let mut s = Schedule::new(cfg, 1e-2, 10);
        for e in 0..5 {
            s.end_epoch(e, 1.0);
        }
        assert_eq!(s.lr, 1e-3);
    }

    #[test]
    fn a_fresh_schedule_of_every_kind_reads_back_from_json() {
        // A poly schedule never records a best loss; it stayed at infinity, which JSON
        // wrote as `null` and could not read back into the checkpoint it was part of.
        for cfg in [ScheduleConfig::Constant, ScheduleConfig::default(), ScheduleConfig::Poly { power: 0.9 }] {
            let mut s = Schedule::new(cfg, 0.01, 10);
            for e in 0..3 {
                let back: Schedule = lits_data::json::from_slice(&lits_data::json::to_vec(&s).unwrap()).unwrap();
                assert_eq!(back, s);
                s.end_epoch(e, 1.0 - f64::from(e) * 0.1);
            }
        }
    }

    #[test]
    fn poly_decays_to_zero() {
        let s = Schedule::new(ScheduleConfig::Poly { power: 0.9 }, 0.01, 10);
        assert_eq!(s.lr_for_epoch(0), 0.01);
        assert!((s.lr_for_epoch(5) - 0.01 * 0.5f64.powf(0.9)).abs() < 1e-15);
        assert_eq!(s.lr_for_epoch(10), 0.0);
    }
}
