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

/// Largest difference between two affines' entries, relative to `1 + |entry|`, still taken
/// as the same grid: NIfTI stores the sform in float32, so a faithful copy can differ by
/// about 1e-7 relative, while another grid differs by far more.
pub const AFFINE_TOLERANCE: f64 = 1e-4;

/// Why `b` is not on the voxel grid of `a` (shape, then affine within
/// [`AFFINE_TOLERANCE`]), `a` named by `whose` ("its image's"); `None` when it is. The one
/// check of labels against their image and of a prediction against its reference.
pub fn grid_mismatch<A, B>(a: &Volume<A>, b: &Volume<B>, whose: &str) -> Option<String> {
    if a.shape() != b.shape() {
        return Some(format!("shape {:?} differs from {whose} {:?}", b.shape(), a.shape()));
    }
    let worst = (0..3)
        .flat_map(|r| (0..4).map(move |c| (r, c)))
        .map(|(r, c)| (b.affine[r][c] - a.affine[r][c]).abs() / (1.0 + a.affine[r][c].abs()))
        .fold(0.0, f64::max);
    let fmt = |m: &[[f64; 4]; 4]| {
        let rows: Vec<String> =
            m[..3].iter().map(|r| format!("[{}]", r.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(", "))).collect();
        format!("[{}]", rows.join(", "))
    };
    (worst.is_nan() || worst > AFFINE_TOLERANCE).then(|| {
        format!("affine {} differs from {whose} {} (relative difference {worst:.2e}): not on the same grid", fmt(&b.affine), fmt(&a.affine))
    })
}

/// The label values of `labels` outside 0 (background), 1 (liver), 2 (tumor), with their
/// voxel counts, in words; `None` when there are none.
pub fn bad_label_values(labels: &Volume<u8>) -> Option<String> {
    let mut counts = [0usize; 256];
    for &v in labels.data.iter() {
        counts[v as usize] += 1;
    }
    let bad: Vec<String> = (3..256)
        .filter(|&v| counts[v] > 0)
        .map(|v| format!("{v} ({} voxel{})", counts[v], if counts[v] == 1 { "" } else { "s" }))
        .collect();
    (!bad.is_empty()).then(|| format!("holds label values outside 0..2 (0 background, 1 liver, 2 tumor): {}", bad.join(", ")))
}

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
