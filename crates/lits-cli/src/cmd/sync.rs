use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Arguments of `lits sync`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run directory written by `lits train`.
    run_dir: PathBuf,
    /// MLflow tracking server (default: MLFLOW_TRACKING_URI, else the server the run last
    /// reached). Credentials come from MLFLOW_TRACKING_TOKEN or
    /// MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD.
    #[arg(long, value_name = "URI")]
    tracking_uri: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report =
        lits_tracking::sync(&args.run_dir, args.tracking_uri).with_context(|| format!("cannot sync {}", args.run_dir.display()))?;
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}
