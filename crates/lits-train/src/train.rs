//! The training loop: seeded, deterministic, checkpointed after every epoch, resumable.
//!
//! Every random draw is a function of the master seed and the position in the run:
//! libtorch's generator (dropout) is re-seeded from `(seed, epoch)` at the start of each
//! epoch, and the patch sampler draws batch `step` of `epoch` from `(seed, epoch, step)`
//! whatever thread cuts it. So a run resumed from the checkpoint of epoch `k` replays
//! epochs `k+1…` exactly as the uninterrupted run does, and nothing but the checkpoint
//! needs saving of the generators.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use lits_data::patch::{PatchSampler, Prefetcher};
use lits_eval::evaluate::Structure;
use lits_model::inference;
use lits_model::UNet3d;

use crate::checkpoint;
use crate::config::{BestBy, TrainConfig};
use crate::data::{self, TrainData};
use crate::dist::Ranks;
use crate::error::{Error, Result};
use crate::failpoint::{self, Point};
use crate::optim::Optimizer;
use crate::plan;
use crate::progress::Progress;
use crate::runlog::{self, EpochRecord, RunDir, TimingRecord, Validation};
use crate::schedule::Schedule;
use crate::seed;

/// What a resumed run needs besides tensors; stored in the checkpoint's header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Format version of this record.
    pub version: u32,
    /// Epochs finished.
    pub epochs_done: u32,
    /// Optimiser steps taken.
    pub global_step: u64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Best score so far (lower loss or higher Dice, by `best_by`) and its epoch.
    pub best: Option<(f64, u32)>,
    /// Validations in a row without improvement (early stop).
    pub stale_validations: u32,
    /// The master seed; every generator derives from it and the epoch/step (module docs).
    pub seed: u64,
    /// sha256 of the resolved config, to refuse a checkpoint of another run.
    pub config_sha256: String,
    /// Whether training stopped early.
    pub stopped_early: bool,
    /// Processes the run trains with (data-parallel ranks); a resume must use as many,
    /// since each rank's share of every batch depends on it.
    #[serde(default = "one_rank")]
    pub world_size: u32,
}

fn one_rank() -> u32 {
    1
}

impl TrainState {
    /// The state of a run that has not taken a step yet.
    fn fresh(cfg: &TrainConfig, config_sha256: String) -> Self {
        TrainState {
            version: 1,
            epochs_done: 0,
            global_step: 0,
            schedule: Schedule::new(cfg.schedule.clone(), cfg.optimizer.lr(), cfg.epochs),
            best: None,
            stale_validations: 0,
            seed: cfg.seed,
            config_sha256,
            stopped_early: false,
            world_size: 1,
        }
    }
}

/// How to run (not part of the result: none of this changes the weights).
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
    /// Stop this process after this many epochs (the run stays resumable).
    pub stop_after: Option<u32>,
    /// Experiment tracking.
    pub tracking: Option<lits_tracking::TrackingConfig>,
    /// The group of a data-parallel run (see [`crate::dist`]); `None` with one process.
    pub ranks: Option<Ranks>,
}

/// The world size of `opts` (1 without a group).
fn world_of(opts: &RunOptions) -> u32 {
    opts.ranks.as_ref().map_or(1, |r| r.launch.world as u32)
}

/// Refuses a global batch that the ranks cannot share equally.
fn check_world(cfg: &TrainConfig, opts: &RunOptions) -> Result<()> {
    let world = world_of(opts) as usize;
    if !cfg.patches.batch_size.is_multiple_of(world) {
        return Err(Error::config(
            "patches.batch_size",
            format!(
                "{} patches cannot be shared equally by {world} processes (it is the global batch, split among the ranks)",
                cfg.patches.batch_size
            ),
        ));
    }
    Ok(())
}

/// Store keys through which rank 0 hands the run to the other ranks.
const KEY_CONFIG: &str = "lits/run/config";
const KEY_STATE: &str = "lits/run/state";
const KEY_PLAN: &str = "lits/run/plan";

/// What every rank's preparation must agree on: the split and the normaliser.
fn plan_digest(data: &TrainData) -> Result<Vec<u8>> {
    let key = (&data.plan.split, &data.plan.normaliser);
    lits_data::json::to_vec(&key).map_err(|e| Error::config("plan", e))
}

/// Rank 0: hands the resolved config, the state and the plan's digest to the other ranks.
fn publish(ranks: &Ranks, cfg: &TrainConfig, state: &TrainState, data: &TrainData) -> Result<()> {
    let g = &ranks.group;
    g.set(KEY_CONFIG, &lits_data::json::to_vec(cfg).map_err(|e| Error::config("config", e))?)?;
    g.set(KEY_STATE, &lits_data::json::to_vec(state).map_err(Error::Checkpoint)?)?;
    g.set(KEY_PLAN, &plan_digest(data)?)?;
    Ok(())
}

/// A rank other than 0: takes the run rank 0 started or resumed (its config and state
/// through the store, its weights and optimiser state by broadcast), prepares the cases in
/// this host's cache into a scratch folder that is removed at the end, checks that its
/// split and normaliser are rank 0's, and trains its share of every batch. It writes
/// nothing of the run.
pub fn follow(opts: &RunOptions) -> Result<Summary> {
    let ranks = opts.ranks.as_ref().ok_or_else(|| Error::config("ranks", "following needs a group"))?;
    let g = &ranks.group;
    // Rank 0 plans and prepares first (an hour for a dataset seen for the first time).
    let cfg: TrainConfig = lits_data::json::from_slice(&g.get_while_alive(KEY_CONFIG)?)
        .map_err(|e| Error::config("config", format!("rank 0's config does not parse here: {e}")))?;
    let state: TrainState = lits_data::json::from_slice(&g.get_while_alive(KEY_STATE)?)
        .map_err(|e| Error::Checkpoint(format!("rank 0's training state does not parse here: {e}")))?;
    cfg.validate()?;
    check_world(&cfg, opts)?;
    configure_backend(&cfg)?;
    // In the cache, named `.rank<R>.<pid>.tmp`, so that the folder of a rank that was killed
    // is removed by the next one, as generations of phantoms are.
    let parent = data::cache_root(&cfg).join("ranks");
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    data::remove_abandoned(&parent, ".");
    let scratch = tempfile::Builder::new()
        .prefix(&format!(".rank{}.{}", ranks.launch.rank, std::process::id()))
        .suffix(".tmp")
        .rand_bytes(0)
        .tempdir_in(&parent)
        .map_err(|e| Error::io(&parent, e))?;
    let run = RunDir::new(scratch.path());
    let data = data::prepare(&cfg, plan::plan(&cfg)?, &run)?;
    let theirs = g.get_while_alive(KEY_PLAN)?;
    let ours = plan_digest(&data)?;
    if ours != theirs {
        return Err(Error::invalid(
            &data.plan.dataset,
            format!(
                "rank {} finds another split or intensity normaliser than rank 0: every host must hold the same dataset at the same path (rank 0: {}, here: {})",
                ranks.launch.rank,
                String::from_utf8_lossy(&theirs),
                String::from_utf8_lossy(&ours)
            ),
        ));
    }
    run_loop(cfg, run, data, state, None, opts)
}

/// What a finished (or paused) run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Epochs finished.
    pub epochs_done: u32,
    /// Whether every configured epoch ran (or early stop ended the run).
    pub finished: bool,
    /// Last validation, if any.
    pub last_validation: Option<Validation>,
    /// Best score and its epoch.
    pub best: Option<(f64, u32)>,
}

/// Starts a new run in `run_dir`, which must not exist or be empty.
pub fn train(mut cfg: TrainConfig, run_dir: &Path, opts: &RunOptions) -> Result<Summary> {
    cfg.absolutize_paths()?;
    cfg.validate()?;
    check_world(&cfg, opts)?;
    prepare_run_dir(run_dir, &cfg)?;
    let run = RunDir::new(run_dir);
    // A run that fails before its first step leaves nothing behind.
    let data = match plan::plan(&cfg).and_then(|plan| start_run(&mut cfg, plan, &run)) {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_dir_all(run_dir);
            return Err(e);
        }
    };
    let state = TrainState { world_size: world_of(opts), ..TrainState::fresh(&cfg, seed::sha256_json(&cfg)) };
    run_loop(cfg, run, data, state, None, opts)
}

/// Continues the run in `run_dir` from its last checkpoint (or from the start when it
/// was stopped before finishing one epoch).
pub fn resume(run_dir: &Path, opts: &RunOptions) -> Result<Summary> {
    let run = RunDir::new(run_dir);
    if !run.config().is_file() {
        let empty = std::fs::read_dir(run_dir).is_ok_and(|mut d| d.next().is_none());
        return Err(Error::invalid(
            run_dir,
            if empty {
                "is empty: no run began in it, so there is nothing to resume; start one with `lits train --out` this folder"
            } else {
                "is not a lits run directory (no config.json)"
            },
        ));
    }
    let mut cfg: TrainConfig = lits_data::json::read(&run.config())?;
    cfg.validate()?;
    // What a write that was killed half-way left (a torn checkpoint's temporary file).
    for dir in [run.root.clone(), run.checkpoints(), run.plots()] {
        lits_data::atomic::remove_abandoned_temps(&dir);
    }
    configure_backend(&cfg)?;
    let config_sha256 = seed::sha256_json(&cfg);
    let ckpt_path = run.last_checkpoint();
    if !ckpt_path.is_file() {
        // Stopped before its first checkpoint, perhaps before its config was resolved
        // (killed while preparing): it starts again as `train` does, in its own folder,
        // from the plan it recorded, if it got that far.
        let ckpt_dir = run.checkpoints();
        std::fs::create_dir_all(&ckpt_dir).map_err(|e| Error::io(&ckpt_dir, e))?;
        runlog::truncate_after::<EpochRecord>(&run.metrics(), 0, |r| r.epoch)?;
        runlog::truncate_after::<TimingRecord>(&run.timing(), 0, |r| r.epoch)?;
        let plan = recorded_plan(&cfg, &run)?;
        let data = start_run(&mut cfg, plan, &run)?;
        let state = TrainState { world_size: world_of(opts), ..TrainState::fresh(&cfg, seed::sha256_json(&cfg)) };
        return run_loop(cfg, run, data, state, None, opts);
    }
    let (state, tensors) = {
        let c: checkpoint::Checkpoint<TrainState> = checkpoint::load(&ckpt_path)?;
        if c.state.config_sha256 != config_sha256 {
            return Err(Error::invalid(&ckpt_path, "belongs to another configuration than config.json"));
        }
        if c.state.world_size != world_of(opts) {
            let w = c.state.world_size;
            return Err(Error::invalid(
                &ckpt_path,
                format!(
                    "was trained by {w} process(es), this resume has {}: resume with `--nproc {w}` (or WORLD_SIZE={w}), since each rank's share of every batch depends on it",
                    world_of(opts)
                ),
            ));
        }
        (c.state, Some(c.tensors))
    };
    runlog::truncate_after::<EpochRecord>(&run.metrics(), state.epochs_done, |r| r.epoch)?;
    runlog::truncate_after::<TimingRecord>(&run.timing(), state.epochs_done, |r| r.epoch)?;
    let data = data::prepare(&cfg, recorded_plan(&cfg, &run)?, &run)?;
    run_loop(cfg, run, data, state, tensors, opts)
}

/// The run's own plan; a run killed before it was recorded (or recorded by a version whose
/// plans held no cases) is planned again.
fn recorded_plan(cfg: &TrainConfig, run: &RunDir) -> Result<plan::Plan> {
    let recorded = run.plans().is_file().then(|| plan::read(&run.plans())).transpose()?;
    match recorded.filter(plan::Plan::is_complete) {
        Some(p) => Ok(p),
        None => plan::plan(cfg),
    }
}

/// Prepares the planned cases and records the run's config, resolved: the target spacing
/// and intensity statistics the data gave are written into it, so that `config.json` with
/// the weights is all that `predict --weights --config` needs to segment a scan as
/// `predict --run` does. The run trains with (and its checkpoints hash) that config.
fn start_run(cfg: &mut TrainConfig, plan: plan::Plan, run: &RunDir) -> Result<TrainData> {
    configure_backend(cfg)?;
    let data = data::prepare(cfg, plan, run)?;
    failpoint::check(Point::Prepared);
    cfg.preprocess = cfg.preprocess.resolved(data.plan.median_spacing, data.plan.normaliser.as_ref());
    lits_data::json::write(&run.config(), cfg)?;
    lits_data::json::write(&run.env(), &crate::env::EnvReport::collect())?;
    Ok(data)
}

/// Makes the run folder with `checkpoints/` and the config as given (resolved once the data
/// is prepared), so that a run killed at any moment after this can be resumed. A new folder
/// is made aside and renamed into place: it appears with its `config.json` or not at all.
/// Writing the config also shows now, not after the first epoch, that the folder is
/// writable.
fn prepare_run_dir(dir: &Path, cfg: &TrainConfig) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::invalid(dir, "exists and is not a folder; pick another --out"));
    }
    let fill = |d: &Path| -> Result<()> {
        lits_data::json::write(&RunDir::new(d).config(), cfg)?;
        let ckpt = RunDir::new(d).checkpoints();
        std::fs::create_dir_all(&ckpt).map_err(|e| Error::io(&ckpt, e))
    };
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        if entries.next().is_some() {
            return Err(Error::invalid(dir, "already exists and is not empty; pick a new --out, or continue it with --resume"));
        }
        return fill(dir);
    }
    let absolute = data::absolute(dir)?;
    let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        return Err(Error::invalid(dir, "cannot hold a run; pick another --out"));
    };
    data::remove_abandoned(parent, &format!(".{}.", name.to_string_lossy()));
    data::make_dir_aside(&absolute, fill)
}

/// Threads, determinism flags and cuBLAS workspace, before any tensor work.
fn configure_backend(cfg: &TrainConfig) -> Result<()> {
    if cfg.deterministic {
        lits_model::backend::set_cublas_workspace();
    }
    let threads = if cfg.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { cfg.threads };
    tch::set_num_threads(threads as i32);
    lits_model::backend::set_deterministic(cfg.deterministic);
    Ok(())
}

fn run_loop(
    cfg: TrainConfig,
    run: RunDir,
    data: TrainData,
    mut state: TrainState,
    resume_tensors: Option<Vec<(String, Tensor)>>,
    opts: &RunOptions,
) -> Result<Summary> {
    let ranks = opts.ranks.as_ref();
    // Rank 0 (or the only process) writes the run's records; the others write nothing.
    let main = ranks.is_none_or(Ranks::is_main);
    let (rank, world) = ranks.map_or((0, 1), |r| (r.launch.rank, r.launch.world));
    let device = match (cfg.torch_device()?, ranks) {
        // One GPU per local rank, as torchrun's LOCAL_RANK intends.
        (Device::Cuda(_), Some(r)) => Device::Cuda(r.launch.local_rank),
        (d, _) => d,
    };
    // The initial weights come from the seed too.
    tch::manual_seed(seed::derive(cfg.seed, seed::Stream::Init, 0) as i64);
    let mut vs = nn::VarStore::new(device);
    let mut net = UNet3d::new(&vs.root(), &cfg.model);
    if cfg.distributed.sync_batch_norm {
        net.sync_batch_norm(ranks.map(|r| r.group.clone()));
    }
    let mut optimizer = Optimizer::new(&vs, cfg.optimizer.clone());
    if let Some(tensors) = resume_tensors {
        restore(&mut vs, &mut optimizer, &state, &tensors, &run.last_checkpoint())?;
    }
    if let Some(r) = ranks {
        if main {
            publish(r, &cfg, &state, &data)?;
        }
        // Each rank prepared its cases at its own pace; the collectives start once all have.
        r.group.set(&format!("lits/run/ready/{rank}"), b"1")?;
        r.group.wait_while_alive(&(0..world).map(|q| format!("lits/run/ready/{q}")).collect::<Vec<_>>())?;
        // Every rank starts from rank 0's weights and optimiser state.
        broadcast_state(r, &vs, &mut optimizer)?;
    }
    let loss_fn = cfg.loss.build()?.across(ranks.map(|r| r.group.clone()));
    let sampler = Arc::new(PatchSampler::new(data.train.clone(), cfg.patches.clone(), cfg.seed)?.with_share(rank, world)?);
    let tracker = if main { opts.tracking.as_ref().map(|t| crate::tracking_glue::start(&run, &cfg, t, world)) } else { None };

    let steps = u64::from(cfg.steps_per_epoch);
    let global_batch = cfg.patches.batch_size as i64;
    let batch = global_batch / world as i64;
    let [pd, ph, pw] = cfg.patches.patch.map(|p| p as i64);
    let mut progress = Progress::new(opts.progress, cfg.epochs, steps);
    let mut records = lits_data::json::read_lines::<EpochRecord>(&run.metrics())?;
    let mut last_validation = records.iter().rev().find_map(|r| r.val.clone());
    let mut ran_here = 0u32;

    while state.epochs_done < cfg.epochs && !state.stopped_early {
        if opts.stop_after.is_some_and(|n| ran_here >= n) {
            break;
        }
        let epoch = state.epochs_done;
        tch::manual_seed(torch_seed(cfg.seed, epoch, rank));
        let lr = state.schedule.lr_for_epoch(epoch);
        crate::memory::reset_peak();
        let started = Instant::now();
        let mut waited = 0.0f64;
        let mut loss_sum = 0.0f64;
        progress.start_epoch(epoch + 1);
        let workers = cfg.loader_workers.max(1);
        let mut loader = Prefetcher::new(sampler.clone(), u64::from(epoch), steps, workers, 2 * workers);
        for step in 0..steps {
            let t0 = Instant::now();
            let b = loader.next().ok_or(Error::Loader(step))??;
            waited += t0.elapsed().as_secs_f64();
            let x = Tensor::from_slice(&b.image).view([batch, 1, pd, ph, pw]).to_device(device);
            let y = Tensor::from_slice(&b.label).view([batch, pd, ph, pw]).to_kind(Kind::Int64).to_device(device);
            optimizer.zero_grad();
            let logits = net.forward_t(&x, true);
            if let Some(e) = net.take_sync_failure() {
                return Err(e.into());
            }
            let loss = loss_fn.f_forward(&logits, &y)?;
            let mut l = match (loss.f_backward(), ranks) {
                (Ok(()), _) => loss.double_value(&[]),
                // A collective inside backward (SyncBatchNorm) failed.
                (Err(e), Some(r)) => return Err(r.group.explain("backward", &e.to_string()).into()),
                (Err(e), None) => return Err(e.into()),
            };
            if let Some(r) = ranks {
                r.group.average_gradients(&optimizer.params())?;
                // The loss of the whole batch: the mean of the ranks' equal shares.
                let t = Tensor::from_slice(&[l]);
                r.group.all_reduce_sum(&[&t])?;
                l = t.double_value(&[0]) / world as f64;
            }
            optimizer.step(lr);
            if !l.is_finite() {
                return Err(Error::Diverged { epoch: epoch + 1, step, loss: l });
            }
            loss_sum += l;
            state.global_step += 1;
            progress.step(step + 1, l, started.elapsed().as_secs_f64(), (step + 1) * global_batch as u64);
            failpoint::check(Point::Step(epoch + 1, step + 1));
        }
        drop(loader);
        let train_seconds = started.elapsed().as_secs_f64();
        let train_loss = loss_sum / steps as f64;
        state.schedule.end_epoch(epoch, train_loss);
        state.epochs_done = epoch + 1;
        if let Some(r) = ranks {
            // BatchNorm's running statistics are rank 0's, as DDP's `broadcast_buffers`
            // makes them: the checkpoint holds them, and every rank validates with them.
            broadcast_buffers(r, &vs)?;
        }

        let val_started = Instant::now();
        let is_last = state.epochs_done == cfg.epochs;
        let val = if state.epochs_done.is_multiple_of(cfg.validation.every) || is_last {
            Some(validate_ranks(&net, &data, &cfg, device, ranks)?)
        } else {
            None
        };
        let val_seconds = if val.is_some() { val_started.elapsed().as_secs_f64() } else { 0.0 };
        if val.is_some() {
            failpoint::check(Point::AfterValidation(state.epochs_done));
        }

        let score = match cfg.best_by {
            BestBy::TrainLoss => Some(-train_loss),
            BestBy::ValDice => val.as_ref().map(|v| v.mean_dice),
            BestBy::Last => Some(f64::from(state.epochs_done)),
        };
        if let Some(s) = score {
            let improved = state.best.is_none_or(|(b, _)| s > b);
            if improved {
                state.best = Some((s, state.epochs_done));
                if main {
                    lits_model::weights::save_safetensors(&vs, &run.best_weights())?;
                }
            }
            if val.is_some() {
                state.stale_validations = if improved { 0 } else { state.stale_validations + 1 };
                if cfg.early_stop.as_ref().is_some_and(|e| state.stale_validations >= e.patience) {
                    state.stopped_early = true;
                }
            }
        }

        let record = EpochRecord { epoch: state.epochs_done, step: state.global_step, lr, train_loss, val: val.clone() };
        let timing = TimingRecord {
            epoch: state.epochs_done,
            train_seconds,
            val_seconds,
            patches_per_second: (steps * global_batch as u64) as f64 / train_seconds.max(1e-9),
            loader_wait_seconds: waited,
            timestamp_ms: lits_tracking::now_ms(),
            peak_resident_bytes: crate::memory::peak_resident_bytes(),
        };
        if main {
            lits_data::json::append_line(&run.metrics(), &record)?;
            lits_data::json::append_line(&run.timing(), &timing)?;
            lits_model::weights::save_safetensors(&vs, &run.last_weights())?;
            save_checkpoint(&vs, &optimizer, &state, &run.last_checkpoint())?;
        }
        failpoint::check(Point::EpochEnd(state.epochs_done));
        records.push(record.clone());
        if main {
            runlog::plot(&run, &records)?;
            progress.end_epoch(&record, &timing);
        }
        if let Some(t) = &tracker {
            crate::tracking_glue::log_epoch(t, &record, &timing);
        }
        if val.is_some() {
            last_validation = val;
        }
        ran_here += 1;
    }
    progress.finish();
    if main && ran_here == 0 && !records.is_empty() {
        // A resume of a run killed after its last checkpoint, before its plots were drawn.
        runlog::plot(&run, &records)?;
    }
    if let Some(r) = ranks {
        // Rank 0 serves the store: it leaves only once every rank is done with it.
        r.group.barrier()?;
    }
    let finished = state.epochs_done == cfg.epochs || state.stopped_early;
    if let Some(t) = tracker {
        crate::tracking_glue::finish(t, &run, finished);
    }
    Ok(Summary { run_dir: run.root.clone(), epochs_done: state.epochs_done, finished, last_validation, best: state.best })
}

/// libtorch's seed for `epoch` (dropout): rank 0's is a one-process run's, the others'
/// derive from it and the rank, so ranks draw different masks.
fn torch_seed(master: u64, epoch: u32, rank: usize) -> i64 {
    let s = seed::derive(master, seed::Stream::Torch, u64::from(epoch));
    (if rank == 0 { s } else { seed::derive(s, seed::Stream::Torch, rank as u64) }) as i64
}

/// The model's variables in name order.
fn named_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Every rank takes rank 0's variables, optimiser state and step count.
fn broadcast_state(ranks: &Ranks, vs: &nn::VarStore, opt: &mut Optimizer) -> Result<()> {
    let g = &ranks.group;
    tch::no_grad(|| -> Result<()> {
        for (_, t) in named_variables(vs).iter().chain(opt.state_tensors().iter()) {
            g.broadcast(t, 0)?;
        }
        Ok(())
    })?;
    let steps = Tensor::from_slice(&[opt.steps() as i64]);
    g.broadcast(&steps, 0)?;
    opt.set_steps(steps.int64_value(&[0]) as u64);
    Ok(())
}

/// Every rank takes rank 0's buffers (BatchNorm running statistics and batch counts).
fn broadcast_buffers(ranks: &Ranks, vs: &nn::VarStore) -> Result<()> {
    tch::no_grad(|| {
        for (_, t) in named_variables(vs).iter().filter(|(_, t)| !t.requires_grad()) {
            ranks.group.broadcast(t, 0)?;
        }
        Ok(())
    })
}

/// [`validate`] with the held-out cases shared among the ranks (case `i` on rank
/// `i mod world`), the scores gathered by a sum so that every rank has all of them.
fn validate_ranks(net: &UNet3d, data: &TrainData, cfg: &TrainConfig, device: Device, ranks: Option<&Ranks>) -> Result<Validation> {
    let Some(r) = ranks.filter(|_| !data.val.is_empty()) else { return validate(net, data, cfg, device) };
    let (rank, world) = (r.launch.rank, r.launch.world);
    let mine = validate_cases(net, data, cfg, device, |i| i % world == rank)?;
    let n = data.val.len();
    let mut scores = vec![0.0f64; 2 * n];
    for (i, (liver, tumor)) in (0..n).filter(|i| i % world == rank).zip(mine) {
        scores[2 * i] = liver;
        scores[2 * i + 1] = tumor;
    }
    let t = Tensor::from_slice(&scores);
    r.group.all_reduce_sum(&[&t])?;
    let all = Vec::<f64>::try_from(&t)?;
    let cases = data.val.iter().enumerate().map(|(i, c)| (c.id, all[2 * i], all[2 * i + 1])).collect();
    Ok(Validation::from_cases(cases))
}

fn save_checkpoint(vs: &nn::VarStore, opt: &Optimizer, state: &TrainState, path: &Path) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (format!("model.{n}"), t)).collect();
    tensors.extend(opt.state_tensors().into_iter().map(|(n, t)| (format!("optim.{n}"), t)));
    tensors.push(("optim.__steps__".into(), Tensor::from_slice(&[opt.steps() as i64])));
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    failpoint_checkpoint_write(path, &tensors, state)?;
    checkpoint::save(path, &tensors, state)
}

/// `LITS_FAILPOINT=checkpoint-write:EPOCH` (see [`failpoint`]): the process dies in the
/// middle of writing that epoch's checkpoint (half of its temporary file written), as a
/// kill during the write would leave things.
fn failpoint_checkpoint_write(path: &Path, tensors: &[(String, Tensor)], state: &TrainState) -> Result<()> {
    if failpoint::armed(Point::CheckpointWrite(state.epochs_done)) {
        let bytes = checkpoint::to_bytes(tensors, state)?;
        let tmp = lits_data::atomic::temp_path(path)?;
        std::fs::write(&tmp, &bytes[..bytes.len() / 2]).map_err(|e| Error::io(&tmp, e))?;
        failpoint::kill();
    }
    Ok(())
}

/// Puts a checkpoint's tensors (read by [`checkpoint::load`] from `path`) into the model's
/// variables and the optimiser; a tensor missing or of another shape is an error naming
/// `path`, and nothing of the optimiser is changed then.
pub fn restore(vs: &mut nn::VarStore, opt: &mut Optimizer, _state: &TrainState, tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    let mut problems = Vec::new();
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            match tensors.iter().find(|(n, _)| n.strip_prefix("model.") == Some(name.as_str())) {
                Some((_, t)) if t.size() == var.size() => var.copy_(t),
                Some((_, t)) => problems.push(format!("{name}: expected {:?}, found {:?}", var.size(), t.size())),
                None => problems.push(format!("{name}: missing")),
            }
        }
    });
    if !problems.is_empty() {
        return Err(Error::invalid(path, format!("model does not fit the config: {}", problems.join("; "))));
    }
    let steps = match tensors.iter().find(|(n, _)| n == "optim.__steps__") {
        Some((_, t)) if t.kind() == Kind::Int64 && t.size() == [1] => u64::try_from(t.int64_value(&[0])).ok(),
        _ => None,
    }
    .ok_or_else(|| Error::invalid(path, "no optimiser step count (optim.__steps__, one non-negative int64)"))?;
    let optim: Vec<(String, Tensor)> =
        tensors.iter().filter_map(|(n, t)| n.strip_prefix("optim.").map(|s| (s.to_owned(), t.shallow_clone()))).collect();
    opt.load_state(steps, &optim).map_err(|e| Error::invalid(path, e.to_string()))
}

/// Whole-volume validation with sliding-window inference on the held-out cases, one at a
/// time: each is loaded (from the cache, with the disk store), scored and dropped before
/// the next, so validation holds one case beside the network.
pub fn validate(net: &UNet3d, data: &TrainData, cfg: &TrainConfig, device: Device) -> Result<Validation> {
    let scores = validate_cases(net, data, cfg, device, |_| true)?;
    Ok(Validation::from_cases(data.val.iter().zip(scores).map(|(c, (l, t))| (c.id, l, t)).collect()))
}

/// Liver and tumor Dice of the held-out cases whose index `pick` accepts, in order.
fn validate_cases(
    net: &UNet3d,
    data: &TrainData,
    cfg: &TrainConfig,
    device: Device,
    pick: impl Fn(usize) -> bool,
) -> Result<Vec<(f64, f64)>> {
    let mut cases = Vec::new();
    for case in data.val.iter().enumerate().filter(|(i, _)| pick(*i)).map(|(_, c)| c) {
        let loaded = case.load()?;
        let (image, labels) = (&loaded.0, &loaded.1);
        let [d, h, w] = image.shape().map(|s| s as i64);
        let data_slice = image
            .data
            .as_slice()
            .ok_or_else(|| Error::invalid(&data.plan.dataset, format!("case {}: prepared image is not contiguous", case.id)))?;
        let x = Tensor::from_slice(data_slice).view([1, d, h, w]).to_device(device);
        let probs = tch::no_grad(|| inference::predict(net, &x, &cfg.validation.sliding_window))?;
        let pred = probs.argmax(0, false).to_kind(Kind::Uint8).to_device(Device::Cpu).flatten(0, -1);
        let pred = Vec::<u8>::try_from(&pred)?;
        let labels = labels
            .data
            .as_slice()
            .ok_or_else(|| Error::invalid(&data.plan.dataset, format!("case {}: prepared labels are not contiguous", case.id)))?;
        // Both empty: a perfect score.
        let c = lits_eval::metrics::confusion_slices(&pred, labels, 3);
        let liver = Structure::Liver.dice(&c).unwrap_or(1.0);
        let tumor = Structure::Tumor.dice(&c).unwrap_or(1.0);
        cases.push((liver, tumor));
    }
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleConfig;
    use proptest::collection::vec;
    use proptest::num::f64::ANY;
    use proptest::option;
    use proptest::prelude::*;

    fn state_json(s: &TrainState) -> Vec<u8> {
        lits_data::json::to_vec(s).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Any training state (NaN and infinities included wherever a float is) either
        /// round-trips through a checkpoint exactly, tensors bit for bit, or is refused
        /// when written, naming the field, with the checkpoint already there kept.
        #[test]
        fn any_training_state_round_trips_through_a_checkpoint_or_is_refused_naming_its_field(
            (epochs_done, global_step, stale, seed) in (any::<u32>(), any::<u64>(), any::<u32>(), any::<u64>()),
            (lr, base_lr, param) in (ANY, ANY, ANY),
            schedule_best in option::of(ANY),
            best in option::of((ANY, any::<u32>())),
            (kind, bad_epochs, stopped) in (0u8..3, any::<u32>(), any::<bool>()),
            sha in "[0-9a-f]{64}",
            weights in vec(any::<u32>(), 0..40),
        ) {
            let cfg = match kind {
                0 => ScheduleConfig::Constant,
                1 => ScheduleConfig::Plateau { factor: param, patience: bad_epochs, threshold: param, min_lr: param },
                _ => ScheduleConfig::Poly { power: param },
            };
            let state = TrainState {
                version: 1,
                epochs_done,
                global_step,
                schedule: Schedule::with_state(cfg, base_lr, epochs_done, lr, schedule_best, bad_epochs),
                best,
                stale_validations: stale,
                seed,
                config_sha256: sha,
                stopped_early: stopped,
                world_size: 1,
            };
            let w: Vec<f32> = weights.iter().map(|b| f32::from_bits(*b)).collect();
            let tensors = vec![
                ("model.w".to_owned(), Tensor::from_slice(&w)),
                ("optim.__steps__".to_owned(), Tensor::from_slice(&[global_step as i64])),
            ];
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("last.ckpt");
            let earlier = TrainState::fresh(&TrainConfig::default(), "0".repeat(64));
            checkpoint::save(&path, &[("model.w".to_owned(), Tensor::from_slice(&[1.0f32]))], &earlier).unwrap();

            let mut floats = vec![lr, base_lr, schedule_best.unwrap_or(0.0), best.map_or(0.0, |b| b.0)];
            if kind > 0 {
                floats.push(param);
            }
            match checkpoint::save(&path, &tensors, &state) {
                Ok(()) => {
                    prop_assert!(floats.iter().all(|f| f.is_finite()));
                    let back: checkpoint::Checkpoint<TrainState> = checkpoint::load(&path).unwrap();
                    prop_assert_eq!(state_json(&back.state), state_json(&state));
                    prop_assert_eq!(&back.state, &state);
                    prop_assert_eq!(back.tensors.len(), 2);
                    prop_assert_eq!(checkpoint::tensor_bytes(&back.tensors[0].1), checkpoint::tensor_bytes(&tensors[0].1));
                    prop_assert_eq!(back.tensors[1].1.int64_value(&[0]), global_step as i64);
                }
                Err(e) => {
                    let e = e.to_string();
                    prop_assert!(floats.iter().any(|f| !f.is_finite()), "refused a finite state: {}", e);
                    prop_assert!(e.contains("field `") && (e.contains("NaN") || e.contains("inf")), "{}", e);
                    let kept: checkpoint::Checkpoint<TrainState> = checkpoint::load(&path).unwrap();
                    prop_assert_eq!(kept.state, earlier);
                    prop_assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
                }
            }
        }
    }

    #[test]
    fn a_step_count_of_another_shape_or_kind_is_refused_naming_the_checkpoint() {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _w = vs.root().zeros("w", &[2]);
        let mut opt = Optimizer::new(&vs, crate::optim::OptimizerConfig::default());
        let state = TrainState::fresh(&TrainConfig::default(), String::new());
        let path = Path::new("last.ckpt");
        let model = || ("model.w".to_owned(), Tensor::from_slice(&[1.0f32, 2.0]));
        for steps in [Tensor::from_slice(&[3.0f32]), Tensor::from_slice(&[-1i64]), Tensor::from_slice(&[1i64, 2]), Tensor::from(4i64)] {
            let tensors = [model(), ("optim.__steps__".to_owned(), steps)];
            let e = restore(&mut vs, &mut opt, &state, &tensors, path).unwrap_err().to_string();
            assert!(e.contains("last.ckpt") && e.contains("no optimiser step count"), "{e}");
        }
    }
}
