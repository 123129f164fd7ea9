//! Percentiles as `numpy.percentile` computes them by default (linear interpolation between
//! order statistics, with numpy's `_lerp`, whose two formulas meet exactly at both ends):
//! the one implementation behind intensity clipping, HD95 and box plots.

/// The `q`-th percentile (0..=100, clamped) of values sorted in increasing order; NaN when
/// there are none.
pub fn of_sorted<T: Copy + Into<f64>>(sorted: &[T], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let h = (n - 1) as f64 * q.clamp(0.0, 100.0) / 100.0;
    let lo = h.floor() as usize;
    let a: f64 = sorted[lo].into();
    if lo + 1 >= n {
        return a;
    }
    lerp(a, sorted[lo + 1].into(), h - lo as f64)
}

/// The `q`-th percentile of unsorted `values`, reordering them (a partial selection, not a
/// sort); NaN when there are none.
pub fn select(values: &mut [f64], q: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let h = (n - 1) as f64 * q.clamp(0.0, 100.0) / 100.0;
    let lo = h.floor() as usize;
    let (_, &mut a, upper) = values.select_nth_unstable_by(lo, f64::total_cmp);
    if lo + 1 >= n {
        return a;
    }
    let b = upper.iter().copied().fold(f64::INFINITY, f64::min);
    lerp(a, b, h - lo as f64)
}

/// numpy's `_lerp(a, b, t)`.
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_like_numpy() {
        // numpy.percentile([1, 2, 3, 4, 100], [0, 25, 50, 75, 95, 100]) == [1, 2, 3, 4, 80.8, 100]
        let v = [1.0, 2.0, 3.0, 4.0, 100.0];
        let want = [(0.0, 1.0), (25.0, 2.0), (50.0, 3.0), (75.0, 4.0), (95.0, 80.8), (100.0, 100.0)];
        for (q, w) in want {
            assert!((of_sorted(&v, q) - w).abs() < 1e-12, "{q}: {}", of_sorted(&v, q));
            let mut shuffled = [100.0, 3.0, 1.0, 4.0, 2.0];
            assert_eq!(select(&mut shuffled, q).to_bits(), of_sorted(&v, q).to_bits(), "{q}");
        }
        // numpy.percentile([0.1, 0.9], 25) == 0.3; float32 input reads as its f64 value.
        assert!((of_sorted(&[0.1f64, 0.9], 25.0) - 0.3).abs() < 1e-15);
        assert_eq!(of_sorted(&[0.5f32, 1.5], 50.0), 1.0);
        assert!(of_sorted::<f64>(&[], 50.0).is_nan() && select(&mut [], 50.0).is_nan());
    }
}
