use std::path::PathBuf;
use std::process::ExitCode;

use lits_data::synth::{write_dataset, SynthConfig};

/// Arguments of `lits synth`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder to write `volume-N.nii.gz`, `segmentation-N.nii.gz` and `synth.json` into
    /// (created if missing; must hold no other dataset).
    #[arg(long)]
    out: PathBuf,
    /// Number of cases.
    #[arg(long, default_value_t = SynthConfig::default().cases)]
    cases: usize,
    /// Seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    seed: u64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = SynthConfig { cases: args.cases, seed: args.seed, ..SynthConfig::default() };
    let paths = write_dataset(&args.out, &cfg)?;
    println!("wrote {} cases ({} files, seed {}) to {}", cfg.cases, paths.len(), cfg.seed, args.out.display());
    Ok(ExitCode::SUCCESS)
}
