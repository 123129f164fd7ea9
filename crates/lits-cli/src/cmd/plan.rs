use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use lits_train::plan;

/// Arguments of `lits plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Training configuration (JSON). Default: the built-in quick start.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override `data.dir`: a LiTS or MSD Task03 folder.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Override `device` (`cpu`, `cuda`, `cuda:N`).
    #[arg(long)]
    device: Option<String>,
    /// Print the plan as JSON (the form a run records as `plans.json`).
    #[arg(long)]
    json: bool,
    /// Skip timing a forward pass for the time-per-epoch estimate.
    #[arg(long)]
    no_timing: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut cfg = super::train::load_config(args.config.as_deref())?;
    if let Some(d) = args.data {
        cfg.data.dir = Some(d);
    }
    if let Some(d) = args.device {
        cfg.device = d;
    }
    // Planning needs no GPU: a CUDA config is planned (and timed) on the CPU of a machine
    // without one, as on a login node.
    if cfg.device.trim().starts_with("cuda") && cfg.torch_device().is_err() {
        eprintln!("note: this machine has no `{}`; planning on the CPU (time per epoch measured there)", cfg.device.trim());
        cfg.device = "cpu".into();
    }
    cfg.absolutize_paths()?;
    cfg.validate().with_context(|| super::train::config_origin(args.config.as_deref()))?;
    let p = plan::plan(&cfg)?;
    if args.json {
        println!("{}", String::from_utf8_lossy(&lits_data::json::to_vec_pretty(&p).map_err(anyhow::Error::msg)?));
        return Ok(ExitCode::SUCCESS);
    }
    let seconds = if args.no_timing { None } else { Some(plan::time_epoch(&cfg)?) };
    print!("{}", plan::describe(&p, &cfg, seconds));
    Ok(ExitCode::SUCCESS)
}
