//! A cache of preprocessed cases (`lits preprocess`) that training loads in a blink.
//!
//! Layout of a cache folder:
//!
//! ```text
//! CACHE/dataset.json            fingerprint: config and its hash, every source file with
//!                               size and sha256, spacings, shapes, intensity statistics,
//!                               the resolved normalisation, the cases that failed
//! CACHE/cases/case-N/image.npy  prepared image, float32 C order, intensities not normalised
//! CACHE/cases/case-N/label.npy  prepared labels, uint8
//! CACHE/cases/case-N/fg.npy     foreground intensity sample (for the dataset percentiles)
//! CACHE/cases/case-N/fg_voxels.npy  the foreground voxels patches are centred on, uint32
//!                               rows (class, i, j, k)
//! CACHE/cases/case-N/meta.json  key, source files, grid record, foreground statistics,
//!                               smallest intensity, size, time and sha256 of each array
//! ```
//!
//! `.npy` keeps the arrays readable from NumPy (`np.load`). A case's key is the sha256 of the
//! resolved config and of its two source files; a case whose `meta.json` holds the same key
//! is not redone, and a source file whose size and modification time are unchanged is not
//! hashed again. Each case is written into a hidden temporary folder that is renamed into
//! place, so an interrupted run never leaves a half-written case that later loads (one
//! left behind is removed by the next run, and redone). Intensities are normalised when a
//! case is loaded, with statistics merged from every case, so that one changed case does
//! not invalidate the others.
//!
//! A cache is also a training store ([`crate::store`]): [`Cache::store_case`] opens a case
//! for patches to be read from its files a window at a time, from what `meta.json` and
//! `fg_voxels.npy` record, without reading its voxels.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::UNIX_EPOCH;

use ndarray::Array3;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset;
use crate::digest::{hex, sha256_hex};
use crate::intensity::{CaseStats, IntensityStats, Normaliser};
use crate::preprocess::{self, CaseRecord, PreprocessConfig};
use crate::resample::Grid;
use crate::store::{self, ArrayFile, DiskArrays, StoreCase, StoreKind};
use crate::{nifti, Error, Image, Labels, Result, Volume};

/// Version of the cache layout; a cache of another version is rebuilt (2: each case's
/// `meta.json` records the size, time and sha256 of its arrays; 3: and its smallest
/// intensity and foreground voxels, `fg_voxels.npy`, what training reads from disk needs).
pub const FORMAT: u32 = 3;

/// The arrays of a cached case, in the order `meta.json` records them.
const ARRAYS: [&str; 4] = ["image.npy", "label.npy", "fg.npy", "fg_voxels.npy"];

/// A source file as it was when its case was cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Where it was.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since 1970 (to skip re-hashing unchanged files).
    pub modified_ns: u64,
    /// sha256 of the content, hex.
    pub sha256: String,
}

/// One cached case in `dataset.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseEntry {
    /// The case number.
    pub id: u32,
    /// The scan.
    pub image: SourceFile,
    /// Its labels.
    pub label: SourceFile,
    /// sha256 of (format, config hash, image sha256, label sha256).
    pub key: String,
    /// Shape and spacing of the scan as read.
    pub source_shape: [usize; 3],
    /// Voxel size of the scan as read (mm).
    pub source_spacing: [f64; 3],
    /// Shape of the prepared arrays.
    pub shape: [usize; 3],
    /// Voxel size of the prepared arrays (mm).
    pub spacing: [f64; 3],
    /// Foreground intensity statistics of the prepared case (before normalisation).
    pub stats: CaseStats,
}

/// A case (or the dataset) that could not be cached, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The case number, if the problem belongs to one case.
    pub id: Option<u32>,
    /// The file (or folder) the problem is in.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.id {
            Some(id) => write!(f, "case {id}: {}: {}", self.path.display(), self.problem),
            None => write!(f, "{}: {}", self.path.display(), self.problem),
        }
    }
}

/// `dataset.json`: what a cache holds and what it was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// [`FORMAT`].
    pub format: u32,
    /// The dataset folder.
    pub data: PathBuf,
    /// The preprocessing configuration.
    pub config: PreprocessConfig,
    /// sha256 of the configuration with its resolved spacing.
    pub config_hash: String,
    /// The dataset's median working spacing, where the config asked for it.
    pub median_spacing: Option<[f64; 3]>,
    /// The cached cases, by id.
    pub cases: Vec<CaseEntry>,
    /// What could not be cached.
    pub failed: Vec<Failure>,
    /// Foreground intensity statistics of all cached cases (absent without foreground).
    pub intensity_stats: Option<IntensityStats>,
    /// The normalisation applied on loading, resolved from `intensity_stats`.
    pub normaliser: Option<Normaliser>,
}

/// `meta.json` of one cached case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CaseMeta {
    format: u32,
    entry: CaseEntry,
    record: CaseRecord,
    /// [`ARRAYS`] as written (`path` is the file name): a case whose arrays changed on
    /// disk is redone by the next build and refused by [`Cache::load_raw`].
    arrays: Vec<SourceFile>,
    /// The smallest intensity of the prepared image, before normalisation: the padding of
    /// training patches, known without reading the image.
    min: f32,
}

impl CaseMeta {
    /// The recorded array `name`.
    fn array(&self, name: &str) -> Option<&SourceFile> {
        self.arrays.iter().find(|a| a.path.as_os_str() == name)
    }

    /// The recorded sha256 of array `name` (empty, matching no file, when none is).
    fn digest(&self, name: &str) -> &str {
        self.array(name).map_or("", |a| a.sha256.as_str())
    }

    /// Whether every array in `dir` is as recorded (size and time, else content).
    fn arrays_intact(&self, dir: &Path) -> bool {
        ARRAYS.iter().all(|name| {
            self.array(name).is_some_and(|rec| source_file(&dir.join(name), Some(rec)).is_ok_and(|now| now.sha256 == rec.sha256))
        })
    }
}

/// What happened to a case in [`build`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Prepared and written.
    Processed,
    /// Already cached with the same key.
    Unchanged,
    /// Not cached (see [`Report::failed`]).
    Failed,
}

/// Progress of [`build`], for a progress bar.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Work on `cases` cases starts.
    Start {
        /// How many.
        cases: usize,
    },
    /// A case is finished.
    Case {
        /// Its number.
        id: u32,
        /// What happened.
        outcome: Outcome,
    },
}

/// What [`build`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Cases prepared and written in this run.
    pub processed: Vec<u32>,
    /// Cases already cached with the same key.
    pub unchanged: Vec<u32>,
    /// Cached cases removed because their case is gone or failed now.
    pub removed: Vec<u32>,
    /// What could not be cached.
    pub failed: Vec<Failure>,
}

/// An image/label pair of a dataset folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// The case number.
    pub id: u32,
    /// The scan.
    pub image: PathBuf,
    /// Its labels.
    pub label: PathBuf,
}

/// A pair and the header of its scan, as [`survey`] found them.
#[derive(Debug, Clone)]
pub struct SurveyedCase {
    /// The files.
    pub pair: Pair,
    /// The scan's header.
    pub header: nifti::Header,
}

/// A dataset folder as preprocessing sees it, from file names and headers alone (no voxel
/// is read): the usable pairs with their scans' headers, the median working spacing, and
/// every file that makes no case.
#[derive(Debug, Clone)]
pub struct Survey {
    /// The folder.
    pub root: PathBuf,
    /// Usable pairs, by id.
    pub cases: Vec<SurveyedCase>,
    /// Files that make no case: a label without its image, an image without its label, two
    /// files for one id, an unreadable header.
    pub failed: Vec<Failure>,
    /// The median working spacing of `cases`, where `cfg` asks for it.
    pub median_spacing: Option<[f64; 3]>,
}

impl Survey {
    /// The usable pairs.
    pub fn pairs(&self) -> Vec<Pair> {
        self.cases.iter().map(|c| c.pair.clone()).collect()
    }
}

static SURVEYS: AtomicUsize = AtomicUsize::new(0);

/// How many times this process surveyed a dataset folder (each [`survey`] call).
pub fn surveys() -> usize {
    SURVEYS.load(Ordering::Relaxed)
}

/// Surveys the dataset in `data` for `cfg`: every file name, every pair, every scan's header,
/// the median spacing. The one place lits lists a dataset folder for training or
/// preprocessing; an `Err` means no dataset at all.
pub fn survey(data: &Path, cfg: &PreprocessConfig) -> Result<Survey> {
    cfg.validate()?;
    SURVEYS.fetch_add(1, Ordering::Relaxed);
    let dataset::Survey { dataset: ds, problems } = dataset::survey(data)?;
    let mut failed: Vec<Failure> =
        problems.iter().map(|p| Failure { id: Some(p.id), path: p.path.clone(), problem: p.message.clone() }).collect();
    let mut pairs = Vec::new();
    for case in &ds.cases {
        match &case.label {
            Some(label) => pairs.push(Pair { id: case.id, image: case.image.clone(), label: label.clone() }),
            None => {
                failed.push(Failure { id: Some(case.id), path: case.image.clone(), problem: "has no segmentation (unpaired image)".into() })
            }
        }
    }
    let headers: Vec<std::result::Result<nifti::Header, Failure>> =
        pairs.par_iter().map(|p| nifti::read_header(&p.image).map_err(|e| failure(p.id, &p.image, e))).collect();
    let mut cases = Vec::new();
    for (h, pair) in headers.into_iter().zip(pairs) {
        match h {
            Ok(header) => cases.push(SurveyedCase { pair, header }),
            Err(f) => failed.push(f),
        }
    }
    failed.sort_by_key(|f| (f.id, f.path.clone()));
    let median_spacing = if cfg.needs_median_spacing() {
        let spacings: Vec<[f64; 3]> =
            cases.iter().map(|c| preprocess::working_spacing(cfg, c.header.geometry.spacing(), &c.header.geometry.affine)).collect();
        preprocess::median_spacing(&spacings)
    } else {
        None
    };
    tracing::debug!("dataset survey: {} ({} cases, {} failed)", data.display(), cases.len(), failed.len());
    Ok(Survey { root: data.to_path_buf(), cases, failed, median_spacing })
}

/// Preprocesses every case of the dataset in `data` with `cfg` into the cache folder `out`,
/// redoing only what changed. Bad cases are reported in [`Report::failed`] while the good
/// ones are cached; an `Err` means nothing could be done (no dataset, an unwritable cache).
pub fn build(data: &Path, cfg: &PreprocessConfig, out: &Path, progress: &(dyn Fn(Event) + Sync)) -> Result<Report> {
    let s = survey(data, cfg)?;
    Ok(build_pairs(&s.root, &s.pairs(), s.failed, s.median_spacing, cfg, out, progress)?.0)
}

/// [`build`] for pairs already surveyed (by [`survey`], or recorded in a run's plan):
/// `failed` are the survey's failures, reported with those of preparation. Returns the
/// cache, opened.
pub fn build_pairs(
    data: &Path,
    pairs: &[Pair],
    mut failed: Vec<Failure>,
    median_spacing: Option<[f64; 3]>,
    cfg: &PreprocessConfig,
    out: &Path,
    progress: &(dyn Fn(Event) + Sync),
) -> Result<(Report, Cache)> {
    cfg.validate()?;
    let cases_dir = out.join("cases");
    fs::create_dir_all(&cases_dir).map_err(|e| Error::io(&cases_dir, e))?;
    remove_leftovers(&cases_dir)?;
    let todo = pairs;
    let config_hash = sha256_hex(
        &crate::json::to_vec(&(FORMAT, cfg.preparation_key(median_spacing)))
            .map_err(|e| Error::Config { field: "preprocess".into(), msg: e })?,
    );

    progress(Event::Start { cases: pairs.len() + failed.len() });
    for f in &failed {
        if let Some(id) = f.id {
            progress(Event::Case { id, outcome: Outcome::Failed });
        }
    }
    let results: Vec<std::result::Result<(CaseEntry, Outcome), Failure>> = todo
        .par_iter()
        .with_max_len(1)
        .map(|pair| {
            let r = cache_case(pair, cfg, &config_hash, median_spacing, &cases_dir);
            let outcome = r.as_ref().map_or(Outcome::Failed, |(_, o)| *o);
            progress(Event::Case { id: pair.id, outcome });
            r
        })
        .collect();

    let mut report = Report::default();
    let mut entries = Vec::new();
    for r in results {
        match r {
            Ok((entry, outcome)) => {
                match outcome {
                    Outcome::Processed => report.processed.push(entry.id),
                    _ => report.unchanged.push(entry.id),
                }
                entries.push(entry);
            }
            Err(f) => failed.push(f),
        }
    }
    entries.sort_by_key(|e| e.id);
    failed.sort_by_key(|f| (f.id, f.path.clone()));

    // Cached cases that are gone from the dataset, or failed this time, must not be loaded.
    let keep: BTreeSet<String> = entries.iter().map(|e| case_dir_name(e.id)).collect();
    for entry in fs::read_dir(&cases_dir).map_err(|e| Error::io(&cases_dir, e))? {
        let entry = entry.map_err(|e| Error::io(&cases_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            if let Some(id) = name.strip_prefix("case-").and_then(|n| n.parse().ok()) {
                report.removed.push(id);
            }
            fs::remove_dir_all(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }

    report.removed.sort_unstable();

    let intensity_stats = Some(load_samples(&cases_dir, &entries)?).filter(|s| s.count > 0);
    let normaliser = match cfg.intensity().resolve(intensity_stats.as_ref()) {
        Ok(n) => Some(n),
        Err(e) => {
            if !entries.is_empty() {
                failed.push(Failure { id: None, path: data.to_path_buf(), problem: e.to_string() });
            }
            None
        }
    };
    let fp = Fingerprint {
        format: FORMAT,
        data: data.to_path_buf(),
        config: cfg.clone(),
        config_hash,
        median_spacing,
        cases: entries,
        failed: failed.clone(),
        intensity_stats,
        normaliser,
    };
    crate::json::write(&out.join("dataset.json"), &fp)?;
    report.failed = failed;
    Ok((report, Cache { root: out.to_path_buf(), fingerprint: fp }))
}

/// Merged statistics of the cached cases, with their foreground samples read back.
fn load_samples(cases_dir: &Path, entries: &[CaseEntry]) -> Result<IntensityStats> {
    let with_samples: Vec<CaseStats> = entries
        .par_iter()
        .map(|e| {
            let path = cases_dir.join(case_dir_name(e.id)).join("fg.npy");
            let (_, samples) = npy::read_f32(&path)?;
            Ok(CaseStats { samples, ..e.stats.clone() })
        })
        .collect::<Result<_>>()?;
    Ok(IntensityStats::merge(&with_samples))
}

fn failure(id: u32, path: &Path, e: impl std::fmt::Display) -> Failure {
    // Library errors already start with the path; keep only what follows it.
    let msg = e.to_string();
    let prefix = format!("{}: ", path.display());
    let problem = msg.strip_prefix(&prefix).map(str::to_owned).unwrap_or(msg);
    Failure { id: Some(id), path: path.to_path_buf(), problem }
}

fn case_dir_name(id: u32) -> String {
    format!("case-{id}")
}

/// Removes hidden folders left by an interrupted run.
fn remove_leftovers(cases_dir: &Path) -> Result<()> {
    for entry in fs::read_dir(cases_dir).map_err(|e| Error::io(cases_dir, e))? {
        let entry = entry.map_err(|e| Error::io(cases_dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            let p = entry.path();
            let r = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
            r.map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

/// Caches one case, or finds it cached with the same key.
fn cache_case(
    case: &Pair,
    cfg: &PreprocessConfig,
    config_hash: &str,
    median_spacing: Option<[f64; 3]>,
    cases_dir: &Path,
) -> std::result::Result<(CaseEntry, Outcome), Failure> {
    let dir = cases_dir.join(case_dir_name(case.id));
    let previous = read_meta(&dir);
    let image_src = source_file(&case.image, previous.as_ref().map(|m| &m.entry.image)).map_err(|e| failure(case.id, &case.image, e))?;
    let label = &case.label;
    let label_src = source_file(label, previous.as_ref().map(|m| &m.entry.label)).map_err(|e| failure(case.id, label, e))?;
    let key = sha256_hex(format!("{FORMAT}\n{config_hash}\n{}\n{}", image_src.sha256, label_src.sha256).as_bytes());
    if let Some(meta) = previous {
        if meta.entry.key == key && meta.arrays_intact(&dir) {
            // Paths may have moved with the dataset; the content is what counts.
            let entry = CaseEntry { image: image_src, label: label_src, ..meta.entry };
            return Ok((entry, Outcome::Unchanged));
        }
    }

    let (image, _) = nifti::read_image(&case.image).map_err(|e| failure(case.id, &case.image, e))?;
    let (labels, _) = nifti::read_labels(label).map_err(|e| failure(case.id, label, e))?;
    check_pair(&image, &labels).map_err(|problem| Failure { id: Some(case.id), path: label.to_path_buf(), problem })?;
    let prepared = cfg.prepare(&image, Some(&labels), median_spacing).map_err(|e| failure(case.id, &case.image, e))?;
    let prepared_labels = prepared.labels.as_ref().expect("labels were given");
    let stats = CaseStats::collect(&prepared.image, prepared_labels);
    let min = prepared.image.data.iter().copied().fold(f32::INFINITY, f32::min);
    let foreground = store::foreground_voxels(&prepared_labels.data);
    let entry = CaseEntry {
        id: case.id,
        image: image_src,
        label: label_src,
        key,
        source_shape: image.shape(),
        source_spacing: image.spacing,
        shape: prepared.image.shape(),
        spacing: prepared.image.spacing,
        stats,
    };
    let meta = CaseMeta { format: FORMAT, entry: entry.clone(), record: prepared.record.clone(), arrays: Vec::new(), min };
    write_case(&dir, &prepared.image, prepared_labels, &foreground, meta).map_err(|e| failure(case.id, &dir, e))?;
    Ok((entry, Outcome::Processed))
}

/// Why an image and its labels cannot be a training case, if they cannot.
fn check_pair(image: &Image, labels: &Labels) -> std::result::Result<(), String> {
    if let Some(m) = crate::volume::grid_mismatch(image, labels, "its image's") {
        return Err(m);
    }
    crate::volume::bad_label_values(labels).map_or(Ok(()), Err)
}

fn read_meta(dir: &Path) -> Option<CaseMeta> {
    let text = fs::read(dir.join("meta.json")).ok()?;
    crate::json::from_slice::<CaseMeta>(&text).ok().filter(|m| m.format == FORMAT)
}

/// Size, time and sha256 of a file; the hash is taken from `previous` when size and time
/// are unchanged.
fn source_file(path: &Path, previous: Option<&SourceFile>) -> Result<SourceFile> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let modified_ns = modified_ns(&meta);
    if let Some(p) = previous {
        if p.size == meta.len() && p.modified_ns == modified_ns && modified_ns != 0 {
            return Ok(SourceFile { path: path.to_path_buf(), ..p.clone() });
        }
    }
    let mut file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(SourceFile { path: path.to_path_buf(), size: meta.len(), modified_ns, sha256: hex(&hasher.finalize()) })
}

/// A file's modification time in nanoseconds since 1970 (0 where the system has none).
pub(crate) fn modified_ns(meta: &fs::Metadata) -> u64 {
    meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as u64)
}

/// Writes a case into a hidden folder beside `dir`, then swaps it into place.
fn write_case(dir: &Path, image: &Image, labels: &Labels, foreground: &[Vec<[u32; 3]>], mut meta: CaseMeta) -> Result<()> {
    let parent = dir.parent().expect("case folders live in cases/");
    let name = dir.file_name().expect("case folder name").to_string_lossy();
    let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let old = parent.join(format!(".{name}.{}.old", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let written = (|| {
        npy::write(&tmp.join("image.npy"), &image.data.as_standard_layout().into_owned())?;
        npy::write(&tmp.join("label.npy"), &labels.data.as_standard_layout().into_owned())?;
        let fg = &meta.entry.stats.samples;
        let fg = Array3::from_shape_vec([fg.len(), 1, 1], fg.clone()).map_err(|e| Error::invalid(tmp.join("fg.npy"), e.to_string()))?;
        npy::write(&tmp.join("fg.npy"), &fg)?;
        npy::write(&tmp.join("fg_voxels.npy"), &store::foreground_rows(foreground))?;
        meta.arrays =
            ARRAYS.iter().map(|name| Ok(SourceFile { path: name.into(), ..source_file(&tmp.join(name), None)? })).collect::<Result<_>>()?;
        let json = crate::json::to_vec_pretty(&meta).map_err(|e| Error::invalid(tmp.join("meta.json"), e))?;
        write_file(&tmp.join("meta.json"), &json)
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // A reader sees the old case, no case (redone next run), or the new one: never a mix.
    if dir.exists() {
        fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| Error::io(path, e))
}

/// A cache made by [`build`], opened for loading cases.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    fingerprint: Fingerprint,
}

impl Cache {
    /// Opens the cache folder `root` (reads its `dataset.json`).
    pub fn open(root: &Path) -> Result<Cache> {
        let path = root.join("dataset.json");
        let text = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let fingerprint: Fingerprint =
            crate::json::from_slice(&text).map_err(|e| Error::invalid(&path, format!("not a lits cache fingerprint: {e}")))?;
        if fingerprint.format != FORMAT {
            return Err(Error::invalid(&path, format!("cache format {} is not {FORMAT}; run `lits preprocess` again", fingerprint.format)));
        }
        Ok(Cache { root: root.to_path_buf(), fingerprint })
    }

    /// What the cache holds.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Foreground intensity statistics merged over the cached cases `ids` (the training
    /// cases of a run), from the per-case statistics and samples stored with them; `None`
    /// when they hold no foreground.
    pub fn intensity_stats(&self, ids: &[u32]) -> Result<Option<IntensityStats>> {
        let entries: Vec<CaseEntry> = ids.iter().map(|&id| self.entry(id).cloned()).collect::<Result<_>>()?;
        Ok(Some(load_samples(&self.root.join("cases"), &entries)?).filter(|s| s.count > 0))
    }

    /// The cached case ids, in order.
    pub fn ids(&self) -> Vec<u32> {
        self.fingerprint.cases.iter().map(|c| c.id).collect()
    }

    /// The entry of case `id`.
    pub fn entry(&self, id: u32) -> Result<&CaseEntry> {
        self.fingerprint
            .cases
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| Error::invalid(self.root.join("dataset.json"), format!("holds no case {id}")))
    }

    /// The folder and `meta.json` of case `id`, refused when they belong to another build
    /// than `dataset.json`.
    fn case_meta(&self, id: u32) -> Result<(PathBuf, CaseMeta)> {
        let entry = self.entry(id)?;
        let dir = self.root.join("cases").join(case_dir_name(id));
        let meta_path = dir.join("meta.json");
        let meta = read_meta(&dir).ok_or_else(|| Error::invalid(&meta_path, "missing or unreadable"))?;
        if meta.entry.key != entry.key {
            return Err(Error::invalid(&meta_path, "belongs to another run than dataset.json; run `lits preprocess` again"));
        }
        Ok((dir, meta))
    }

    /// Case `id` as prepared, intensities not normalised, with its grid record.
    pub fn load_raw(&self, id: u32) -> Result<(Image, Labels, CaseRecord)> {
        let (dir, meta) = self.case_meta(id)?;
        let (image, labels) = load_arrays(&dir, &meta)?;
        Ok((image, labels, meta.record))
    }

    /// Case `id` as a case of a training store, its intensities normalised by `normaliser`
    /// (the run's): loaded whole ([`StoreKind::Memory`], every array checked against its
    /// sha256), or opened for windowed reads ([`StoreKind::Disk`]) without reading a voxel.
    /// An array whose size or time is not the one `meta.json` records, or whose header does
    /// not describe the case's grid, is refused naming it. (The build before re-hashes
    /// every array whose size or time changed and redoes its case; hashing every array of
    /// the dataset again at each start would take minutes.)
    pub fn store_case(&self, id: u32, normaliser: Normaliser, kind: StoreKind) -> Result<StoreCase> {
        let (dir, meta) = self.case_meta(id)?;
        let shape = meta.record.prepared().shape;
        let fg_path = dir.join("fg_voxels.npy");
        let (rows, values) = npy::read_checked::<u32>(&fg_path, meta.digest("fg_voxels.npy"))?;
        let foreground = store::foreground_from_rows(&fg_path, rows, &values, shape)?;
        match kind {
            StoreKind::Memory => {
                let (mut image, labels) = load_arrays(&dir, &meta)?;
                normaliser.apply_image(&mut image);
                Ok(StoreCase::loaded(image, labels, meta.min, normaliser, foreground))
            }
            StoreKind::Disk => {
                let grid = meta.record.prepared();
                let arrays = DiskArrays {
                    image: open_array::<f32>(&dir, &meta, "image.npy", shape)?,
                    labels: open_array::<u8>(&dir, &meta, "label.npy", shape)?,
                    spacing: grid.spacing,
                    affine: grid.affine,
                };
                Ok(StoreCase::on_disk(arrays, shape, meta.min, normaliser, foreground))
            }
        }
    }

    /// Case `id` ready for training: intensities normalised as `dataset.json` says.
    pub fn load(&self, id: u32) -> Result<(Image, Labels)> {
        let (mut image, labels, _) = self.load_raw(id)?;
        let normaliser = self
            .fingerprint
            .normaliser
            .ok_or_else(|| Error::invalid(self.root.join("dataset.json"), "has no intensity normalisation (see its `failed` list)"))?;
        normaliser.apply_image(&mut image);
        Ok((image, labels))
    }
}

/// The image and labels of a cached case, each checked against the sha256 `meta.json`
/// records and against the case's grid.
fn load_arrays(dir: &Path, meta: &CaseMeta) -> Result<(Image, Labels)> {
    let grid: Grid = meta.record.prepared().clone();
    let (shape, image) = npy::read_checked::<f32>(&dir.join("image.npy"), meta.digest("image.npy"))?;
    let (lshape, labels) = npy::read_checked::<u8>(&dir.join("label.npy"), meta.digest("label.npy"))?;
    for (what, s) in [("image.npy", shape), ("label.npy", lshape)] {
        if s != grid.shape {
            return Err(Error::invalid(dir.join(what), format!("shape {s:?}, meta.json says {:?}", grid.shape)));
        }
    }
    let vol = |data| Volume { data, spacing: grid.spacing, affine: grid.affine };
    let image = vol(Array3::from_shape_vec(shape, image).expect("shape checked"));
    let labels =
        Volume { data: Array3::from_shape_vec(lshape, labels).expect("shape checked"), spacing: grid.spacing, affine: grid.affine };
    Ok((image, labels))
}

/// Array `name` of a cached case, opened for windowed reads of `T` values: its size and
/// time must be those `meta.json` records, and its header must describe `shape` within the
/// file.
fn open_array<T: ndarray_npy::WritableElement>(dir: &Path, meta: &CaseMeta, name: &str, shape: [usize; 3]) -> Result<ArrayFile> {
    let path = dir.join(name);
    let rec = meta.array(name).ok_or_else(|| Error::invalid(dir.join("meta.json"), format!("records no {name}")))?;
    let file = fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let m = file.metadata().map_err(|e| Error::io(&path, e))?;
    let (size, modified_ns) = (m.len(), modified_ns(&m));
    if size != rec.size || modified_ns != rec.modified_ns {
        return Err(Error::invalid(
            &path,
            format!(
                "changed since it was cached (its size or time is not the one in meta.json: {size} bytes, {} recorded); run `lits preprocess` or the training again to redo the case",
                rec.size
            ),
        ));
    }
    let offset = npy::data_offset::<T>(&path, &file, size, shape)?;
    Ok(ArrayFile { path, offset, size, modified_ns })
}

/// The cache's arrays as `.npy` files (C order, little-endian), through `ndarray-npy`, so
/// NumPy's `np.load` reads them.
pub mod npy {
    use std::io::BufWriter;

    use ndarray::Array3;
    use ndarray_npy::npy::header::Header;
    use ndarray_npy::{ReadNpyExt, ReadableElement, WritableElement, WriteNpyExt};

    use super::*;

    /// Writes `array` to `path` and syncs it.
    pub(super) fn write<T: WritableElement>(path: &Path, array: &Array3<T>) -> Result<()> {
        let file = fs::File::create(path).map_err(|e| Error::io(path, e))?;
        let mut w = BufWriter::new(file);
        array.write_npy(&mut w).map_err(|e| Error::invalid(path, format!("cannot write the array: {e}")))?;
        let file = w.into_inner().map_err(|e| Error::io(path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(path, e))
    }

    /// Reads a 3-D array of `T` written by [`write`]; another type, shape or a file cut short
    /// is an error naming the file.
    pub(super) fn read<T: ReadableElement>(path: &Path) -> Result<Array3<T>> {
        use std::io::Seek;
        let mut file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        check_sizes::<T, _>(path, &file, len)?;
        file.rewind().map_err(|e| Error::io(path, e))?;
        Array3::<T>::read_npy(std::io::BufReader::new(file)).map_err(|e| Error::invalid(path, format!("not a cached array: {e}")))
    }

    /// Refuses, before anything is allocated, an array whose header or data cannot fit in
    /// the file's `len` bytes: ndarray-npy sizes its buffers from the header alone.
    fn check_sizes<T, R: std::io::Read + std::io::Seek>(path: &Path, file: R, len: u64) -> Result<()> {
        header::<T, R>(path, file, len).map(|_| ())
    }

    /// The header of a `.npy` file of `len` bytes and where its values start, once checked
    /// that both fit in the file (see [`check_sizes`]); `None` for a file that does not
    /// start as one (left for ndarray-npy to word).
    fn header<T, R: std::io::Read + std::io::Seek>(path: &Path, mut file: R, len: u64) -> Result<Option<(Header, u64)>> {
        let bad = |msg: String| Error::invalid(path, format!("not a cached array: {msg}"));
        let mut p = Vec::with_capacity(12);
        file.by_ref().take(12).read_to_end(&mut p).map_err(|e| Error::io(path, e))?;
        // Magic, version, then the header's length in 2 (version 1) or 4 bytes; anything
        // else is worded by ndarray-npy.
        let header_end = match p.get(..7) {
            Some(b"\x93NUMPY\x01") if p.len() >= 10 => 10 + u64::from(u16::from_le_bytes([p[8], p[9]])),
            Some(b"\x93NUMPY\x02" | b"\x93NUMPY\x03") if p.len() >= 12 => 12 + u64::from(u32::from_le_bytes([p[8], p[9], p[10], p[11]])),
            _ => return Ok(None),
        };
        if header_end > len {
            return Err(bad(format!("its header ends at byte {header_end}, after the file's end ({len} bytes)")));
        }
        file.rewind().map_err(|e| Error::io(path, e))?;
        let header = Header::from_reader(&mut file).map_err(|e| bad(e.to_string()))?;
        let data = len - header_end;
        let need = header.shape.iter().try_fold(std::mem::size_of::<T>() as u64, |n, &d| n.checked_mul(d as u64));
        match need {
            Some(need) if need <= data => Ok(Some((header, header_end))),
            _ => Err(bad(format!("shape {:?} needs more than the {data} bytes of data the file holds", header.shape))),
        }
    }

    /// Where the values of `file` (`len` bytes) start, once its header is checked to
    /// describe an array of `shape` in C order of `T` values that fits in the file.
    pub(super) fn data_offset<T: WritableElement>(path: &Path, file: &fs::File, len: u64, shape: [usize; 3]) -> Result<u64> {
        let (header, offset) =
            header::<T, _>(path, file, len)?.ok_or_else(|| Error::invalid(path, "not a cached array: not a .npy file"))?;
        if header.type_descriptor != T::type_descriptor() || header.layout.is_fortran() || header.shape != shape {
            return Err(Error::invalid(
                path,
                format!("not a cached array: its header is {header}, not one of shape {shape:?} in C order of {}", T::type_descriptor()),
            ));
        }
        Ok(offset)
    }

    /// [`read`] of a file whose sha256 must be `sha256` (hex), as shape and values in C
    /// order: a file changed since it was cached is an error naming it. The file is read
    /// once; its header is checked against its length as [`read`] checks it (a `meta.json`
    /// can be edited along with the array).
    pub(super) fn read_checked<T: ReadableElement>(path: &Path, sha256: &str) -> Result<([usize; 3], Vec<T>)> {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        if sha256_hex(&bytes) != sha256 {
            return Err(Error::invalid(
                path,
                "changed since it was cached (its sha256 is not the one in meta.json); run `lits preprocess` or the training again to redo the case",
            ));
        }
        check_sizes::<T, _>(path, std::io::Cursor::new(&bytes[..]), bytes.len() as u64)?;
        let a = Array3::<T>::read_npy(&bytes[..]).map_err(|e| Error::invalid(path, format!("not a cached array: {e}")))?;
        let (d0, d1, d2) = a.dim();
        Ok(([d0, d1, d2], a.into_raw_vec_and_offset().0))
    }

    /// [`read`] as shape and values, in C order.
    pub fn read_f32(path: &Path) -> Result<([usize; 3], Vec<f32>)> {
        let a = read::<f32>(path)?;
        let (d0, d1, d2) = a.dim();
        Ok(([d0, d1, d2], a.into_raw_vec_and_offset().0))
    }

    /// [`read`] of labels as shape and values, in C order.
    pub fn read_u8(path: &Path) -> Result<([usize; 3], Vec<u8>)> {
        let a = read::<u8>(path)?;
        let (d0, d1, d2) = a.dim();
        Ok(([d0, d1, d2], a.into_raw_vec_and_offset().0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trips_and_numpy_header_is_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let values = [1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0];
        npy::write(&p, &Array3::from_shape_vec([1, 2, 3], values.to_vec()).unwrap()).unwrap();
        let bytes = fs::read(&p).unwrap();
        assert_eq!((10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64, 0);
        assert_eq!(npy::read_f32(&p).unwrap(), ([1, 2, 3], values.to_vec()));
        assert!(npy::read_u8(&p).is_err(), "dtype is checked");
        fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert!(npy::read_f32(&p).unwrap_err().to_string().contains("a.npy"));
    }

    #[test]
    fn pairs_with_other_shapes_affines_or_labels_are_refused() {
        let img = Volume::with_spacing(Array3::<f32>::zeros((4, 4, 2)), [1.0, 1.0, 2.0]);
        let lab = img.map_data(Array3::<u8>::zeros((4, 4, 2)));
        assert!(check_pair(&img, &lab).is_ok());
        let other = Volume::with_spacing(Array3::<u8>::zeros((4, 4, 3)), [1.0, 1.0, 2.0]);
        assert!(check_pair(&img, &other).unwrap_err().contains("shape"));
        let mut moved = lab.clone();
        moved.affine[0][3] = 5.0;
        assert!(check_pair(&img, &moved).unwrap_err().contains("affine"));
        let mut bad = lab.clone();
        bad.data[[0, 0, 0]] = 3;
        bad.data[[1, 0, 0]] = 255;
        let e = check_pair(&img, &bad).unwrap_err();
        assert!(e.contains("3 (1 voxel)") && e.contains("255 (1 voxel)"), "{e}");
    }
}
