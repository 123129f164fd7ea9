//! CT noise with the texture of filtered back projection.
//!
//! Quantum noise in projections is nearly white; the ramp filter of filtered back projection
//! weights it by the spatial frequency and the reconstruction kernel's apodisation cuts the
//! high end, so the noise power spectrum of an axial slice rises from zero at low frequency,
//! peaks and falls off (Boedeker, Cooper and McNitt-Gray, "Application of the noise power
//! spectrum in modern diagnostic MDCT", Phys. Med. Biol. 52, 2007: soft-tissue kernels peak
//! at about 0.2-0.35 cycles/mm). The model here is `NPS(f) = f · exp(-(f/f0)²)`, peaking at
//! `f0/√2`, applied to white noise slice by slice through the 2-D Fourier transform. Slices
//! are independent (contiguous thick slices barely correlate along z).
//!
//! The transform is rustfft's scalar planner: no SIMD paths chosen at run time, so the same
//! draws give the same noise on every processor.

use ndarray::Array3;
use rayon::prelude::*;
use rustfft::num_complex::Complex64;
use rustfft::{Fft, FftPlannerScalar};
use std::sync::Arc;

use crate::rng::SeededRng;

/// Noise of standard deviation `sd` (HU) on a grid of `shape` voxels, `spacing_mm` apart in
/// the axial plane (axes 0 and 1), with the FBP spectrum `f · exp(-(f/f0)²)` (`f0` in
/// cycles/mm). The white draws come from `rng` in array order.
pub(super) fn fbp_noise(rng: &mut SeededRng, shape: [usize; 3], spacing_mm: [f64; 2], sd: f64, f0: f64) -> Array3<f64> {
    let [nx, ny, nz] = shape;
    // Draw every white sample first, in one fixed order; the filtering is then per slice.
    let white: Vec<f64> = (0..nx * ny * nz).map(|_| rng.normal()).collect();
    let gain = spectrum_gain([nx, ny], spacing_mm, f0);
    let mut planner = FftPlannerScalar::new();
    let (fx, ix) = (planner.plan_fft_forward(nx), planner.plan_fft_inverse(nx));
    let (fy, iy) = (planner.plan_fft_forward(ny), planner.plan_fft_inverse(ny));
    let filtered: Vec<Vec<f64>> = (0..nz)
        .into_par_iter()
        .map(|k| {
            // `white` is in (i, j, k) order: sample (i, j) of slice k sits at (i*ny + j)*nz + k.
            let mut buf: Vec<Complex64> = (0..nx * ny).map(|ij| Complex64::new(white[ij * nz + k] * sd, 0.0)).collect();
            transform_2d(&mut buf, [nx, ny], &fx, &fy);
            for (v, g) in buf.iter_mut().zip(&gain) {
                *v *= g;
            }
            transform_2d(&mut buf, [nx, ny], &ix, &iy);
            let n = (nx * ny) as f64;
            buf.iter().map(|v| v.re / n).collect()
        })
        .collect();
    Array3::from_shape_fn(shape, |(i, j, k)| filtered[k][i * ny + j])
}

/// `sqrt(NPS)` on the DFT grid, scaled so that filtering unit white noise keeps unit
/// variance (Parseval: the variance is the mean of the squared gain).
fn spectrum_gain([nx, ny]: [usize; 2], [sx, sy]: [f64; 2], f0: f64) -> Vec<f64> {
    let freq = |i: usize, n: usize, s: f64| {
        let k = if i <= n / 2 { i as f64 } else { i as f64 - n as f64 };
        k / (n as f64 * s)
    };
    let mut gain: Vec<f64> = Vec::with_capacity(nx * ny);
    for i in 0..nx {
        for j in 0..ny {
            let f = freq(i, nx, sx).hypot(freq(j, ny, sy));
            gain.push((f * (-(f / f0).powi(2)).exp()).sqrt());
        }
    }
    let power = gain.iter().map(|g| g * g).sum::<f64>() / gain.len() as f64;
    let scale = if power > 0.0 { power.sqrt().recip() } else { 0.0 };
    gain.iter().map(|g| g * scale).collect()
}

/// In-place 2-D transform of a row-major `nx × ny` grid: rows (along y), then columns.
fn transform_2d(buf: &mut [Complex64], [nx, ny]: [usize; 2], along_x: &Arc<dyn Fft<f64>>, along_y: &Arc<dyn Fft<f64>>) {
    along_y.process(buf);
    let mut column = vec![Complex64::new(0.0, 0.0); nx];
    for j in 0..ny {
        for i in 0..nx {
            column[i] = buf[i * ny + j];
        }
        along_x.process(&mut column);
        for i in 0..nx {
            buf[i * ny + j] = column[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Power of `slice` at radial frequency bins (cycles/mm), by direct DFT of a few bins.
    fn band_power(noise: &Array3<f64>, spacing: f64, lo: f64, hi: f64) -> f64 {
        let [nx, ny, nz] = [noise.shape()[0], noise.shape()[1], noise.shape()[2]];
        let mut planner = FftPlannerScalar::new();
        let (fx, fy) = (planner.plan_fft_forward(nx), planner.plan_fft_forward(ny));
        let mut total = 0.0;
        let mut count = 0usize;
        for k in 0..nz {
            let mut buf: Vec<Complex64> = (0..nx * ny).map(|ij| Complex64::new(noise[[ij / ny, ij % ny, k]], 0.0)).collect();
            transform_2d(&mut buf, [nx, ny], &fx, &fy);
            for i in 0..nx {
                for j in 0..ny {
                    let f = |i: usize, n: usize| (if i <= n / 2 { i as f64 } else { i as f64 - n as f64 }) / (n as f64 * spacing);
                    let r = f(i, nx).hypot(f(j, ny));
                    if (lo..hi).contains(&r) {
                        total += buf[i * ny + j].norm_sqr();
                        count += 1;
                    }
                }
            }
        }
        total / count as f64
    }

    #[test]
    fn has_the_asked_sd_and_a_band_pass_spectrum() {
        let mut rng = SeededRng::new(1, 2);
        let noise = fbp_noise(&mut rng, [64, 64, 8], [0.7, 0.7], 12.0, 0.35);
        let n = noise.len() as f64;
        let mean = noise.sum() / n;
        let sd = (noise.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((sd - 12.0).abs() < 0.6, "sd {sd}");
        // Little power near zero frequency, most around the peak at f0/√2 ≈ 0.25 cycles/mm,
        // less again towards Nyquist (0.71 cycles/mm): white noise would be flat.
        let low = band_power(&noise, 0.7, 0.0, 0.05);
        let peak = band_power(&noise, 0.7, 0.2, 0.3);
        let high = band_power(&noise, 0.7, 0.6, 0.7);
        assert!(peak > 4.0 * low && peak > 4.0 * high, "low {low} peak {peak} high {high}");
        // Neighbouring voxels are correlated (white noise: about 0).
        let mut c = 0.0;
        for k in 0..8 {
            for i in 0..63 {
                for j in 0..64 {
                    c += noise[[i, j, k]] * noise[[i + 1, j, k]];
                }
            }
        }
        let corr = c / (63.0 * 64.0 * 8.0) / (sd * sd);
        assert!(corr.abs() > 0.1, "neighbour correlation {corr}");
    }

    #[test]
    fn same_draws_same_noise() {
        let a = fbp_noise(&mut SeededRng::new(5, 1), [20, 24, 3], [3.0, 3.0], 8.0, 0.3);
        let b = fbp_noise(&mut SeededRng::new(5, 1), [20, 24, 3], [3.0, 3.0], 8.0, 0.3);
        assert_eq!(a, b);
    }
}
