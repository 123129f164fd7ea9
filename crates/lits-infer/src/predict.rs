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
//!
//! With Monte-Carlo dropout ([`PredictOptions::uncertainty`]) the probabilities are the mean
//! softmax of N passes with dropout active and BatchNorm in eval mode, seeded from the
//! run's seed, and the uncertainty map is the predictive entropy of that mean,
//! `H = −Σ_c p̄_c ln p̄_c` in nats (0 where every pass agrees with certainty, at most ln 3
//! for three classes).
//!
//! Memory: the probabilities come back to the scan's grid one class at a time and are
//! folded into the argmax (and the entropy) at once, and the scan's voxels are let go once
//! prepared (the preview keeps their windowed grey levels, a byte each), so the peak stays
//! a few times the scan's float32 size ([`Prediction::peak_memory`]).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array3;
use tch::{nn, Device, Kind, Tensor};

use lits_data::nifti::{self, Geometry, ImageDtype};
use lits_data::preprocess::{CaseRecord, PreprocessConfig};
use lits_data::{Image, Labels, Volume};
use lits_eval::preview;
use lits_model::inference;
use lits_model::UNet3d;

use lits_train::config::{parse_device, TrainConfig};
use lits_train::error::{Error, Result};
use lits_train::memory;
use lits_train::plan::Plan;
use lits_train::runlog::RunDir;
use lits_train::seed::{self, Stream};

/// Voxel sizes outside this range (mm, per axis) are taken for a broken header: no CT
/// has voxels of 10 µm or 10 cm.
pub const PLAUSIBLE_SPACING_MM: [f64; 2] = [0.01, 100.0];

pub use lits_data::preprocess::MAX_PREPARED_VOXELS;

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
    /// Also write a PNG of axial, coronal and sagittal slices with the mask over the CT.
    pub preview: bool,
    /// Monte-Carlo dropout with this many passes, and an uncertainty map.
    pub uncertainty: Option<u32>,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions { postprocess: true, preprocess: true, probabilities: false, tta: false, preview: false, uncertainty: None }
    }
}

/// What [`Predictor::predict_file`] wrote for one scan, and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The mask.
    pub mask: PathBuf,
    /// The other files: probabilities, uncertainty map, preview.
    pub extra: Vec<PathBuf>,
    /// Peak resident memory of the process while the scan was segmented, in bytes
    /// (`None` where the system does not report it).
    pub peak_memory: Option<u64>,
    /// Where the time went.
    pub timings: Timings,
}

/// Wall time of the stages of [`Predictor::predict_file`], in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Reading the scan.
    pub read: f64,
    /// Reorientation, resampling, cropping and normalisation.
    pub preprocess: f64,
    /// The network alone: the sliding-window inference over the prepared volume (every
    /// forward pass and the blending of the windows).
    pub network: f64,
    /// Everything else: moving the volume to and from the network's tensors, restoring the
    /// results to the scan's grid, post-processing and writing the files.
    pub rest: f64,
}

impl Timings {
    /// The whole of [`Predictor::predict_file`].
    pub fn total(&self) -> f64 {
        self.read + self.preprocess + self.network + self.rest
    }
}

/// A trained network with the preprocessing it was trained with.
pub struct Predictor {
    // The variables must outlive the network built on them.
    _vs: nn::VarStore,
    pub(crate) net: UNet3d,
    pub(crate) cfg: TrainConfig,
    plans: Option<Plan>,
    device: Device,
    /// Why this model cannot prepare a scan as in training (a config that still needs the
    /// dataset, with no plan beside it); the bare mode needs no preparation.
    unresolved: Option<(PathBuf, String)>,
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
        Self::from_run_on(run_dir, None)
    }

    /// [`Predictor::from_run`] on `device` (`cpu`, `cuda`, `cuda:N`); `None`: the run's
    /// device when this machine has it, else the CPU (saying so).
    pub fn from_run_on(run_dir: &Path, device: Option<&str>) -> Result<Self> {
        let run = RunDir::new(run_dir);
        let weights = if run.best_weights().is_file() { run.best_weights() } else { run.last_weights() };
        if !weights.is_file() {
            return Err(Error::invalid(run_dir, "holds neither best.safetensors nor last.safetensors: not a finished run"));
        }
        let plans = lits_train::plan::read(&run.plans())?;
        Self::load(&weights, &run.config(), Some(plans), device)
    }

    /// A model from a weights file and a training config. A run's `config.json` is enough:
    /// `lits train` records in it what the data resolved (the median spacing where the
    /// config named no target spacing, the training cases' intensity statistics). A config
    /// that still needs the dataset takes them from a `plans.json` beside it, and without
    /// one is refused, naming what it lacks.
    pub fn from_files(weights: &Path, config: &Path) -> Result<Self> {
        Self::from_files_on(weights, config, None)
    }

    /// [`Predictor::from_files`] on `device`, chosen as for [`Predictor::from_run_on`].
    pub fn from_files_on(weights: &Path, config: &Path, device: Option<&str>) -> Result<Self> {
        let plans_path = config.parent().unwrap_or(Path::new(".")).join("plans.json");
        let plans = if plans_path.is_file() { Some(lits_train::plan::read(&plans_path)?) } else { None };
        let mut predictor = Self::load(weights, config, plans, device)?;
        if predictor.plans.is_none() {
            let p = &predictor.cfg.preprocess;
            let missing: Vec<&str> = [
                (p.needs_median_spacing(), "`preprocess.target_spacing` is null (the dataset's median spacing)"),
                (p.intensity().needs_stats(), "`preprocess.intensity` needs the training cases' statistics"),
            ]
            .into_iter()
            .filter_map(|(m, what)| m.then_some(what))
            .collect();
            if !missing.is_empty() {
                predictor.unresolved = Some((
                    config.to_path_buf(),
                    format!(
                        "{}, and no plans.json lies beside it: give the run's own config.json (lits train records these in it), or put the run's plans.json beside this config",
                        missing.join(" and ")
                    ),
                ));
            }
        }
        Ok(predictor)
    }

    fn load(weights: &Path, config: &Path, plans: Option<Plan>, device: Option<&str>) -> Result<Self> {
        let mut cfg = TrainConfig::from_file(config)?;
        // A model the config cannot describe is refused naming the field, before any tensor.
        let mut problems = lits_data::Problems::new();
        problems.under("model", |p| cfg.model.check(p));
        problems.into_result().map_err(|e| Error::invalid(config, e.to_string()))?;
        let device =
            choose_device(&cfg.device, device).map_err(|(flag, e)| Error::invalid(if flag { Path::new("--device") } else { config }, e))?;
        cfg.device = match device {
            Device::Cuda(n) => format!("cuda:{n}"),
            _ => "cpu".into(),
        };
        let mut vs = nn::VarStore::new(device);
        let net = UNet3d::new(&vs.root(), &cfg.model);
        lits_model::weights::load_safetensors(&mut vs, weights)?;
        Ok(Predictor { _vs: vs, net, cfg, plans, device, unresolved: None })
    }

    /// Refuses options this model cannot honour, before any scan is read: Monte-Carlo
    /// dropout with zero passes or on a network without dropout, preparing scans with a
    /// config that does not say how.
    pub fn check_options(&self, opts: &PredictOptions) -> Result<()> {
        if let Some(passes) = opts.uncertainty {
            inference::check_mc_dropout(&self.cfg.model, passes)?;
        }
        self.check_preprocess(opts.preprocess)
    }

    /// Refuses to prepare scans when the config cannot say how training prepared them.
    pub(crate) fn check_preprocess(&self, preprocess: bool) -> Result<()> {
        match &self.unresolved {
            Some((path, msg)) if preprocess => Err(Error::invalid(path, msg.clone())),
            _ => Ok(()),
        }
    }

    /// Segments `input` and writes the mask into `out_dir` (see [`output_name`]), and with
    /// the options `<stem>_prob<class>.nii.gz`, `<stem>_uncertainty.nii.gz` and
    /// `<stem>_preview.png` beside it (`<stem>` the mask's name without `.nii.gz`).
    pub fn predict_file(&self, input: &Path, out_dir: &Path, opts: &PredictOptions) -> Result<Prediction> {
        self.check_options(opts)?;
        memory::reset_peak();
        let start = Instant::now();
        let mut timings = Timings::default();
        let Scan { image, record, geom, grey } = self.read_scan(input, opts.preprocess, opts.preview, &mut timings)?;
        let probs = self.infer(image, opts, &mut timings.network).map_err(|e| named(input, e))?;

        check_out_dir(out_dir)?;
        std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
        let name = output_name(input);
        let stem = name.trim_end_matches(".nii.gz").to_string();
        let mut extra = Vec::new();
        let (labels, entropy) = fold_classes(input, probs, &record, opts.uncertainty.is_some(), |c, p| {
            if opts.probabilities {
                let path = out_dir.join(format!("{stem}_prob{c}.nii.gz"));
                let p = match &record {
                    Some(r) => r.to_source_ref(p),
                    None => Cow::Borrowed(p),
                };
                nifti::write_image(&path, &p, &geom, ImageDtype::F32)?;
                extra.push(path);
            }
            Ok(())
        })?;
        if let Some(h) = entropy {
            let path = out_dir.join(format!("{stem}_uncertainty.nii.gz"));
            nifti::write_image(&path, &to_source(&record, h), &geom, ImageDtype::F32)?;
            extra.push(path);
        }
        let mut labels = to_source(&record, labels);
        if opts.postprocess {
            keep_largest_liver(&mut labels.data);
        }
        let out = out_dir.join(&name);
        nifti::write_labels(&out, &labels, &geom)?;
        if let Some(grey) = &grey {
            let path = out_dir.join(format!("{stem}_preview.png"));
            preview::render(grey, &labels).save_png(&path)?;
            extra.push(path);
        }
        timings.rest = start.elapsed().as_secs_f64() - timings.read - timings.preprocess - timings.network;
        Ok(Prediction { mask: out, extra, peak_memory: memory::peak_resident_bytes(), timings })
    }

    /// Reads `input` and, with `preprocess`, checks and prepares it as in training (the
    /// scan's own voxels are let go once prepared); with `preview`, keeps its soft-tissue
    /// grey levels. Times `read` and `preprocess`.
    pub(crate) fn read_scan(&self, input: &Path, preprocess: bool, preview: bool, timings: &mut Timings) -> Result<Scan> {
        let start = Instant::now();
        let (image, geom) = nifti::read_image(input)?;
        timings.read = start.elapsed().as_secs_f64();
        // The preview needs only the windowed grey levels, a quarter of the scan's size.
        let grey = preview.then(|| preview::soft_tissue(&image));
        if !preprocess {
            return Ok(Scan { image, record: None, geom, grey });
        }
        let (config, median) = self.preprocessing();
        check_scan(config, median, &image).map_err(|e| named(input, e))?;
        let t = Instant::now();
        let (image, record) = self.prepare(&image).map_err(|e| named(input, e))?;
        timings.preprocess = t.elapsed().as_secs_f64();
        Ok(Scan { image, record: Some(record), geom, grey })
    }

    /// The preprocessing config and the dataset's median spacing it may need.
    fn preprocessing(&self) -> (&PreprocessConfig, Option<[f64; 3]>) {
        match &self.plans {
            Some(p) => (&p.preprocess, p.median_spacing),
            None => (&self.cfg.preprocess, None),
        }
    }

    /// The scan prepared and normalised as in training, with the way back to its grid.
    fn prepare(&self, image: &Image) -> Result<(Image, CaseRecord)> {
        let (preprocess, median) = self.preprocessing();
        let normaliser = match self.plans.as_ref().and_then(|p| p.normaliser) {
            Some(n) => n,
            None => self.cfg.preprocess.intensity().resolve(None)?,
        };
        let mut prepared = preprocess.prepare(image, None, median)?;
        normaliser.apply_image(&mut prepared.image);
        Ok((prepared.image, prepared.record))
    }

    /// Sliding-window softmax of a single-channel volume (the mean over Monte-Carlo
    /// dropout passes when asked), split per class, on the volume's grid. The volume is let
    /// go as soon as the network has its copy; the time of the sliding window alone goes to
    /// `network`.
    fn infer(&self, image: Image, opts: &PredictOptions, network: &mut f64) -> Result<Vec<Image>> {
        let mut sw = self.cfg.validation.sliding_window.clone();
        sw.mirror_tta = opts.tta;
        self.run_network(image, network, |x| match opts.uncertainty {
            Some(passes) => {
                // Seeded per scan, not per position in a folder: a scan's result does not
                // depend on what was segmented before it.
                tch::manual_seed(seed::derive(self.cfg.seed, Stream::McDropout, 0) as i64);
                Ok(tch::no_grad(|| inference::predict_mc_dropout(&self.net, x, &sw, passes))?)
            }
            None => Ok(tch::no_grad(|| inference::predict(&self.net, x, &sw))?),
        })
    }

    /// `net` (a sliding window) over a single-channel volume on the model's device, its
    /// output `[K, D, H, W]` split into K maps on the volume's grid. The volume is let go as
    /// soon as the network has its copy; the time of `net` alone goes to `network`.
    pub(crate) fn run_network(&self, image: Image, network: &mut f64, net: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Vec<Image>> {
        let shape = image.shape();
        let (spacing, affine) = (image.spacing, image.affine);
        let x = {
            let [d, h, w] = shape.map(|s| s as i64);
            let owned;
            let slice = match image.data.as_slice() {
                Some(s) => s,
                None => {
                    owned = image.data.as_standard_layout().into_owned();
                    owned.as_slice().expect("standard layout")
                }
            };
            Tensor::from_slice(slice).view([1, d, h, w]).to_device(self.device)
        };
        drop(image);
        let t = Instant::now();
        let probs = net(&x)?;
        // CUDA work is asynchronous: wait for it before reading the clock.
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
        *network = t.elapsed().as_secs_f64();
        drop(x);
        let probs = probs.to_device(Device::Cpu).to_kind(Kind::Float);
        (0..probs.size()[0])
            .map(|c| {
                let v: Vec<f32> = Vec::<f32>::try_from(probs.get(c).contiguous().view([-1]))?;
                let data = Array3::from_shape_vec(shape, v).expect("softmax has the volume's shape");
                Ok(Volume { data, spacing, affine })
            })
            .collect()
    }
}

/// The device to predict on: `requested` (`--device`) when given and present; else the
/// run's `trained_on` when this machine has it, else the CPU, saying so (a run trained on
/// a GPU node is usable on a laptop). The error says whether the flag (`true`) or the
/// config is at fault, and why.
pub fn choose_device(trained_on: &str, requested: Option<&str>) -> std::result::Result<Device, (bool, String)> {
    if let Some(r) = requested {
        return parse_device(r).map_err(|e| (true, e));
    }
    match parse_device(trained_on) {
        Ok(d) => Ok(d),
        Err(why) if trained_on.trim().starts_with("cuda") => {
            tracing::warn!("the model was trained on `{}`, which this machine lacks ({why}); running on the CPU", trained_on.trim());
            Ok(Device::Cpu)
        }
        Err(why) => Err((false, format!("config field `device`: {why}"))),
    }
}

/// Refuses an output folder that cannot be one (an existing file), before any work.
pub fn check_out_dir(out_dir: &Path) -> Result<()> {
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(Error::invalid(out_dir, "exists and is not a folder; pick another --out"));
    }
    Ok(())
}

/// Refuses a scan whose voxel size no CT has, or that `preprocess` would blow up beyond
/// [`MAX_PREPARED_VOXELS`] (both the sign of a broken header), before any work.
pub fn check_scan(preprocess: &PreprocessConfig, median_spacing: Option<[f64; 3]>, image: &Image) -> Result<()> {
    let [lo, hi] = PLAUSIBLE_SPACING_MM;
    if image.spacing.iter().any(|s| !(lo..=hi).contains(s)) {
        return Err(Error::config(
            "spacing",
            format!("voxel size {:?} mm is not a CT's (each axis must be {lo}..{hi} mm): check the header's pixdim", image.spacing),
        ));
    }
    // The preprocessing refuses a grid beyond its bound (MAX_PREPARED_VOXELS).
    preprocess.uncropped_shape(image.shape(), image.spacing, &image.affine, median_spacing)?;
    Ok(())
}

/// A scan as the network sees it, with what leads back to the scan's grid.
pub(crate) struct Scan {
    /// The prepared volume, or the stored voxels in the bare mode.
    pub(crate) image: Image,
    /// The way back to the scan's grid (`None` in the bare mode).
    pub(crate) record: Option<CaseRecord>,
    /// The scan's header geometry, for writing results.
    pub(crate) geom: Geometry,
    /// Soft-tissue grey levels of the scan, for a preview.
    pub(crate) grey: Option<Volume<u8>>,
}

/// `e` naming the scan `input` where it would otherwise only name a field.
pub(crate) fn named(input: &Path, e: Error) -> Error {
    match e {
        Error::Config { field, msg } => Error::invalid(input, format!("{field}: {msg}")),
        Error::Data(lits_data::Error::Config { field, msg }) => Error::invalid(input, format!("{field}: {msg}")),
        other => other,
    }
}

/// Class probabilities on the network's grid brought back to the scan's (restored, still
/// in RAS order: `to_source` takes them to the scan's axes) one class at a time and folded
/// into the argmax and, with `entropy`, its entropy; `each` sees every restored class
/// before it is folded. Only the results are reoriented later, not every class.
pub(crate) fn fold_classes(
    input: &Path,
    probs: Vec<Image>,
    record: &Option<CaseRecord>,
    entropy: bool,
    mut each: impl FnMut(usize, &Image) -> Result<()>,
) -> Result<(Labels, Option<Image>)> {
    let mut fold = None;
    for (c, p) in probs.into_iter().enumerate() {
        let p = match record {
            Some(r) => {
                let restored = r.restore_image_oriented(&p, if c == 0 { 1.0 } else { 0.0 });
                drop(p);
                restored.map_err(|e| named(input, e.into()))?
            }
            None => p,
        };
        each(c, &p)?;
        let fold = fold.get_or_insert_with(|| ClassFold::new(&p, entropy));
        fold.add(c as u8, p.data);
    }
    Ok(fold.ok_or_else(|| Error::invalid(input, "the network has no class"))?.finish())
}

/// A volume on the restored grid taken to the scan's own axes (in the bare mode, where
/// nothing was prepared, it is there already).
pub(crate) fn to_source<T: Clone>(record: &Option<CaseRecord>, v: Volume<T>) -> Volume<T> {
    match record {
        Some(r) => r.to_source(v),
        None => v,
    }
}

/// The most probable class per voxel (the first on ties) and, if asked, the entropy of
/// the class probabilities, from probability maps that arrive one class at a time.
struct ClassFold {
    labels: Labels,
    best: Option<Array3<f32>>,
    entropy: Option<Array3<f32>>,
    classes: usize,
}

impl ClassFold {
    /// An empty fold on `like`'s grid.
    fn new(like: &Image, entropy: bool) -> Self {
        ClassFold {
            labels: like.map_data(Array3::zeros(like.shape())),
            best: None,
            entropy: entropy.then(|| Array3::zeros(like.shape())),
            classes: 0,
        }
    }

    /// Folds in the probabilities of class `c` (classes in order, from 0).
    fn add(&mut self, c: u8, p: Array3<f32>) {
        self.classes += 1;
        if let Some(h) = &mut self.entropy {
            ndarray::Zip::from(h).and(&p).for_each(|h, &v| {
                if v > 0.0 {
                    *h -= v * v.ln();
                }
            });
        }
        match &mut self.best {
            None => self.best = Some(p),
            Some(best) => ndarray::Zip::from(&mut self.labels.data).and(best).and(&p).for_each(|l, b, &v| {
                if v > *b {
                    *b = v;
                    *l = c;
                }
            }),
        }
    }

    /// The labels, and the entropy in nats clamped to its range `[0, ln classes]` (float
    /// rounding can step just outside), on the grid of the maps.
    fn finish(self) -> (Labels, Option<Image>) {
        let max = (self.classes.max(1) as f32).ln();
        let entropy = self.entropy.map(|h| self.labels.map_data(h.mapv_into(|v| v.clamp(0.0, max))));
        (self.labels, entropy)
    }
}

/// Zeroes every liver voxel (label ≥ 1) outside the largest 26-connected liver component;
/// tumor outside it goes with it. Ties keep the component found first in C order.
///
/// Works on runs of foreground along the last axis rather than on voxels: each run is joined
/// (union-find) to the runs it touches in the four earlier rows that can neighbour it, so
/// the cost follows the number of runs, not 26 neighbours per voxel. Hand-written for that
/// reason: a voxel labelling (a BFS, or a crate's) took about 8 s on a 512×512×200 mask.
pub fn keep_largest_liver(labels: &mut Array3<u8>) {
    let (n0, n1, n2) = labels.dim();
    if !labels.is_standard_layout() {
        let mut owned = labels.as_standard_layout().into_owned();
        keep_largest_liver(&mut owned);
        labels.assign(&owned);
        return;
    }
    let data = labels.as_slice_mut().expect("standard layout");
    let rows = n0 * n1;
    // Runs of foreground, row by row: `first[r]..first[r + 1]` are row r's, by start.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut first = Vec::with_capacity(rows + 1);
    for r in 0..rows {
        first.push(runs.len());
        let row = &data[r * n2..(r + 1) * n2];
        let mut k = 0;
        while k < n2 {
            if row[k] == 0 {
                k += 1;
                continue;
            }
            let start = k;
            while k < n2 && row[k] != 0 {
                k += 1;
            }
            runs.push((start, k - 1));
        }
    }
    first.push(runs.len());
    if runs.is_empty() {
        return;
    }
    let mut sets = DisjointSets::new(runs.len());
    for i in 0..n0 {
        for j in 0..n1 {
            let r = i * n1 + j;
            // The earlier rows that can touch row (i, j) under 26-connectivity.
            let earlier =
                [(i, j.wrapping_sub(1)), (i.wrapping_sub(1), j.wrapping_sub(1)), (i.wrapping_sub(1), j), (i.wrapping_sub(1), j + 1)];
            for (qi, qj) in earlier {
                if qi < n0 && qj < n1 {
                    let q = qi * n1 + qj;
                    join_touching(&runs, first[r]..first[r + 1], first[q]..first[q + 1], &mut sets);
                }
            }
        }
    }
    // Sizes per component; the first run of a component (in C order) is where it is found.
    let mut size = vec![0usize; runs.len()];
    for (n, &(a, b)) in runs.iter().enumerate() {
        size[sets.find(n)] += b - a + 1;
    }
    let mut keep = sets.find(0);
    for n in 1..runs.len() {
        let root = sets.find(n);
        if size[root] > size[keep] {
            keep = root;
        }
    }
    for r in 0..rows {
        let row = first[r]..first[r + 1];
        for (n, &(a, b)) in row.clone().zip(&runs[row]) {
            if sets.find(n) != keep {
                data[r * n2 + a..=r * n2 + b].fill(0);
            }
        }
    }
}

/// Joins every run of `a` to the runs of `b` it touches (26-connectivity: their spans,
/// widened by one, overlap); both lists sorted by start.
fn join_touching(runs: &[(usize, usize)], a: std::ops::Range<usize>, b: std::ops::Range<usize>, sets: &mut DisjointSets) {
    let (mut x, mut y) = (a.start, b.start);
    while x < a.end && y < b.end {
        let ((s1, e1), (s2, e2)) = (runs[x], runs[y]);
        if e2 + 1 < s1 {
            y += 1;
        } else if e1 + 1 < s2 {
            x += 1;
        } else {
            sets.union(x, y);
            if e1 < e2 {
                x += 1;
            } else {
                y += 1;
            }
        }
    }
}

/// Union-find with path halving; the smaller index becomes the root.
struct DisjointSets {
    parent: Vec<usize>,
}

impl DisjointSets {
    fn new(n: usize) -> Self {
        DisjointSets { parent: (0..n).collect() }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }
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
    fn implausible_spacing_and_exploding_grids_are_refused() {
        let cfg =
            PreprocessConfig::Spacing(lits_data::preprocess::SpacingConfig { target_spacing: Some([0.1, 0.1, 0.1]), ..Default::default() });
        let scan = |s: f64| Volume::with_spacing(Array3::<f32>::zeros((2, 3, 4)), [1.0, s, 1.0]);
        check_scan(&cfg, None, &scan(1.0)).unwrap();
        let e = check_scan(&cfg, None, &scan(1000.0)).unwrap_err().to_string();
        assert!(e.contains("voxel size [1.0, 1000.0, 1.0] mm is not a CT's"), "{e}");
        assert!(check_scan(&cfg, None, &scan(0.001)).is_err());
        // 90 mm voxels are plausible, but 900× more voxels per axis at 0.1 mm are not.
        let big = Volume::with_spacing(Array3::<f32>::zeros((2, 2, 2)), [90.0; 3]);
        let e = check_scan(&cfg, None, &big).unwrap_err().to_string();
        assert!(e.contains("[1800, 1800, 1800] grid"), "{e}");
    }

    #[test]
    fn class_fold_is_the_first_argmax_and_the_entropy_in_nats() {
        let shape = [1, 1, 3];
        let probs = [[1.0f32, 0.2, 1.0 / 3.0], [0.0, 0.4, 1.0 / 3.0], [0.0, 0.4, 1.0 / 3.0]];
        let like = Volume::with_spacing(Array3::<f32>::zeros(shape), [0.5, 0.6, 2.0]);
        let mut fold = ClassFold::new(&like, true);
        for (c, p) in probs.iter().enumerate() {
            fold.add(c as u8, Array3::from_shape_vec(shape, p.to_vec()).unwrap());
        }
        let (labels, h) = fold.finish();
        let h = h.unwrap();
        assert_eq!((labels.spacing, h.affine), (like.spacing, like.affine));
        // Ties go to the first class.
        assert_eq!(labels.data.into_raw_vec_and_offset().0, [0, 1, 0]);
        let h = h.data.into_raw_vec_and_offset().0;
        let want = [0.0, -(0.2f64 * 0.2f64.ln() + 2.0 * 0.4 * 0.4f64.ln()), 3f64.ln()];
        for (got, want) in h.iter().zip(want) {
            assert!((f64::from(*got) - want).abs() < 1e-6, "{h:?}");
        }
        let (_, none) = ClassFold::new(&like, false).finish();
        assert!(none.is_none());
    }

    use std::collections::VecDeque;

    /// The plain breadth-first search over voxels that the run-based version replaces.
    fn keep_largest_liver_bfs(labels: &mut Array3<u8>) {
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

    #[test]
    fn the_run_based_largest_component_matches_a_voxel_search() {
        // Random masks of several densities (many small components, ties among them) and
        // shapes with rows of one voxel.
        for (seed, shape, density) in [
            (0u64, (9, 11, 13), 0.2),
            (1, (9, 11, 13), 0.45),
            (2, (7, 1, 20), 0.5),
            (3, (1, 12, 1), 0.6),
            (4, (16, 16, 16), 0.3),
            (5, (5, 5, 5), 0.0),
        ] {
            let mut rng = lits_data::rng::SeededRng::new(seed, 0);
            let l = Array3::from_shape_fn(shape, |_| if rng.chance(density) { 1 + rng.below(2) as u8 } else { 0 });
            let (mut fast, mut slow) = (l.clone(), l.clone());
            keep_largest_liver(&mut fast);
            keep_largest_liver_bfs(&mut slow);
            assert_eq!(fast, slow, "seed {seed}");
            // Also through a view that is not in standard layout.
            let mut t = l.clone().reversed_axes();
            keep_largest_liver(&mut t);
            let mut t_slow = l.reversed_axes().as_standard_layout().into_owned();
            keep_largest_liver_bfs(&mut t_slow);
            assert_eq!(t, t_slow, "seed {seed}, transposed");
        }
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
