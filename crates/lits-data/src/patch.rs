//! Random training patches, augmentation, batches, and a loader that runs ahead.
//!
//! A share of the patches (nnU-Net: one third; Isensee et al. 2021) is centred on a
//! foreground voxel: a class present in the case (liver or tumor) is chosen uniformly, then
//! one of its voxels, so small tumors are seen as often as the liver. The rest lie anywhere
//! in the volume. A patch that leaves the volume (or is larger than it) is padded with the
//! case's minimum intensity and label 0.
//!
//! Every sample is drawn from its own random stream, derived from `(seed, epoch, index of
//! the sample in the epoch)`, so a batch depends on nothing but those numbers: the same seed
//! gives the same batches whatever the number of loader threads or the order they run in,
//! whether the cases are in memory or read from disk ([`crate::store`]), and however a
//! batch is shared among data-parallel processes ([`PatchSampler::with_share`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use ndarray::Axis;
use serde::{Deserialize, Serialize};

use crate::rng::SeededRng;
use crate::store::StoreCase;
use crate::{Error, Problems, Result};

/// The largest patch side a config may ask for (the original's 128 with room to grow;
/// a batch of 512³ patches already needs tens of GB of activations).
pub const MAX_PATCH_SIDE: usize = 512;

/// The largest batch a config may ask for.
pub const MAX_BATCH: usize = 1024;

/// How patches are cut and augmented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatchConfig {
    /// Patch shape `[D, H, W]` along the volume's axes `[i, j, k]`.
    pub patch: [usize; 3],
    /// Patches per batch.
    pub batch_size: usize,
    /// Share of patches centred on a liver or tumor voxel, 0..1 (nnU-Net: 1/3).
    pub foreground_fraction: f64,
    /// Augmentation.
    pub augment: Augment,
}

impl Default for PatchConfig {
    fn default() -> Self {
        PatchConfig { patch: [64, 64, 64], batch_size: 2, foreground_fraction: 1.0 / 3.0, augment: Augment::default() }
    }
}

/// Random augmentation of each patch; intensity changes apply to normalised values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    /// Probability of mirroring each of the three axes (0 turns it off).
    pub flip_probability: f64,
    /// Rotate by a random multiple of 90° in the plane of the first two axes (needs a patch
    /// that is square in that plane).
    pub rotate90: bool,
    /// Multiply intensities by a factor drawn from `1 ± scale`.
    pub scale: f32,
    /// Add an offset drawn from `± shift`.
    pub shift: f32,
    /// Another contrast phase for the liver of a patch (see [`LiverLevel`]); `null` (the
    /// default) turns it off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liver_level: Option<LiverLevel>,
    /// Probability of adding Gaussian noise to a patch.
    pub noise_probability: f64,
    /// The noise's standard deviation is drawn from `0 .. noise_std`.
    pub noise_std: f32,
}

/// Another contrast phase, drawn per patch with `probability`: the voxels labelled liver or
/// tumor are moved by one offset that puts the liver's median (of the patch's liver voxels)
/// at a level drawn from `range`, as enhancement brightens or darkens the whole organ while
/// its lesions and vessels keep their contrast to the parenchyma. Normalised units, applied
/// before `scale` and `shift` (for the window -200..300 HU, 0.5 is 50 HU and 0.65 is
/// 125 HU: unenhanced to portal-venous). A patch without liver voxels is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiverLevel {
    /// Chance that a patch's liver is moved.
    pub probability: f64,
    /// `[lo, hi]`: the levels its median is put at.
    pub range: [f32; 2],
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            flip_probability: 0.5,
            rotate90: true,
            scale: 0.1,
            shift: 0.1,
            liver_level: None,
            noise_probability: 0.15,
            noise_std: 0.1,
        }
    }
}

impl Augment {
    /// No augmentation at all.
    pub fn none() -> Self {
        Augment {
            flip_probability: 0.0,
            rotate90: false,
            scale: 0.0,
            shift: 0.0,
            liver_level: None,
            noise_probability: 0.0,
            noise_std: 0.0,
        }
    }
}

impl PatchConfig {
    /// Records every value that cannot work, without any data (before a case is read or
    /// generated).
    pub fn check(&self, p: &mut Problems) {
        p.require(!self.patch.contains(&0), "patch", || format!("{:?} has an empty axis", self.patch));
        p.require(self.patch.iter().all(|&n| n <= MAX_PATCH_SIDE), "patch", || {
            format!("{:?}: each side must be at most {MAX_PATCH_SIDE} voxels", self.patch)
        });
        p.require(self.batch_size >= 1, "batch_size", || "must be at least 1".into());
        p.require(self.batch_size <= MAX_BATCH, "batch_size", || format!("{} is more than {MAX_BATCH}", self.batch_size));
        p.require((0.0..=1.0).contains(&self.foreground_fraction), "foreground_fraction", || {
            format!("{} is not in 0..1", self.foreground_fraction)
        });
        let a = &self.augment;
        p.under("augment", |p| {
            for (field, v) in [("flip_probability", a.flip_probability), ("noise_probability", a.noise_probability)] {
                p.require((0.0..=1.0).contains(&v), field, || format!("{v} is not a probability"));
            }
            for (field, v) in [("scale", a.scale), ("shift", a.shift), ("noise_std", a.noise_std)] {
                p.require(v.is_finite() && v >= 0.0, field, || format!("{v} must be a non-negative number"));
            }
            if let Some(LiverLevel { probability, range: [lo, hi] }) = a.liver_level {
                p.require((0.0..=1.0).contains(&probability), "liver_level.probability", || format!("{probability} is not a probability"));
                p.require(lo.is_finite() && hi.is_finite() && lo <= hi, "liver_level.range", || {
                    format!("[{lo}, {hi}] is not a range of finite numbers, lowest first")
                });
            }
            p.require(a.scale.is_nan() || a.scale < 1.0, "scale", || format!("{} would allow a zero or negative factor", a.scale));
            p.require(!a.rotate90 || self.patch[0] == self.patch[1], "rotate90", || {
                format!("in-plane rotation needs a square patch in its first two axes, got {:?}", self.patch)
            });
        });
    }

    /// Checks the config (see [`PatchConfig::check`]) and the shapes of the cases it will
    /// sample from. Patches larger than a case are allowed (they are padded).
    pub fn validate(&self, shapes: &[[usize; 3]]) -> Result<()> {
        let mut p = Problems::new();
        self.check(&mut p);
        p.require(!shapes.is_empty(), "cases", || "there are no cases to sample patches from".into());
        if let Some(s) = shapes.iter().find(|s| s.contains(&0)) {
            p.add("cases", format!("a case has an empty axis: {s:?}"));
        }
        p.into_result()
    }

    /// Voxels of padding a patch needs per axis on the smallest case (0 where every case is
    /// large enough); for a trainer to report.
    pub fn padding_needed(&self, shapes: &[[usize; 3]]) -> [usize; 3] {
        [0, 1, 2].map(|a| shapes.iter().map(|s| self.patch[a].saturating_sub(s[a])).max().unwrap_or(0))
    }
}

/// A batch of patches, in the layout the network takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Images, shape `[B, 1, D, H, W]`, row-major.
    pub image: Vec<f32>,
    /// Labels, shape `[B, D, H, W]`, row-major.
    pub label: Vec<u8>,
    /// `B`: the configured batch size, or this process's share of it
    /// ([`PatchSampler::with_share`]).
    pub batch_size: usize,
    /// `[D, H, W]`.
    pub patch: [usize; 3],
}

/// Draws patches and batches from a set of cases.
#[derive(Debug)]
pub struct PatchSampler {
    cases: Vec<StoreCase>,
    cfg: PatchConfig,
    seed: u64,
    /// This process's share of each batch: (rank, world).
    share: (usize, usize),
}

impl PatchSampler {
    /// A sampler over `cases` (normalised image and labels on one grid, in memory or on
    /// disk) with `seed`.
    pub fn new(cases: Vec<StoreCase>, cfg: PatchConfig, seed: u64) -> Result<Self> {
        let shapes: Vec<[usize; 3]> = cases.iter().map(StoreCase::shape).collect();
        cfg.validate(&shapes)?;
        Ok(PatchSampler { cases, cfg, seed, share: (0, 1) })
    }

    /// The sampler of process `rank` of `world` data-parallel processes: its batches are
    /// its `batch_size / world` consecutive samples of each global batch, so the processes
    /// together draw exactly the samples one process would. A batch size that `world` does
    /// not divide is refused.
    pub fn with_share(mut self, rank: usize, world: usize) -> Result<Self> {
        let b = self.cfg.batch_size;
        if world == 0 || rank >= world {
            return Err(Error::Config { field: "world".into(), msg: format!("rank {rank} of {world} processes does not exist") });
        }
        if !b.is_multiple_of(world) {
            return Err(Error::Config {
                field: "batch_size".into(),
                msg: format!("{b} cannot be shared equally among {world} processes; make it a multiple of {world}"),
            });
        }
        self.share = (rank, world);
        Ok(self)
    }

    /// The configuration.
    pub fn config(&self) -> &PatchConfig {
        &self.cfg
    }

    /// Batch `step` of `epoch`: samples `step · B .. (step + 1) · B` of the epoch, or this
    /// process's share of them (see [`PatchSampler::with_share`]). A case file that cannot
    /// be read is an error naming it.
    pub fn batch(&self, epoch: u64, step: u64) -> Result<Batch> {
        let (rank, world) = self.share;
        let per = self.cfg.batch_size / world;
        let first = step * self.cfg.batch_size as u64 + (rank * per) as u64;
        let p = self.cfg.patch;
        let n: usize = p.iter().product();
        let mut batch = Batch { image: vec![0.0; per * n], label: vec![0; per * n], batch_size: per, patch: p };
        for (i, (img, lab)) in batch.image.chunks_exact_mut(n).zip(batch.label.chunks_exact_mut(n)).enumerate() {
            self.sample_into(epoch, first + i as u64, img, lab)?;
        }
        Ok(batch)
    }

    /// Whether sample `index` of an epoch is centred on foreground: exactly
    /// `foreground_fraction` of every run of samples, spread evenly.
    fn forced_foreground(&self, index: u64) -> bool {
        let f = self.cfg.foreground_fraction;
        ((index + 1) as f64 * f).floor() > (index as f64 * f).floor()
    }

    /// Draws sample `index` of `epoch` into the given patch buffers.
    fn sample_into(&self, epoch: u64, index: u64, img_out: &mut [f32], lab_out: &mut [u8]) -> Result<()> {
        // One stream per (epoch, sample); the seed picks the generator.
        let mut rng = SeededRng::new(self.seed, (epoch << 32) ^ index);
        let case = &self.cases[rng.below(self.cases.len() as u64) as usize];
        let shape = case.shape();
        let p = self.cfg.patch;
        let present: Vec<&Vec<[u32; 3]>> = case.foreground().iter().filter(|v| !v.is_empty()).collect();
        let start: [i64; 3] = if self.forced_foreground(index) && !present.is_empty() {
            let class = present[rng.below(present.len() as u64) as usize];
            let v = class[rng.below(class.len() as u64) as usize];
            [0, 1, 2].map(|a| {
                let (lo, hi) = start_range(shape[a], p[a]);
                (v[a] as i64 - (p[a] / 2) as i64).clamp(lo, hi)
            })
        } else {
            [0, 1, 2].map(|a| {
                let (lo, hi) = start_range(shape[a], p[a]);
                lo + rng.below((hi - lo + 1) as u64) as i64
            })
        };
        let (mut pi, mut pl) = case.read_block(start, p)?;

        let a = &self.cfg.augment;
        for axis in 0..3 {
            if a.flip_probability > 0.0 && rng.chance(a.flip_probability) {
                pi.invert_axis(Axis(axis));
                pl.invert_axis(Axis(axis));
            }
        }
        if a.rotate90 {
            // k quarter turns in the (0, 1) plane: transpose then flip, k times.
            for _ in 0..rng.below(4) {
                pi.swap_axes(0, 1);
                pi.invert_axis(Axis(0));
                pl.swap_axes(0, 1);
                pl.invert_axis(Axis(0));
            }
        }
        for (o, v) in img_out.iter_mut().zip(pi.iter()) {
            *o = *v;
        }
        for (o, v) in lab_out.iter_mut().zip(pl.iter()) {
            *o = *v;
        }
        if let Some(LiverLevel { range: [lo, hi], .. }) = a.liver_level.filter(|l| rng.chance(l.probability)) {
            let level = rng.uniform(f64::from(lo), f64::from(hi)) as f32;
            let mut liver: Vec<f32> = img_out.iter().zip(lab_out.iter()).filter(|&(_, &l)| l == 1).map(|(&v, _)| v).collect();
            if !liver.is_empty() {
                let mid = liver.len() / 2;
                let (_, &mut median, _) = liver.select_nth_unstable_by(mid, f32::total_cmp);
                let organ = level - median;
                for (v, &l) in img_out.iter_mut().zip(lab_out.iter()) {
                    if l > 0 {
                        *v += organ;
                    }
                }
            }
        }
        let factor = if a.scale > 0.0 { rng.uniform(1.0 - a.scale as f64, 1.0 + a.scale as f64) as f32 } else { 1.0 };
        let offset = if a.shift > 0.0 { rng.uniform(-a.shift as f64, a.shift as f64) as f32 } else { 0.0 };
        if factor != 1.0 || offset != 0.0 {
            img_out.iter_mut().for_each(|v| *v = *v * factor + offset);
        }
        if a.noise_probability > 0.0 && a.noise_std > 0.0 && rng.chance(a.noise_probability) {
            let sigma = rng.uniform(0.0, a.noise_std as f64);
            add_noise(&mut rng, img_out, sigma);
        }
        Ok(())
    }
}

/// Allowed patch starts along an axis of length `n` for a patch of length `p`: inside the
/// volume when it fits, else anywhere that covers the whole volume.
fn start_range(n: usize, p: usize) -> (i64, i64) {
    let d = n as i64 - p as i64;
    (d.min(0), d.max(0))
}

/// Adds N(0, sigma²) noise; Box-Muller, both values of each pair used.
fn add_noise(rng: &mut SeededRng, values: &mut [f32], sigma: f64) {
    for pair in values.chunks_mut(2) {
        let r = (-2.0 * (1.0 - rng.unit()).ln()).sqrt() * sigma;
        let t = std::f64::consts::TAU * rng.unit();
        pair[0] += (r * t.cos()) as f32;
        if let Some(v) = pair.get_mut(1) {
            *v += (r * t.sin()) as f32;
        }
    }
}

/// Shared state of a [`Prefetcher`]'s workers.
#[derive(Debug)]
struct Gate {
    /// (next step to hand out, steps the consumer has taken).
    progress: Mutex<(u64, u64)>,
    moved: Condvar,
    stop: AtomicBool,
}

/// Batches of one epoch computed ahead on worker threads, handed out in step order.
///
/// At most `depth` batches are computed ahead of the consumer; a worker waits rather than
/// run further ahead, so memory stays bounded. A batch that could not be cut (a case file
/// gone or cut short) is handed out as its error, in its place. Dropping the prefetcher
/// stops the workers.
#[derive(Debug)]
pub struct Prefetcher {
    gate: Arc<Gate>,
    rx: mpsc::Receiver<(u64, Result<Batch>)>,
    ready: BTreeMap<u64, Result<Batch>>,
    next: u64,
    steps: u64,
    workers: Vec<JoinHandle<()>>,
}

impl Prefetcher {
    /// Starts `workers` threads computing batches `0..steps` of `epoch`, at most `depth`
    /// ahead of what has been taken.
    pub fn new(sampler: Arc<PatchSampler>, epoch: u64, steps: u64, workers: usize, depth: usize) -> Self {
        let gate = Arc::new(Gate { progress: Mutex::new((0, 0)), moved: Condvar::new(), stop: AtomicBool::new(false) });
        let (tx, rx) = mpsc::channel();
        let depth = depth.max(1) as u64;
        let handles = (0..workers.max(1))
            .map(|w| {
                let (gate, tx, sampler) = (gate.clone(), tx.clone(), sampler.clone());
                std::thread::Builder::new()
                    .name(format!("lits-loader-{w}"))
                    .spawn(move || loop {
                        let step = {
                            let mut g = gate.progress.lock().expect("loader lock");
                            while !gate.stop.load(Ordering::Relaxed) && g.0 < steps && g.0 >= g.1 + depth {
                                g = gate.moved.wait(g).expect("loader lock");
                            }
                            if gate.stop.load(Ordering::Relaxed) || g.0 >= steps {
                                return;
                            }
                            g.0 += 1;
                            g.0 - 1
                        };
                        if tx.send((step, sampler.batch(epoch, step))).is_err() {
                            return;
                        }
                    })
                    .expect("spawn a loader thread")
            })
            .collect();
        Prefetcher { gate, rx, ready: BTreeMap::new(), next: 0, steps, workers: handles }
    }
}

impl Iterator for Prefetcher {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.steps {
            return None;
        }
        let batch = loop {
            if let Some(b) = self.ready.remove(&self.next) {
                break b;
            }
            let (step, b) = self.rx.recv().expect("loader threads run until every step is sent");
            self.ready.insert(step, b);
        };
        self.next += 1;
        let mut g = self.gate.progress.lock().expect("loader lock");
        g.1 = self.next;
        self.gate.moved.notify_all();
        Some(batch)
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.gate.stop.store(true, Ordering::Relaxed);
        {
            let _g = self.gate.progress.lock();
            self.gate.moved.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Image, Labels, Volume};
    use ndarray::Array3;

    /// A case whose voxel values encode their index, with a small liver and a tumor.
    fn case(shape: [usize; 3]) -> Arc<(Image, Labels)> {
        let img = Array3::from_shape_fn(shape, |(i, j, k)| (i * 10000 + j * 100 + k) as f32);
        let lab = Array3::from_shape_fn(shape, |(i, j, k)| {
            if (2..5).contains(&i) && (3..6).contains(&j) && (1..4).contains(&k) {
                if i == 3 && j == 4 && k == 2 {
                    2
                } else {
                    1
                }
            } else {
                0
            }
        });
        Arc::new((Volume::with_spacing(img, [1.0; 3]), Volume::with_spacing(lab, [1.0; 3])))
    }

    fn sampler(cases: &[Arc<(Image, Labels)>], cfg: PatchConfig, seed: u64) -> Result<PatchSampler> {
        PatchSampler::new(cases.iter().map(|c| StoreCase::in_memory(c.clone()).unwrap()).collect(), cfg, seed)
    }

    fn cfg(patch: [usize; 3], augment: Augment) -> PatchConfig {
        PatchConfig { patch, batch_size: 3, foreground_fraction: 1.0 / 3.0, augment }
    }

    #[test]
    fn same_seed_same_batches_other_seed_other_batches() {
        let cases = vec![case([20, 20, 12]), case([16, 24, 10])];
        let a = sampler(&cases, cfg([8, 8, 4], Augment::default()), 7).unwrap();
        let b = sampler(&cases, cfg([8, 8, 4], Augment::default()), 7).unwrap();
        let c = sampler(&cases, cfg([8, 8, 4], Augment::default()), 8).unwrap();
        assert_eq!(a.batch(3, 5).unwrap(), b.batch(3, 5).unwrap());
        assert_ne!(a.batch(3, 5).unwrap(), c.batch(3, 5).unwrap());
        assert_ne!(a.batch(3, 5).unwrap(), a.batch(4, 5).unwrap());
        let batch = a.batch(0, 0).unwrap();
        assert_eq!(batch.image.len(), 3 * 8 * 8 * 4);
        assert_eq!(batch.label.len(), 3 * 8 * 8 * 4);
    }

    #[test]
    fn unaugmented_patches_are_exact_crops_with_matching_labels() {
        let cases = vec![case([20, 20, 12])];
        let s = sampler(&cases, cfg([6, 5, 4], Augment::none()), 1).unwrap();
        for step in 0..10 {
            let b = s.batch(0, step).unwrap();
            for n in 0..3 {
                let img = &b.image[n * 120..(n + 1) * 120];
                let lab = &b.label[n * 120..(n + 1) * 120];
                // Values encode indices: recover the start and check every voxel.
                let v0 = img[0] as usize;
                let (i0, j0, k0) = (v0 / 10000, v0 / 100 % 100, v0 % 100);
                for (t, (&v, &l)) in img.iter().zip(lab).enumerate() {
                    let (i, j, k) = (i0 + t / 20, j0 + t / 4 % 5, k0 + t % 4);
                    assert_eq!(v, (i * 10000 + j * 100 + k) as f32);
                    assert_eq!(l, cases[0].1.data[[i, j, k]]);
                }
            }
        }
    }

    #[test]
    fn one_third_of_patches_are_centred_on_foreground() {
        let cases = vec![case([40, 40, 30])];
        let s = sampler(&cases, cfg([4, 4, 4], Augment::none()), 3).unwrap();
        // Every third sample is forced onto liver or tumor, so holds foreground; a random
        // 4³ patch of a 40×40×30 volume rarely does.
        let with_fg = (0..30)
            .map(|step| s.batch(0, step).unwrap())
            .flat_map(|b| b.label.chunks(64).map(|p| p.iter().any(|&l| l > 0)).collect::<Vec<_>>());
        let count = with_fg.enumerate().filter(|&(i, fg)| {
            if i % 3 == 2 {
                assert!(fg, "forced sample {i} has no foreground");
            }
            fg
        });
        let n = count.count();
        assert!((30..=40).contains(&n), "{n} of 90 patches hold foreground");
    }

    #[test]
    fn patches_larger_than_the_volume_are_padded_with_the_minimum_and_label_0() {
        let cases = vec![case([4, 3, 2])];
        let s = sampler(&cases, cfg([6, 6, 4], Augment::none()), 0).unwrap();
        let b = s.batch(0, 0).unwrap();
        let n = 6 * 6 * 4;
        // The volume holds 24 voxels; the remaining 120 are padding at the minimum (0.0).
        let img = &b.image[..n];
        assert_eq!(img.iter().filter(|&&v| v == 0.0).count(), n - 24 + 1);
        assert!(b.label[..n].iter().all(|&l| l == 0));
    }

    #[test]
    fn rotation_and_flips_move_labels_with_the_image() {
        let cases = vec![case([20, 20, 12])];
        let aug = Augment { flip_probability: 0.5, rotate90: true, ..Augment::none() };
        let s = sampler(&cases, cfg([6, 6, 4], aug), 9).unwrap();
        let mut steps_along_axis0 = std::collections::BTreeSet::new();
        for step in 0..20 {
            let b = s.batch(0, step).unwrap();
            for patch in b.image.chunks(6 * 6 * 4) {
                // Moving one voxel along the patch's first axis moves ±1 along i (value
                // ±10000) unrotated, or ±1 along j (±100) after a quarter turn.
                steps_along_axis0.insert((patch[24] - patch[0]) as i64);
            }
            // Each image value still names a voxel whose label is the label beside it.
            for (&v, &l) in b.image.iter().zip(&b.label) {
                let v = v as usize;
                assert_eq!(l, cases[0].1.data[[v / 10000, v / 100 % 100, v % 100]]);
            }
        }
        assert_eq!(steps_along_axis0.into_iter().collect::<Vec<_>>(), vec![-10000, -100, 100, 10000]);
    }

    #[test]
    fn noise_and_intensity_changes_stay_small() {
        let cases = vec![case([20, 20, 12])];
        let aug = Augment { noise_probability: 1.0, noise_std: 0.1, scale: 0.1, shift: 0.1, ..Augment::none() };
        let plain = sampler(&cases, cfg([6, 6, 4], Augment::none()), 2).unwrap();
        let noisy = sampler(&cases, cfg([6, 6, 4], aug), 2).unwrap();
        let (a, b) = (plain.batch(0, 0).unwrap(), noisy.batch(0, 0).unwrap());
        assert_eq!(a.label, b.label, "same draws choose the same patches");
        assert_ne!(a.image, b.image);
        for (x, y) in a.image.iter().zip(&b.image) {
            assert!((y - x).abs() <= 0.1 * x.abs() + 0.1 + 1.0, "{x} → {y}");
        }
    }

    #[test]
    fn liver_level_moves_the_organ_alone_to_a_drawn_level() {
        // Values of at most 0.2, so that f32 keeps one offset exact to 1e-6.
        let c = case([20, 20, 12]);
        let cases = vec![Arc::new((c.0.map_data(c.0.data.mapv(|v| v * 1e-5)), c.1.clone()))];
        let plain = sampler(&cases, cfg([8, 8, 6], Augment::none()), 4).unwrap();
        let level = LiverLevel { probability: 1.0, range: [0.4, 0.6] };
        let leveled = sampler(&cases, cfg([8, 8, 6], Augment { liver_level: Some(level), ..Augment::none() }), 4).unwrap();
        let (mut levels, mut with_liver) = (Vec::new(), 0);
        for step in 0..6 {
            let (a, b) = (plain.batch(1, step).unwrap(), leveled.batch(1, step).unwrap());
            assert_eq!(a.label, b.label, "same draws choose the same patches");
            let n: usize = a.patch.iter().product();
            for s in 0..a.batch_size {
                let range = s * n..(s + 1) * n;
                let (x, y, l) = (&a.image[range.clone()], &b.image[range.clone()], &a.label[range]);
                let mut liver: Vec<f32> = y.iter().zip(l).filter(|&(_, &l)| l == 1).map(|(&v, _)| v).collect();
                if liver.is_empty() {
                    assert_eq!(x, y, "a patch without liver is left alone");
                    continue;
                }
                with_liver += 1;
                let offset = y.iter().zip(x).zip(l).find(|&(_, &l)| l == 1).map(|((y, x), _)| y - x).unwrap();
                for ((x, y), &l) in x.iter().zip(y).zip(l) {
                    if l == 0 {
                        assert_eq!(x, y, "background is left alone");
                    } else {
                        assert!((y - x - offset).abs() < 1e-6, "one offset for the organ and its lesions: {} against {offset}", y - x);
                    }
                }
                liver.sort_by(f32::total_cmp);
                let median = liver[liver.len() / 2];
                assert!((0.4 - 1e-6..=0.6 + 1e-6).contains(&median), "the liver's median {median} is at the drawn level");
                levels.push(median);
            }
        }
        assert!(with_liver >= 4, "patches with liver: {with_liver}");
        let (lo, hi) = levels.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(hi - lo > 0.02, "levels are drawn, not fixed: {levels:?}");
        for (bad, field) in [
            (LiverLevel { range: [0.6, 0.4], ..level }, "liver_level.range"),
            (LiverLevel { probability: 1.5, ..level }, "liver_level.probability"),
        ] {
            let cfg = PatchConfig { augment: Augment { liver_level: Some(bad), ..Augment::none() }, ..PatchConfig::default() };
            let e = cfg.validate(&[[64, 64, 64]]).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        // With probability 0 nothing moves.
        let never =
            sampler(&cases, cfg([8, 8, 6], Augment { liver_level: Some(LiverLevel { probability: 0.0, ..level }), ..Augment::none() }), 4)
                .unwrap();
        assert_eq!(never.batch(1, 0).unwrap().image, plain.batch(1, 0).unwrap().image);
    }

    #[test]
    fn prefetcher_yields_the_sampler_batches_in_order_with_any_thread_count() {
        let cases = vec![case([20, 20, 12]), case([12, 16, 9])];
        let s = Arc::new(sampler(&cases, cfg([8, 8, 4], Augment::default()), 11).unwrap());
        let want: Vec<Batch> = (0..9).map(|step| s.batch(2, step).unwrap()).collect();
        for (workers, depth) in [(1, 1), (3, 2), (4, 8)] {
            let got: Vec<Batch> = Prefetcher::new(s.clone(), 2, 9, workers, depth).collect::<Result<_>>().unwrap();
            assert_eq!(got, want, "{workers} workers, depth {depth}");
        }
        // Dropped early: the workers stop and the drop returns.
        let mut p = Prefetcher::new(s, 2, 1000, 3, 2);
        assert!(p.next().is_some());
        drop(p);
    }

    #[test]
    fn shares_of_a_batch_are_its_samples_in_rank_order() {
        let cases = vec![case([20, 20, 12]), case([12, 16, 9])];
        let c = PatchConfig { batch_size: 6, ..cfg([8, 8, 4], Augment::default()) };
        let whole = sampler(&cases, c.clone(), 5).unwrap();
        let n = 8 * 8 * 4;
        for world in [1, 2, 3, 6] {
            let shares: Vec<PatchSampler> =
                (0..world).map(|r| sampler(&cases, c.clone(), 5).unwrap().with_share(r, world).unwrap()).collect();
            for step in [0, 7] {
                let want = whole.batch(1, step).unwrap();
                let got: Vec<Batch> = shares.iter().map(|s| s.batch(1, step).unwrap()).collect();
                assert!(got.iter().all(|b| b.batch_size == 6 / world && b.image.len() == 6 / world * n));
                assert_eq!(got.iter().flat_map(|b| b.image.clone()).collect::<Vec<_>>(), want.image, "{world} processes");
                assert_eq!(got.iter().flat_map(|b| b.label.clone()).collect::<Vec<_>>(), want.label, "{world} processes");
            }
        }
        let e = sampler(&cases, c.clone(), 5).unwrap().with_share(0, 4).unwrap_err().to_string();
        assert!(e.contains("batch_size") && e.contains("4 processes"), "{e}");
        assert!(sampler(&cases, c, 5).unwrap().with_share(2, 2).is_err());
    }

    #[test]
    fn validate_names_the_field() {
        let shapes = [[20, 20, 12]];
        let err = |c: PatchConfig| c.validate(&shapes).unwrap_err().to_string();
        assert!(err(PatchConfig { patch: [8, 6, 4], ..PatchConfig::default() }).contains("rotate90"));
        assert!(err(PatchConfig { batch_size: 0, ..PatchConfig::default() }).contains("batch_size"));
        assert!(err(PatchConfig { foreground_fraction: 1.5, ..PatchConfig::default() }).contains("foreground_fraction"));
        assert!(PatchConfig::default().validate(&[]).is_err());
        assert!(PatchConfig::default().validate(&shapes).is_ok());
        assert_eq!(PatchConfig::default().padding_needed(&shapes), [44, 44, 52]);
    }
}
