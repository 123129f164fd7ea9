use std::path::PathBuf;
use std::process::ExitCode;

use lits_data::nifti::inspect;

/// Arguments of `lits inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// NIfTI files (.nii or .nii.gz).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print a JSON array, one object per file (keys documented in docs/inspect.md).
    #[arg(long)]
    json: bool,
}

/// Inspect every file; a file that cannot be read is reported as `error: FILE: PROBLEM` on
/// stderr and makes the exit status non-zero, after the others are printed.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut reports = Vec::new();
    let mut failed = false;
    for f in &args.files {
        match inspect(f) {
            Ok(r) => {
                if !args.json {
                    print!("{}", r.to_text());
                }
                reports.push(r);
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
