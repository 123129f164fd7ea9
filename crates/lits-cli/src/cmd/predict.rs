use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use lits_infer::predict::{PredictOptions, Predictor, Timings};
use lits_train::memory;

/// Arguments of `lits predict`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// NIfTI scans (`.nii`, `.nii.gz`) or folders of them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Folder for the masks (`volume-N` → `segmentation-N.nii.gz`, else `<stem>_seg.nii.gz`).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    model: Model,
    /// Write the network's argmax as it is (no largest-liver-component clean-up).
    #[arg(long)]
    no_postprocess: bool,
    /// Run the network on the stored voxels (no reorientation, resampling or normalisation).
    #[arg(long)]
    no_preprocess: bool,
    /// Also write float32 probabilities, `<mask stem>_prob<class>.nii.gz`.
    #[arg(long)]
    probabilities: bool,
    /// Average the softmax over the eight mirrorings of each window.
    #[arg(long)]
    tta: bool,
    /// Also write `<mask stem>_preview.png`: axial, coronal and sagittal slices through the
    /// liver, the mask over the CT in a soft-tissue window.
    #[arg(long)]
    preview: bool,
    /// Monte-Carlo dropout with N passes: the mask is the argmax of their mean softmax, and
    /// `<mask stem>_uncertainty.nii.gz` its predictive entropy in nats (float32).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    uncertainty: Option<u32>,
}

/// The trained model, as `predict` and `explain` take it.
#[derive(Debug, clap::Args)]
pub(crate) struct Model {
    /// Run directory of `lits train` (best weights, config, plans).
    #[arg(long, conflicts_with_all = ["weights", "config"], required_unless_present_all = ["weights", "config"])]
    run: Option<PathBuf>,
    /// Weights (`.safetensors`) instead of `--run`; needs `--config`.
    #[arg(long, requires = "config")]
    weights: Option<PathBuf>,
    /// Training config instead of `--run` (a `plans.json` beside it is used when present).
    #[arg(long, requires = "weights")]
    config: Option<PathBuf>,
    /// Device to run on (`cpu`, `cuda`, `cuda:N`). Default: the run's device when this
    /// machine has it, else the CPU.
    #[arg(long)]
    device: Option<String>,
}

impl Model {
    /// The model of `--run`, or of `--weights` with `--config`, on `--device`.
    pub(crate) fn load(&self) -> anyhow::Result<Predictor> {
        let device = self.device.as_deref();
        Ok(match (&self.run, &self.weights, &self.config) {
            (Some(run), _, _) => Predictor::from_run_on(run, device)?,
            (None, Some(w), Some(c)) => Predictor::from_files_on(w, c, device)?,
            _ => bail!("give --run RUN_DIR, or --weights FILE and --config FILE"),
        })
    }
}

/// The scans named on the command line, folders expanded to their NIfTI files (sorted).
pub(crate) fn expand(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("{}: cannot list the folder", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && is_nifti(f))
                .collect();
            if found.is_empty() {
                bail!("{}: holds no .nii or .nii.gz file", p.display());
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn is_nifti(p: &Path) -> bool {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

/// A scan's line: what was written, the peak memory and where the time went.
pub(crate) fn report(input: &Path, output: &Path, peak: Option<u64>, t: &Timings) -> String {
    format!(
        "{} -> {} (peak resident memory {}; {:.2} s: read {:.2} s, preprocess {:.2} s, network {:.2} s, rest {:.2} s)",
        input.display(),
        output.display(),
        memory::describe(peak),
        t.total(),
        t.read,
        t.preprocess,
        t.network,
        t.rest
    )
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let files = expand(&args.inputs)?;
    lits_infer::predict::check_out_dir(&args.out)?;
    let predictor = args.model.load()?;
    let opts = PredictOptions {
        postprocess: !args.no_postprocess,
        preprocess: !args.no_preprocess,
        probabilities: args.probabilities,
        tta: args.tta,
        preview: args.preview,
        uncertainty: args.uncertainty,
    };
    predictor.check_options(&opts)?;
    Ok(for_each_scan(&files, "segmented", |f| {
        let p = predictor.predict_file(f, &args.out, &opts)?;
        Ok(report(f, &p.mask, p.peak_memory, &p.timings))
    }))
}

/// Runs `one` on every scan and prints its line, or its error and goes on; fails at the
/// end when any scan failed (`error: K of M scans could not be VERB`).
pub(crate) fn for_each_scan(files: &[PathBuf], verb: &str, mut one: impl FnMut(&Path) -> anyhow::Result<String>) -> ExitCode {
    let mut failed = 0usize;
    for f in files {
        match one(f) {
            Ok(line) => eprintln!("{line}"),
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        eprintln!("error: {failed} of {} scans could not be {verb}", files.len());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
