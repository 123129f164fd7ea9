//! Progress of a run: a bar (epoch, step, loss, patches/s, ETA) on a terminal, plain
//! `tracing` lines otherwise.

use indicatif::{ProgressBar, ProgressStyle};

use crate::runlog::{EpochRecord, TimingRecord};

/// Reports training progress.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    epochs: u32,
    steps: u64,
}

impl Progress {
    /// A bar when `bar` is true (the caller checks for a terminal), else log lines.
    pub fn new(bar: bool, epochs: u32, steps: u64) -> Self {
        let bar = bar.then(|| {
            let b = ProgressBar::new(steps);
            b.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b
        });
        Progress { bar, epochs, steps }
    }

    /// An epoch (from 1) begins.
    pub fn start_epoch(&mut self, epoch: u32) {
        if let Some(b) = &self.bar {
            b.reset();
            b.set_length(self.steps);
            b.set_prefix(format!("epoch {epoch}/{}", self.epochs));
        }
    }

    /// A step (from 1) finished with loss `loss`.
    pub fn step(&mut self, step: u64, loss: f64, seconds: f64, patches: u64) {
        if let Some(b) = &self.bar {
            b.set_position(step);
            b.set_message(format!("loss {loss:.4} {:.1} patches/s", patches as f64 / seconds.max(1e-9)));
        }
    }

    /// An epoch finished.
    pub fn end_epoch(&mut self, r: &EpochRecord, t: &TimingRecord) {
        let val = r.val.as_ref().map(|v| format!(" val liver Dice {:.4} tumor Dice {:.4}", v.liver_dice, v.tumor_dice)).unwrap_or_default();
        let line = format!(
            "epoch {}/{} loss {:.5} lr {:.2e} {:.1} patches/s{val}",
            r.epoch, self.epochs, r.train_loss, r.lr, t.patches_per_second
        );
        match &self.bar {
            Some(b) => b.println(line),
            None => tracing::info!("{line}"),
        }
    }

    /// The run ends.
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
