//! The cases a run trains and validates on: the dataset found (or synthetic phantoms made
//! on first use), the split, and every case preprocessed and normalised in memory.
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

use std::path::PathBuf;
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use lits_data::cache::{self, Cache};
use lits_data::dataset::{self, Split};
use lits_data::intensity::{CaseStats, IntensityStats, Normaliser};
use lits_data::preprocess::{self, PreprocessConfig};
use lits_data::{nifti, synth, Image, Labels};

use crate::config::{SplitConfig, TrainConfig};
use crate::error::{Error, Result};
use crate::runlog::RunDir;

/// A held-out case, preprocessed.
#[derive(Debug)]
pub struct ValCase {
    /// Case id as in the file names.
    pub id: String,
    /// Normalised image.
    pub image: Image,
    /// Labels on the same grid.
    pub labels: Labels,
}

/// What preprocessing resolved to for this run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plans {
    /// The dataset folder.
    pub dataset: PathBuf,
    /// The preprocessing configuration.
    pub preprocess: PreprocessConfig,
    /// The dataset's median working spacing (used when the config names none).
    pub median_spacing: Option<[f64; 3]>,
    /// The intensity normalisation, resolved from the training cases.
    pub normaliser: Normaliser,
    /// Foreground intensity statistics of the training cases (when collected).
    pub intensity_stats: Option<IntensityStats>,
}

/// Training and validation data of a run.
#[derive(Debug)]
pub struct TrainData {
    /// Training cases (normalised image, labels).
    pub train: Vec<Arc<(Image, Labels)>>,
    /// Held-out cases.
    pub val: Vec<ValCase>,
    /// How they were made.
    pub plans: Plans,
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

/// The cache of prepared cases for this dataset folder and preprocessing config.
fn prepared_dir(cfg: &TrainConfig, dataset: &std::path::Path) -> PathBuf {
    let folder = std::fs::canonicalize(dataset).unwrap_or_else(|_| dataset.to_path_buf());
    let key = crate::seed::sha256_json(&(folder, &cfg.preprocess));
    cache_root(cfg).join("prepared").join(&key[..16])
}

/// The dataset folder: `data.dir`, or the phantoms of `data.synth`, generated into the
/// cache on first use (written aside and renamed, so a killed generation is never used).
pub fn dataset_dir(cfg: &TrainConfig) -> Result<PathBuf> {
    if let Some(d) = &cfg.data.dir {
        return Ok(d.clone());
    }
    let key = crate::seed::sha256_json(&(&cfg.data.synth, synth::GENERATOR_VERSION));
    let dir = cache_root(cfg).join("synth").join(&key[..16]);
    if dir.join("synth.json").is_file() {
        return Ok(dir);
    }
    let parent = dir.parent().expect("has a parent");
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    remove_abandoned(parent);
    let tmp = parent.join(format!(".{}.{}.tmp", &key[..16], std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    tracing::info!("generating {} synthetic CT phantoms into {}", cfg.data.synth.cases, dir.display());
    synth::write_dataset(&tmp, &cfg.data.synth)?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process made it first: use theirs.
        Err(_) if dir.join("synth.json").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(Error::io(&dir, e)),
    }
}

/// Removes the `.<key>.<pid>.tmp` folders in `parent` that generations killed mid-way left
/// behind: those whose process is gone. Where that cannot be told (no `/proc`), nothing is
/// removed.
fn remove_abandoned(parent: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tmp"))
            .and_then(|n| n.rsplit_once('.'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        let proc = std::path::Path::new("/proc");
        if pid != std::process::id() && proc.join("self").exists() && !proc.join(pid.to_string()).exists() {
            tracing::info!("removing {}, left by a generation that was stopped", entry.path().display());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The largest extent, in voxels per axis, a case can have after preprocessing, worked out
/// from headers (or, for phantoms not yet generated, from their config) without reading a
/// voxel. Cropping is ignored, so this is an upper bound.
pub fn prepared_extent_bound(cfg: &TrainConfig) -> Result<[usize; 3]> {
    let spacing_mode = match &cfg.preprocess {
        PreprocessConfig::Mlfcore(m) => return Ok([m.cube; 3]),
        PreprocessConfig::Spacing(s) => s,
    };
    let Some(dir) = &cfg.data.dir else {
        // Phantoms: in-plane axes 0 and 1, slices along 2 once reoriented to RAS; some are
        // stored with permuted axes, so without reorientation any axis may be any of them.
        let sy = &cfg.data.synth;
        let extent_mm = [
            sy.in_plane_voxels[1] as f64 * sy.in_plane_spacing_mm[1],
            sy.in_plane_voxels[1] as f64 * sy.in_plane_spacing_mm[1],
            sy.slices[1] as f64 * sy.slice_spacing_mm[1],
        ];
        // The median spacing lies within the drawn range, so its smallest value bounds it.
        let target = spacing_mode.target_spacing.unwrap_or([
            sy.in_plane_spacing_mm[0],
            sy.in_plane_spacing_mm[0],
            sy.slice_spacing_mm[0],
        ]);
        let mut out = [0, 1, 2].map(|a| (extent_mm[a] / target[a]).ceil() as usize + 1);
        if !spacing_mode.canonical {
            let m = *out.iter().max().expect("three axes");
            out = [m; 3];
        }
        return Ok(out);
    };
    let ds = dataset::discover(dir)?;
    let headers: Vec<nifti::Header> = ds.cases.par_iter().map(|c| nifti::read_header(&c.image)).collect::<lits_data::Result<_>>()?;
    if headers.is_empty() {
        return Ok([usize::MAX; 3]); // discovery reports the empty folder when the run starts
    }
    let median_spacing = if cfg.preprocess.needs_median_spacing() {
        let spacings: Vec<[f64; 3]> = headers
            .iter()
            .map(|h| preprocess::working_spacing(&cfg.preprocess, h.geometry.spacing(), &h.geometry.affine))
            .collect();
        preprocess::median_spacing(&spacings)
    } else {
        None
    };
    let mut out = [0usize; 3];
    for h in &headers {
        let shape = cfg.preprocess.uncropped_shape(h.shape, h.geometry.spacing(), &h.geometry.affine, median_spacing)?;
        for a in 0..3 {
            out[a] = out[a].max(shape[a]);
        }
    }
    Ok(out)
}

/// Refuses a training patch larger than every preprocessed case along some axis: nothing
/// but padding would fill that part of every patch. (A patch larger than only some cases is
/// fine: those are padded, as nnU-Net does.)
pub fn check_patch_fits(cfg: &TrainConfig) -> Result<()> {
    let bound = prepared_extent_bound(cfg)?;
    let patch = cfg.patches.patch;
    if (0..3).any(|a| patch[a] > bound[a]) {
        let source = match &cfg.data.dir {
            Some(d) => format!("the cases in {}", d.display()),
            None => "the synthetic phantoms".to_string(),
        };
        return Err(Error::config(
            "patches.patch",
            format!("{patch:?} is larger than every volume: {source} are at most {bound:?} voxels once preprocessed"),
        ));
    }
    Ok(())
}

/// The train/validation split the config asks for.
pub fn resolve_split(cfg: &TrainConfig, ds: &dataset::Dataset) -> Result<Split> {
    let ids = ds.ids();
    let split = match &cfg.data.split {
        SplitConfig::Original => {
            let orig = Split::lits_original();
            Split { train: orig.train, val: orig.test, test: Vec::new() }
        }
        SplitConfig::Ids { val } => Split {
            train: ids.iter().copied().filter(|i| !val.contains(i)).collect(),
            val: val.clone(),
            test: Vec::new(),
        },
        SplitConfig::Fraction { val_fraction } => {
            let n_val = ((ids.len() as f64 * val_fraction).round() as usize).clamp(1, ids.len().saturating_sub(1).max(1));
            let folds = Split::k_fold(&ids, ids.len().max(2), cfg.seed)?;
            // Each fold of an n-fold split holds out one id; take the first n_val of them.
            let mut val: Vec<u32> = folds.iter().flat_map(|f| f.val.iter().copied()).take(n_val).collect();
            val.sort_unstable();
            Split { train: ids.iter().copied().filter(|i| !val.contains(i)).collect(), val, test: Vec::new() }
        }
        SplitConfig::KFold { folds, fold } => Split::k_fold(&ids, *folds, cfg.seed)?.swap_remove(*fold),
        SplitConfig::File { path } => Split::read(path)?,
    };
    let train: Vec<u32> = split.train.iter().copied().filter(|i| ids.contains(i)).collect();
    let missing: Vec<u32> = split.val.iter().copied().filter(|i| !ids.contains(i)).collect();
    if !missing.is_empty() {
        return Err(Error::invalid(&ds.root, format!("has no case for the held-out ids {missing:?}")));
    }
    if train.is_empty() {
        return Err(Error::invalid(&ds.root, "leaves no case to train on after the split"));
    }
    Ok(Split { train, val: split.val, test: split.test })
}

/// Finds, splits, loads and preprocesses the data of a run and writes `split.json` and
/// `plans.json` into it. Every bad case is reported, not just the first.
pub fn prepare(cfg: &TrainConfig, run: &RunDir, _progress: bool) -> Result<TrainData> {
    let dir = dataset_dir(cfg)?;
    let ds = dataset::discover(&dir)?;
    let split = resolve_split(cfg, &ds)?;
    split.write(&run.split())?;
    let wanted: Vec<u32> = ds.ids().into_iter().filter(|id| split.train.contains(id) || split.val.contains(id)).collect();

    let cache_dir = prepared_dir(cfg, &dir);
    std::fs::create_dir_all(&cache_dir).map_err(|e| Error::io(&cache_dir, e))?;
    // One process prepares at a time; the others then find the cases done.
    let lock_path = cache_dir.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    tracing::info!("preparing the cases of {} in {}", dir.display(), cache_dir.display());
    let report = cache::build(&dir, &cfg.preprocess, &cache_dir, &|_| {})?;
    if !report.failed.is_empty() {
        let list: Vec<String> = report.failed.iter().map(|f| f.to_string()).collect();
        return Err(Error::invalid(&dir, format!("{} bad case(s):\n  {}", list.len(), list.join("\n  "))));
    }
    let cache = Cache::open(&cache_dir)?;
    let median_spacing = cache.fingerprint().median_spacing;
    let prepared: Vec<(u32, Image, Labels)> = wanted
        .par_iter()
        .map(|&id| {
            let (image, labels, _) = cache.load_raw(id)?;
            Ok((id, image, labels))
        })
        .collect::<Result<_>>()?;
    drop(lock);

    let intensity = cfg.preprocess.intensity();
    let stats = if intensity.needs_stats() {
        let per_case: Vec<CaseStats> = prepared
            .iter()
            .filter(|(id, _, _)| split.train.contains(id))
            .map(|(_, img, lab)| CaseStats::collect(img, lab))
            .collect();
        Some(IntensityStats::merge(&per_case))
    } else {
        None
    };
    let normaliser = intensity.resolve(stats.as_ref())?;
    let plans = Plans {
        dataset: dir.clone(),
        preprocess: cfg.preprocess.clone(),
        median_spacing,
        normaliser,
        intensity_stats: stats,
    };
    lits_data::json::write(&run.plans(), &plans)?;

    let mut train = Vec::new();
    let mut val = Vec::new();
    for (id, mut image, labels) in prepared {
        normaliser.apply_image(&mut image);
        if split.val.contains(&id) {
            val.push(ValCase { id: id.to_string(), image, labels });
        } else {
            train.push(Arc::new((image, labels)));
        }
    }
    let shapes: Vec<[usize; 3]> = train.iter().map(|c| c.0.shape()).collect();
    cfg.patches.validate(&shapes)?;
    Ok(TrainData { train, val, plans })
}

/// The dataset folder a run trained on (for tools that only have the run directory).
pub fn plans_dataset(run: &RunDir) -> Result<PathBuf> {
    let plans: Plans = lits_data::json::read(&run.plans())?;
    Ok(plans.dataset)
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
        remove_abandoned(d.path());
        assert!(!gone.exists(), "a dead process's folder stays");
        for p in [&mine, &cache, &other] {
            assert!(p.exists(), "{} was removed", p.display());
        }
    }
}
