//! Resampling against scipy.ndimage and SimpleITK on the same grid definitions
//! (scripts/reference/resample_peer.py runs the peers from the project's .venv).

use std::path::{Path, PathBuf};
use std::process::Command;

use lits_data::resample::{self, Alignment, Grid, LabelInterp};
use lits_data::{Image, Labels, Volume};
use ndarray::Array3;

const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python");
const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/reference/resample_peer.py");

fn triple<T: ToString>(v: [T; 3]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
}

/// Runs one peer method on `bytes` (C-order, shape `shape`) and returns the raw result and
/// its shape.
fn peer(method: &str, dir: &Path, bytes: &[u8], shape: [usize; 3], spacing: [f64; 3], target: [f64; 3]) -> (Vec<u8>, [usize; 3]) {
    let src: PathBuf = dir.join(format!("{method}.in"));
    let dst: PathBuf = dir.join(format!("{method}.out"));
    std::fs::write(&src, bytes).unwrap();
    let out = Command::new(PYTHON)
        .arg(PEER)
        .args([method, src.to_str().unwrap(), dst.to_str().unwrap()])
        .args([triple(shape), triple(spacing), triple(target)])
        .output()
        .expect("run .venv/bin/python (scripts/setup.sh installs it)");
    assert!(out.status.success(), "{method}: {}", String::from_utf8_lossy(&out.stderr));
    let shape: Vec<usize> = serde_json::from_slice(&out.stdout).unwrap();
    (std::fs::read(&dst).unwrap(), [shape[0], shape[1], shape[2]])
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// A CT-like test image: smooth structure plus deterministic high-frequency detail.
fn image(shape: [usize; 3], spacing: [f64; 3]) -> Image {
    let data = Array3::from_shape_fn(shape, |(i, j, k)| {
        let (x, y, z) = (i as f32, j as f32, k as f32);
        let hash = ((i * 7919 + j * 104_729 + k * 1_299_709) % 1000) as f32 / 1000.0;
        400.0 * (0.31 * x).sin() * (0.17 * y).cos() + 30.0 * z - 200.0 + 50.0 * hash
    });
    Volume::with_spacing(data, spacing)
}

fn image_bytes(img: &Image) -> Vec<u8> {
    img.data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

// In-plane downsampling with a fractional ratio and upsampling along k, per axis.
const SHAPE: [usize; 3] = [23, 19, 11];
const SPACING: [f64; 3] = [0.77, 0.81, 2.5];
const TARGET: [f64; 3] = [1.5, 1.3, 1.1];

/// Our linear resampling with `align` against a peer method that covers every voxel.
fn assert_linear_matches(method: &str, align: Alignment) {
    let dir = tempfile::tempdir().unwrap();
    let img = image(SHAPE, SPACING);
    let ours = resample::image_to_spacing(&img, TARGET, align).unwrap();
    let (raw, shape) = peer(method, dir.path(), &image_bytes(&img), SHAPE, SPACING, TARGET);
    assert_eq!(ours.shape(), shape);
    let d = max_abs_diff(ours.data.as_slice().unwrap(), &f32s(&raw));
    assert!(d < 2e-3, "max |lits - {method}| = {d}");
}

#[test]
fn corners_alignment_matches_scipy_zoom_grid_mode_false() {
    assert_linear_matches("scipy_zoom", Alignment::Corners);
}

#[test]
fn origin_alignment_matches_scipy_map_coordinates() {
    assert_linear_matches("scipy_origin", Alignment::Origin);
}

#[test]
fn origin_alignment_matches_simpleitk_linear() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(SHAPE, SPACING);
    let ours = resample::image_to_spacing(&img, TARGET, Alignment::Origin).unwrap();
    let (raw, shape) = peer("sitk_origin", dir.path(), &image_bytes(&img), SHAPE, SPACING, TARGET);
    assert_eq!(ours.shape(), shape);
    // ITK gives no value beyond half a voxel past the last centre (NaN here); lits takes
    // the edge value there. Everything ITK does compute must agree.
    let theirs = f32s(&raw);
    let inside: Vec<(f32, f32)> = ours.data.iter().zip(&theirs).filter(|(_, t)| !t.is_nan()).map(|(o, t)| (*o, *t)).collect();
    assert!(inside.len() * 10 > theirs.len() * 8, "only {} of {} compared", inside.len(), theirs.len());
    let d = inside.iter().map(|(o, t)| (o - t).abs()).fold(0.0, f32::max);
    assert!(d < 2e-3, "max |lits - SimpleITK| = {d}");
}

#[test]
fn nearest_labels_match_simpleitk() {
    let dir = tempfile::tempdir().unwrap();
    let data = Array3::from_shape_fn(SHAPE, |(i, j, k)| ((i / 3 + j / 4 + k) % 3) as u8);
    let lab: Labels = Volume::with_spacing(data, SPACING);
    let ours = resample::labels_to_spacing(&lab, TARGET, Alignment::Origin, LabelInterp::Nearest).unwrap();
    let bytes: Vec<u8> = lab.data.iter().copied().collect();
    let (theirs, shape) = peer("sitk_nearest", dir.path(), &bytes, SHAPE, SPACING, TARGET);
    assert_eq!(ours.shape(), shape);
    let mut compared = 0;
    for (o, t) in ours.data.iter().zip(&theirs) {
        if *t != 255 {
            assert_eq!(o, t);
            compared += 1;
        }
    }
    assert!(compared * 10 > theirs.len() * 8, "only {compared} of {} compared", theirs.len());
}

#[test]
fn back_to_the_original_grid_matches_scipy_on_the_inverse_map() {
    // Resample down, then back onto the original grid: the same as scipy evaluating the
    // downsampled array at source index i * s / t.
    let dir = tempfile::tempdir().unwrap();
    let img = image(SHAPE, SPACING);
    let down = resample::image_to_spacing(&img, TARGET, Alignment::Origin).unwrap();
    let back = resample::resample_image(&down, &Grid::of(&img)).unwrap();
    assert_eq!((back.shape(), back.affine, back.spacing), (img.shape(), img.affine, img.spacing));
    let (raw, shape) = peer("scipy_origin", dir.path(), &image_bytes(&down), down.shape(), TARGET, SPACING);
    // scipy rounds the shape from the downsampled grid; compare the overlap it covers.
    let theirs = Array3::from_shape_vec(shape, f32s(&raw)).unwrap();
    let mut d = 0.0f32;
    for ((i, j, k), v) in back.data.indexed_iter() {
        if i < shape[0] && j < shape[1] && k < shape[2] {
            d = d.max((v - theirs[[i, j, k]]).abs());
        }
    }
    assert!(d < 2e-3, "max |lits - scipy| = {d}");
}
