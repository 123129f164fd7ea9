//! Where a NIfTI volume sits in patient space: the header's sform, qform and pixdim, and
//! the voxel-to-world affine derived from them with nibabel's rule (sform if its code is
//! positive, else qform, else pixdim alone).

/// `xyzt_units` code for millimetres (NIFTI_UNITS_MM).
pub const UNITS_MM: u8 = 2;

/// The geometric fields of a NIfTI-1 header and the affine they give.
///
/// A `Geometry` read from a file keeps the header's fields exactly (as `f32`), so writing a
/// result with it reproduces the source's sform, qform, codes, pixdim and units bit for bit.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    /// Voxel-to-world affine (row-major, RAS+ millimetres), as nibabel's `img.affine`.
    pub affine: [[f64; 4]; 4],
    /// `sform_code` (0 unknown, 1 scanner, 2 aligned, 3 Talairach, 4 MNI, 5 template).
    pub sform_code: i16,
    /// `srow_x`, `srow_y`, `srow_z`.
    pub srow: [[f32; 4]; 3],
    /// `qform_code`.
    pub qform_code: i16,
    /// `quatern_b`, `quatern_c`, `quatern_d`.
    pub quatern: [f32; 3],
    /// `qoffset_x`, `qoffset_y`, `qoffset_z`.
    pub qoffset: [f32; 3],
    /// `pixdim[0..8]`; `pixdim[0]` is qfac, `pixdim[1..=3]` the voxel size.
    pub pixdim: [f32; 8],
    /// `xyzt_units` (spatial unit in bits 0-2, temporal in bits 3-5).
    pub xyzt_units: u8,
}

/// Which header fields the affine came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffineSource {
    /// `srow_*` (sform_code > 0).
    Sform,
    /// The quaternion, qoffset and pixdim (qform_code > 0, sform_code = 0).
    Qform,
    /// pixdim alone, centred, x flipped (both codes 0; nibabel's fallback).
    Pixdim,
}

impl Geometry {
    /// A geometry for `affine` with sform and qform code 1 (scanner) and units mm: sform is
    /// the affine itself, qform its closest rotation-and-scaling (exact for affines without
    /// shear), pixdim the lengths of the affine's columns.
    pub fn from_affine(affine: [[f64; 4]; 4]) -> Self {
        let mut srow = [[0f32; 4]; 3];
        for (r, row) in srow.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = affine[r][c] as f32;
            }
        }
        let q = Qform::from_affine(&affine);
        let mut pixdim = [1f32; 8];
        pixdim[0] = q.qfac as f32;
        for a in 0..3 {
            pixdim[a + 1] = q.zooms[a] as f32;
        }
        Geometry {
            affine,
            sform_code: 1,
            srow,
            qform_code: 1,
            quatern: q.bcd.map(|v| v as f32),
            qoffset: [affine[0][3] as f32, affine[1][3] as f32, affine[2][3] as f32],
            pixdim,
            xyzt_units: UNITS_MM,
        }
    }

    /// Voxel size along the array axes: `|pixdim[1..=3]|`.
    pub fn spacing(&self) -> [f64; 3] {
        [1, 2, 3].map(|a| f64::from(self.pixdim[a]).abs())
    }

    /// Which fields [`Geometry::affine`] comes from.
    pub fn affine_source(&self) -> AffineSource {
        if self.sform_code > 0 {
            AffineSource::Sform
        } else if self.qform_code > 0 {
            AffineSource::Qform
        } else {
            AffineSource::Pixdim
        }
    }

    /// The affine the header fields give for a volume of `shape` (nibabel's
    /// `get_best_affine`). Errors (as text) on a qform whose quaternion is not a rotation.
    pub(crate) fn best_affine(&self, shape: [usize; 3]) -> std::result::Result<[[f64; 4]; 4], String> {
        match self.affine_source() {
            AffineSource::Sform => {
                let mut a = identity4();
                for (row, srow) in a.iter_mut().zip(&self.srow) {
                    for (v, s) in row.iter_mut().zip(srow) {
                        *v = f64::from(*s);
                    }
                }
                Ok(a)
            }
            AffineSource::Qform => self.qform_affine(),
            AffineSource::Pixdim => {
                // nibabel's shape_zoom_affine with x flipped: origin at the volume's centre.
                let mut a = identity4();
                let zooms = self.spacing();
                for ax in 0..3 {
                    let z = if ax == 0 { -zooms[ax] } else { zooms[ax] };
                    a[ax][ax] = z;
                    a[ax][3] = -((shape[ax] as f64 - 1.0) / 2.0) * z;
                }
                Ok(a)
            }
        }
    }

    fn qform_affine(&self) -> std::result::Result<[[f64; 4]; 4], String> {
        let [b, c, d] = self.quatern.map(f64::from);
        let w2 = 1.0 - (b * b + c * c + d * d);
        // nibabel's threshold: three f32 epsilons, the precision of the stored values.
        let w = if w2.abs() < 3.0 * f64::from(f32::EPSILON) {
            0.0
        } else if w2 < 0.0 {
            return Err(format!("qform quaternion (b, c, d) = ({b}, {c}, {d}) has a norm above 1 and is not a rotation"));
        } else {
            w2.sqrt()
        };
        let r = quat_to_mat([w, b, c, d]);
        // nibabel fixes a qfac other than -1 to 1 and negative pixdims to their absolute value.
        let qfac = if self.pixdim[0] == -1.0 { -1.0 } else { 1.0 };
        let mut zooms = self.spacing();
        zooms[2] *= qfac;
        let mut a = identity4();
        for row in 0..3 {
            for col in 0..3 {
                a[row][col] = r[row][col] * zooms[col];
            }
            a[row][3] = f64::from(self.qoffset[row]);
        }
        Ok(a)
    }
}

/// A qform decomposition of an affine: unit quaternion (b, c, d), qfac and zooms.
struct Qform {
    bcd: [f64; 3],
    qfac: f64,
    zooms: [f64; 3],
}

impl Qform {
    /// nibabel's `set_qform`: column lengths as zooms, a negative determinant moved into
    /// qfac, the rest orthogonalised (polar factor) and turned into a quaternion.
    fn from_affine(affine: &[[f64; 4]; 4]) -> Self {
        let mut m = [[0.0; 3]; 3];
        for r in 0..3 {
            m[r].copy_from_slice(&affine[r][..3]);
        }
        let mut zooms = [0.0; 3];
        for (c, z) in zooms.iter_mut().enumerate() {
            *z = (0..3).map(|r| m[r][c] * m[r][c]).sum::<f64>().sqrt();
            let div = if *z == 0.0 { 1.0 } else { *z };
            for row in m.iter_mut() {
                row[c] /= div;
            }
        }
        let qfac = if det3(&m) < 0.0 {
            for row in m.iter_mut() {
                row[2] = -row[2];
            }
            -1.0
        } else {
            1.0
        };
        let r = polar_rotation(&m);
        let [_, x, y, z] = mat_to_quat(&r);
        Qform { bcd: [x, y, z], qfac, zooms }
    }
}

pub(crate) fn identity4() -> [[f64; 4]; 4] {
    let mut a = [[0.0; 4]; 4];
    for (i, row) in a.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    a
}

pub(crate) fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

fn inverse_transpose3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let d = det3(m);
    if d.abs() < 1e-300 {
        return None;
    }
    // The cofactor matrix divided by the determinant is the inverse transposed.
    let mut out = [[0.0; 3]; 3];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            let (r1, r2) = ((r + 1) % 3, (r + 2) % 3);
            let (c1, c2) = ((c + 1) % 3, (c + 2) % 3);
            *v = (m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]) / d;
        }
    }
    Some(out)
}

/// The orthogonal factor of the polar decomposition of `m` (what `U @ Vt` of its SVD
/// gives), by Newton's iteration `X <- (X + X^-T) / 2`. A singular `m` is returned as is.
pub(crate) fn polar_rotation(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut x = *m;
    for _ in 0..100 {
        let Some(it) = inverse_transpose3(&x) else { return *m };
        let mut next = [[0.0; 3]; 3];
        let mut change: f64 = 0.0;
        for r in 0..3 {
            for c in 0..3 {
                next[r][c] = 0.5 * (x[r][c] + it[r][c]);
                change = change.max((next[r][c] - x[r][c]).abs());
            }
        }
        x = next;
        if change < 1e-15 {
            break;
        }
    }
    x
}

/// Rotation matrix of the quaternion `[w, x, y, z]` (nibabel's `quat2mat`).
fn quat_to_mat(q: [f64; 4]) -> [[f64; 3]; 3] {
    let [w, x, y, z] = q;
    let n = w * w + x * x + y * y + z * z;
    if n < f64::EPSILON {
        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    }
    let s = 2.0 / n;
    let (xs, ys, zs) = (x * s, y * s, z * s);
    let (wx, wy, wz) = (w * xs, w * ys, w * zs);
    let (xx, xy, xz) = (x * xs, x * ys, x * zs);
    let (yy, yz, zz) = (y * ys, y * zs, z * zs);
    [[1.0 - (yy + zz), xy - wz, xz + wy], [xy + wz, 1.0 - (xx + zz), yz - wx], [xz - wy, yz + wx, 1.0 - (xx + yy)]]
}

/// Unit quaternion `[w, x, y, z]` with `w >= 0` of a proper rotation (Shepperd's method).
fn mat_to_quat(r: &[[f64; 3]; 3]) -> [f64; 4] {
    let trace = r[0][0] + r[1][1] + r[2][2];
    let q = if trace > 0.0 {
        let s = (trace + 1.0).sqrt() * 2.0;
        [0.25 * s, (r[2][1] - r[1][2]) / s, (r[0][2] - r[2][0]) / s, (r[1][0] - r[0][1]) / s]
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let s = (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt() * 2.0;
        [(r[2][1] - r[1][2]) / s, 0.25 * s, (r[0][1] + r[1][0]) / s, (r[0][2] + r[2][0]) / s]
    } else if r[1][1] > r[2][2] {
        let s = (1.0 + r[1][1] - r[0][0] - r[2][2]).sqrt() * 2.0;
        [(r[0][2] - r[2][0]) / s, (r[0][1] + r[1][0]) / s, 0.25 * s, (r[1][2] + r[2][1]) / s]
    } else {
        let s = (1.0 + r[2][2] - r[0][0] - r[1][1]).sqrt() * 2.0;
        [(r[1][0] - r[0][1]) / s, (r[0][2] + r[2][0]) / s, (r[1][2] + r[2][1]) / s, 0.25 * s]
    };
    if q[0] < 0.0 {
        q.map(|v| -v)
    } else {
        q
    }
}

/// Whether two affines agree to `tol` relative to the larger of 1 and each entry's size.
pub(crate) fn affines_close(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4], tol: f64) -> bool {
    a.iter().flatten().zip(b.iter().flatten()).all(|(x, y)| (x - y).abs() <= tol * x.abs().max(y.abs()).max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique_lps() -> [[f64; 4]; 4] {
        // A rotation of 20 degrees about z, then LPS flips, voxel sizes 0.7, 0.8, 2.5.
        let (s, c) = 20f64.to_radians().sin_cos();
        let r = [[-c, s, 0.0], [-s, -c, 0.0], [0.0, 0.0, 1.0]];
        let z = [0.7, 0.8, 2.5];
        let mut a = identity4();
        for i in 0..3 {
            for j in 0..3 {
                a[i][j] = r[i][j] * z[j];
            }
        }
        a[0][3] = 120.5;
        a[1][3] = -33.25;
        a[2][3] = -400.0;
        a
    }

    #[test]
    fn from_affine_qform_gives_back_the_affine() {
        for flip_z in [false, true] {
            let mut a = oblique_lps();
            if flip_z {
                for row in a.iter_mut().take(3) {
                    row[2] = -row[2];
                }
            }
            let mut g = Geometry::from_affine(a);
            g.sform_code = 0;
            let q = g.best_affine([4, 5, 6]).unwrap();
            assert!(affines_close(&q, &a, 1e-6), "{q:?} vs {a:?}");
            assert_eq!(g.pixdim[0], if flip_z { -1.0 } else { 1.0 });
        }
    }

    #[test]
    fn pixdim_fallback_centres_and_flips_x() {
        let mut g = Geometry::from_affine(identity4());
        g.sform_code = 0;
        g.qform_code = 0;
        g.pixdim[1..4].copy_from_slice(&[3.0, 2.0, 1.0]);
        // nibabel: AnalyzeHeader shape (3, 5, 7), zooms (3, 2, 1) gives this affine.
        let a = g.best_affine([3, 5, 7]).unwrap();
        assert_eq!(a[0], [-3.0, 0.0, 0.0, 3.0]);
        assert_eq!(a[1], [0.0, 2.0, 0.0, -4.0]);
        assert_eq!(a[2], [0.0, 0.0, 1.0, -3.0]);
    }

    #[test]
    fn a_quaternion_beyond_unit_norm_is_refused() {
        let mut g = Geometry::from_affine(identity4());
        g.sform_code = 0;
        g.quatern = [0.9, 0.5, 0.0];
        assert!(g.best_affine([1, 1, 1]).unwrap_err().contains("norm above 1"));
    }

    #[test]
    fn polar_rotation_removes_shear() {
        let m = [[1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let r = polar_rotation(&m);
        for i in 0..3 {
            for j in 0..3 {
                let dot: f64 = (0..3).map(|k| r[k][i] * r[k][j]).sum();
                assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }
}
