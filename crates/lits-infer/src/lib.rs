//! Segmenting scans with a trained run: `predict` prepares each scan as the run's plan says,
//! runs the sliding window, restores the mask to the scan's grid and writes it (with
//! previews and uncertainty on request); `evaluate` does so for a run's held-out cases and
//! scores them with the LiTS metrics.
#![warn(missing_docs)]

pub mod evaluate;
pub mod explain;
pub mod predict;
