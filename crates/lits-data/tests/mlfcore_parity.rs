//! The Mlfcore preprocessing mode against a NumPy transcription of the original's steps
//! (scripts/reference/mlfcore_preprocess.py, reading the same NIfTI files with nibabel),
//! voxel for voxel.

use std::path::Path;
use std::process::Command;

use lits_data::nifti::{self, Geometry, ImageDtype};
use lits_data::preprocess::{CaseRecord, MlfcoreConfig, PreprocessConfig};
use lits_data::Volume;
use ndarray::Array3;

const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/reference/mlfcore_preprocess.py");

/// An abdomen-like case: a body ellipse of soft tissue with texture in air, an ellipsoid
/// liver (label 1) centred at `liver` with radii `radii` (voxels), a tumor (label 2) inside.
fn write_case(dir: &Path, shape: [usize; 3], liver: Option<([f64; 3], [f64; 3])>) {
    let c = shape.map(|n| n as f64 / 2.0);
    let mut img = Array3::<f32>::zeros(shape);
    let mut lab = Array3::<u8>::zeros(shape);
    for ((i, j, k), v) in img.indexed_iter_mut() {
        let p = [i as f64, j as f64, k as f64];
        let body = ((p[0] - c[0]) / (0.45 * shape[0] as f64)).powi(2) + ((p[1] - c[1]) / (0.4 * shape[1] as f64)).powi(2);
        // Texture on the 0.5 HU grid of the int16 storage below.
        let texture = ((i * 31 + j * 17 + k * 7) % 23) as f32 * 0.5;
        *v = if body < 1.0 { 20.0 + texture } else { -1000.0 + texture };
        if let Some((centre, radii)) = liver {
            let r: f64 = (0..3).map(|a| ((p[a] - centre[a]) / radii[a]).powi(2)).sum();
            if r < 1.0 {
                *v = 60.0 + texture;
                lab[[i, j, k]] = if r < 0.15 { 2 } else { 1 };
            }
        }
    }
    let spacing = [0.75, 0.75, 2.5];
    let img = Volume::with_spacing(img, spacing);
    let geom = Geometry::from_affine(img.affine);
    // Stored as int16 with a scaling that every reader applies exactly (value = 0.5 s − 10).
    let dtype = ImageDtype::I16 { slope: 0.5, inter: -10.0 };
    nifti::write_image(&dir.join("volume-0.nii"), &img, &geom, dtype).unwrap();
    nifti::write_labels(&dir.join("segmentation-0.nii"), &img.map_data(lab), &geom).unwrap();
}

fn compare(shape: [usize; 3], liver: Option<([f64; 3], [f64; 3])>, cfg: MlfcoreConfig) {
    let dir = tempfile::tempdir().unwrap();
    write_case(dir.path(), shape, liver);
    let (img, _) = nifti::read_image(&dir.path().join("volume-0.nii")).unwrap();
    let (lab, _) = nifti::read_labels(&dir.path().join("segmentation-0.nii")).unwrap();
    let ours = PreprocessConfig::Mlfcore(cfg.clone()).prepare(&img, Some(&lab), None).unwrap();

    let prefix = dir.path().join("ref");
    let out = Command::new(PYTHON)
        .arg(SCRIPT)
        .arg(dir.path().join("volume-0.nii"))
        .arg(dir.path().join("segmentation-0.nii"))
        .arg(&prefix)
        .args([cfg.slices.to_string(), cfg.cube.to_string()])
        .output()
        .expect("run .venv/bin/python (scripts/setup.sh installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let CaseRecord::Mlfcore { slice_offset, cube_start, .. } = ours.record else { panic!("mlfcore record") };
    assert_eq!(meta["slice_offset"], slice_offset);
    assert_eq!(meta["cube_start"], serde_json::json!(cube_start));

    let raw = std::fs::read(prefix.with_extension("image.f32")).unwrap();
    let theirs: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let mine: Vec<f32> = ours.image.data.iter().copied().collect();
    assert_eq!(mine.len(), cfg.cube.pow(3));
    let differ = mine.iter().zip(&theirs).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differ, 0, "{differ} image voxels differ");

    let theirs = std::fs::read(prefix.with_extension("label.u8")).unwrap();
    let mine: Vec<u8> = ours.labels.unwrap().data.iter().copied().collect();
    assert_eq!(mine, theirs, "labels differ");
    // The case is not trivial: the cube holds liver and tumor where there is a liver.
    if liver.is_some() {
        assert!(mine.contains(&1) && mine.contains(&2));
    }
}

#[test]
fn padded_slices_and_a_cube_leaving_the_volume_at_both_ends() {
    // Odd in-plane size, 23 slices padded to 32; the liver sits low in i (cube starts before
    // index 0) and high in j (cube runs past the end).
    let cfg = MlfcoreConfig { slices: 32, cube: 16 };
    compare([41, 36, 23], Some(([8.0, 27.0, 12.0], [6.0, 7.0, 6.0])), cfg);
}

#[test]
fn centre_cropped_slices() {
    let cfg = MlfcoreConfig { slices: 32, cube: 16 };
    compare([38, 30, 45], Some(([20.0, 14.0, 33.0], [9.0, 6.0, 8.0])), cfg);
}

#[test]
fn a_case_without_liver_is_centred() {
    let cfg = MlfcoreConfig { slices: 16, cube: 8 };
    compare([20, 18, 11], None, cfg);
}

#[test]
fn original_sizes_on_a_full_slice() {
    // The original's 512 slices and 128³ cube, on 512 × 512 slices.
    compare([512, 512, 24], Some(([300.0, 240.0, 12.0], [90.0, 70.0, 10.0])), MlfcoreConfig::default());
}
