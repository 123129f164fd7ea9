//! Round trip: read -> reorient to RAS -> back -> write, then nibabel reads the written
//! file and finds the original's affine, header geometry (sform, qform, codes, pixdim,
//! units) and voxels; label maps come back bit-identical.

mod common;

use std::path::Path;

use common::nifti::{nibabel_compare, write_fixtures};
use lits_data::nifti::{read_header, read_image, read_labels, write_image, write_labels, Geometry, ImageDtype};
use lits_data::orient::{orientation_code, to_canonical};
use lits_data::Volume;
use ndarray::Array3;

fn roundtrip_image(src: &Path, out: &Path, dtype: Option<ImageDtype>) {
    let (img, geom) = read_image(src).unwrap();
    let (canonical, r) = to_canonical(&img);
    assert_eq!(orientation_code(&canonical.affine), "RAS", "{}", src.display());
    let back = r.undo(&canonical);
    let dtype = dtype.unwrap_or_else(|| {
        let h = read_header(src).unwrap();
        match h.scaling() {
            Some((slope, inter)) => ImageDtype::I16 { slope, inter },
            None => ImageDtype::I16 { slope: 1.0, inter: 0.0 },
        }
    });
    write_image(out, &back, &geom, dtype).unwrap();
    if let Err(diff) = nibabel_compare(src, out, false) {
        panic!("{} written as {} differs:\n{diff}", src.display(), out.display());
    }
}

#[test]
fn images_and_labels_survive_reorientation_and_writing() {
    let (dir, _) = write_fixtures();
    let out = tempfile::tempdir().unwrap();
    let d = dir.path();
    // int16 with scaling, big-endian, oblique sform + qform (LPS-like).
    roundtrip_image(&d.join("i2_be_scaled_sq.nii"), &out.path().join("a.nii.gz"), None);
    // float data nibabel stored as int16 with a scaling of its own choosing.
    roundtrip_image(&d.join("saved_int16_nibabel_scaling.nii.gz"), &out.path().join("b.nii.gz"), None);
    // float32 with qform only (RPI), written as float32 to a plain .nii.
    roundtrip_image(&d.join("saved_f32.nii.gz"), &out.path().join("c.nii"), Some(ImageDtype::F32));
    roundtrip_image(&d.join("f4_le_raw_q.nii"), &out.path().join("c2.nii.gz"), Some(ImageDtype::F32));
    // nibabel's big-endian anatomical image (sform code 2), neither sform nor qform.
    roundtrip_image(&d.join("nibabel_anatomical.nii"), &out.path().join("d.nii.gz"), None);
    roundtrip_image(&d.join("i2_le_raw_none.nii.gz"), &out.path().join("e.nii.gz"), None);

    for name in ["saved_mask.nii.gz", "u1_le_raw_q.nii", "u1_be_raw_sq.nii", "nibabel_standard.nii.gz"] {
        let src = d.join(name);
        let (labels, geom) = read_labels(&src).unwrap();
        let (canonical, r) = to_canonical(&labels);
        let back = r.undo(&canonical);
        assert_eq!(back, labels);
        let written = out.path().join(format!("labels_{name}"));
        write_labels(&written, &back, &geom).unwrap();
        if let Err(diff) = nibabel_compare(&src, &written, true) {
            panic!("{name} differs:\n{diff}");
        }
        // And lits reads its own file back bit for bit, with the same geometry.
        let (again, geom2) = read_labels(&written).unwrap();
        assert_eq!(again, labels);
        assert_eq!(geom2, geom);
    }
}

#[test]
fn a_volume_on_another_grid_is_written_with_its_own_affine() {
    let lps = [[-0.8, 0.0, 0.0, 100.0], [0.0, -0.8, 0.0, 80.0], [0.0, 0.0, 1.5, -20.0], [0.0, 0.0, 0.0, 1.0]];
    let mut geom = Geometry::from_affine(lps);
    geom.sform_code = 2;
    let data = Array3::from_shape_fn((5, 4, 3), |(i, j, k)| ((i + j * k) % 3) as u8);
    let labels = Volume { data, spacing: geom.spacing(), affine: lps };
    let (canonical, _) = to_canonical(&labels);
    // Written on the canonical grid, the file must carry the canonical affine, not the source's.
    let out = tempfile::tempdir().unwrap();
    let p = out.path().join("canonical.nii.gz");
    write_labels(&p, &canonical, &geom).unwrap();
    let (again, g2) = read_labels(&p).unwrap();
    assert_eq!(again.data, canonical.data);
    assert_eq!(orientation_code(&again.affine), "RAS");
    for (a, b) in again.affine.iter().flatten().zip(canonical.affine.iter().flatten()) {
        assert!((a - b).abs() < 1e-5, "{:?} vs {:?}", again.affine, canonical.affine);
    }
    assert_eq!((g2.sform_code, g2.qform_code), (2, 1));
}

#[test]
fn a_failed_write_leaves_nothing_under_the_final_name() {
    let out = tempfile::tempdir().unwrap();
    let mut img = Volume::with_spacing(Array3::from_shape_fn((4, 5, 6), |(i, j, k)| (i * j * k) as f32 - 30.0), [1.0; 3]);
    let geom = Geometry::from_affine(img.affine);
    img.data[[1, 2, 3]] = 1e9; // does not fit int16 with slope 10
    let p = out.path().join("x.nii.gz");
    let e = write_image(&p, &img, &geom, ImageDtype::I16 { slope: 10.0, inter: 0.0 }).unwrap_err().to_string();
    assert!(e.contains("x.nii.gz") && e.contains("do not fit int16") && e.contains("[1, 2, 3]"), "{e}");
    // A target that is a directory: the rename fails, the temporary file is removed.
    let d = out.path().join("dir.nii.gz");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("keep"), b"x").unwrap();
    let e = write_image(&d, &img, &geom, ImageDtype::F32).unwrap_err().to_string();
    assert!(e.contains("dir.nii.gz"), "{e}");
    let e = write_image(&out.path().join("x.png"), &img, &geom, ImageDtype::F32).unwrap_err().to_string();
    assert!(e.contains("x.png") && e.contains(".nii.gz or .nii"), "{e}");
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("dir.nii.gz")], "left behind: {left:?}");
}
