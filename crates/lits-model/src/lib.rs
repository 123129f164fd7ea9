//! The reduced 3D U-Net of mlf-core `liver-ct-segmentation`, its losses and metrics, on
//! libtorch through `tch`.
#![warn(missing_docs)]

pub mod backend;
