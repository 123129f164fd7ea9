use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use lits_data::atomic::write_atomic;
use lits_model::evaluate::evaluate;

/// Arguments of `lits evaluate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder of predicted label maps: `segmentation-N`, `volume-N` or `liver_N`
    /// `.nii[.gz]`.
    #[arg(long)]
    pred: PathBuf,
    /// Folder of reference label maps: `segmentation-N.nii[.gz]` (LiTS, also in direct
    /// subfolders) or `liver_N.nii[.gz]` (MSD, also in `labelsTr/`).
    #[arg(long = "ref")]
    reference: PathBuf,
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
    let report = evaluate(&args.pred, &args.reference, |c| match &c.error {
        None => eprintln!("case {}: scored", c.id),
        Some(e) => eprintln!("case {}: not scored: {e}", c.id),
    })?;
    print!("{}", report.to_table());
    if let Some(p) = &args.json {
        let mut v = serde_json::to_value(&report)?;
        v["lits_version"] = env!("CARGO_PKG_VERSION").into();
        write_atomic(p, serde_json::to_string_pretty(&v)?.as_bytes()).context("writing the JSON report")?;
    }
    if let Some(p) = &args.csv {
        write_atomic(p, report.to_csv().as_bytes()).context("writing the CSV report")?;
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
