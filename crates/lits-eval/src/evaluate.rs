//! Scoring predicted label maps against references the way the LiTS benchmark does
//! (Bilic et al., "The Liver Tumor Segmentation Benchmark (LiTS)", Medical Image Analysis
//! 84, 2023), plus the per-class IoU of the original project so the numbers compare with
//! its table.
//!
//! Two structures are scored per case: liver = label ≥ 1 (the tumor is part of the liver)
//! and tumor = label 2. For each: Dice, Jaccard, VOE = 1 − Jaccard, RVD = (|P| − |R|)/|R|,
//! and the surface distances ASSD, RMSD, MSD (Hausdorff) and HD95 in mm with the
//! reference's voxel spacing ([`lits_eval::distance`], equal to `medpy.metric.binary`).
//!
//! Empty masks (the [`Empty`] flag says which case applies):
//! - both empty: Dice 1, Jaccard 1, VOE 0, RVD 0, all distances 0 (nothing to find, nothing
//!   found: full agreement, as medpy's `dc` and `jc` also give 1);
//! - prediction empty only: Dice 0, Jaccard 0, VOE 1, RVD −1, distances `None`;
//! - reference empty only: Dice 0, Jaccard 0, VOE 1, RVD `None` (division by zero),
//!   distances `None`.
//!
//! `None` is `null` in JSON and an empty field in CSV; summaries average the cases where a
//! metric has a value and say how many those are.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::distance::{surface_distances, SurfaceDistances};
use crate::plot::BoxPlot;
use lits_data::dataset::{self, CaseName};
use lits_data::nifti::read_labels;
use lits_data::{Error, Labels, Result};
use ndarray::Array3;
use serde::Serialize;

use crate::metrics::{confusion, iou, Confusion};

/// Label values of a LiTS segmentation.
const CLASSES: usize = 3;

/// A structure scored in each case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Structure {
    /// Label ≥ 1: liver with its tumors.
    Liver,
    /// Label 2.
    Tumor,
}

impl Structure {
    /// Both, in report order.
    pub const ALL: [Structure; 2] = [Structure::Liver, Structure::Tumor];

    /// Whether voxels with `label` belong to the structure.
    pub fn contains(self, label: u8) -> bool {
        match self {
            Structure::Liver => label >= 1,
            Structure::Tumor => label == 2,
        }
    }

    /// Lower-case name, as in JSON and CSV.
    pub fn name(self) -> &'static str {
        match self {
            Structure::Liver => "liver",
            Structure::Tumor => "tumor",
        }
    }

    /// Dice of the structure from a 3-class confusion table; `None` when it is in neither
    /// volume.
    pub fn dice(self, c: &Confusion) -> Option<f64> {
        let (i, p, r) = self.counts(c);
        (p + r > 0).then(|| (2 * i) as f64 / (p + r) as f64)
    }

    /// Overlap counts of the structure from a 3-class confusion table:
    /// (intersection, predicted voxels, reference voxels).
    pub fn counts(self, c: &Confusion) -> (u64, u64, u64) {
        let labels: &[usize] = match self {
            Structure::Liver => &[1, 2],
            Structure::Tumor => &[2],
        };
        let intersection = labels.iter().flat_map(|&r| labels.iter().map(move |&p| (r, p))).map(|(r, p)| c.count(r, p)).sum();
        let pred = labels.iter().flat_map(|&p| (0..CLASSES).map(move |r| c.count(r, p))).sum();
        let reference = labels.iter().flat_map(|&r| (0..CLASSES).map(move |p| c.count(r, p))).sum();
        (intersection, pred, reference)
    }
}

/// Which masks of a structure are empty; decides the values documented in the module
/// header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Empty {
    /// Neither: every metric is computed.
    None,
    /// Both prediction and reference.
    Both,
    /// The prediction only.
    Prediction,
    /// The reference only.
    Reference,
}

/// The LiTS metrics of one structure in one case. Distances in mm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scores {
    /// 2|P∩R| / (|P| + |R|) (medpy `dc`).
    pub dice: f64,
    /// |P∩R| / |P∪R| (medpy `jc`).
    pub jaccard: f64,
    /// Volumetric overlap error, 1 − Jaccard.
    pub voe: f64,
    /// Relative volume difference (|P| − |R|) / |R| (medpy `ravd`); signed.
    pub rvd: Option<f64>,
    /// Average symmetric surface distance (medpy `assd`).
    pub assd: Option<f64>,
    /// Root-mean-square symmetric surface distance.
    pub rmsd: Option<f64>,
    /// Maximum symmetric surface distance, Hausdorff (medpy `hd`).
    pub msd: Option<f64>,
    /// 95th percentile Hausdorff distance (medpy `hd95`).
    pub hd95: Option<f64>,
    /// |P∩R| in voxels.
    pub intersection: u64,
    /// |P| in voxels.
    pub pred_voxels: u64,
    /// |R| in voxels.
    pub ref_voxels: u64,
    /// Which masks are empty.
    pub empty: Empty,
}

impl Scores {
    /// Scores from the overlap counts and the surface distances (which exist exactly when
    /// both masks are non-empty), with the empty-mask values of the module header.
    pub fn new(intersection: u64, pred_voxels: u64, ref_voxels: u64, surface: Option<SurfaceDistances>) -> Self {
        let empty = match (pred_voxels == 0, ref_voxels == 0) {
            (false, false) => Empty::None,
            (true, true) => Empty::Both,
            (true, false) => Empty::Prediction,
            (false, true) => Empty::Reference,
        };
        let (p, r, i) = (pred_voxels as f64, ref_voxels as f64, intersection as f64);
        let dice = if p + r == 0.0 { 1.0 } else { 2.0 * i / (p + r) };
        let union = p + r - i;
        let jaccard = if union == 0.0 { 1.0 } else { i / union };
        let rvd = if ref_voxels > 0 { Some((p - r) / r) } else { (pred_voxels == 0).then_some(0.0) };
        let surface = match empty {
            Empty::Both => Some(SurfaceDistances { assd: 0.0, rmsd: 0.0, msd: 0.0, hd95: 0.0 }),
            Empty::None => surface,
            Empty::Prediction | Empty::Reference => None,
        };
        Scores {
            dice,
            jaccard,
            voe: 1.0 - jaccard,
            rvd,
            assd: surface.map(|s| s.assd),
            rmsd: surface.map(|s| s.rmsd),
            msd: surface.map(|s| s.msd),
            hd95: surface.map(|s| s.hd95),
            intersection,
            pred_voxels,
            ref_voxels,
            empty,
        }
    }
}

/// The original project's IoU per class, on exclusive labels (its liver class is label 1
/// alone); `None` where the class is in neither volume.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassIou {
    /// Label 0.
    pub background: Option<f64>,
    /// Label 1.
    pub liver: Option<f64>,
    /// Label 2.
    pub tumor: Option<f64>,
}

/// Everything measured in one case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseScores {
    /// The reference's voxel size in mm, used for the distances.
    pub spacing: [f64; 3],
    /// Liver (label ≥ 1).
    pub liver: Scores,
    /// Tumor (label 2).
    pub tumor: Scores,
    /// The original project's per-class IoU of this case.
    pub iou_original: ClassIou,
}

impl CaseScores {
    /// The scores of `s`.
    pub fn of(&self, s: Structure) -> &Scores {
        match s {
            Structure::Liver => &self.liver,
            Structure::Tumor => &self.tumor,
        }
    }
}

/// Scores `pred` against `reference` with the reference's spacing. Labels must be 0..=2
/// and the shapes equal ([`check_pair`] tells, with messages fit for a user).
///
/// # Panics
/// If the shapes differ.
pub fn score_labels(pred: &Labels, reference: &Labels) -> CaseScores {
    assert_eq!(pred.shape(), reference.shape(), "prediction and reference shapes differ");
    let c = confusion(&pred.data.view(), &reference.data.view(), CLASSES);
    let scores = |s: Structure| {
        let (i, p, r) = s.counts(&c);
        let mask = |v: &Array3<u8>| v.mapv(|l| s.contains(l));
        let surface = if p > 0 && r > 0 {
            surface_distances(&mask(&pred.data).view(), &mask(&reference.data).view(), reference.spacing)
        } else {
            None
        };
        Scores::new(i, p, r, surface)
    };
    CaseScores {
        spacing: reference.spacing,
        liver: scores(Structure::Liver),
        tumor: scores(Structure::Tumor),
        iou_original: ClassIou { background: iou(&c, 0), liver: iou(&c, 1), tumor: iou(&c, 2) },
    }
}

/// Whether `pred` can be scored against `reference`: same shape, same affine (within
/// float32 storage precision), labels within 0..=2, and a reference voxel size (its
/// pixdim, which the distances are measured in) that is finite and positive. The error
/// names the offending file.
pub fn check_pair(pred: &Labels, pred_path: &Path, reference: &Labels, ref_path: &Path) -> Result<()> {
    if reference.spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(Error::invalid(
            ref_path,
            format!("voxel size {:?} mm (pixdim): surface distances need a finite, positive voxel size", reference.spacing),
        ));
    }
    if let Some(m) = lits_data::volume::grid_mismatch(reference, pred, "the reference's") {
        return Err(Error::invalid(pred_path, format!("{m} ({})", ref_path.display())));
    }
    for (labels, path) in [(pred, pred_path), (reference, ref_path)] {
        if let Some(m) = lits_data::volume::bad_label_values(labels) {
            return Err(Error::invalid(path, m));
        }
    }
    Ok(())
}

/// Reads both files (at the same time) and scores them.
pub fn score_files(pred_path: &Path, ref_path: &Path) -> Result<CaseScores> {
    let (pred, reference) = std::thread::scope(|s| {
        let p = s.spawn(|| read_labels(pred_path));
        let r = read_labels(ref_path);
        (p.join().expect("reading a label file does not panic"), r)
    });
    let (pred, reference) = (pred?.0, reference?.0);
    check_pair(&pred, pred_path, &reference, ref_path)?;
    Ok(score_labels(&pred, &reference))
}

/// Reference cases and the prediction found for each.
#[derive(Debug, Clone, PartialEq)]
pub struct Pairing {
    /// `(id, reference, predictions)` in id order; no prediction means it is missing, two
    /// or more that the choice is ambiguous.
    pub cases: Vec<(u32, PathBuf, Vec<PathBuf>)>,
    /// Predictions whose id no reference has.
    pub unmatched_predictions: Vec<PathBuf>,
}

/// The case id of a reference (`segmentation-N`, `liver_N`) or prediction (those, or
/// `volume-N` after the scan) file; a case name whose number is not one is an error.
fn case_id(path: &Path, reference: bool) -> Result<Option<u32>> {
    Ok(match dataset::parse_case_name(path)? {
        Some((CaseName::Volume, _)) if reference => None,
        Some((_, id)) => Some(id),
        None => None,
    })
}

/// Matches the label files of `pred_dir` to those of `ref_dir` by case id.
///
/// References are `segmentation-N.nii[.gz]` in `ref_dir` or its direct subfolders (LiTS,
/// where `volume-N` scans may sit beside them and are skipped), or `liver_N.nii[.gz]` in
/// `ref_dir` or in its `labelsTr` (MSD Task03). Predictions are `segmentation-N`,
/// `volume-N` or `liver_N` directly in `pred_dir`. Two references with one id, or none at
/// all, is an error.
pub fn pair_files(pred_dir: &Path, ref_dir: &Path) -> Result<Pairing> {
    let labels_tr = ref_dir.join("labelsTr");
    let ref_folders = if labels_tr.is_dir() {
        vec![labels_tr]
    } else {
        let mut v = vec![ref_dir.to_path_buf()];
        v.extend(dataset::entries(ref_dir)?.into_iter().filter(|p| p.is_dir()));
        v
    };
    let mut refs: BTreeMap<u32, PathBuf> = BTreeMap::new();
    for folder in &ref_folders {
        for p in dataset::entries(folder)? {
            let Some(id) = case_id(&p, true)? else { continue };
            if let Some(first) = refs.get(&id) {
                return Err(Error::invalid(&p, format!("a second reference for case {id}, beside {}", first.display())));
            }
            refs.insert(id, p);
        }
    }
    if refs.is_empty() {
        return Err(Error::invalid(
            ref_dir,
            "no reference label files: expected segmentation-N.nii[.gz] (LiTS) or liver_N.nii[.gz] (MSD, also in labelsTr/)",
        ));
    }
    if !pred_dir.is_dir() {
        return Err(Error::invalid(pred_dir, "is not a folder"));
    }
    let mut preds: BTreeMap<u32, Vec<PathBuf>> = BTreeMap::new();
    for p in dataset::entries(pred_dir)? {
        if let Some(id) = case_id(&p, false)? {
            preds.entry(id).or_default().push(p);
        }
    }
    let cases = refs.iter().map(|(&id, r)| (id, r.clone(), preds.get(&id).cloned().unwrap_or_default())).collect();
    let unmatched_predictions = preds.into_iter().filter(|(id, _)| !refs.contains_key(id)).flat_map(|(_, v)| v).collect();
    Ok(Pairing { cases, unmatched_predictions })
}

/// One reference case: its scores, or why it could not be scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseReport {
    /// The case number of the file names.
    pub id: u32,
    /// The reference file.
    pub reference: PathBuf,
    /// The prediction file, if one was found.
    pub prediction: Option<PathBuf>,
    /// The scores (absent when `error` is set).
    #[serde(flatten)]
    pub scores: Option<CaseScores>,
    /// Why the case was not scored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Scores one matched case, turning every failure into the case's error.
pub fn score_case(id: u32, reference: &Path, predictions: &[PathBuf]) -> CaseReport {
    let mut report = CaseReport { id, reference: reference.to_path_buf(), prediction: None, scores: None, error: None };
    match predictions {
        [] => {
            report.error = Some(format!(
                "{}: no prediction for case {id} (expected segmentation-{id}, volume-{id} or liver_{id} .nii[.gz])",
                reference.display()
            ))
        }
        [p] => {
            report.prediction = Some(p.clone());
            match score_files(p, reference) {
                Ok(s) => report.scores = Some(s),
                Err(e) => report.error = Some(e.to_string()),
            }
        }
        many => {
            let names: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
            report.error = Some(format!("case {id} has {} predictions, keep one: {}", many.len(), names.join(", ")));
        }
    }
    report
}

/// Mean of the values present, with their count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mean {
    /// The mean; `None` when no case has a value.
    pub mean: Option<f64>,
    /// Cases averaged.
    pub n: usize,
}

impl Mean {
    fn of(values: impl Iterator<Item = Option<f64>>) -> Mean {
        let v: Vec<f64> = values.flatten().collect();
        Mean { mean: (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64), n: v.len() }
    }
}

/// LiTS summary of one structure over the scored cases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StructureSummary {
    /// Mean of the per-case Dice (LiTS "Dice per case"). A case whose reference and
    /// prediction both lack the structure scores 1 here.
    pub dice_per_case: Mean,
    /// Mean of the per-case Dice over the cases whose reference has the structure: a
    /// tumor-free case predicted empty adds nothing, a model that never finds the
    /// structure scores 0.
    pub dice_per_case_present: Mean,
    /// The lowest Dice of a case whose reference has the structure.
    pub dice_min_present: Option<f64>,
    /// 2ΣI / Σ(|P| + |R|) over all cases, as if they were one volume (LiTS "Dice global");
    /// 1 when every mask is empty.
    pub dice_global: Option<f64>,
    /// Mean Jaccard.
    pub jaccard: Mean,
    /// Mean VOE.
    pub voe: Mean,
    /// Mean RVD.
    pub rvd: Mean,
    /// Mean ASSD (mm).
    pub assd: Mean,
    /// Mean RMSD (mm).
    pub rmsd: Mean,
    /// Mean MSD (mm).
    pub msd: Mean,
    /// Mean HD95 (mm).
    pub hd95: Mean,
    /// Cases whose reference lacks the structure.
    pub reference_empty: usize,
}

impl StructureSummary {
    fn of<'a>(scores: impl Iterator<Item = &'a Scores> + Clone) -> Self {
        let m = |f: fn(&Scores) -> Option<f64>| Mean::of(scores.clone().map(f));
        let (i, s) = scores.clone().fold((0u64, 0u64), |(i, s), x| (i + x.intersection, s + x.pred_voxels + x.ref_voxels));
        StructureSummary {
            dice_per_case: m(|x| Some(x.dice)),
            dice_per_case_present: m(|x| (x.ref_voxels > 0).then_some(x.dice)),
            dice_min_present: scores.clone().filter(|x| x.ref_voxels > 0).map(|x| x.dice).reduce(f64::min),
            dice_global: scores.clone().next().map(|_| if s == 0 { 1.0 } else { 2.0 * i as f64 / s as f64 }),
            jaccard: m(|x| Some(x.jaccard)),
            voe: m(|x| Some(x.voe)),
            rvd: m(|x| x.rvd),
            assd: m(|x| x.assd),
            rmsd: m(|x| x.rmsd),
            msd: m(|x| x.msd),
            hd95: m(|x| x.hd95),
            reference_empty: scores.filter(|x| x.ref_voxels == 0).count(),
        }
    }
}

/// The original project's table: per-class IoU averaged over cases (a class absent from
/// both volumes of a case is left out of that class's mean), and the mean over classes.
/// The original averaged over 128³ batches of its preprocessed cubes; here a case is the
/// whole volume.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IouSummary {
    /// Label 0.
    pub background: Option<f64>,
    /// Label 1.
    pub liver: Option<f64>,
    /// Label 2.
    pub tumor: Option<f64>,
    /// Mean of the three that have a value.
    pub mean: Option<f64>,
}

/// The summaries of all scored cases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Cases scored.
    pub cases_scored: usize,
    /// Cases that could not be scored (see their errors).
    pub cases_failed: usize,
    /// Liver (label ≥ 1).
    pub liver: StructureSummary,
    /// Tumor (label 2).
    pub tumor: StructureSummary,
    /// The original project's IoU per class.
    pub iou_original: IouSummary,
}

/// A whole evaluation: every reference case, the summary, and stray predictions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Folder of the predictions.
    pub pred_dir: PathBuf,
    /// Folder of the references.
    pub ref_dir: PathBuf,
    /// One entry per reference case, in id order, scored or with its error.
    pub cases: Vec<CaseReport>,
    /// Predictions whose id no reference has (not scored).
    pub unmatched_predictions: Vec<PathBuf>,
    /// Summaries over the scored cases.
    pub summary: Summary,
}

/// Matches `pred_dir` with `ref_dir` ([`pair_files`]) and scores every case, calling
/// `progress` after each. A case that cannot be scored gets its error and the others go
/// on; only an unusable folder is an `Err`.
pub fn evaluate(pred_dir: &Path, ref_dir: &Path, mut progress: impl FnMut(&CaseReport)) -> Result<Report> {
    let pairing = pair_files(pred_dir, ref_dir)?;
    let cases: Vec<CaseReport> = pairing
        .cases
        .iter()
        .map(|(id, r, p)| {
            let c = score_case(*id, r, p);
            progress(&c);
            c
        })
        .collect();
    Ok(Report::new(pred_dir, ref_dir, cases, pairing.unmatched_predictions))
}

impl Report {
    /// A report of these cases with its summary.
    pub fn new(pred_dir: &Path, ref_dir: &Path, cases: Vec<CaseReport>, unmatched_predictions: Vec<PathBuf>) -> Self {
        let scored: Vec<&CaseScores> = cases.iter().filter_map(|c| c.scores.as_ref()).collect();
        let iou = |f: fn(&ClassIou) -> Option<f64>| Mean::of(scored.iter().map(|s| f(&s.iou_original))).mean;
        let (background, liver, tumor) = (iou(|c| c.background), iou(|c| c.liver), iou(|c| c.tumor));
        let summary = Summary {
            cases_scored: scored.len(),
            cases_failed: cases.len() - scored.len(),
            liver: StructureSummary::of(scored.iter().map(|s| &s.liver)),
            tumor: StructureSummary::of(scored.iter().map(|s| &s.tumor)),
            iou_original: IouSummary { background, liver, tumor, mean: Mean::of([background, liver, tumor].into_iter()).mean },
        };
        Report { pred_dir: pred_dir.to_path_buf(), ref_dir: ref_dir.to_path_buf(), cases, unmatched_predictions, summary }
    }

    /// Cases with an error.
    pub fn failures(&self) -> impl Iterator<Item = &CaseReport> {
        self.cases.iter().filter(|c| c.error.is_some())
    }

    /// One CSV row per case and structure, and one per failed case (its `error` set).
    /// Columns: `id,structure,dice,jaccard,voe,rvd,assd,rmsd,msd,hd95,iou_original,
    /// pred_voxels,ref_voxels,empty,prediction,reference,error`; a missing value is an empty
    /// field.
    pub fn to_csv(&self) -> Result<String> {
        let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
        let bad = |e: csv::Error| Error::invalid(&self.pred_dir, format!("cannot write the CSV report: {e}"));
        w.write_record([
            "id",
            "structure",
            "dice",
            "jaccard",
            "voe",
            "rvd",
            "assd",
            "rmsd",
            "msd",
            "hd95",
            "iou_original",
            "pred_voxels",
            "ref_voxels",
            "empty",
            "prediction",
            "reference",
            "error",
        ])
        .map_err(bad)?;
        let num = |v: Option<f64>| v.map(|x| format!("{x}")).unwrap_or_default();
        let path = |p: Option<&PathBuf>| p.map(|p| p.display().to_string()).unwrap_or_default();
        for c in &self.cases {
            let (pred, reference) = (path(c.prediction.as_ref()), path(Some(&c.reference)));
            let Some(s) = &c.scores else {
                let mut row = vec![c.id.to_string()];
                row.extend(std::iter::repeat_n(String::new(), 13));
                row.extend([pred, reference, c.error.clone().unwrap_or_default()]);
                w.write_record(&row).map_err(bad)?;
                continue;
            };
            for st in Structure::ALL {
                let x = s.of(st);
                let iou = match st {
                    Structure::Liver => s.iou_original.liver,
                    Structure::Tumor => s.iou_original.tumor,
                };
                let empty = serde_json::to_value(x.empty).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
                w.write_record([
                    c.id.to_string(),
                    st.name().to_string(),
                    x.dice.to_string(),
                    x.jaccard.to_string(),
                    x.voe.to_string(),
                    num(x.rvd),
                    num(x.assd),
                    num(x.rmsd),
                    num(x.msd),
                    num(x.hd95),
                    num(iou),
                    x.pred_voxels.to_string(),
                    x.ref_voxels.to_string(),
                    empty,
                    pred.clone(),
                    reference.clone(),
                    String::new(),
                ])
                .map_err(bad)?;
            }
        }
        let bytes = w.into_inner().map_err(|e| Error::invalid(&self.pred_dir, format!("cannot write the CSV report: {}", e.error())))?;
        String::from_utf8(bytes).map_err(|e| Error::invalid(&self.pred_dir, e.to_string()))
    }

    /// A table for the terminal: per case and structure, then the summaries and errors.
    pub fn to_table(&self) -> String {
        let mut t = String::new();
        let f = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            t,
            "{:>6}  {:<6} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}  empty",
            "case", "", "Dice", "Jaccard", "VOE", "RVD", "ASSD mm", "RMSD mm", "MSD mm", "HD95 mm"
        );
        for c in &self.cases {
            let Some(s) = &c.scores else { continue };
            for (n, st) in Structure::ALL.into_iter().enumerate() {
                let x = s.of(st);
                let id = if n == 0 { c.id.to_string() } else { String::new() };
                let empty = match x.empty {
                    Empty::None => "",
                    Empty::Both => "both",
                    Empty::Prediction => "prediction",
                    Empty::Reference => "reference",
                };
                let _ = writeln!(
                    t,
                    "{id:>6}  {:<6} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}  {empty}",
                    st.name(),
                    f(Some(x.dice)),
                    f(Some(x.jaccard)),
                    f(Some(x.voe)),
                    f(x.rvd),
                    f(x.assd),
                    f(x.rmsd),
                    f(x.msd),
                    f(x.hd95),
                );
            }
        }
        let s = &self.summary;
        let _ = writeln!(t, "\n{} cases scored, {} failed", s.cases_scored, s.cases_failed);
        let _ = writeln!(
            t,
            "{:<6} {:>9} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "", "Dice/case", "Dice glob", "VOE", "RVD", "ASSD mm", "RMSD mm", "MSD mm", "HD95 mm"
        );
        for (name, x) in [("liver", &s.liver), ("tumor", &s.tumor)] {
            let _ = writeln!(
                t,
                "{name:<6} {:>9} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
                f(x.dice_per_case.mean),
                f(x.dice_global),
                f(x.voe.mean),
                f(x.rvd.mean),
                f(x.assd.mean),
                f(x.rmsd.mean),
                f(x.msd.mean),
                f(x.hd95.mean),
            );
        }
        for (name, x) in [("liver", &s.liver), ("tumor", &s.tumor)] {
            let _ = writeln!(
                t,
                "{name} Dice per case on the {} case(s) whose reference has {name}: {} (lowest {})",
                x.dice_per_case_present.n,
                f(x.dice_per_case_present.mean),
                f(x.dice_min_present)
            );
        }
        let i = &s.iou_original;
        let _ = writeln!(
            t,
            "IoU per class as in the original: background {}  liver {}  tumor {}  mean {}",
            f(i.background),
            f(i.liver),
            f(i.tumor),
            f(i.mean)
        );
        for c in self.failures() {
            let _ = writeln!(t, "error: case {}: {}", c.id, c.error.as_deref().unwrap_or(""));
        }
        for p in &self.unmatched_predictions {
            let _ = writeln!(t, "warning: {}: no reference with this case number; not scored", p.display());
        }
        t
    }

    /// Box plot of per-case Dice by structure.
    pub fn dice_box_plot(&self) -> BoxPlot {
        let dice = |st: Structure| self.cases.iter().filter_map(|c| c.scores.as_ref()).map(|s| s.of(st).dice).collect();
        BoxPlot {
            title: format!("Dice per case ({} cases)", self.summary.cases_scored),
            y_label: "Dice".into(),
            groups: Structure::ALL.iter().map(|&st| (st.name().to_string(), dice(st))).collect(),
            y_range: Some((0.0, 1.0)),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lits_data::Volume;

    fn labels(v: &[u8], dim: (usize, usize, usize), spacing: [f64; 3]) -> Labels {
        Volume::with_spacing(Array3::from_shape_vec(dim, v.to_vec()).unwrap(), spacing)
    }

    #[test]
    fn overlap_by_hand() {
        // Reference liver {0,1,2,3} with tumor {2,3}; prediction liver {1,2,3,4}, tumor {3,4}.
        let r = labels(&[1, 1, 2, 2, 0, 0], (1, 1, 6), [1.0, 1.0, 2.0]);
        let p = labels(&[0, 1, 1, 2, 2, 0], (1, 1, 6), [1.0, 1.0, 2.0]);
        let s = score_labels(&p, &r);
        assert_eq!((s.liver.intersection, s.liver.pred_voxels, s.liver.ref_voxels), (3, 4, 4));
        assert_eq!(s.liver.dice, 6.0 / 8.0);
        assert_eq!(s.liver.jaccard, 3.0 / 5.0);
        assert!((s.liver.voe - 0.4).abs() < 1e-15);
        assert_eq!(s.liver.rvd, Some(0.0));
        assert_eq!((s.tumor.intersection, s.tumor.pred_voxels, s.tumor.ref_voxels), (1, 2, 2));
        assert_eq!(s.tumor.dice, 0.5);
        // Tumor surfaces are both whole masks: {4,6} mm vs {6,8} mm along the line.
        // Distances: 4→6 2, 6→6 0, 6→6 0, 8→6 2, mean 1, max 2.
        assert_eq!(s.tumor.assd, Some(1.0));
        assert_eq!(s.tumor.msd, Some(2.0));
        // Exclusive labels: liver 1 = {0,1} vs {1,2}: IoU 1/3.
        assert_eq!(s.iou_original.liver, Some(1.0 / 3.0));
        assert_eq!(s.spacing, [1.0, 1.0, 2.0]);
    }

    #[test]
    fn empty_masks_take_the_documented_values() {
        let both = Scores::new(0, 0, 0, None);
        assert_eq!((both.dice, both.jaccard, both.voe, both.rvd, both.msd, both.empty), (1.0, 1.0, 0.0, Some(0.0), Some(0.0), Empty::Both));
        let missed = Scores::new(0, 0, 10, None);
        assert_eq!((missed.dice, missed.voe, missed.rvd, missed.assd, missed.empty), (0.0, 1.0, Some(-1.0), None, Empty::Prediction));
        let spurious = Scores::new(0, 5, 0, None);
        assert_eq!((spurious.dice, spurious.rvd, spurious.hd95, spurious.empty), (0.0, None, None, Empty::Reference));
        let r = labels(&[1, 1, 0, 0], (1, 2, 2), [1.0; 3]);
        let s = score_labels(&r, &r);
        assert_eq!(s.tumor.empty, Empty::Both);
        assert_eq!(s.iou_original.tumor, None);
        assert_eq!(s.liver.msd, Some(0.0));
    }

    #[test]
    fn pair_checks_name_the_file() {
        let r = labels(&[0; 8], (2, 2, 2), [1.0; 3]);
        let other_shape = labels(&[0; 8], (2, 4, 1), [1.0; 3]);
        let e = check_pair(&other_shape, Path::new("p.nii.gz"), &r, Path::new("r.nii.gz")).unwrap_err().to_string();
        assert!(e.starts_with("p.nii.gz: shape [2, 4, 1]") && e.contains("r.nii.gz"), "{e}");
        let mut moved = r.clone();
        moved.affine[0][3] = 5.0;
        let e = check_pair(&moved, Path::new("p.nii.gz"), &r, Path::new("r.nii.gz")).unwrap_err().to_string();
        assert!(e.contains("affine"), "{e}");
        let mut nearly = r.clone();
        nearly.affine[0][0] = 1.0 + 1e-6;
        assert!(check_pair(&nearly, Path::new("p"), &r, Path::new("r")).is_ok());
        let mut bad = r.clone();
        bad.data[[1, 1, 1]] = 3;
        let e = check_pair(&r, Path::new("p"), &bad, Path::new("r.nii")).unwrap_err().to_string();
        assert!(e.starts_with("r.nii: holds label values outside 0..2") && e.contains(": 3 ("), "{e}");
    }

    #[test]
    fn case_ids_from_lits_and_msd_names() {
        assert_eq!(case_id(Path::new("a/segmentation-17.nii.gz"), true).unwrap(), Some(17));
        assert_eq!(case_id(Path::new("liver_3.nii"), true).unwrap(), Some(3));
        assert_eq!(case_id(Path::new("volume-4.nii.gz"), true).unwrap(), None);
        assert_eq!(case_id(Path::new("volume-4.nii.gz"), false).unwrap(), Some(4));
        // As a dataset does: a case file whose number is not one is refused, naming it.
        let e = case_id(Path::new("segmentation-x.nii"), false).unwrap_err().to_string();
        assert!(e.contains("segmentation-x.nii") && e.contains("not a number"), "{e}");
        assert_eq!(case_id(Path::new("segmentation-1.png"), false).unwrap(), None);
    }

    #[test]
    fn summary_averages_present_values_and_pools_global_dice() {
        let a = Scores::new(8, 10, 10, Some(SurfaceDistances { assd: 1.0, rmsd: 1.0, msd: 2.0, hd95: 2.0 }));
        let b = Scores::new(0, 0, 30, None);
        let s = StructureSummary::of([&a, &b].into_iter());
        assert_eq!(s.dice_per_case, Mean { mean: Some(0.4), n: 2 });
        assert_eq!(s.dice_global, Some(16.0 / 50.0));
        assert_eq!(s.assd, Mean { mean: Some(1.0), n: 1 });
        assert_eq!(s.rvd.n, 2);
        assert_eq!(s.reference_empty, 0);
        assert_eq!(StructureSummary::of([].into_iter()).dice_global, None);
    }

    #[test]
    fn cases_without_the_structure_do_not_inflate_its_present_dice() {
        // A tumor-free case predicted empty (Dice 1), one found well, one missed.
        let free = Scores::new(0, 0, 0, None);
        let found = Scores::new(8, 10, 10, Some(SurfaceDistances { assd: 1.0, rmsd: 1.0, msd: 2.0, hd95: 2.0 }));
        let missed = Scores::new(0, 0, 30, None);
        let s = StructureSummary::of([&free, &found, &missed].into_iter());
        assert_eq!(s.dice_per_case.mean, Some(1.8 / 3.0));
        assert_eq!(s.dice_per_case_present, Mean { mean: Some(0.4), n: 2 });
        assert_eq!(s.dice_min_present, Some(0.0));
        assert_eq!(StructureSummary::of([&free].into_iter()).dice_min_present, None);
    }

    #[test]
    fn csv_fields_with_commas_quotes_and_line_breaks_read_back() {
        let error = "x.nii: bad, \"very\"\nbad";
        let case = CaseReport {
            id: 7,
            reference: PathBuf::from("ref/segmentation-7.nii"),
            prediction: None,
            scores: None,
            error: Some(error.into()),
        };
        let report = Report::new(Path::new("p,red"), Path::new("ref"), vec![case], Vec::new());
        let text = report.to_csv().unwrap();
        let mut r = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(r.headers().unwrap().len(), 17);
        let rows: Vec<csv::StringRecord> = r.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(&rows[0][0], "7");
        assert_eq!(&rows[0][15], "ref/segmentation-7.nii");
        assert_eq!(&rows[0][16], error);
    }
}
