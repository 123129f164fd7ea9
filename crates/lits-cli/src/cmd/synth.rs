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
    /// `small` (about 96×96×48 voxels: the quick start's) or `lits` (512×512 slices,
    /// 100-300 of them, as LiTS scans: for measuring what the full dataset costs).
    #[arg(long, value_enum, default_value_t = Size::Small)]
    size: Size,
}

/// Phantom sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Size {
    /// The quick start's.
    Small,
    /// LiTS scans'.
    Lits,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let base = match args.size {
        Size::Small => SynthConfig::default(),
        Size::Lits => SynthConfig::lits_size(),
    };
    let cfg = SynthConfig { cases: args.cases, seed: args.seed, ..base };
    let paths = write_dataset(&args.out, &cfg)?;
    println!("wrote {} cases ({} files, seed {}) to {}", cfg.cases, paths.len(), cfg.seed, args.out.display());
    Ok(ExitCode::SUCCESS)
}
