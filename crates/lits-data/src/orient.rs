//! Orientation of a voxel grid in patient space, and the exact reorientation to RAS (array
//! axes growing towards the patient's Right, Anterior and Superior) by axis permutation and
//! flips only, so no voxel is ever interpolated.
//!
//! The axis each array axis follows is read from the affine as nibabel's `io_orientation`
//! does: scale removed, the nearest rotation taken (polar decomposition), and array axes
//! matched to world axes greedily, strongest first.

use crate::nifti::polar_rotation;
use crate::Volume;

/// For each array axis, the world axis it runs along (0 x, 1 y, 2 z) and its direction
/// (+1 towards R, A or S; -1 towards L, P or I).
pub fn io_orientation(affine: &[[f64; 4]; 4]) -> [(usize, i8); 3] {
    let mut rs = [[0.0; 3]; 3];
    for c in 0..3 {
        let norm = (0..3).map(|r| affine[r][c] * affine[r][c]).sum::<f64>().sqrt();
        let norm = if norm == 0.0 { 1.0 } else { norm };
        for r in 0..3 {
            rs[r][c] = affine[r][c] / norm;
        }
    }
    let mut r = polar_rotation(&rs);
    // Strongest array axis first (stable on ties), as nibabel does.
    let strength = |r: &[[f64; 3]; 3], c: usize| (0..3).map(|row| r[row][c] * r[row][c]).fold(0.0, f64::max);
    let mut order = [0, 1, 2];
    order.sort_by(|&a, &b| strength(&r, b).total_cmp(&strength(&r, a)));
    let mut out: [Option<(usize, i8)>; 3] = [None; 3];
    for &c in &order {
        let col = [r[0][c], r[1][c], r[2][c]];
        if col.iter().all(|v| v.abs() <= 1e-8) {
            continue;
        }
        let mut best = 0;
        for w in 1..3 {
            if col[w].abs() > col[best].abs() {
                best = w;
            }
        }
        out[c] = Some((best, if col[best] < 0.0 { -1 } else { 1 }));
        r[best] = [0.0; 3];
    }
    // A degenerate affine leaves axes undetermined: give them the unused world axes in order.
    let mut free = (0..3).filter(|w| !out.iter().flatten().any(|(u, _)| u == w));
    out.map(|o| o.unwrap_or_else(|| (free.next().expect("one world axis per array axis"), 1)))
}

/// The three-letter orientation code of an affine (`"RAS"`, `"LPS"`, ...): for each array
/// axis, the direction its index grows towards.
pub fn orientation_code(affine: &[[f64; 4]; 4]) -> String {
    const LETTERS: [[char; 2]; 3] = [['L', 'R'], ['P', 'A'], ['I', 'S']];
    io_orientation(affine).iter().map(|&(w, d)| LETTERS[w][usize::from(d > 0)]).collect()
}

/// The permutation and flips that took a volume to RAS, with what is needed to undo them
/// exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct Reorientation {
    /// For each canonical axis, the source array axis it comes from.
    pub source_axis: [usize; 3],
    /// For each canonical axis, whether it runs against the source axis.
    pub flipped: [bool; 3],
    source_shape: [usize; 3],
    source_affine: [[f64; 4]; 4],
    source_spacing: [f64; 3],
    canonical_affine: [[f64; 4]; 4],
}

/// Whether the array axes of `affine` already run towards R, A and S.
pub fn is_ras(affine: &[[f64; 4]; 4]) -> bool {
    io_orientation(affine) == [(0, 1), (1, 1), (2, 1)]
}

/// For each canonical (RAS) axis, the array axis it comes from and whether it runs against it.
fn canonical_axes(affine: &[[f64; 4]; 4]) -> ([usize; 3], [bool; 3]) {
    let mut source_axis = [0; 3];
    let mut flipped = [false; 3];
    for (a, &(w, d)) in io_orientation(affine).iter().enumerate() {
        source_axis[w] = a;
        flipped[w] = d < 0;
    }
    (source_axis, flipped)
}

/// Per-axis values of a volume stored with `affine` (its shape, its voxel size) in the order
/// of the RAS axes its reorientation would have.
pub fn canonical_order<T: Copy>(values: [T; 3], affine: &[[f64; 4]; 4]) -> [T; 3] {
    canonical_axes(affine).0.map(|s| values[s])
}

/// The voxels of `v` seen in RAS order without copying them, and the voxel size along the
/// view's axes: `view[[i, j, k]]` grows towards R, A and S with `i`, `j`, `k`.
pub fn canonical_view<T>(v: &Volume<T>) -> (ndarray::ArrayView3<'_, T>, [f64; 3]) {
    let (source_axis, flipped) = canonical_axes(&v.affine);
    let mut view = v.data.view().permuted_axes(source_axis);
    for (a, &f) in flipped.iter().enumerate() {
        if f {
            view.invert_axis(ndarray::Axis(a));
        }
    }
    (view, source_axis.map(|s| v.spacing[s]))
}

/// The volume reoriented to RAS (axes permuted and flipped; the affine and spacing follow,
/// so every voxel keeps its world position), and how to go back.
pub fn to_canonical<T: Clone>(v: &Volume<T>) -> (Volume<T>, Reorientation) {
    let (source_axis, flipped) = canonical_axes(&v.affine);
    let shape = v.shape();
    let (view, spacing) = canonical_view(v);
    // new voxel n is old voxel o = T n, so the new affine is A T.
    let mut t = [[0.0; 4]; 4];
    t[3][3] = 1.0;
    for a in 0..3 {
        let s = source_axis[a];
        t[s][a] = if flipped[a] { -1.0 } else { 1.0 };
        t[s][3] = if flipped[a] { (shape[s] - 1) as f64 } else { 0.0 };
    }
    let affine = crate::affine::mul(&v.affine, &t);
    let out = Volume { data: view.as_standard_layout().into_owned(), spacing, affine };
    let r = Reorientation {
        source_axis,
        flipped,
        source_shape: shape,
        source_affine: v.affine,
        source_spacing: v.spacing,
        canonical_affine: affine,
    };
    (out, r)
}

impl Reorientation {
    /// Whether the source was already RAS (nothing permuted or flipped).
    pub fn is_identity(&self) -> bool {
        self.source_axis == [0, 1, 2] && self.flipped == [false; 3]
    }

    /// Take a volume on the canonical grid (e.g. a prediction) back to the source's axes.
    /// A volume carrying the canonical affine gets the source's affine and spacing back
    /// bit for bit.
    ///
    /// # Panics
    /// If `v` does not have the canonical shape.
    pub fn undo<T: Clone>(&self, v: &Volume<T>) -> Volume<T> {
        let canonical_shape = self.source_axis.map(|s| self.source_shape[s]);
        assert_eq!(v.shape(), canonical_shape, "Reorientation::undo needs a volume on the canonical grid");
        let mut view = v.data.view();
        for (a, &f) in self.flipped.iter().enumerate() {
            if f {
                view.invert_axis(ndarray::Axis(a));
            }
        }
        let mut inverse = [0; 3];
        for (a, &s) in self.source_axis.iter().enumerate() {
            inverse[s] = a;
        }
        let data = view.permuted_axes(inverse).as_standard_layout().into_owned();
        if v.affine == self.canonical_affine {
            return Volume { data, spacing: self.source_spacing, affine: self.source_affine };
        }
        // old voxel o is new voxel n = U o, so the old affine is A U.
        let mut u = [[0.0; 4]; 4];
        u[3][3] = 1.0;
        for (a, row) in u.iter_mut().take(3).enumerate() {
            let s = self.source_axis[a];
            row[s] = if self.flipped[a] { -1.0 } else { 1.0 };
            row[3] = if self.flipped[a] { (self.source_shape[s] - 1) as f64 } else { 0.0 };
        }
        let mut spacing = [0.0; 3];
        for (a, &s) in self.source_axis.iter().enumerate() {
            spacing[s] = v.spacing[a];
        }
        Volume { data, spacing, affine: crate::affine::mul(&v.affine, &u) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    fn affine(cols: [[f64; 3]; 3], t: [f64; 3]) -> [[f64; 4]; 4] {
        let mut a = [[0.0; 4]; 4];
        for r in 0..3 {
            for c in 0..3 {
                a[r][c] = cols[c][r];
            }
            a[r][3] = t[r];
        }
        a[3][3] = 1.0;
        a
    }

    fn world(a: &[[f64; 4]; 4], idx: [usize; 3]) -> [f64; 3] {
        let i = [idx[0] as f64, idx[1] as f64, idx[2] as f64, 1.0];
        [0, 1, 2].map(|r| (0..4).map(|k| a[r][k] * i[k]).sum())
    }

    #[test]
    fn codes_follow_nibabel() {
        // nibabel.aff2axcodes(np.diag([-1, -1, 1, 1])) == ('L', 'P', 'S'), etc.
        let diag = |x: f64, y: f64, z: f64| affine([[x, 0.0, 0.0], [0.0, y, 0.0], [0.0, 0.0, z]], [0.0; 3]);
        assert_eq!(orientation_code(&diag(1.0, 1.0, 1.0)), "RAS");
        assert_eq!(orientation_code(&diag(-0.7, -0.7, 2.5)), "LPS");
        assert_eq!(orientation_code(&diag(0.7, -0.7, -5.0)), "RPI");
        // Array axes along y, z, x: first axis goes posterior, second superior, third left.
        let a = affine([[0.0, -2.0, 0.0], [0.0, 0.0, 3.0], [-1.0, 0.0, 0.0]], [0.0; 3]);
        assert_eq!(orientation_code(&a), "PSL");
        // Slightly oblique: the largest component wins.
        let a = affine([[0.9, 0.3, 0.0], [-0.3, 0.9, 0.0], [0.0, 0.0, 1.0]], [0.0; 3]);
        assert_eq!(orientation_code(&a), "RAS");
    }

    #[test]
    fn canonical_keeps_every_voxel_in_place_and_undo_is_exact() {
        let a = affine([[0.0, -2.0, 0.0], [0.0, 0.0, 3.0], [-1.5, 0.0, 0.0]], [10.0, -20.0, 30.5]);
        let data = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 100 + j * 10 + k) as u16);
        let v = Volume { data, spacing: [2.0, 3.0, 1.5], affine: a };
        let (c, r) = to_canonical(&v);
        assert_eq!(orientation_code(&c.affine), "RAS");
        assert_eq!(c.shape(), [4, 2, 3]);
        assert_eq!(c.spacing, [1.5, 2.0, 3.0]);
        for (idx, &val) in c.data.indexed_iter() {
            let (i, j, k) = (val / 100, val / 10 % 10, val % 10);
            let old = world(&v.affine, [i as usize, j as usize, k as usize]);
            let new = world(&c.affine, [idx.0, idx.1, idx.2]);
            for d in 0..3 {
                assert!((old[d] - new[d]).abs() < 1e-12, "{idx:?}: {old:?} vs {new:?}");
            }
        }
        assert!(!r.is_identity());
        assert_eq!(r.undo(&c), v);
        // A changed affine is carried back through the inverse permutation and flips.
        let mut moved = c.clone();
        moved.affine[0][3] += 5.0;
        let back = r.undo(&moved);
        assert_eq!(back.data, v.data);
        assert!((back.affine[0][3] - (v.affine[0][3] + 5.0)).abs() < 1e-12);
        assert_eq!(back.spacing, v.spacing);
    }

    #[test]
    fn ras_input_is_left_alone() {
        let v = Volume::with_spacing(Array3::from_shape_fn((2, 2, 2), |(i, j, k)| i + 2 * j + 4 * k), [1.0, 2.0, 3.0]);
        let (c, r) = to_canonical(&v);
        assert!(r.is_identity());
        assert_eq!(c, v);
    }
}
