//! Deterministic, resumable training of the lits U-Net, and the records a run leaves.
#![warn(missing_docs)]

pub mod env;
pub mod tracking;
