//! `lits preprocess`: a dataset folder into a cache of preprocessed cases.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lits_data::cache::{self, Event};
use lits_data::preprocess::PreprocessConfig;

/// Arguments of `lits preprocess`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dataset folder: LiTS layout (volume-N.nii[.gz], segmentation-N.nii[.gz]) or MSD Task03
    /// (imagesTr/, labelsTr/).
    #[arg(long)]
    data: PathBuf,
    /// Preprocessing config (JSON), e.g. {"mode": "spacing", "target_spacing": [1.5, 1.5, 1.5]}
    /// or {"mode": "mlfcore"}. Default: spacing mode at the dataset's median spacing with
    /// nnU-Net's CT normalisation.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Cache folder to write (created if missing); re-running redoes only what changed.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
            PreprocessConfig::from_json(&text, path)?
        }
        None => PreprocessConfig::default(),
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("preprocess {bar:30} {pos}/{len} cases [{elapsed_precise} < {eta}]").expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let report = cache::build(&args.data, &cfg, &args.out, &|event| match event {
        Event::Start { cases } => bar.set_length(cases as u64),
        Event::Case { .. } => bar.inc(1),
    })?;
    bar.finish_and_clear();
    for failure in &report.failed {
        eprintln!("error: {failure}");
    }
    println!(
        "preprocess: {} processed, {} unchanged, {} removed, {} failed; cache in {}",
        report.processed.len(),
        report.unchanged.len(),
        report.removed.len(),
        report.failed.len(),
        args.out.display()
    );
    Ok(if report.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
