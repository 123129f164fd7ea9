//! Helpers shared by the integration tests of lits-data.
#![allow(dead_code)]

pub mod nifti;
