//! Evaluation and reports of lits: the LiTS overlap metrics, surface distances, scoring of
//! predicted label maps against references (cases and folders, JSON and CSV reports), and
//! the pictures a run and a prediction leave (line and box charts, slice previews). Links
//! no libtorch.
#![warn(missing_docs)]

pub mod distance;
pub mod evaluate;
pub mod metrics;
pub mod plot;
pub mod preview;
