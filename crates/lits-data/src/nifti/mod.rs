//! NIfTI-1 in and out with exact geometry.
//!
//! Reads `.nii` and `.nii.gz` (gzip recognised by content) as nibabel does: datatypes
//! uint8 to float64 in either byte order, `scl_slope`/`scl_inter` applied when the slope
//! is finite and non-zero, 3-D or 4-D with one time point, the affine from the sform, else
//! the qform, else pixdim. Voxels come back indexed `[i, j, k]` in standard layout, with
//! `Volume::spacing` = `pixdim[1..=3]`. Writes `.nii.gz` or `.nii` atomically, keeping the
//! source's header geometry. Every refusal names the file and the problem.

mod geometry;
mod header;
mod inspect;
mod read;
mod source;
mod write;

pub(crate) use geometry::polar_rotation;
pub use geometry::{AffineSource, Geometry, UNITS_MM};
pub use header::{ByteOrder, Datatype, Header, HEADER_SIZE};
pub use inspect::{inspect, Inspection};
pub use read::{read_header, read_image, read_image_and_header, read_image_with, read_labels, ReadOptions};
pub use write::{write_image, write_labels, ImageDtype};
