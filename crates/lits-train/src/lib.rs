//! Deterministic, resumable training of the lits U-Net, and the records a run leaves.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dist;
pub mod env;
pub mod error;
pub mod failpoint;
pub mod memory;
pub mod optim;
pub mod plan;
pub mod progress;
pub mod runlog;
pub mod schedule;
pub mod seed;
pub mod tracking_glue;
pub mod train;

pub use error::{Error, Result};
