//! A 3-D scan or label map together with its geometry.

use ndarray::Array3;

/// A 3-D array with the geometry that places it in patient space.
///
/// `data` is indexed `[i, j, k]` in the file's voxel axis order (NIfTI's x, y, z index
/// order, as nibabel's `get_fdata()` returns it). `spacing` is the voxel size in mm in the
/// same axis order as `data`. `affine` maps voxel indices `(i, j, k, 1)` to world
/// coordinates in mm (RAS+, NIfTI/nibabel convention), row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    /// Voxel values, axis order `[i, j, k]`.
    pub data: Array3<T>,
    /// Voxel size in mm along `i`, `j`, `k`.
    pub spacing: [f64; 3],
    /// Voxel-to-world affine (row-major 4×4, last row `0 0 0 1`).
    pub affine: [[f64; 4]; 4],
}

/// A CT image in Hounsfield units (or any scaled intensity).
pub type Image = Volume<f32>;

/// A label map: 0 background, 1 liver, 2 tumor.
pub type Labels = Volume<u8>;

impl<T> Volume<T> {
    /// A volume with the given spacing and the diagonal affine that goes with it
    /// (origin at zero, axes along +x, +y, +z).
    pub fn with_spacing(data: Array3<T>, spacing: [f64; 3]) -> Self {
        let mut affine = [[0.0; 4]; 4];
        for (a, s) in spacing.iter().enumerate() {
            affine[a][a] = *s;
        }
        affine[3][3] = 1.0;
        Volume { data, spacing, affine }
    }

    /// Shape `[i, j, k]`.
    pub fn shape(&self) -> [usize; 3] {
        let s = self.data.shape();
        [s[0], s[1], s[2]]
    }

    /// Same geometry, other data (which must have the same shape).
    pub fn map_data<U>(&self, data: Array3<U>) -> Volume<U> {
        assert_eq!(data.shape(), self.data.shape(), "map_data needs the same shape");
        Volume { data, spacing: self.spacing, affine: self.affine }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_spacing_builds_a_diagonal_affine() {
        let v = Volume::with_spacing(Array3::<u8>::zeros((2, 3, 4)), [0.7, 0.8, 2.5]);
        assert_eq!(v.shape(), [2, 3, 4]);
        assert_eq!(v.affine[0], [0.7, 0.0, 0.0, 0.0]);
        assert_eq!(v.affine[2], [0.0, 0.0, 2.5, 0.0]);
        assert_eq!(v.affine[3], [0.0, 0.0, 0.0, 1.0]);
    }
}
