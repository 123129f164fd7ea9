//! `lits`: liver and liver-tumor segmentation of CT. Each subcommand turns its arguments
//! into a library call; the logic lives in the library crates.

mod cmd;

use clap::{Parser, Subcommand};

/// Reproducible liver and liver-tumor segmentation of CT with a 3D U-Net.
///
/// Train a model on NIfTI scans (or on the built-in synthetic phantoms), then segment,
/// explain and score scans with its run folder. Training repeats bit for bit and resumes
/// where it stopped. `lits <COMMAND> --help` tells more of each command.
#[derive(Debug, Parser)]
#[command(name = "lits", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train the U-Net (default: the built-in quick start on synthetic CT phantoms).
    Train(cmd::train::Args),
    /// Report lits, libtorch, CUDA and cuDNN versions, devices, threads, CPU and OS.
    Env(cmd::env::Args),
    /// Score predicted label maps against references with the LiTS metrics.
    Evaluate(cmd::evaluate::Args),
    /// Which voxels drove the segmentation: Guided Grad-CAM maps on the scan's grid.
    Explain(cmd::explain::Args),
    /// Show a NIfTI file's shape, datatype, spacing, affine, orientation, scaling and values.
    Inspect(cmd::inspect::Args),
    /// Survey a dataset for a training config and print the run's plan, without training.
    Plan(cmd::plan::Args),
    /// Segment CT scans with a trained run (masks with the input's shape and geometry).
    Predict(cmd::predict::Args),
    /// Preprocess a dataset folder into a cache of fast-to-load cases (redoes only what changed).
    Preprocess(cmd::preprocess::Args),
    /// Write a synthetic abdominal CT dataset (LiTS layout) for trying lits without data.
    Synth(cmd::synth::Args),
    /// Upload a run to an MLflow tracking server: what the server lacks, nothing twice.
    Sync(cmd::sync::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("LITS_LOG").unwrap_or_else(|_| "info".into());
    // Colour codes only on a terminal, never into a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).with_ansi(ansi).init();
    let result = match cli.command {
        Command::Train(args) => cmd::train::run(args),
        Command::Env(args) => cmd::env::run(args),
        Command::Evaluate(args) => cmd::evaluate::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Plan(args) => cmd::plan::run(args),
        Command::Predict(args) => cmd::predict::run(args),
        Command::Preprocess(args) => cmd::preprocess::run(args),
        Command::Synth(args) => cmd::synth::run(args),
        Command::Sync(args) => cmd::sync::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
