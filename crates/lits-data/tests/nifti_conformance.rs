//! Conformance with nibabel: every file the fixture script has nibabel write (each
//! datatype, byte order, scaling and qform/sform combination, .nii and .nii.gz) and
//! nibabel's bundled test images read with the shape, affine (1e-5), orientation, spacing
//! and voxels (exact for unscaled integers, 1e-6 relative otherwise) nibabel reports. A
//! file with NaN voxels is refused with their count, and read when asked to keep or
//! replace them.

mod common;

use common::nifti::{affine, read_f32, write_fixtures};
use lits_data::nifti::{read_header, read_image, read_image_with, read_labels, ReadOptions};
use lits_data::orient::orientation_code;

#[test]
fn every_fixture_reads_as_nibabel_reads_it() {
    let (dir, cases) = write_fixtures();
    let mut failures = Vec::new();
    let mut read = 0;
    for case in &cases {
        let name = case["file"].as_str().unwrap();
        let path = dir.path().join(name);
        if let Some(want) = case["error"].as_str() {
            match read_image(&path) {
                Ok(_) => failures.push(format!("{name}: read, but should fail with {want:?}")),
                Err(e) => {
                    let msg = e.to_string();
                    if !msg.contains(want) || !msg.contains(name) {
                        failures.push(format!("{name}: error {msg:?} lacks {want:?} or the file name"));
                    }
                }
            }
            continue;
        }
        let non_finite = case["non_finite"].as_u64().unwrap();
        let keep = ReadOptions { keep_non_finite: true, ..Default::default() };
        if non_finite > 0 {
            let msg = read_image(&path).map(|_| ()).unwrap_err().to_string();
            if !msg.contains(&format!("{name}: {non_finite} voxel(s) are NaN or infinite")) {
                failures.push(format!("{name}: {non_finite} NaN voxels, but: {msg}"));
            }
            let replace = ReadOptions { replace_non_finite: Some(-7.0), ..Default::default() };
            let (img, _) = read_image_with(&path, &replace).unwrap();
            let (kept, _) = read_image_with(&path, &keep).unwrap();
            let replaced = kept.data.iter().zip(&img.data).filter(|(k, r)| !k.is_finite() && **r == -7.0).count();
            if replaced as u64 != non_finite {
                failures.push(format!("{name}: {replaced} of {non_finite} NaN voxels replaced"));
            }
        }
        let (img, geom) = match read_image_with(&path, &keep) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        read += 1;
        let shape: Vec<usize> = case["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        if img.shape().to_vec() != shape {
            failures.push(format!("{name}: shape {:?}, nibabel {shape:?}", img.shape()));
            continue;
        }
        let want_affine = affine(&case["affine"]);
        let worst = img.affine.iter().flatten().zip(want_affine.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        if worst > 1e-5 || geom.affine != img.affine {
            failures.push(format!("{name}: affine off by {worst}: {:?} vs {want_affine:?}", img.affine));
        }
        if orientation_code(&img.affine) != case["orientation"].as_str().unwrap() {
            failures.push(format!("{name}: orientation {} vs {}", orientation_code(&img.affine), case["orientation"]));
        }
        let zooms: Vec<f64> = case["zooms"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        if img.spacing.iter().zip(&zooms).any(|(a, b)| (a - b).abs() > 1e-6) {
            failures.push(format!("{name}: spacing {:?} vs zooms {zooms:?}", img.spacing));
        }
        let want = read_f32(&dir.path().join(case["voxels"].as_str().unwrap()));
        let got = img.data.as_slice().expect("standard layout");
        let exact = case["integer_exact"].as_bool().unwrap();
        let bad = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| match (exact, w.is_nan()) {
                (true, _) => g.to_bits() != w.to_bits(),
                (false, true) => !g.is_nan(),
                (false, false) => (*g - *w).abs() > 1e-6 * w.abs(),
            })
            .count();
        if bad > 0 {
            failures.push(format!("{name}: {bad} voxels differ ({})", if exact { "exact" } else { "1e-6 relative" }));
        }
        let header = read_header(&path).unwrap();
        if header.shape != img.shape() || header.geometry != geom {
            failures.push(format!("{name}: read_header disagrees with read_image"));
        }
        match (case["labels"].as_bool().unwrap(), read_labels(&path)) {
            (true, Ok((labels, lgeom))) => {
                if labels.data.iter().zip(&want).any(|(l, w)| f32::from(*l) != *w) || lgeom != geom {
                    failures.push(format!("{name}: labels differ from nibabel's values"));
                }
            }
            (true, Err(e)) => failures.push(format!("{name}: labels refused: {e}")),
            (false, Ok(_)) => failures.push(format!("{name}: non-integer or out-of-range values read as labels")),
            (false, Err(e)) => {
                if !e.to_string().contains("not integer labels 0..=255") {
                    failures.push(format!("{name}: labels refused for another reason: {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases fail:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert!(read > 100, "only {read} files read");
}
