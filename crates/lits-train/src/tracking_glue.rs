//! What a training run tells the tracker: config as params, standard tags, per-epoch
//! metrics, and the run's records as artifacts at the end.

use crate::config::TrainConfig;
use crate::runlog::{EpochRecord, RunDir, TimingRecord};
use lits_tracking::{config_hash, flatten_params, git_commit, standard_tags, RunStatus, Tracker, TrackingConfig};

/// Starts tracking the run (never fails: problems become warnings); `world_size`, the
/// number of data-parallel processes, is a param beside the config's.
pub fn start(run: &RunDir, cfg: &TrainConfig, t: &TrackingConfig, world_size: usize) -> Tracker {
    let value = serde_json::to_value(cfg).expect("configs serialise");
    let commit = std::env::current_dir().ok().and_then(|d| git_commit(&d));
    let tags = standard_tags(commit.as_deref(), &config_hash(&value));
    let mut params = flatten_params(&value);
    params.push(("world_size".to_owned(), world_size.to_string()));
    Tracker::start(&run.root, t, &tags, &params)
}

/// Sends one epoch's metrics (the same values as `metrics.jsonl`, plus speed).
pub fn log_epoch(t: &Tracker, r: &EpochRecord, timing: &TimingRecord) {
    let mut m = vec![
        ("train_loss".to_owned(), r.train_loss),
        ("lr".to_owned(), r.lr),
        ("patches_per_second".to_owned(), timing.patches_per_second),
    ];
    if let Some(v) = &r.val {
        m.push(("val_liver_dice".to_owned(), v.liver_dice));
        m.push(("val_tumor_dice".to_owned(), v.tumor_dice));
        m.push(("val_mean_dice".to_owned(), v.mean_dice));
    }
    t.log_metrics(i64::from(r.epoch), timing.timestamp_ms, &m);
}

/// Uploads the run's records and best weights, then closes the server run.
pub fn finish(t: Tracker, run: &RunDir, finished: bool) {
    for p in [run.config(), run.env(), run.split(), run.plans(), run.metrics()] {
        t.log_artifact(&p, "");
    }
    for p in [run.plots().join("loss.png"), run.plots().join("dice.png")] {
        t.log_artifact(&p, "plots");
    }
    t.log_artifact(&run.best_weights(), "model");
    t.finish(if finished { RunStatus::Finished } else { RunStatus::Killed });
}
