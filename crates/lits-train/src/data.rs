//! The cases a run trains and validates on: the dataset found (or synthetic phantoms made
//! on first use), the split, and every case preprocessed, then kept as a training store
//! (`data.store`): read from the prepared-case cache a patch at a time, held-out cases
//! loaded one at a time to validate, or every case normalised in memory.
//!
//! Preprocessing goes through a [`lits_data::cache`] kept in the cache folder, one per
//! dataset folder and preprocessing config: the first run prepares every case of the folder
//! and stores it; later runs, resumed runs and other folds load the stored arrays and redo
//! only the cases whose files changed. Several processes may share it: one prepares while
//! the others wait for it.
//!
//! What preprocessing resolved to (the working spacing, the intensity normaliser from the
//! training cases' foreground) is written to the run's `plans.json`, so `predict` applies
//! exactly the same steps to new scans.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use lits_data::cache;
use lits_data::dataset::Split;
use lits_data::preprocess::PreprocessConfig;
use lits_data::store::StoreCase;
use lits_data::{synth, Image, Labels};

use crate::config::{SplitConfig, TrainConfig};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::runlog::RunDir;

/// A held-out case, preprocessed.
#[derive(Debug)]
pub struct ValCase {
    /// Case id as in the file names.
    pub id: u32,
    /// The case, in memory or in the cache.
    pub case: StoreCase,
}

impl ValCase {
    /// The normalised image and the labels: shared when the store holds them in memory,
    /// else read from the cache, to be dropped once the case is validated.
    pub fn load(&self) -> Result<Arc<(Image, Labels)>> {
        Ok(self.case.volume()?)
    }
}

/// Training and validation data of a run.
#[derive(Debug)]
pub struct TrainData {
    /// Training cases, in the plan's order (patches are drawn by index into it).
    pub train: Vec<StoreCase>,
    /// Held-out cases.
    pub val: Vec<ValCase>,
    /// How they were made (the run's `plans.json`).
    pub plan: Plan,
}

impl TrainData {
    /// The shapes of the training cases.
    pub fn train_shapes(&self) -> Vec<[usize; 3]> {
        self.train.iter().map(StoreCase::shape).collect()
    }
}

/// Where generated phantoms and caches go (see [`crate::config::DataConfig::cache_dir`]).
pub fn cache_root(cfg: &TrainConfig) -> PathBuf {
    if let Some(d) = &cfg.data.cache_dir {
        return d.clone();
    }
    if let Some(d) = std::env::var_os("LITS_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("lits");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("lits"),
        None => std::env::temp_dir().join("lits-cache"),
    }
}

/// The cache of prepared cases for this dataset folder and preprocessing config (the
/// same for a config and its resolved form, as recorded in a run's `config.json`).
pub(crate) fn prepared_dir(cfg: &TrainConfig, dataset: &Path, median_spacing: Option<[f64; 3]>) -> PathBuf {
    let folder = std::fs::canonicalize(dataset).unwrap_or_else(|_| dataset.to_path_buf());
    let key = crate::seed::sha256_json(&(folder, cfg.preprocess.preparation_key(median_spacing)));
    cache_root(cfg).join("prepared").join(&key[..16])
}

/// The dataset folder: `data.dir`, or the phantoms of `data.synth`, generated into the
/// cache on first use (written aside and renamed, so a killed generation is never used).
pub fn dataset_dir(cfg: &TrainConfig) -> Result<PathBuf> {
    if let Some(d) = &cfg.data.dir {
        return absolute(d);
    }
    let key = crate::seed::sha256_json(&(&cfg.data.synth, synth::GENERATOR_VERSION));
    let dir = absolute(&cache_root(cfg).join("synth").join(&key[..16]))?;
    if dir.join("synth.json").is_file() {
        return Ok(dir);
    }
    let parent = dir.parent().expect("has a parent");
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    remove_abandoned(parent, ".");
    tracing::info!("generating {} synthetic CT phantoms into {}", cfg.data.synth.cases, dir.display());
    match make_dir_aside(&dir, |tmp| Ok(synth::write_dataset(tmp, &cfg.data.synth).map(|_| ())?)) {
        Ok(()) => Ok(dir),
        // Another process made it first: use theirs.
        Err(_) if dir.join("synth.json").is_file() => Ok(dir),
        Err(e) => Err(e),
    }
}

/// Makes the folder `dir` (absolute, not yet there) whole or not at all: `fill` writes it
/// as `.<name>.<pid>.tmp` beside it, which is then renamed into place (and removed when
/// either fails). A process killed on the way leaves the hidden folder, which
/// [`remove_abandoned`] clears.
pub(crate) fn make_dir_aside(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(Error::invalid(dir, "has no parent folder or no name"));
    };
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = parent.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = fill(&tmp).and_then(|()| std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Removes the `<prefix><key>.<pid>.tmp` folders in `parent` (`prefix` begins with a dot)
/// that processes killed mid-way left behind: those whose process is gone. Where that cannot
/// be told (no `/proc`), nothing is removed.
pub(crate) fn remove_abandoned(parent: &std::path::Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().is_dir() {
            continue;
        }
        let pid = name
            .strip_prefix(prefix)
            .filter(|_| prefix.starts_with('.'))
            .and_then(|n| n.strip_suffix(".tmp"))
            .and_then(|n| n.rsplit('.').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if lits_data::atomic::process_gone(pid) {
            tracing::info!("removing {}, left by a process that was stopped", entry.path().display());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `path` made absolute (against the working directory), without resolving links.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io(path, e))
}

/// Refuses a training patch larger than every phantom of `data.synth` once preprocessed,
/// worked out from their config before they are generated. Cropping is ignored, so the
/// bound is generous.
pub fn check_patch_fits_phantoms(cfg: &TrainConfig) -> Result<()> {
    let bound = match &cfg.preprocess {
        PreprocessConfig::Mlfcore(m) => [m.cube; 3],
        PreprocessConfig::Spacing(spacing_mode) => {
            // In-plane axes 0 and 1, slices along 2 once reoriented to RAS; some phantoms are
            // stored with permuted axes, so without reorientation any axis may be any of them.
            let sy = &cfg.data.synth;
            let extent_mm = [
                sy.in_plane_voxels[1] as f64 * sy.in_plane_spacing_mm[1],
                sy.in_plane_voxels[1] as f64 * sy.in_plane_spacing_mm[1],
                sy.slices[1] as f64 * sy.slice_spacing_mm[1],
            ];
            // The median spacing lies within the drawn range, so its smallest value bounds it.
            let target =
                spacing_mode.target_spacing.unwrap_or([sy.in_plane_spacing_mm[0], sy.in_plane_spacing_mm[0], sy.slice_spacing_mm[0]]);
            let mut out = [0, 1, 2].map(|a| (extent_mm[a] / target[a]).ceil() as usize + 1);
            if !spacing_mode.canonical {
                let m = out.into_iter().max().unwrap_or(0);
                out = [m; 3];
            }
            out
        }
    };
    patch_fits(cfg, "the synthetic phantoms", bound)
}

/// Refuses a training patch larger than every case of `dir` along some axis (`bound`: the
/// largest prepared extent per axis, from the plan): nothing but padding would fill that
/// part of every patch. (A patch larger than only some cases is fine: those are padded, as
/// nnU-Net does.)
pub fn check_patch_fits(cfg: &TrainConfig, dir: &Path, bound: [usize; 3]) -> Result<()> {
    patch_fits(cfg, &format!("the cases in {}", dir.display()), bound)
}

fn patch_fits(cfg: &TrainConfig, source: &str, bound: [usize; 3]) -> Result<()> {
    let patch = cfg.patches.patch;
    if (0..3).any(|a| patch[a] > bound[a]) {
        return Err(Error::config(
            "patches.patch",
            format!("{patch:?} is larger than every volume: {source} are at most {bound:?} voxels once preprocessed"),
        ));
    }
    Ok(())
}

/// The train/validation split the config asks for, over the case ids of the dataset in
/// `root`.
pub fn resolve_split(cfg: &TrainConfig, root: &Path, ids: &[u32]) -> Result<Split> {
    let split = match &cfg.data.split {
        SplitConfig::Original => {
            let orig = Split::lits_original();
            Split { train: orig.train, val: orig.test, test: Vec::new() }
        }
        SplitConfig::Ids { val } => {
            Split { train: ids.iter().copied().filter(|i| !val.contains(i)).collect(), val: val.clone(), test: Vec::new() }
        }
        SplitConfig::Fraction { val_fraction } => {
            let n_val = ((ids.len() as f64 * val_fraction).round() as usize).clamp(1, ids.len().saturating_sub(1).max(1));
            let folds = Split::k_fold(ids, ids.len().max(2), cfg.seed)?;
            // Each fold of an n-fold split holds out one id; take the first n_val of them.
            let mut val: Vec<u32> = folds.iter().flat_map(|f| f.val.iter().copied()).take(n_val).collect();
            val.sort_unstable();
            Split { train: ids.iter().copied().filter(|i| !val.contains(i)).collect(), val, test: Vec::new() }
        }
        SplitConfig::KFold { folds, fold } => Split::k_fold(ids, *folds, cfg.seed)?.swap_remove(*fold),
        SplitConfig::File { path } => Split::read(path)?,
    };
    let train: Vec<u32> = split.train.iter().copied().filter(|i| ids.contains(i)).collect();
    let missing: Vec<u32> = split.val.iter().copied().filter(|i| !ids.contains(i)).collect();
    if !missing.is_empty() {
        return Err(Error::invalid(root, format!("has no case for the held-out ids {missing:?}")));
    }
    if train.is_empty() {
        return Err(Error::invalid(root, "leaves no case to train on after the split"));
    }
    Ok(Split { train, val: split.val, test: split.test })
}

/// Prepares the cases `plan` names (through the prepared-case cache, redoing only what
/// changed), resolves the normaliser from the training cases where the plan has none,
/// opens the cases as the store `data.store` asks (loading them only for `memory`), and
/// writes `split.json` and the resolved plan as `plans.json` into the run. Every bad case
/// is reported, not just the first. Reads no folder listing and no header beyond the
/// plan's.
pub fn prepare(cfg: &TrainConfig, mut plan: Plan, run: &RunDir) -> Result<TrainData> {
    let split = plan.split.clone().ok_or_else(|| Error::invalid(run.plans(), "holds no split"))?;
    let cache_dir = plan.cache.clone().ok_or_else(|| Error::invalid(run.plans(), "names no prepared-case folder"))?;
    std::fs::create_dir_all(&cache_dir).map_err(|e| Error::io(&cache_dir, e))?;
    // One process prepares at a time; the others then find the cases done.
    let lock_path = cache_dir.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    tracing::info!("preparing the cases of {} in {}", plan.dataset.display(), cache_dir.display());
    let (report, cache) =
        cache::build_pairs(&plan.dataset, &plan.pairs(), plan.failed.clone(), plan.median_spacing, &cfg.preprocess, &cache_dir, &|_| {})?;
    if !report.failed.is_empty() {
        let list: Vec<String> = report.failed.iter().map(|f| f.to_string()).collect();
        return Err(Error::invalid(&plan.dataset, format!("{} bad case(s):\n  {}", list.len(), list.join("\n  "))));
    }
    if plan.normaliser.is_none() {
        let stats = cache.intensity_stats(&split.train)?;
        plan.normaliser = Some(cfg.preprocess.intensity().resolve(stats.as_ref())?);
        plan.intensity_stats = stats;
    }
    let normaliser = plan.normaliser.ok_or_else(|| Error::invalid(run.plans(), "holds no normaliser"))?;
    let wanted: Vec<u32> = plan.cases.iter().map(|c| c.id).filter(|id| split.train.contains(id) || split.val.contains(id)).collect();
    let cases: Vec<(u32, StoreCase)> =
        wanted.par_iter().map(|&id| Ok((id, cache.store_case(id, normaliser, cfg.data.store)?))).collect::<Result<_>>()?;
    drop(lock);
    split.write(&run.split())?;
    lits_data::json::write(&run.plans(), &plan)?;

    let mut train = Vec::new();
    let mut val = Vec::new();
    for (id, case) in cases {
        if split.val.contains(&id) {
            val.push(ValCase { id, case });
        } else {
            train.push(case);
        }
    }
    let data = TrainData { train, val, plan };
    cfg.patches.validate(&data.train_shapes())?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_leftovers_of_stopped_generations_are_removed() {
        if !std::path::Path::new("/proc/self").exists() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let mine = d.path().join(format!(".0123456789abcdef.{}.tmp", std::process::id()));
        // Beyond Linux's largest pid: no such process.
        let gone = d.path().join(".0123456789abcdef.4294967295.tmp");
        let cache = d.path().join("0123456789abcdef");
        let other = d.path().join(".notes.tmp");
        for p in [&mine, &gone, &cache, &other] {
            std::fs::create_dir(p).unwrap();
        }
        remove_abandoned(d.path(), ".");
        assert!(!gone.exists(), "a dead process's folder stays");
        for p in [&mine, &cache, &other] {
            assert!(p.exists(), "{} was removed", p.display());
        }
        // A run folder's own leftovers only, for a prefix naming it.
        let run_gone = d.path().join(".run-a.4294967295.tmp");
        let other_gone = d.path().join(".run-b.4294967295.tmp");
        for p in [&run_gone, &other_gone] {
            std::fs::create_dir(p).unwrap();
        }
        remove_abandoned(d.path(), ".run-a.");
        assert!(!run_gone.exists() && other_gone.exists());
    }
}
