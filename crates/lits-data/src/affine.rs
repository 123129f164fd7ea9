//! 4×4 affines (voxel index → world millimetres, homogeneous): product and inverse, the one
//! place lits multiplies or inverts them.

/// A 4×4 affine.
pub type Affine = [[f64; 4]; 4];

/// The product `a · b`.
pub fn mul(a: &Affine, b: &Affine) -> Affine {
    let mut out = [[0.0; 4]; 4];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..4).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    out
}

/// Inverse of an affine `[R t; 0 1]`: `[R⁻¹  −R⁻¹t; 0 1]`; `None` when `R` is singular or
/// not finite.
pub fn invert(a: &Affine) -> Option<Affine> {
    let r = |i: usize, j: usize| a[i][j];
    let det = r(0, 0) * (r(1, 1) * r(2, 2) - r(1, 2) * r(2, 1)) - r(0, 1) * (r(1, 0) * r(2, 2) - r(1, 2) * r(2, 0))
        + r(0, 2) * (r(1, 0) * r(2, 1) - r(1, 1) * r(2, 0));
    if !det.is_finite() || det.abs() < 1e-12 {
        return None;
    }
    let mut inv = [[0.0; 4]; 4];
    for (i, row) in inv.iter_mut().enumerate().take(3) {
        let (i1, i2) = ((i + 1) % 3, (i + 2) % 3);
        for (j, v) in row.iter_mut().enumerate().take(3) {
            // Cofactor of (j, i) over the determinant (adjugate transpose).
            let (j1, j2) = ((j + 1) % 3, (j + 2) % 3);
            *v = (r(j1, i1) * r(j2, i2) - r(j1, i2) * r(j2, i1)) / det;
        }
        row[3] = -(0..3).map(|k| row[k] * a[k][3]).sum::<f64>();
    }
    inv[3][3] = 1.0;
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_affine_times_its_inverse_is_the_identity() {
        let a = [[0.0, -0.8, 0.1, 12.0], [0.7, 0.0, 0.0, -3.0], [0.0, 0.05, 2.5, 40.0], [0.0, 0.0, 0.0, 1.0]];
        let p = mul(&invert(&a).unwrap(), &a);
        for (r, row) in p.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                assert!((v - f64::from(u8::from(r == c))).abs() < 1e-12, "{p:?}");
            }
        }
        assert!(invert(&[[0.0; 4]; 4]).is_none());
    }
}
