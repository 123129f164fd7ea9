use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use lits_data::atomic::write_atomic;
use lits_eval::evaluate::{evaluate, CaseReport};
use lits_infer::evaluate::evaluate_run;
use lits_infer::predict::PredictOptions;
use lits_train::memory;

/// Arguments of `lits evaluate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder of predicted label maps: `segmentation-N`, `volume-N` or `liver_N`
    /// `.nii[.gz]`.
    #[arg(long, required_unless_present = "run", requires = "reference")]
    pred: Option<PathBuf>,
    /// Folder of reference label maps: `segmentation-N.nii[.gz]` (LiTS, also in direct
    /// subfolders) or `liver_N.nii[.gz]` (MSD, also in `labelsTr/`).
    #[arg(long = "ref", required_unless_present = "run", requires = "pred")]
    reference: Option<PathBuf>,
    /// Instead of --pred and --ref: segment the held-out cases of this run directory
    /// (`val` and `test` of its split.json, scans from the dataset in its plans.json) with
    /// its model, then score them.
    #[arg(long, conflicts_with_all = ["pred", "reference"])]
    run: Option<PathBuf>,
    /// With --run: the folder for the masks (default RUN_DIR/evaluation).
    #[arg(long, requires = "run")]
    out: Option<PathBuf>,
    /// With --run: the device to segment on (`cpu`, `cuda`, `cuda:N`). Default: the run's
    /// device when this machine has it, else the CPU.
    #[arg(long, requires = "run")]
    device: Option<String>,
    /// Write every case's metrics and the summaries as JSON (keys in docs/evaluate.md).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write one row per case and structure as CSV (columns in docs/evaluate.md).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write a box plot of per-case Dice by structure as PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// An output file must be creatable: its folder must exist (checked before the scoring,
/// which can take minutes).
fn check_output(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!("{}: the folder {} does not exist", path.display(), dir.display());
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    for p in [&args.json, &args.csv, &args.plot].into_iter().flatten() {
        check_output(p)?;
    }
    let scored = |c: &CaseReport| match &c.error {
        None => eprintln!("case {}: scored", c.id),
        Some(e) => eprintln!("case {}: not scored: {e}", c.id),
    };
    let report = match (&args.run, &args.pred, &args.reference) {
        (Some(run), _, _) => {
            let out = args.out.clone().unwrap_or_else(|| run.join("evaluation"));
            evaluate_run(run, &out, &PredictOptions::default(), args.device.as_deref(), |c, p| {
                if let Some(p) = p {
                    let peak = memory::describe(p.peak_memory);
                    eprintln!("case {}: segmented -> {} (peak resident memory {peak})", c.id, p.mask.display());
                }
                scored(c);
            })?
        }
        (None, Some(pred), Some(reference)) => evaluate(pred, reference, scored)?,
        _ => bail!("give --pred DIR and --ref DIR, or --run RUN_DIR"),
    };
    print!("{}", report.to_table());
    if let Some(p) = &args.json {
        let mut v = serde_json::to_value(&report)?;
        v["lits_version"] = env!("CARGO_PKG_VERSION").into();
        write_atomic(p, serde_json::to_string_pretty(&v)?.as_bytes()).context("writing the JSON report")?;
    }
    if let Some(p) = &args.csv {
        write_atomic(p, report.to_csv()?.as_bytes()).context("writing the CSV report")?;
    }
    if let Some(p) = &args.plot {
        report.dice_box_plot().save_png(p).context("writing the box plot")?;
    }
    let failed = report.summary.cases_failed;
    if failed > 0 {
        eprintln!("error: {failed} of {} cases could not be scored", report.cases.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
