use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use lits_tracking::TrackingConfig;
use lits_train::config::TrainConfig;
use lits_train::dist::{DistConfig, Launch, Ranks};
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
    /// Train with N processes on this host (data parallel, c10d), as `torchrun
    /// --nproc-per-node N` would start them. Across hosts, start lits with torchrun's
    /// variables instead (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    nproc: u32,
}

/// The command line without `--nproc N`, with `--out` fixed when it was left to the
/// default, so that every rank's rank 0 names the same run.
fn rank_args(out: Option<&std::path::Path>) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let mut skip = false;
    for a in std::env::args_os().skip(1) {
        if skip {
            skip = false;
            continue;
        }
        let text = a.to_string_lossy();
        if text == "--nproc" {
            skip = true;
            continue;
        }
        if text.starts_with("--nproc=") {
            continue;
        }
        args.push(a);
    }
    if let Some(out) = out {
        args.push("--out".into());
        args.push(out.as_os_str().to_owned());
    }
    args
}

/// The `distributed` section that applies to this process before it has a run: from
/// `--config`, the resumed run's config, or the default.
fn dist_config(args: &Args) -> DistConfig {
    let from_run = args.resume.as_ref().and_then(|d| lits_data::json::read::<TrainConfig>(&d.join("config.json")).ok());
    let from_file = args.resume.is_none().then(|| load_config(args.config.as_deref()).ok()).flatten();
    from_run.or(from_file).map(|c| c.distributed).unwrap_or_default()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let launch = Launch::from_env()?;
    if args.nproc > 1 {
        if launch.is_some() {
            anyhow::bail!("--nproc starts its own ranks; it cannot be used in a process that torchrun's variables (WORLD_SIZE) already place in a group");
        }
        // Rank 0 announces the run directory.
        let out = (args.resume.is_none() && args.out.is_none()).then(|| default_out(&args));
        let grace = dist_config(&args).timeout() + std::time::Duration::from_secs(30);
        lits_train::dist::launch_local(args.nproc as usize, &rank_args(out.as_deref()), grace)?;
        return Ok(ExitCode::SUCCESS);
    }
    let ranks = match launch {
        Some(l) => Some(Ranks { group: l.join(&dist_config(&args))?, launch: l }),
        None => None,
    };
    let progress = std::io::stderr().is_terminal() && ranks.as_ref().is_none_or(Ranks::is_main);
    if let Some(r) = ranks.as_ref().filter(|r| !r.is_main()) {
        // Rank 0 hands this rank the run; the command line's config and run folder are its.
        let opts = RunOptions { progress, stop_after: args.stop_after, tracking: None, ranks: Some(r.clone()) };
        train::follow(&opts).with_context(|| format!("rank {} of {}", r.launch.rank, r.launch.world))?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = &args.resume {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let opts = RunOptions { progress, stop_after: args.stop_after, tracking: tracking(args.tracking_uri.clone(), &name), ranks };
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
    let opts = RunOptions { progress, stop_after: args.stop_after, tracking: tracking(args.tracking_uri, &name), ranks };
    // A config the flags made invalid is reported before a run directory is announced.
    cfg.validate().with_context(|| config_origin(args.config.as_deref()))?;
    eprintln!("run directory: {}", out.display());
    let s = train::train(cfg, &out, &opts)?;
    report(&s)
}

/// The run folder a new run gets without `--out`: `runs/<name>-<UTC time>`.
fn default_out(args: &Args) -> PathBuf {
    let name = load_config(args.config.as_deref()).map_or_else(|_| "lits".to_owned(), |c| c.name);
    PathBuf::from("runs").join(format!("{name}-{}", utc_stamp()))
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
