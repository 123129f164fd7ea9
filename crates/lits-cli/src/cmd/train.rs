use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use lits_tracking::TrackingConfig;
use lits_train::config::TrainConfig;
use lits_train::train::{self, RunOptions};

/// The built-in default: synthetic phantoms, a narrow U-Net, small patches.
const QUICKSTART: &str = include_str!("../../../../configs/quickstart.json");

/// Arguments of `lits train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Training configuration (JSON). Default: the built-in quick start (configs/quickstart.json).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "epochs", "seed", "data", "out", "device", "threads", "deterministic"])]
    resume: Option<PathBuf>,
    /// Run directory (default: runs/<name>-<UTC time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override `epochs`.
    #[arg(long)]
    epochs: Option<u32>,
    /// Override `seed`.
    #[arg(long)]
    seed: Option<u64>,
    /// Override `data.dir`: a LiTS or MSD Task03 folder.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Override `device` (`cpu`, `cuda`, `cuda:N`).
    #[arg(long)]
    device: Option<String>,
    /// Override `threads`.
    #[arg(long)]
    threads: Option<usize>,
    /// Override `deterministic` (`false` trades repeatability for speed).
    #[arg(long)]
    deterministic: Option<bool>,
    /// MLflow tracking server (also `MLFLOW_TRACKING_URI`).
    #[arg(long)]
    tracking_uri: Option<String>,
    /// Stop after this many epochs in this process; the run stays resumable.
    #[arg(long, hide = true)]
    stop_after: Option<u32>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let progress = std::io::stderr().is_terminal();
    if let Some(dir) = &args.resume {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let opts = RunOptions { progress, stop_after: args.stop_after, tracking: tracking(args.tracking_uri.clone(), &name) };
        let s = train::resume(dir, &opts).with_context(|| format!("cannot resume {}", dir.display()))?;
        return report(&s);
    }
    let mut cfg = load_config(args.config.as_deref())?;
    if let Some(v) = args.epochs {
        cfg.epochs = v;
    }
    if let Some(v) = args.seed {
        cfg.seed = v;
    }
    if let Some(v) = args.data {
        cfg.data.dir = Some(v);
    }
    if let Some(v) = args.device {
        cfg.device = v;
    }
    if let Some(v) = args.threads {
        cfg.threads = v;
    }
    if let Some(v) = args.deterministic {
        cfg.deterministic = v;
    }
    let out = args.out.unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}", cfg.name, utc_stamp())));
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let opts = RunOptions { progress, stop_after: args.stop_after, tracking: tracking(args.tracking_uri, &name) };
    // A config the flags made invalid is reported before a run directory is announced.
    cfg.validate().with_context(|| config_origin(args.config.as_deref()))?;
    eprintln!("run directory: {}", out.display());
    let s = train::train(cfg, &out, &opts)?;
    report(&s)
}

/// How errors name the config: its file, or the built-in quick start.
pub fn config_origin(path: Option<&std::path::Path>) -> String {
    match path {
        Some(p) => format!("{} (with the command line's overrides)", p.display()),
        None => "the built-in quick-start config (with the command line's overrides)".into(),
    }
}

/// The training config of `--config`, or the built-in quick start.
pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<TrainConfig> {
    Ok(match path {
        Some(p) => TrainConfig::from_file(p)?,
        None => serde_json::from_str(QUICKSTART).context("the built-in quick-start config")?,
    })
}

fn tracking(flag: Option<String>, run_name: &str) -> Option<TrackingConfig> {
    let t = TrackingConfig::from_env_and_flag(flag, run_name);
    t.uri.is_some().then_some(t)
}

fn report(s: &train::Summary) -> anyhow::Result<ExitCode> {
    match &s.last_validation {
        Some(v) => println!(
            "{}: {} epochs; validation on {} held-out case(s): liver Dice {:.4}, tumor Dice {:.4}",
            s.run_dir.display(),
            s.epochs_done,
            v.cases.len(),
            v.liver_dice,
            v.tumor_dice
        ),
        None => println!("{}: {} epochs", s.run_dir.display(), s.epochs_done),
    }
    if !s.finished {
        println!("stopped before the last epoch; continue with: lits train --resume {}", s.run_dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `YYYYmmdd-HHMMSS` in UTC.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}
