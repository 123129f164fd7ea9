//! Scoring a run on the cases it did not train on: its held-out cases (`val`, then `test`,
//! of `split.json`) are taken from the cases recorded in `plans.json`, segmented with
//! the run's model exactly as `lits predict` does, and scored against their reference
//! segmentations with the LiTS metrics ([`lits_eval::evaluate`]).

use std::path::Path;

use lits_data::dataset::{self, Case, Split};
use lits_eval::evaluate::{score_case, CaseReport, Report};

use crate::predict::{PredictOptions, Prediction, Predictor};
use lits_train::error::{Error, Result};
use lits_train::runlog::RunDir;

/// Segments every held-out case of the run in `run_dir` into `out_dir` (masks named as
/// `lits predict` names them) and scores each against its reference, calling `progress`
/// after each case with its report and, when it was segmented, the prediction; `device` as
/// for [`Predictor::from_run_on`]. A case that
/// cannot be segmented or scored gets its error and the others go on; only an unusable run
/// or dataset is an `Err`.
pub fn evaluate_run(
    run_dir: &Path,
    out_dir: &Path,
    opts: &PredictOptions,
    device: Option<&str>,
    mut progress: impl FnMut(&CaseReport, Option<&Prediction>),
) -> Result<Report> {
    let run = RunDir::new(run_dir);
    let split = Split::read(&run.split())?;
    let held_out: Vec<u32> = split.val.iter().chain(&split.test).copied().collect();
    if held_out.is_empty() {
        return Err(Error::invalid(run.split(), "holds no held-out case (`val` and `test` are empty)"));
    }
    let plan = lits_train::plan::read(&run.plans())?;
    let dataset_dir = plan.dataset.clone();
    // A record of before plans held their cases: the dataset folder is listed instead.
    let cases: Vec<Case> = if plan.is_complete() {
        held_out
            .iter()
            .map(|&id| {
                plan.case(id)
                    .map(|c| Case { id, image: c.image.clone(), label: Some(c.label.clone()) })
                    .ok_or_else(|| Error::invalid(run.plans(), format!("holds no case {id} of split.json")))
            })
            .collect::<Result<_>>()?
    } else {
        let ds = dataset::discover_images(&dataset_dir)?;
        ds.select(&held_out)?.into_iter().cloned().collect()
    };
    let predictor = Predictor::from_run_on(run_dir, device)?;
    predictor.check_options(opts)?;
    let failed = |id, reference: &Path, error: String| CaseReport {
        id,
        reference: reference.to_path_buf(),
        prediction: None,
        scores: None,
        error: Some(error),
    };
    let reports = cases
        .into_iter()
        .map(|case| {
            let (report, prediction) = match &case.label {
                None => {
                    let e = format!("{}: case {} has no reference segmentation", case.image.display(), case.id);
                    (failed(case.id, &case.image, e), None)
                }
                Some(reference) => match predictor.predict_file(&case.image, out_dir, opts) {
                    Ok(p) => (score_case(case.id, reference, std::slice::from_ref(&p.mask)), Some(p)),
                    Err(e) => (failed(case.id, reference, format!("not segmented: {e}")), None),
                },
            };
            progress(&report, prediction.as_ref());
            report
        })
        .collect();
    Ok(Report::new(out_dir, &dataset_dir, reports, Vec::new()))
}
