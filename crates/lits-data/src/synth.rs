//! Synthetic abdominal CT phantoms in Hounsfield units: the built-in default dataset.
//!
//! Each case is an analytic trunk evaluated in patient space (RAS+, mm): skin, subcutaneous
//! fat and a muscle wall with ribs; a spine with cortical and cancellous bone, discs and
//! canal; the diaphragm as two domes (the right one higher) and a central tendon; above it
//! the lung bases with their vessels, the heart in its pericardial fat and the mediastinum;
//! below it a smooth irregular liver whose dome follows the right hemidiaphragm, with the
//! portal and hepatic veins branching inside it; zero to many lesions in the liver; organs of
//! liver-like intensity (spleen, kidneys, heart muscle) and others (gallbladder, stomach,
//! bowel). The field of view runs from the lower abdomen to anywhere between just under the
//! liver dome and the middle of the chest. Each slice averages the anatomy over its
//! thickness (partial volume); the noise has the texture of filtered back projection
//! ([`noise`]).
//!
//! What the intensities and sizes aim for (drawn per case; `docs/synth.md` sets the
//! generated figures beside them):
//! - Phases: portal-venous (three cases in four; LiTS scans are mostly portal-venous: Bilic
//!   et al., "The Liver Tumor Segmentation Benchmark (LiTS)", Medical Image Analysis 84,
//!   2023) and unenhanced.
//! - Liver: 50-65 HU unenhanced (Boll and Merkle, "Diffuse liver disease: strategies for
//!   hepatic CT and MR imaging", RadioGraphics 29, 2009), 95-125 HU in the portal-venous
//!   phase, an enhancement of about 50 HU (Heiken et al., "Dynamic incremental CT: effect of
//!   volume and concentration of contrast material and patient weight on hepatic
//!   enhancement", Radiology 195, 1995). Portal vein 150-210 HU and hepatic veins
//!   130-190 HU, aorta and heart chambers 140-200 HU, myocardium 90-125 HU in that phase
//!   (Bae, "Intravenous contrast medium administration and scan timing at CT", Radiology
//!   256, 2010); unenhanced blood 35-50 HU, below the liver. Spleen within 20 HU of the
//!   liver, kidney cortex brighter in the portal phase. Fat -110 to -85 HU, lung
//!   -880 to -830 HU with a denser dependent (posterior) part.
//! - Liver size: a right lobe about 15 cm high at a 150 mm body half-width, scaled with the
//!   patient, about 1.2-2 l (adult standard liver volume about 1.5 l: Heinemann et al.,
//!   "Standard liver volume in the Caucasian population", Liver Transplantation and Surgery
//!   5, 1999).
//! - Lesions, after LiTS (Bilic et al. 2023: 0 to 75 lesions a scan, primary and secondary,
//!   hypo- and hyperdense; lesion-wise recall of the best methods about 0.5, the misses
//!   mostly small lesions): in a tumor case one to five lesions, or five to twelve in a
//!   quarter of them (metastatic spread); a dominant lesion of median 30 mm diameter
//!   (10-100 mm), the others of median 13 mm (5-60 mm; four in five under 2 cm); one in five
//!   of the others confluent with an earlier one. Three in four are hypodense, 25-70 HU
//!   below the enhanced parenchyma, with a textured interior, often an enhancing rim and,
//!   when over 25 mm, often a necrotic centre of 10-30 HU; the rest are hyperdense
//!   (20-50 HU above) or faint (12-25 HU below) with an enhancing capsule. Unenhanced,
//!   lesions are 10-30 HU below the liver.
//!
//! Spacing, shape, contrast phase and anatomy vary per case. Cases are stored in a cycle of
//! orientations (some non-RAS, one with permuted axes) and of storage types (float32 and
//! int16 with `scl_slope`/`scl_inter`), so readers and preprocessing meet what real LiTS
//! volumes throw at them.
//!
//! Everything is drawn from [`SeededRng`] with one stream per case and the voxel values do
//! not depend on evaluation order, so the same configuration gives the same bytes on any
//! number of threads.

mod chest;
mod noise;
mod vessels;

use std::f64::consts::TAU;
use std::fs;
use std::path::{Path, PathBuf};

use ndarray::{Array3, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Problems, Result};
use crate::nifti::{write_image, write_labels, Geometry, ImageDtype};
use crate::rng::SeededRng;
use crate::volume::{Image, Labels, Volume};

/// The most cases a phantom dataset may have.
pub const MAX_CASES: usize = 10_000;

/// The most voxels a phantom may have (a LiTS-sized 512 × 512 × 1024 scan).
pub const MAX_CASE_VOXELS: u64 = 1 << 28;

/// What `lits synth` generates. Ranges are `[min, max]`, drawn per case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthConfig {
    /// Number of cases (ids `0..cases`).
    pub cases: usize,
    /// Seed of every random draw.
    pub seed: u64,
    /// Voxels along each in-plane axis (the in-plane grid is square).
    pub in_plane_voxels: [usize; 2],
    /// Number of axial slices.
    pub slices: [usize; 2],
    /// In-plane voxel size, mm.
    pub in_plane_spacing_mm: [f64; 2],
    /// Slice spacing, mm.
    pub slice_spacing_mm: [f64; 2],
    /// Standard deviation of the image noise, HU.
    pub noise_sd_hu: [f64; 2],
}

impl Default for SynthConfig {
    fn default() -> Self {
        // About 96×96×48 voxels of about 3.3×3.3×5 mm: a 32 cm field of view and 24 cm of
        // abdomen, small enough for a small U-Net to learn on two CPU cores.
        SynthConfig {
            cases: 24,
            seed: 0,
            in_plane_voxels: [88, 104],
            slices: [40, 56],
            in_plane_spacing_mm: [3.0, 3.6],
            slice_spacing_mm: [4.0, 6.0],
            noise_sd_hu: [6.0, 16.0],
        }
    }
}

impl SynthConfig {
    /// Phantoms of the size of LiTS scans: 512×512 slices of 0.6-0.9 mm, 100-300 slices of
    /// 0.8-2.5 mm (the LiTS training volumes: in-plane 0.55-1.0 mm, 74-987 slices of
    /// 0.45-6 mm; Bilic et al., "The Liver Tumor Segmentation Benchmark (LiTS)", Medical
    /// Image Analysis 2023), for measuring what the full dataset costs without it.
    pub fn lits_size() -> Self {
        SynthConfig {
            in_plane_voxels: [512, 512],
            slices: [100, 300],
            in_plane_spacing_mm: [0.6, 0.9],
            slice_spacing_mm: [0.8, 2.5],
            ..SynthConfig::default()
        }
    }

    /// Checks that every range is ordered and usable (every problem at once).
    pub fn validate(&self) -> Result<()> {
        let mut p = Problems::new();
        self.check(&mut p);
        p.into_result()
    }

    /// Records every range that is not ordered or usable, and a size whose cases would not
    /// fit in memory, before anything is generated.
    pub fn check(&self, p: &mut Problems) {
        p.require((1..=MAX_CASES).contains(&self.cases), "cases", || format!("{} cases: need 1..={MAX_CASES}", self.cases));
        let counts = [("in_plane_voxels", self.in_plane_voxels, 16), ("slices", self.slices, 8)];
        for (field, [lo, hi], min) in counts {
            p.require(lo >= min && lo <= hi && hi <= 2048, field, || format!("[{lo}, {hi}] must be ordered within {min}..=2048"));
        }
        let largest = (self.in_plane_voxels[1] as u64).pow(2) * self.slices[1] as u64;
        p.require(largest <= MAX_CASE_VOXELS, "in_plane_voxels", || {
            format!(
                "the largest case would have {}² × {} = {largest} voxels, more than {MAX_CASE_VOXELS}",
                self.in_plane_voxels[1], self.slices[1]
            )
        });
        let mm = [
            ("in_plane_spacing_mm", self.in_plane_spacing_mm, 0.1, 20.0),
            ("slice_spacing_mm", self.slice_spacing_mm, 0.1, 20.0),
            ("noise_sd_hu", self.noise_sd_hu, 0.0, 500.0),
        ];
        for (field, [lo, hi], min, max) in mm {
            p.require(lo.is_finite() && hi.is_finite() && min <= lo && lo <= hi && hi <= max, field, || {
                format!("[{lo}, {hi}] must be ordered within {min}..={max}")
            });
        }
    }
}

/// How a case's image is stored on disk. Every generated value is an integer HU in
/// `-1024..=3071`, so both storages hold it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dtype", rename_all = "lowercase")]
pub enum Storage {
    /// float32 voxels, no scaling.
    F32,
    /// int16 voxels, `hu = stored * slope + inter`.
    I16 {
        /// `scl_slope`.
        slope: f32,
        /// `scl_inter`.
        inter: f32,
    },
}

impl Storage {
    /// The NIfTI writer's name for it.
    pub fn dtype(self) -> ImageDtype {
        match self {
            Storage::F32 => ImageDtype::F32,
            Storage::I16 { slope, inter } => ImageDtype::I16 { slope, inter },
        }
    }
}

/// Contrast phase of a case: decides vessel brightness against the liver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No contrast agent: vessels darker than the liver.
    Native,
    /// Portal-venous phase: vessels bright.
    PortalVenous,
}

/// One tumor as drawn (before clipping to the liver).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TumorInfo {
    /// Centre in world coordinates (RAS+, mm).
    pub centre_mm: [f64; 3],
    /// Mean radius, mm.
    pub radius_mm: f64,
    /// Intensity against the surrounding liver, HU (negative: hypodense).
    pub contrast_hu: f64,
    /// What it looks like.
    #[serde(default)]
    pub kind: LesionKind,
    /// Drawn touching an earlier lesion of the case, the two forming one confluent mass.
    #[serde(default)]
    pub confluent: bool,
}

/// A lesion's appearance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LesionKind {
    /// Darker than the liver, with a textured interior.
    #[default]
    Hypodense,
    /// Hypodense with an enhancing rim.
    Rim,
    /// Hypodense with an enhancing rim and a necrotic (fluid) centre.
    Necrotic,
    /// Brighter than the liver (hypervascular).
    Hyperdense,
    /// Slightly darker than the liver, with an enhancing capsule.
    Capsule,
}

/// What was drawn for one case, as recorded in `synth.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseInfo {
    /// Case id: the `N` of `volume-N.nii.gz`.
    pub id: u32,
    /// Array shape, in stored axis order.
    pub shape: [usize; 3],
    /// Voxel size in mm, in stored axis order.
    pub spacing: [f64; 3],
    /// Voxel-to-world affine (RAS+, mm) as intended; the file holds it in float32.
    pub affine: [[f64; 4]; 4],
    /// Orientation code of the stored axes (nibabel's `aff2axcodes`), e.g. `"LPS"`.
    pub orientation: String,
    /// On-disk image type.
    pub storage: Storage,
    /// Contrast phase.
    pub phase: Phase,
    /// Mean liver intensity, HU.
    pub liver_hu: f64,
    /// Image noise standard deviation, HU.
    pub noise_sd_hu: f64,
    /// Where the noise power spectrum peaks, cycles/mm (see [`noise`]).
    #[serde(default)]
    pub noise_peak_per_mm: f64,
    /// How far the field of view reaches above the apex of the right hemidiaphragm (the
    /// liver dome), mm; negative when the dome lies above the field of view.
    #[serde(default)]
    pub chest_mm: f64,
    /// Tumors drawn (empty for a tumor-free case).
    pub tumors: Vec<TumorInfo>,
    /// Voxels labelled liver (1) or tumor (2).
    pub liver_voxels: usize,
    /// Voxels labelled tumor (2).
    pub tumor_voxels: usize,
}

/// A generated case: image in HU, labels 0/1/2 on the same grid, and its description.
#[derive(Debug, Clone)]
pub struct Phantom {
    /// CT in HU (integer values).
    pub image: Image,
    /// 0 background, 1 liver, 2 tumor.
    pub labels: Labels,
    /// What was drawn.
    pub info: CaseInfo,
}

/// Stored orientations, cycled over the cases: LiTS volumes come in several, including
/// radiological `LPS`/`LAS` and reversed slice order. `PLS` permutes the in-plane axes.
const ORIENTATIONS: [&str; 5] = ["LPS", "RAS", "LAS", "RPI", "PLS"];

/// Storage types, cycled over the cases.
const STORAGES: [Storage; 3] = [Storage::I16 { slope: 1.0, inter: -1024.0 }, Storage::F32, Storage::I16 { slope: 0.5, inter: 0.0 }];

/// Every fourth case (offset by the seed) has no tumor.
const TUMOR_FREE_EVERY: usize = 4;

/// Generates case `index` of the dataset described by `cfg`.
pub fn generate_case(cfg: &SynthConfig, index: usize) -> Result<Phantom> {
    cfg.validate()?;
    let id =
        u32::try_from(index).map_err(|_| Error::Config { field: "cases".into(), msg: format!("case index {index} does not fit an id") })?;
    // Categorical choices cycle with an offset drawn from the seed, so any few consecutive
    // cases cover every orientation, storage and the tumor-free kind.
    let mut cycle = SeededRng::new(cfg.seed, u64::MAX);
    let offsets = [cycle.below(60) as usize, cycle.below(60) as usize, cycle.below(60) as usize];
    let orientation = ORIENTATIONS[(index + offsets[0]) % ORIENTATIONS.len()];
    let storage = STORAGES[(index + offsets[1]) % STORAGES.len()];
    let tumor_free = (index + offsets[2]).is_multiple_of(TUMOR_FREE_EVERY);

    let mut rng = SeededRng::new(cfg.seed, index as u64);
    let n_xy = rng.int(cfg.in_plane_voxels[0], cfg.in_plane_voxels[1]);
    let n_z = rng.int(cfg.slices[0], cfg.slices[1]);
    let s_xy = round_to(rng.uniform(cfg.in_plane_spacing_mm[0], cfg.in_plane_spacing_mm[1]), 1e3);
    let s_z = round_to(rng.uniform(cfg.slice_spacing_mm[0], cfg.slice_spacing_mm[1]), 1e3);
    let noise_sd = rng.uniform(cfg.noise_sd_hu[0], cfg.noise_sd_hu[1]);
    // Soft-tissue reconstruction kernels: the noise spectrum peaks at 0.2-0.32 cycles/mm.
    let noise_f0 = rng.uniform(0.28, 0.45);
    // Where the patient's centre lies in scanner coordinates: arbitrary, as on a real table.
    let centre = [rng.uniform(-30.0, 30.0), rng.uniform(-60.0, 0.0), rng.uniform(-400.0, -100.0)];
    let shape = [n_xy, n_xy, n_z];
    let spacing = [s_xy, s_xy, s_z];
    let fov = [n_xy as f64 * s_xy, n_xy as f64 * s_xy, n_z as f64 * s_z];
    let body = Body::draw(&mut rng, fov, tumor_free);

    let (hu, labels) = render(&body, shape, spacing);
    let noise = noise::fbp_noise(&mut rng, shape, [s_xy, s_xy], noise_sd, noise_f0);
    let hu = ndarray::Zip::from(&hu).and(&noise).map_collect(|&v, &n| (v + n).round().clamp(-1024.0, 3071.0) as f32);

    let liver_voxels = labels.iter().filter(|&&l| l >= 1).count();
    let tumor_voxels = labels.iter().filter(|&&l| l == 2).count();
    let tumors = body
        .tumors
        .iter()
        .map(|t| TumorInfo {
            centre_mm: [0, 1, 2].map(|a| round_to(t.blob.c[a] + centre[a], 1e3)),
            radius_mm: round_to(t.radius_mm, 1e3),
            contrast_hu: round_to(t.contrast, 1e3),
            kind: t.kind,
            confluent: t.confluent,
        })
        .collect();

    let (image, labels) = store(hu, labels, spacing, centre, orientation);
    let info = CaseInfo {
        id,
        shape: image.shape(),
        spacing: image.spacing,
        affine: image.affine,
        orientation: orientation.to_string(),
        storage,
        phase: body.phase,
        liver_hu: round_to(body.liver_hu, 1e3),
        noise_sd_hu: round_to(noise_sd, 1e3),
        noise_peak_per_mm: round_to(noise_f0 / 2f64.sqrt(), 1e3),
        chest_mm: round_to(body.half_z - body.dia.apex(), 1e3),
        tumors,
        liver_voxels,
        tumor_voxels,
    };
    Ok(Phantom { image, labels, info })
}

/// Rounds to `1/per` (dividing keeps the decimal print short: 3.381, not 3.3810000000000002).
/// What `synth.json` records: enough to regenerate the dataset and to know each case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthManifest {
    /// Always `"lits synth"`.
    pub generator: String,
    /// [`GENERATOR_VERSION`] of the phantom model that drew the cases (1 when absent).
    #[serde(default = "first_generator_version")]
    pub generator_version: u32,
    /// Version of lits that wrote it.
    pub lits_version: String,
    /// The configuration, seed included.
    pub config: SynthConfig,
    /// One entry per case, in id order.
    pub cases: Vec<CaseInfo>,
}

fn first_generator_version() -> u32 {
    1
}

/// Name of the manifest written beside the cases.
pub const MANIFEST: &str = "synth.json";

/// Version of the phantom model: the same config and seed give the same phantoms within a
/// version. Raised whenever the drawn anatomy changes, so caches keyed on it are not reused.
pub const GENERATOR_VERSION: u32 = 3;

/// Writes the dataset in LiTS layout: `volume-N.nii.gz` (float32 or scaled int16, see
/// [`CaseInfo::storage`]) and `segmentation-N.nii.gz` (uint8) for `N` in `0..cfg.cases`, then
/// [`MANIFEST`]. Every file is written atomically. `dir` is created if needed; it may hold
/// an earlier run's files of the same names (they are replaced) but nothing else, so two
/// datasets never mix. Returns the written paths (cases in id order, manifest last).
pub fn write_dataset(dir: &Path, cfg: &SynthConfig) -> Result<Vec<PathBuf>> {
    cfg.validate()?;
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    check_only_ours(dir, cfg.cases)?;
    let written: Vec<(PathBuf, PathBuf, CaseInfo)> = (0..cfg.cases)
        .into_par_iter()
        .map(|i| {
            let ph = generate_case(cfg, i)?;
            let geom = Geometry::from_affine(ph.image.affine);
            let volume = dir.join(format!("volume-{i}.nii.gz"));
            let segmentation = dir.join(format!("segmentation-{i}.nii.gz"));
            write_image(&volume, &ph.image, &geom, ph.info.storage.dtype())?;
            write_labels(&segmentation, &ph.labels, &geom)?;
            Ok((volume, segmentation, ph.info))
        })
        .collect::<Result<_>>()?;
    let mut paths = Vec::with_capacity(2 * written.len() + 1);
    let mut cases = Vec::with_capacity(written.len());
    for (volume, segmentation, info) in written {
        paths.push(volume);
        paths.push(segmentation);
        cases.push(info);
    }
    let manifest = SynthManifest {
        generator: "lits synth".into(),
        generator_version: GENERATOR_VERSION,
        lits_version: env!("CARGO_PKG_VERSION").into(),
        config: cfg.clone(),
        cases,
    };
    let path = dir.join(MANIFEST);
    crate::json::write(&path, &manifest)?;
    paths.push(path);
    Ok(paths)
}

/// Refuses a folder holding anything but this dataset's own file names (hidden files aside).
fn check_only_ours(dir: &Path, cases: usize) -> Result<()> {
    let ours = |name: &str| {
        if name == MANIFEST {
            return true;
        }
        let number =
            name.strip_suffix(".nii.gz").and_then(|stem| stem.strip_prefix("volume-").or_else(|| stem.strip_prefix("segmentation-")));
        number.is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()) && n.parse::<usize>().is_ok_and(|i| i < cases))
    };
    let mut entries: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !ours(&name) {
            entries.push(entry.path());
        }
    }
    entries.sort();
    match entries.first() {
        None => Ok(()),
        Some(first) => Err(Error::invalid(
            first,
            format!(
                "is not a file of this {cases}-case synthetic dataset; write into an empty or new folder \
                 ({} such entr{})",
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" }
            ),
        )),
    }
}

fn round_to(x: f64, per: f64) -> f64 {
    (x * per).round() / per
}

/// Turns arrays on the RAS grid (centred on `centre`) into volumes stored with the axes
/// named by `code`, with the affine that keeps every voxel at the same world position.
fn store(hu: Array3<f32>, labels: Array3<u8>, spacing: [f64; 3], centre: [f64; 3], code: &str) -> (Image, Labels) {
    let shape = [hu.shape()[0], hu.shape()[1], hu.shape()[2]];
    let mut world_axis = [0usize; 3];
    let mut flip = [false; 3];
    for (a, ch) in code.chars().enumerate() {
        (world_axis[a], flip[a]) = match ch {
            'R' => (0, false),
            'L' => (0, true),
            'A' => (1, false),
            'P' => (1, true),
            'S' => (2, false),
            'I' => (2, true),
            _ => unreachable!("orientation letters are fixed above"),
        };
    }
    let mut affine = [[0.0; 4]; 4];
    affine[3][3] = 1.0;
    for w in 0..3 {
        let half = (shape[w] as f64 - 1.0) / 2.0 * spacing[w];
        affine[w][3] = centre[w] - half;
    }
    for a in 0..3 {
        let w = world_axis[a];
        let sign = if flip[a] { -1.0 } else { 1.0 };
        affine[w][a] = sign * spacing[w];
        if flip[a] {
            // Index 0 now sits at the far end of world axis w.
            affine[w][3] = centre[w] + (shape[w] as f64 - 1.0) / 2.0 * spacing[w];
        }
    }
    // Sub-micron rounding keeps the manifest's numbers short (no 0.30000000000000004).
    let affine = affine.map(|row| row.map(|v| round_to(v, 1e6)));
    let stored_spacing = world_axis.map(|w| spacing[w]);
    let image = Volume { data: arrange(hu, world_axis, flip), spacing: stored_spacing, affine };
    let labels = Volume { data: arrange(labels, world_axis, flip), spacing: stored_spacing, affine };
    (image, labels)
}

/// Permutes and flips a RAS-grid array into stored axis order.
fn arrange<T: Clone>(a: Array3<T>, world_axis: [usize; 3], flip: [bool; 3]) -> Array3<T> {
    let mut a = a.permuted_axes(world_axis);
    for (ax, &f) in flip.iter().enumerate() {
        if f {
            a.invert_axis(Axis(ax));
        }
    }
    a.as_standard_layout().into_owned()
}

/// Samples per slice along z: each slice averages the anatomy over its thickness.
const SLICE_SAMPLES: usize = 3;

/// Evaluates the body on the RAS grid (patient centre at the middle of the grid). A voxel's
/// HU is the mean over [`SLICE_SAMPLES`] points spread evenly through the slice thickness
/// (the partial-volume blur of a slice as thick as its spacing); its label is the one at the
/// voxel centre, as an annotator reads it. Slices are independent, so they run in parallel.
fn render(body: &Body, shape: [usize; 3], spacing: [f64; 3]) -> (Array3<f64>, Array3<u8>) {
    let pos = |a: usize, i: usize| (i as f64 - (shape[a] as f64 - 1.0) / 2.0) * spacing[a];
    let offsets: Vec<f64> = (0..SLICE_SAMPLES).map(|m| ((m as f64 + 0.5) / SLICE_SAMPLES as f64 - 0.5) * spacing[2]).collect();
    let slices: Vec<Vec<(f64, u8)>> = (0..shape[2])
        .into_par_iter()
        .map(|k| {
            let z = pos(2, k);
            let mut out = Vec::with_capacity(shape[0] * shape[1]);
            for i in 0..shape[0] {
                for j in 0..shape[1] {
                    let (x, y) = (pos(0, i), pos(1, j));
                    let mut sum = 0.0;
                    let mut label = 0;
                    for &dz in &offsets {
                        let (hu, l) = body.at([x, y, z + dz]);
                        sum += hu;
                        if dz == 0.0 {
                            label = l;
                        }
                    }
                    out.push((sum / SLICE_SAMPLES as f64, label));
                }
            }
            out
        })
        .collect();
    let hu = Array3::from_shape_fn(shape, |(i, j, k)| slices[k][i * shape[1] + j].0);
    let labels = Array3::from_shape_fn(shape, |(i, j, k)| slices[k][i * shape[1] + j].1);
    (hu, labels)
}

/// A smooth random field: a sum of plane waves of random direction and phase, scaled to
/// about unit variance. Used for irregular outlines and textures.
#[derive(Debug, Clone)]
struct Waves {
    k: Vec<[f64; 3]>,
    phase: Vec<f64>,
    scale: f64,
}

impl Waves {
    const COUNT: usize = 6;

    fn draw(rng: &mut SeededRng, wavelength_mm: f64) -> Self {
        let mut k = Vec::with_capacity(Self::COUNT);
        let mut phase = Vec::with_capacity(Self::COUNT);
        for _ in 0..Self::COUNT {
            let d = unit_vector(rng);
            let mag = TAU / (wavelength_mm * rng.uniform(0.75, 1.33));
            k.push(d.map(|x| x * mag));
            phase.push(rng.uniform(0.0, TAU));
        }
        Waves { k, phase, scale: (2.0 / Self::COUNT as f64).sqrt() }
    }

    fn at(&self, p: [f64; 3]) -> f64 {
        let s: f64 = self.k.iter().zip(&self.phase).map(|(k, ph)| (k[0] * p[0] + k[1] * p[1] + k[2] * p[2] + ph).cos()).sum();
        s * self.scale
    }

    /// The largest |value| the field can take.
    fn bound(&self) -> f64 {
        self.scale * self.k.len() as f64
    }
}

fn norm(v: [f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

/// A random direction: a normalised draw of three standard normals.
fn unit_vector(rng: &mut SeededRng) -> [f64; 3] {
    loop {
        let d = [rng.normal(), rng.normal(), rng.normal()];
        let n = norm(d);
        if n > 1e-6 {
            return d.map(|x| x / n);
        }
    }
}

/// An ellipsoid with a rough surface. `level < 0` inside; about the normalised radius - 1.
/// `taper > 0` widens it (in x and y) towards its top, as the liver is wide under the
/// diaphragm and narrow below.
#[derive(Debug, Clone)]
struct Blob {
    c: [f64; 3],
    r: [f64; 3],
    rough: Waves,
    amp: f64,
    taper: f64,
}

impl Blob {
    /// Radii are `r` each scaled by a draw from `1 ± jitter`.
    fn draw(rng: &mut SeededRng, c: [f64; 3], r: [f64; 3], jitter: f64, amp: f64, wavelength_mm: f64) -> Self {
        let r = r.map(|x| x * rng.uniform(1.0 - jitter, 1.0 + jitter));
        Blob { c, r, rough: Waves::draw(rng, wavelength_mm), amp, taper: 0.0 }
    }

    fn radius(&self, p: [f64; 3]) -> f64 {
        let widen = 1.0 + self.taper * ((p[2] - self.c[2]) / self.r[2]).clamp(-1.0, 1.0);
        let d = [0, 1, 2].map(|a| (p[a] - self.c[a]) / self.r[a]);
        norm([d[0] / widen, d[1] / widen, d[2]])
    }

    fn level(&self, p: [f64; 3]) -> f64 {
        let q = self.radius(p);
        let reach = self.amp * self.rough.bound();
        // Far outside no roughness can bring the point in: skip the waves.
        if q - 1.0 > reach {
            return q - 1.0 - reach;
        }
        q - 1.0 + self.amp * self.rough.at(p)
    }

    fn inside(&self, p: [f64; 3]) -> bool {
        self.level(p) < 0.0
    }

    /// Lower and upper corners of a box that holds the blob.
    fn bounds(&self) -> ([f64; 3], [f64; 3]) {
        let grow = 1.0 + self.amp * self.rough.bound();
        let widen = [1.0 + self.taper.abs(), 1.0 + self.taper.abs(), 1.0];
        let reach = |a: usize| self.r[a] * grow * widen[a];
        ([0, 1, 2].map(|a| self.c[a] - reach(a)), [0, 1, 2].map(|a| self.c[a] + reach(a)))
    }
}

/// Polynomial smooth minimum: joins two lobes without a crease.
fn smooth_min(a: f64, b: f64, k: f64) -> f64 {
    let h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0);
    b + (a - b) * h - k * h * (1.0 - h)
}

fn smoothstep(x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

/// Polynomial smooth maximum (see [`smooth_min`]).
fn smooth_max(a: f64, b: f64, k: f64) -> f64 {
    -smooth_min(-a, -b, k)
}

/// `exp(N(ln median, sigma))`, clamped to `[lo, hi]`.
fn log_normal(rng: &mut SeededRng, median: f64, sigma: f64, lo: f64, hi: f64) -> f64 {
    (median.ln() + sigma * rng.normal()).exp().clamp(lo, hi)
}

#[derive(Debug, Clone)]
struct Tumor {
    blob: Blob,
    radius_mm: f64,
    kind: LesionKind,
    confluent: bool,
    /// Interior against the parenchyma, HU.
    contrast: f64,
    /// Added in the outer part (enhancing rim or capsule), HU.
    rim: f64,
    /// HU of the necrotic centre, if any.
    necrosis: Option<f64>,
    texture: Waves,
    texture_hu: f64,
}

#[derive(Debug, Clone)]
struct Kidney {
    blob: Blob,
    hilum: [f64; 3],
    hilum_r: f64,
}

/// Intensities of one case, HU.
#[derive(Debug, Clone)]
struct Tissue {
    fat: f64,
    muscle: f64,
    cortical: f64,
    cancellous: f64,
    disc: f64,
    csf: f64,
    blood: f64,
    portal_vein: f64,
    hepatic_vein: f64,
    myocardium: f64,
    lung: f64,
    spleen: f64,
    kidney: f64,
    bile: f64,
    gut_content: f64,
}

impl Tissue {
    /// The liver's mean HU and every other tissue's, for a case in `phase`.
    fn draw(rng: &mut SeededRng, phase: Phase) -> (f64, Tissue) {
        let enhanced = phase == Phase::PortalVenous;
        let pick = |rng: &mut SeededRng, pv: [f64; 2], native: [f64; 2]| {
            let [lo, hi] = if enhanced { pv } else { native };
            rng.uniform(lo, hi)
        };
        let liver = pick(rng, [95.0, 125.0], [50.0, 65.0]);
        // Unenhanced blood is darker than the liver; its vessels show as dark tubes.
        let portal_vein = if enhanced { rng.uniform(150.0, 210.0) } else { liver - rng.uniform(8.0, 15.0) };
        let hepatic_vein = if enhanced { rng.uniform(130.0, 190.0) } else { liver - rng.uniform(8.0, 15.0) };
        let tissue = Tissue {
            fat: rng.uniform(-110.0, -85.0),
            muscle: pick(rng, [50.0, 65.0], [40.0, 55.0]),
            cortical: rng.uniform(650.0, 950.0),
            cancellous: rng.uniform(170.0, 280.0),
            disc: rng.uniform(70.0, 95.0),
            csf: rng.uniform(5.0, 15.0),
            blood: pick(rng, [140.0, 200.0], [35.0, 50.0]),
            portal_vein,
            hepatic_vein,
            myocardium: pick(rng, [90.0, 125.0], [35.0, 50.0]),
            lung: rng.uniform(-880.0, -830.0),
            spleen: if enhanced { liver + rng.uniform(0.0, 20.0) } else { liver - rng.uniform(5.0, 12.0) },
            kidney: if enhanced { liver + rng.uniform(40.0, 90.0) } else { rng.uniform(28.0, 40.0) },
            bile: rng.uniform(0.0, 22.0),
            gut_content: rng.uniform(5.0, 30.0),
        };
        (liver, tissue)
    }
}

/// The diaphragm's lower (abdominal) surface as a height over the axial plane: the smooth
/// upper envelope of three paraboloid caps, the right dome, the left dome and the central
/// tendon under the heart. The muscle sheet lies between it and `thick` mm above.
#[derive(Debug, Clone)]
struct Diaphragm {
    /// Each cap's apex `[x, y, z]` and how far it falls (mm) one half-width away.
    caps: [([f64; 3], f64); 3],
    half_width: [f64; 2],
    thick: f64,
    blend: f64,
}

impl Diaphragm {
    fn height(&self, x: f64, y: f64) -> f64 {
        let cap = |&(c, fall): &([f64; 3], f64)| {
            let (u, v) = ((x - c[0]) / self.half_width[0], (y - c[1]) / self.half_width[1]);
            // The posterior recesses reach lower than the front.
            let v = if v < 0.0 { 1.3 * v } else { v };
            c[2] - fall * (u * u + v * v)
        };
        let [r, l, t] = &self.caps;
        smooth_max(smooth_max(cap(r), cap(l), self.blend), cap(t), self.blend)
    }

    /// Height of the right dome's apex, the liver dome's ceiling.
    fn apex(&self) -> f64 {
        self.caps[0].0[2]
    }
}

/// The heart: a rough ellipsoid of chambers of blood inside a wall of myocardium with an
/// interventricular septum, in a layer of pericardial fat.
#[derive(Debug, Clone)]
struct Heart {
    blob: Blob,
    /// Myocardium from the surface inwards, in normalised radius.
    wall: f64,
    /// Pericardial fat outside the surface, in normalised radius.
    fat: f64,
    /// Unit normal of the septum's plane through the centre.
    septum: [f64; 3],
}

/// The drawn anatomy of one case, in mm relative to the patient centre (RAS+).
#[derive(Debug, Clone)]
struct Body {
    half_z: f64,
    scale: f64,
    a: f64,
    b: f64,
    outline: Waves,
    fat_depth: f64,
    fat_var: Waves,
    wall_depth: f64,
    spine_y: f64,
    spine_r: [f64; 2],
    level_period: f64,
    level_phase: f64,
    rib_period: f64,
    rib_low: f64,
    phase: Phase,
    liver_hu: f64,
    tissue: Tissue,
    dia: Diaphragm,
    heart: Heart,
    lung_texture: Waves,
    lung_vessels: [Waves; 2],
    lobes: Vec<Blob>,
    liver_box: ([f64; 3], [f64; 3]),
    texture: [Waves; 2],
    portal: vessels::Tree,
    hepatic: vessels::Tree,
    tumors: Vec<Tumor>,
    spleen: Blob,
    kidneys: [Kidney; 2],
    gallbladder: Option<Blob>,
    stomach: Option<Blob>,
    gas_level: f64,
    bowel: [Waves; 2],
}

/// Width of the smooth union of the liver lobes (in normalised-radius units).
const LOBE_BLEND: f64 = 0.25;

impl Body {
    fn draw(rng: &mut SeededRng, fov: [f64; 3], tumor_free: bool) -> Self {
        let a = fov[0] / 2.0 * rng.uniform(0.80, 0.92);
        let b = a * rng.uniform(0.66, 0.80);
        // Organs are sized for a 150 mm half-width and scaled with the patient.
        let s = a / 150.0;
        let half_z = fov[2] / 2.0;
        let spine_y = -b + 72.0 * s;
        let phase = if rng.chance(0.75) { Phase::PortalVenous } else { Phase::Native };
        let (liver_hu, tissue) = Tissue::draw(rng, phase);

        // The field of view reaches from just under the liver dome (the dome cut off) to
        // half its height above it, into the chest.
        let dome = half_z - rng.uniform(-25.0, 0.6 * fov[2]);
        let dia = Diaphragm {
            caps: [
                ([0.42 * a, -0.05 * b, dome], 60.0 * s),
                ([-0.42 * a, -0.05 * b, dome - rng.uniform(10.0, 25.0) * s], 60.0 * s),
                ([-0.05 * a, 0.25 * b, dome - rng.uniform(12.0, 25.0) * s], 30.0 * s),
            ],
            half_width: [0.5 * a, 0.75 * b],
            thick: rng.uniform(3.0, 5.0) * s,
            blend: 15.0 * s,
        };
        let tendon = dia.caps[2].0;
        let mut heart_blob = Blob::draw(rng, [0.0; 3], [0.36 * a, 0.30 * b, 55.0 * s], 0.1, 0.05, 80.0 * s);
        // It rests on the central tendon: its lowest quarter sits under the diaphragm's
        // surface and is cut off there, flattening it as the real heart is.
        heart_blob.c = [-0.10 * a, 0.25 * b, tendon[2] + dia.thick + 0.75 * heart_blob.r[2]];
        let angle = rng.uniform(35.0, 55.0).to_radians();
        let heart =
            Heart { blob: heart_blob, wall: rng.uniform(0.14, 0.2), fat: rng.uniform(0.08, 0.2), septum: [angle.cos(), -angle.sin(), 0.0] };

        // Liver: right lobe, left lobe reaching across the midline, sometimes an inferior tip;
        // the diaphragm caps them.
        let zl = dome - 75.0 * s;
        let mut right = Blob::draw(rng, [0.48 * a, -0.05 * b, zl], [0.44 * a, 0.72 * b, 80.0 * s], 0.1, 0.08, 70.0 * s);
        right.taper = rng.uniform(0.15, 0.35);
        let mut lobes =
            vec![right, Blob::draw(rng, [-0.08 * a, 0.38 * b, zl + 30.0 * s], [0.34 * a, 0.30 * b, 45.0 * s], 0.1, 0.08, 60.0 * s)];
        if rng.chance(0.5) {
            lobes.push(Blob::draw(rng, [0.55 * a, -0.10 * b, zl - 58.0 * s], [0.25 * a, 0.35 * b, 45.0 * s], 0.1, 0.08, 50.0 * s));
        }
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for lobe in &lobes {
            let (l, h) = lobe.bounds();
            for ax in 0..3 {
                // The smooth union swells the outline by at most LOBE_BLEND/4 of a radius.
                let pad = lobe.r[ax] * LOBE_BLEND;
                lo[ax] = lo[ax].min(l[ax] - pad);
                hi[ax] = hi[ax].max(h[ax] + pad);
            }
        }
        let texture = [Waves::draw(rng, 30.0 * s), Waves::draw(rng, 10.0 * s)];

        // Vessels. The portal vein rises from behind the pancreas to the hilum and divides
        // into a right and a left branch; the three hepatic veins fan out from the vena cava
        // under the dome.
        let ivc = [22.0 * s, spine_y + 18.0 * s + 16.0 * s];
        let hilum = [0.22 * a, 0.02 * b, zl - 20.0 * s];
        let confluence = [0.02 * a, spine_y + 18.0 * s + 35.0 * s, zl - 75.0 * s];
        let portal_r = rng.uniform(5.5, 7.0) * s;
        let growth = vessels::Growth { generations: 4, min_radius: 0.8 };
        let mut portal = vessels::Tree::grow(rng, confluence, &[hilum], portal_r, &vessels::Growth { generations: 0, ..growth });
        let branches = [[0.55 * a, -0.05 * b, zl + 5.0 * s], [-0.10 * a, 0.38 * b, zl + 20.0 * s]];
        portal.extend(vessels::Tree::grow(rng, hilum, &branches, 0.8 * portal_r, &growth));
        let root = [ivc[0], ivc[1], dome - 22.0 * s];
        let veins = [[0.62 * a, -0.05 * b, zl - 20.0 * s], [0.25 * a, 0.35 * b, zl - 25.0 * s], [-0.15 * a, 0.40 * b, zl + 10.0 * s]];
        let hepatic_r = rng.uniform(4.5, 6.0) * s;
        let hepatic = vessels::Tree::grow(rng, root, &veins, hepatic_r, &vessels::Growth { generations: 3, ..growth });

        let spleen = Blob::draw(rng, [-0.62 * a, -0.30 * b, zl + 12.0 * s], [0.20 * a, 0.30 * b, 50.0 * s], 0.1, 0.10, 40.0 * s);
        let kidney = |rng: &mut SeededRng, side: f64, z: f64| {
            let c = [side * 0.38 * a, spine_y + 6.0 * s, z];
            let blob = Blob::draw(rng, c, [24.0 * s, 28.0 * s, 50.0 * s], 0.1, 0.05, 40.0 * s);
            let r = blob.r;
            // The hilum faces the spine.
            Kidney { blob, hilum: [c[0] - side * 0.9 * r[0], c[1] + 0.2 * r[1], c[2]], hilum_r: 0.55 * r[0] }
        };
        let kidneys = [kidney(rng, 1.0, zl - 72.0 * s), kidney(rng, -1.0, zl - 50.0 * s)];
        let gallbladder = rng
            .chance(0.6)
            .then(|| Blob::draw(rng, [0.20 * a, 0.42 * b, zl - 40.0 * s], [14.0 * s, 16.0 * s, 32.0 * s], 0.1, 0.04, 30.0 * s));
        let stomach = rng
            .chance(0.8)
            .then(|| Blob::draw(rng, [-0.35 * a, 0.32 * b, zl + 8.0 * s], [0.24 * a, 0.28 * b, 45.0 * s], 0.1, 0.08, 50.0 * s));

        let mut body = Body {
            half_z,
            scale: s,
            a,
            b,
            outline: Waves::draw(rng, 120.0),
            fat_depth: rng.uniform(8.0, 25.0) * s,
            fat_var: Waves::draw(rng, 150.0),
            wall_depth: rng.uniform(7.0, 13.0) * s,
            spine_y,
            spine_r: [22.0 * s, 18.0 * s],
            level_period: 34.0 * s,
            level_phase: rng.uniform(0.0, 1.0),
            rib_period: 26.0 * s,
            rib_low: zl - rng.uniform(30.0, 50.0) * s,
            phase,
            liver_hu,
            tissue,
            dia,
            heart,
            lung_texture: Waves::draw(rng, 8.0),
            lung_vessels: [Waves::draw(rng, 30.0), Waves::draw(rng, 30.0)],
            lobes,
            liver_box: (lo, hi),
            texture,
            portal,
            hepatic,
            tumors: Vec::new(),
            spleen,
            kidneys,
            gallbladder,
            stomach,
            gas_level: rng.uniform(0.1, 0.3),
            bowel: [Waves::draw(rng, 40.0 * s), Waves::draw(rng, 25.0 * s)],
        };
        if !tumor_free {
            body.draw_tumors(rng);
        }
        body
    }

    /// Lesions as in LiTS: a dominant one and smaller ones, a few or many, some confluent.
    fn draw_tumors(&mut self, rng: &mut SeededRng) {
        let n = if rng.chance(0.25) {
            rng.int(5, 12)
        } else {
            let mut n = 1;
            while n < 5 && rng.chance(0.5) {
                n += 1;
            }
            n
        };
        for t in 0..n {
            let diameter = if t == 0 { log_normal(rng, 35.0, 0.4, 15.0, 100.0) } else { log_normal(rng, 13.0, 0.55, 5.0, 60.0) };
            let near = (!self.tumors.is_empty() && rng.chance(0.2)).then(|| rng.below(self.tumors.len() as u64) as usize);
            if let Some(tumor) = self.place_tumor(rng, diameter / 2.0, near) {
                self.tumors.push(tumor);
            }
        }
    }

    /// Draws a lesion centred inside the liver, deep enough for its size, away from the vena
    /// cava and bile; touching lesion `near` when given.
    fn place_tumor(&self, rng: &mut SeededRng, radius: f64, near: Option<usize>) -> Option<Tumor> {
        let (lo, hi) = self.liver_box;
        let depth = 0.05 + radius / 150.0;
        for _ in 0..2000 {
            let c = match near {
                Some(i) => {
                    let other = &self.tumors[i];
                    let d = unit_vector(rng);
                    // Overlapping by a third of the smaller radius: one mass of two lobes.
                    let reach = other.radius_mm + radius - radius.min(other.radius_mm) / 3.0;
                    [0, 1, 2].map(|k| other.blob.c[k] + d[k] * reach)
                }
                None => [0, 1, 2].map(|k| rng.uniform(lo[k], hi[k])),
            };
            if self.liver_level(c) < -depth && self.organ_over_liver(c).is_none() && self.cavity(c) {
                return Some(self.draw_lesion(rng, c, radius, near.is_some()));
            }
        }
        None
    }

    fn draw_lesion(&self, rng: &mut SeededRng, c: [f64; 3], radius: f64, confluent: bool) -> Tumor {
        let enhanced = self.phase == Phase::PortalVenous;
        let roll = rng.unit();
        let (kind, contrast, rim, necrosis) = if !enhanced {
            // Unenhanced, lesions differ from the liver by little and have no rim.
            (LesionKind::Hypodense, -rng.uniform(15.0, 35.0), 0.0, None)
        } else if roll < 0.75 {
            let contrast = -rng.uniform(35.0, 80.0);
            if radius > 12.5 && rng.chance(0.5) {
                (LesionKind::Necrotic, contrast, rng.uniform(10.0, 25.0), Some(rng.uniform(10.0, 30.0)))
            } else if rng.chance(0.4) {
                (LesionKind::Rim, contrast, rng.uniform(10.0, 25.0), None)
            } else {
                (LesionKind::Hypodense, contrast, 0.0, None)
            }
        } else if roll < 0.9 {
            (LesionKind::Hyperdense, rng.uniform(20.0, 50.0), 0.0, None)
        } else {
            (LesionKind::Capsule, -rng.uniform(15.0, 30.0), rng.uniform(10.0, 25.0), None)
        };
        let grain_mm = rng.uniform(4.0, 8.0);
        Tumor {
            blob: Blob::draw(rng, c, [radius; 3], 0.2, 0.12, 2.5 * radius),
            radius_mm: radius,
            kind,
            confluent,
            contrast,
            rim,
            necrosis,
            texture: Waves::draw(rng, grain_mm),
            texture_hu: rng.uniform(4.0, 10.0),
        }
    }

    /// Signed depth below the skin in the axial plane (negative outside the body).
    fn depth(&self, p: [f64; 3]) -> f64 {
        let [x, y, z] = p;
        let r = (x * x + y * y).sqrt();
        if r < 1e-9 {
            return self.b;
        }
        let (c, sn) = (x / r, y / r);
        // The back is flatter than the front: a squarer outline behind.
        let (u, v) = ((c / self.a).abs(), (sn / self.b).abs());
        let rim = if y < 0.0 { 1.0 / (u * u * u + v * v * v).cbrt() } else { 1.0 / u.hypot(v) };
        let taper = 1.0 + 0.04 * z / self.half_z.max(1.0);
        let wobble = 1.0 + 0.025 * self.outline.at([100.0 * c, 100.0 * sn, z]);
        rim * taper * wobble - r
    }

    fn cavity_depth(&self, p: [f64; 3]) -> f64 {
        self.depth(p) - self.fat_at(p) - self.wall_depth
    }

    fn fat_at(&self, p: [f64; 3]) -> f64 {
        self.fat_depth * (1.0 + 0.35 * self.fat_var.at([p[0], p[1], 0.5 * p[2]]))
    }

    fn cavity(&self, p: [f64; 3]) -> bool {
        self.cavity_depth(p) > 2.0 * self.scale && self.skeleton(p).is_none()
    }

    fn liver_level(&self, p: [f64; 3]) -> f64 {
        let (lo, hi) = self.liver_box;
        if (0..3).any(|a| p[a] < lo[a] || p[a] > hi[a]) {
            return 1.0;
        }
        let level = self.lobes.iter().map(|l| l.level(p)).reduce(|x, y| smooth_min(x, y, LOBE_BLEND)).unwrap_or(1.0);
        // The retroperitoneum left of the vena cava (aorta, left kidney) is no liver's place:
        // cut the lobes off there with a soft edge.
        let s = self.scale;
        let allowed = (p[0] - 0.05 * self.a).max(p[1] - self.spine_y - self.spine_r[1] - 26.0 * s) / (20.0 * s);
        // The diaphragm is its ceiling.
        let under = (self.dia.height(p[0], p[1]) - p[2]) / (20.0 * s);
        level.max(-allowed).max(-under)
    }

    /// Structures that take precedence over the liver where they overlap it.
    fn organ_over_liver(&self, p: [f64; 3]) -> Option<(f64, u8)> {
        let t = &self.tissue;
        let [x, y, _] = p;
        let s = self.scale;
        let ivc = (((x - 22.0 * s) / (14.0 * s)).powi(2) + ((y - self.spine_y - self.spine_r[1] - 16.0 * s) / (10.0 * s)).powi(2)) < 1.0;
        if ivc {
            return Some((t.blood, 0));
        }
        let aorta = (x + 14.0 * s).hypot(y - self.spine_y - self.spine_r[1] - 12.0 * s) < 11.0 * s;
        if aorta {
            return Some((t.blood, 0));
        }
        if let Some(g) = &self.gallbladder {
            if g.inside(p) {
                return Some((t.bile, 0));
            }
        }
        None
    }

    /// Bone, disc, canal and back muscles around the spine; `None` elsewhere.
    fn skeleton(&self, p: [f64; 3]) -> Option<f64> {
        let t = &self.tissue;
        let [x, y, z] = p;
        let s = self.scale;
        let phase = (z / self.level_period + self.level_phase).rem_euclid(1.0);
        let [rx, ry] = self.spine_r;
        let dy = y - self.spine_y;
        let e = ((x / rx).powi(2) + (dy / ry).powi(2)).sqrt();
        if e < 1.0 {
            if phase < 0.2 {
                return Some(t.disc);
            }
            return Some(if e > 1.0 - 2.5 * s / ry { t.cortical } else { t.cancellous });
        }
        let canal = x.hypot(dy + 27.0 * s);
        if canal < 8.0 * s {
            return Some(t.csf);
        }
        let bony = (0.2..0.85).contains(&phase);
        if bony && canal < 13.0 * s && dy < -16.0 * s {
            return Some(t.cortical);
        }
        if bony && x.abs() < 4.0 * s && dy < -38.0 * s && dy > -62.0 * s {
            return Some(t.cortical);
        }
        if (0.3..0.55).contains(&phase) && (dy + 12.0 * s).abs() < 4.0 * s && x.abs() < rx + 22.0 * s {
            return Some(t.cortical);
        }
        // Erector spinae behind, psoas beside the spine, thickening towards the pelvis.
        for side in [-1.0, 1.0] {
            let back = ((x - side * 30.0 * s) / (26.0 * s)).powi(2) + ((dy + 45.0 * s) / (20.0 * s)).powi(2);
            if back < 1.0 {
                return Some(t.muscle);
            }
            let psoas_r = 6.0 * s + 12.0 * s * ((self.half_z - z) / (2.0 * self.half_z)).clamp(0.0, 1.0);
            if (x - side * (rx + 14.0 * s)).hypot(dy - 2.0 * s) < psoas_r {
                return Some(t.muscle);
            }
        }
        None
    }

    /// HU (without noise) and label at `p`.
    fn at(&self, p: [f64; 3]) -> (f64, u8) {
        let t = &self.tissue;
        let s = self.scale;
        let depth = self.depth(p);
        if depth < 0.0 {
            return (-1000.0, 0);
        }
        let fat = self.fat_at(p);
        if depth < fat {
            return (t.fat, 0);
        }
        if let Some(v) = self.skeleton(p) {
            return (v, 0);
        }
        let wall = fat + self.wall_depth;
        if depth < wall + 6.0 * s {
            // Ribs run obliquely through the wall around the upper abdomen and the chest.
            let angle = p[1].atan2(p[0]);
            let band = ((p[2] + 18.0 * s * angle) / self.rib_period).rem_euclid(1.0);
            let midline = p[0].abs() < 30.0 * s && p[1] > 0.0;
            if p[2] > self.rib_low && !midline && band < 0.3 && depth > fat + 0.4 * self.wall_depth {
                return (if (0.06..=0.24).contains(&band) { t.cancellous } else { t.cortical }, 0);
            }
            if depth < wall {
                return (t.muscle, 0);
            }
        }
        if let Some(o) = self.organ_over_liver(p) {
            return o;
        }
        let above = p[2] - self.dia.height(p[0], p[1]);
        if above >= 0.0 {
            return if above < self.dia.thick { (t.muscle, 0) } else { self.chest_at(p) };
        }
        let liver = self.liver_level(p);
        if liver < 0.0 && depth > wall + 2.0 * s {
            return self.liver_at(p);
        }
        // The portal vein's trunk and main branches run outside the liver to the hilum.
        if self.portal.at(p).is_some_and(|g| g == 0) {
            return (t.portal_vein, 0);
        }
        if self.spleen.inside(p) {
            return (t.spleen + 3.0 * self.texture[1].at(p), 0);
        }
        for k in &self.kidneys {
            let level = k.blob.level(p);
            if level < 0.0 {
                let d = [0, 1, 2].map(|a| p[a] - k.hilum[a]);
                if norm(d) < k.hilum_r {
                    return (t.fat + 30.0, 0);
                }
                // Cortex outside, medulla within (enhancing later than the cortex).
                let medulla = if self.phase == Phase::PortalVenous { 40.0 } else { 10.0 };
                return (if level < -0.3 { t.kidney - medulla } else { t.kidney }, 0);
            }
        }
        if let Some(st) = &self.stomach {
            let level = st.level(p);
            if level < 0.0 {
                if level > -0.12 {
                    return (t.muscle, 0);
                }
                let top = st.c[1] + st.r[1] * self.gas_level;
                return (if p[1] > top { -950.0 } else { t.gut_content + 10.0 }, 0);
            }
        }
        // Bowel loops with walls, content and gas in mesenteric fat.
        let h = self.bowel[0].at(p);
        if h.abs() < 0.18 {
            (t.muscle - 10.0, 0)
        } else if h > 0.0 {
            (if self.bowel[1].at(p) > 1.3 { -800.0 } else { t.gut_content }, 0)
        } else {
            (t.fat + 15.0, 0)
        }
    }

    fn liver_at(&self, p: [f64; 3]) -> (f64, u8) {
        let base = self.liver_hu + 4.0 * self.texture[0].at(p) + 2.0 * self.texture[1].at(p);
        for tumor in &self.tumors {
            let level = tumor.blob.level(p);
            if level < 0.0 {
                if let Some(fluid) = tumor.necrosis {
                    if level < -0.5 {
                        return (fluid + 0.5 * tumor.texture_hu * tumor.texture.at(p), 2);
                    }
                }
                // A soft edge (partial enhancement) makes small lesions harder to see.
                let core = 0.55 + 0.45 * smoothstep(-level / 0.35);
                let rim = if level > -0.2 { tumor.rim } else { 0.0 };
                return (base + tumor.contrast * core + rim + tumor.texture_hu * tumor.texture.at(p), 2);
            }
        }
        if self.portal.at(p).is_some() {
            return (self.tissue.portal_vein, 1);
        }
        if self.hepatic.at(p).is_some() {
            return (self.tissue.hepatic_vein, 1);
        }
        (base, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> SynthConfig {
        SynthConfig {
            cases: 6,
            seed: 3,
            in_plane_voxels: [40, 44],
            slices: [16, 20],
            in_plane_spacing_mm: [7.0, 8.0],
            slice_spacing_mm: [12.0, 14.0],
            ..SynthConfig::default()
        }
    }

    #[test]
    fn same_seed_same_case_other_seed_differs() {
        let cfg = tiny();
        let a = generate_case(&cfg, 1).unwrap();
        let b = generate_case(&cfg, 1).unwrap();
        assert_eq!(a.image, b.image);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.info, b.info);
        let c = generate_case(&SynthConfig { seed: 4, ..cfg }, 1).unwrap();
        assert_ne!(a.image.data, c.image.data);
    }

    #[test]
    fn labels_are_consistent_and_values_integer_hu() {
        let cfg = tiny();
        let mut with_tumor = 0;
        for i in 0..cfg.cases {
            let ph = generate_case(&cfg, i).unwrap();
            assert_eq!(ph.image.shape(), ph.labels.shape());
            assert_eq!(ph.image.affine, ph.labels.affine);
            assert!(ph.labels.data.iter().all(|&l| l <= 2));
            assert!(ph.image.data.iter().all(|&v| v.fract() == 0.0 && (-1024.0..=3071.0).contains(&v)));
            assert!(ph.info.liver_voxels > 100, "case {i}: {} liver voxels", ph.info.liver_voxels);
            if ph.info.tumors.is_empty() {
                assert_eq!(ph.info.tumor_voxels, 0);
            } else {
                with_tumor += 1;
            }
        }
        assert!((1..cfg.cases).contains(&with_tumor), "{with_tumor} of {} cases with tumors", cfg.cases);
    }

    #[test]
    fn liver_is_brighter_than_fat_and_darker_than_bone() {
        let ph = generate_case(&tiny(), 2).unwrap();
        let mean = |label: u8| {
            let v: Vec<f32> = ph.image.data.iter().zip(&ph.labels.data).filter(|(_, &l)| l == label).map(|(&v, _)| v).collect();
            v.iter().sum::<f32>() / v.len() as f32
        };
        let liver = mean(1);
        assert!((30.0..100.0).contains(&liver), "liver mean {liver}");
        let max = ph.image.data.iter().cloned().fold(f32::MIN, f32::max);
        let min = ph.image.data.iter().cloned().fold(f32::MAX, f32::min);
        assert!(max > 400.0 && min < -900.0, "range {min}..{max}");
    }

    #[test]
    fn every_orientation_keeps_world_positions() {
        // The patient centre is the mean world position of the voxels, whatever the order of
        // the stored axes; and the liver (patient's right, +x in RAS) lies at larger x.
        let cfg = tiny();
        for i in 0..ORIENTATIONS.len() {
            let ph = generate_case(&cfg, i).unwrap();
            let aff = ph.image.affine;
            let mut sum = [0.0f64; 3];
            let mut n = 0.0;
            let mut all = [0.0f64; 3];
            let mut count = 0.0;
            for (idx, &l) in ph.labels.data.indexed_iter() {
                let ijk = [idx.0 as f64, idx.1 as f64, idx.2 as f64];
                let w: [f64; 3] = [0, 1, 2].map(|r| (0..3).map(|c| aff[r][c] * ijk[c]).sum::<f64>() + aff[r][3]);
                for a in 0..3 {
                    all[a] += w[a];
                    if l >= 1 {
                        sum[a] += w[a];
                    }
                }
                count += 1.0;
                if l >= 1 {
                    n += 1.0;
                }
            }
            assert_eq!(crate::orient::orientation_code(&aff), ph.info.orientation);
            let centre = all.map(|v| v / count);
            let liver = sum.map(|v| v / n);
            assert!(liver[0] > centre[0] + 10.0, "{}: liver x {} centre x {}", ph.info.orientation, liver[0], centre[0]);
            for (a, spacing) in ph.image.spacing.iter().enumerate() {
                let col: f64 = aff.iter().take(3).map(|row| row[a] * row[a]).sum::<f64>().sqrt();
                assert!((col - spacing).abs() < 1e-9);
            }
        }
    }

    /// World (RAS) position of voxel `idx` under the affine `aff`.
    fn world(aff: &[[f64; 4]; 4], idx: (usize, usize, usize)) -> [f64; 3] {
        let ijk = [idx.0 as f64, idx.1 as f64, idx.2 as f64];
        [0, 1, 2].map(|r| (0..3).map(|c| aff[r][c] * ijk[c]).sum::<f64>() + aff[r][3])
    }

    #[test]
    fn the_liver_stays_under_the_dome_with_lung_and_heart_above_it() {
        // Noise-free quick-start-sized cases: every liver voxel lies below the right dome's
        // apex; above it, cases that reach into the chest hold lung air and unlabelled tissue
        // as bright as the liver (the heart).
        let cfg = SynthConfig { cases: 8, seed: 11, noise_sd_hu: [0.0, 0.0], ..SynthConfig::default() };
        let mut with_chest = 0;
        for i in 0..cfg.cases {
            let ph = generate_case(&cfg, i).unwrap();
            let aff = ph.image.affine;
            let (mut top, mut fov_top) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
            for (idx, &l) in ph.labels.data.indexed_iter() {
                let z = world(&aff, idx)[2];
                fov_top = fov_top.max(z);
                if l >= 1 {
                    top = top.max(z);
                }
            }
            // The grid's top voxel centre sits half a slice under the field of view's edge.
            let apex = fov_top + ph.info.spacing[2] / 2.0 - ph.info.chest_mm;
            assert!(top <= apex + 1e-6, "case {i}: liver up to z {top}, dome apex at {apex}");
            if ph.info.chest_mm < 60.0 {
                continue;
            }
            with_chest += 1;
            let (mut lung, mut bright) = (0usize, 0usize);
            // The middle of the axial plane (away from the body wall's muscle).
            let centre = world(&aff, (ph.info.shape[0] / 2, ph.info.shape[1] / 2, ph.info.shape[2] / 2));
            let half_width = ph.info.shape[0].max(ph.info.shape[1]) as f64 * ph.info.spacing[0] / 4.0;
            for ((idx, &v), &l) in ph.image.data.indexed_iter().zip(&ph.labels.data) {
                let w = world(&aff, idx);
                if w[2] > apex + 20.0 {
                    lung += usize::from(v < -700.0);
                    let middle = (w[0] - centre[0]).abs() < half_width && (w[1] - centre[1]).abs() < half_width;
                    bright += usize::from(middle && l == 0 && (ph.info.liver_hu - 25.0..ph.info.liver_hu + 25.0).contains(&(v as f64)));
                }
            }
            assert!(lung > 500 && bright > 50, "case {i}: {lung} lung voxels, {bright} liver-like ones above the dome");
        }
        assert!(with_chest >= 2, "only {with_chest} of {} cases reach 6 cm into the chest", cfg.cases);
    }

    #[test]
    fn enhanced_vessels_branch_inside_the_liver() {
        let cfg = SynthConfig { cases: 12, seed: 5, noise_sd_hu: [0.0, 0.0], ..tiny() };
        let mut checked = 0;
        for i in 0..cfg.cases {
            let ph = generate_case(&cfg, i).unwrap();
            if ph.info.phase != Phase::PortalVenous {
                continue;
            }
            let liver: Vec<f32> = ph.image.data.iter().zip(&ph.labels.data).filter(|(_, &l)| l == 1).map(|(&v, _)| v).collect();
            let vessel = liver.iter().filter(|&&v| v as f64 > ph.info.liver_hu + 25.0).count();
            let share = vessel as f64 / liver.len() as f64;
            assert!((0.005..0.2).contains(&share), "case {i}: {share:.4} of the liver brighter than its parenchyma");
            checked += 1;
        }
        assert!(checked >= 3);
    }

    #[test]
    fn lesions_follow_the_lits_like_distribution() {
        // The drawn lesions of many cases (no voxels needed: the manifest records them).
        let cfg = SynthConfig { cases: 60, seed: 2, ..tiny() };
        let infos: Vec<CaseInfo> = (0..cfg.cases).into_par_iter().map(|i| generate_case(&cfg, i).unwrap().info).collect();
        let lesions: Vec<&TumorInfo> = infos.iter().flat_map(|c| &c.tumors).collect();
        let small = lesions.iter().filter(|t| t.radius_mm < 10.0).count() as f64 / lesions.len() as f64;
        assert!(small > 0.4, "{small:.2} of the lesions under 2 cm");
        assert!(lesions.iter().any(|t| t.radius_mm > 25.0), "no lesion over 5 cm");
        assert!(infos.iter().any(|c| c.tumors.len() >= 5), "no case with five or more lesions");
        assert!(lesions.iter().any(|t| t.confluent), "no confluent lesion");
        for kind in [LesionKind::Hypodense, LesionKind::Rim, LesionKind::Hyperdense, LesionKind::Capsule] {
            assert!(lesions.iter().any(|t| t.kind == kind), "no {kind:?} lesion");
        }
        let hypo = lesions.iter().filter(|t| t.contrast_hu < 0.0).count() as f64 / lesions.len() as f64;
        assert!(hypo > 0.6, "{hypo:.2} hypodense");
    }

    #[test]
    fn written_files_read_back_exactly_and_rewrite_identically() {
        let cfg = SynthConfig { cases: 3, ..tiny() };
        let d = tempfile::tempdir().unwrap();
        let paths = write_dataset(d.path(), &cfg).unwrap();
        assert_eq!(paths.len(), 7);
        let manifest: SynthManifest = serde_json::from_slice(&fs::read(d.path().join(MANIFEST)).unwrap()).unwrap();
        assert_eq!(manifest.config, cfg);
        for i in 0..cfg.cases {
            let ph = generate_case(&cfg, i).unwrap();
            assert_eq!(manifest.cases[i], ph.info);
            let (img, geom) = crate::nifti::read_image(&d.path().join(format!("volume-{i}.nii.gz"))).unwrap();
            let (lab, _) = crate::nifti::read_labels(&d.path().join(format!("segmentation-{i}.nii.gz"))).unwrap();
            assert_eq!(img.data, ph.image.data, "case {i}");
            assert_eq!(lab.data, ph.labels.data, "case {i}");
            for r in 0..4 {
                for c in 0..4 {
                    assert!((geom.affine[r][c] - ph.image.affine[r][c]).abs() < 1e-4, "case {i} affine");
                }
            }
        }
        let found = crate::dataset::discover(d.path()).unwrap();
        assert_eq!(found.ids(), vec![0, 1, 2]);
        let before: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
        write_dataset(d.path(), &cfg).unwrap();
        let after: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
        assert!(before == after, "rewriting changed bytes");
    }

    #[test]
    fn a_folder_with_other_files_is_refused() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("volume-7.nii.gz"), b"old").unwrap();
        let cfg = SynthConfig { cases: 2, ..tiny() };
        let e = write_dataset(d.path(), &cfg).unwrap_err().to_string();
        assert!(e.contains("volume-7.nii.gz") && e.contains("empty or new folder"), "{e}");
        assert!(!d.path().join("volume-0.nii.gz").exists());
    }

    #[test]
    fn bad_config_names_the_field() {
        let cfg = SynthConfig { slices: [30, 20], ..SynthConfig::default() };
        let e = generate_case(&cfg, 0).unwrap_err().to_string();
        assert!(e.contains("slices"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let e = write_dataset(d.path(), &SynthConfig { cases: 0, ..tiny() }).unwrap_err().to_string();
        assert!(e.contains("cases"), "{e}");
        let cfg = SynthConfig { noise_sd_hu: [f64::NAN, 1.0], ..SynthConfig::default() };
        assert!(generate_case(&cfg, 0).unwrap_err().to_string().contains("noise_sd_hu"));
    }
}
