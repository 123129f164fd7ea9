//! Data for lits: NIfTI in and out with exact geometry, preprocessing, patch sampling and
//! synthetic CT phantoms.
#![warn(missing_docs)]

pub mod affine;
pub mod atomic;
mod buffer;
pub mod cache;
pub mod crop;
pub mod dataset;
pub mod digest;
pub mod error;
pub mod intensity;
pub mod json;
pub mod nifti;
pub mod orient;
pub mod patch;
pub mod percentile;
pub mod preprocess;
pub mod resample;
pub mod rng;
pub mod store;
pub mod synth;
pub mod volume;

pub use error::{Error, Problems, Result};
pub use volume::{Image, Labels, Volume};
