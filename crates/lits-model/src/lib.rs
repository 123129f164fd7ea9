//! The reduced 3D U-Net of mlf-core `liver-ct-segmentation`, its losses and metrics, on
//! libtorch through `tch`.
#![warn(missing_docs)]

pub mod attribution;
pub mod backend;
pub mod dist;
pub mod error;
pub mod inference;
pub mod loss;
pub mod unet;
pub mod weights;

pub use error::{Error, Result};
pub use unet::{InferenceUNet3d, UNet3d, UNetConfig};
