//! `lits`: liver and liver-tumor segmentation of CT. Each subcommand turns its arguments
//! into a library call; the logic lives in the library crates.

mod cmd;

use clap::{Parser, Subcommand};

/// Reproducible liver and liver-tumor segmentation of CT with a 3D U-Net.
#[derive(Debug, Parser)]
#[command(name = "lits", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report lits, libtorch, CUDA and cuDNN versions, devices, threads, CPU and OS.
    Env(cmd::env::Args),
    /// Preprocess a dataset folder into a cache of fast-to-load cases (redoes only what changed).
    Preprocess(cmd::preprocess::Args),
    /// Show a NIfTI file's shape, datatype, spacing, affine, orientation, scaling and values.
    Inspect(cmd::inspect::Args),
    /// Write a synthetic abdominal CT dataset (LiTS layout) for trying lits without data.
    Synth(cmd::synth::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Env(args) => cmd::env::run(args),
        Command::Preprocess(args) => cmd::preprocess::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Synth(args) => cmd::synth::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
