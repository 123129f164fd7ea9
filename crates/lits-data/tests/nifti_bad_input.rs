//! Every kind of bad input is refused with an error that names the file and the problem,
//! and never a panic: each test breaks one thing in an otherwise valid file.

mod common;

use std::path::{Path, PathBuf};

use common::nifti::gzip;
use lits_data::nifti::{read_header, read_image, read_image_with, read_labels, write_image, Geometry, ImageDtype, ReadOptions};
use lits_data::{Error, Volume};
use ndarray::Array3;

const SHAPE: (usize, usize, usize) = (4, 5, 6);

/// The bytes of a valid single-file NIfTI-1 (header, extension flag, voxels) of SHAPE.
fn valid(dtype: ImageDtype) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let img = Volume::with_spacing(Array3::from_shape_fn(SHAPE, |(i, j, k)| (i + 10 * j + 100 * k) as f32), [0.8, 0.8, 2.0]);
    let p = dir.path().join("v.nii");
    write_image(&p, &img, &Geometry::from_affine(img.affine), dtype).unwrap();
    std::fs::read(p).unwrap()
}

fn i16_file() -> Vec<u8> {
    valid(ImageDtype::I16 { slope: 1.0, inter: 0.0 })
}

fn put(bytes: &mut [u8], off: usize, v: &[u8]) {
    bytes[off..off + v.len()].copy_from_slice(v);
}

/// Write `bytes` as `name` in a fresh dir; the dir lives as long as the returned guard.
fn file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    (dir, p)
}

/// `read_image` fails, naming the file first, then the problem.
fn refused(path: &Path, problem: &str) -> String {
    let e = read_image(path).map(|_| ()).expect_err("bad input was read").to_string();
    let prefix = format!("{}: ", path.display());
    assert!(e.starts_with(&prefix), "error does not start with the file name: {e}");
    assert!(e.contains(problem), "error lacks {problem:?}: {e}");
    e
}

#[test]
fn truncated_gzip() {
    let gz = gzip(&i16_file());
    let (_d, p) = file("cut.nii.gz", &gz[..gz.len() / 2]);
    refused(&p, "truncated or corrupt gzip data");
    let (_d, p) = file("cut_in_header.nii.gz", &gz[..30]);
    refused(&p, "header");
    // Only the 8-byte trailer (CRC, size) missing.
    let (_d, p) = file("no_trailer.nii.gz", &gz[..gz.len() - 8]);
    refused(&p, "truncated or corrupt gzip data");
    let mut bad_crc = gz.clone();
    let n = bad_crc.len();
    bad_crc[n - 6] ^= 0xff;
    let (_d, p) = file("bad_crc.nii.gz", &bad_crc);
    refused(&p, "corrupt gzip data");
}

#[test]
fn wrong_magic_or_header_size() {
    let mut b = i16_file();
    put(&mut b, 344, b"XYZ\0");
    let (_d, p) = file("magic.nii", &b);
    refused(&p, "wrong magic");
    let mut b = i16_file();
    put(&mut b, 344, b"ni1\0");
    let (_d, p) = file("pair.nii", &b);
    refused(&p, ".hdr/.img pair");
    let mut b = i16_file();
    put(&mut b, 0, &349i32.to_le_bytes());
    let (_d, p) = file("size.nii.gz", &gzip(&b));
    refused(&p, "header size field is 349, expected 348");
    let (_d, p) = file("short_header.nii", &i16_file()[..200]);
    refused(&p, "header cut short: 200 of 348 bytes");
}

#[test]
fn data_shorter_than_the_header_says() {
    let b = i16_file();
    let (_d, p) = file("short.nii", &b[..b.len() - 10]);
    refused(&p, "data shorter than the header says");
    let (_d, p) = file("short.nii.gz", &gzip(&b[..b.len() - 10]));
    refused(&p, "data shorter than the header says");
}

#[test]
fn zero_and_negative_dimensions() {
    let mut b = i16_file();
    put(&mut b, 44, &0i16.to_le_bytes());
    let (_d, p) = file("zero.nii", &b);
    refused(&p, "dimension 2 is 0");
    let mut b = i16_file();
    put(&mut b, 46, &(-3i16).to_le_bytes());
    let (_d, p) = file("negative.nii.gz", &gzip(&b));
    refused(&p, "dimension 3 is -3");
}

#[test]
fn absurd_dimensions_are_refused_before_allocating() {
    let mut b = i16_file();
    for a in 1..=3 {
        put(&mut b, 40 + 2 * a, &32767i16.to_le_bytes());
    }
    let (_d, p) = file("huge.nii.gz", &gzip(&b));
    refused(&p, "cannot hold more than");
    let (_d, p) = file("huge.nii", &b);
    refused(&p, "data shorter than the header says");
    // A sparse file as large as the header claims: the size is right, the memory is not there.
    let mut b = i16_file();
    b.truncate(352);
    for (a, d) in [20000i16, 20000, 1000].iter().enumerate() {
        put(&mut b, 42 + 2 * a, &d.to_le_bytes());
    }
    let (_d, p) = file("sparse.nii", &b);
    let len = 352 + 2 * 20000u64 * 20000 * 1000;
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len).unwrap();
    refused(&p, "of memory to read, only");
    // The header alone is fine.
    assert_eq!(read_header(&p).unwrap().shape, [20000, 20000, 1000]);
}

#[test]
fn a_fourth_dimension_with_several_points() {
    let mut b = i16_file();
    put(&mut b, 40, &4i16.to_le_bytes());
    put(&mut b, 48, &3i16.to_le_bytes());
    let (_d, p) = file("4d.nii", &b);
    refused(&p, "dimension 4 has 3 entries");
    // One time point is a 3-D volume.
    put(&mut b, 48, &1i16.to_le_bytes());
    let (_d, p) = file("4d_one.nii", &b);
    let (img, _) = read_image(&p).unwrap();
    assert_eq!(img.shape(), [4, 5, 6]);
}

#[test]
fn unsupported_datatypes() {
    for (code, name) in [(32i16, "complex64"), (128, "RGB24"), (2304, "RGBA32"), (1792, "complex128"), (1, "binary")] {
        let mut b = valid(ImageDtype::F32);
        put(&mut b, 70, &code.to_le_bytes());
        let (_d, p) = file("odd.nii", &b);
        refused(&p, &format!("unsupported datatype {name}"));
    }
}

#[test]
fn nan_and_inf_voxels_are_counted_and_refused_unless_replaced() {
    let mut b = valid(ImageDtype::F32);
    // Voxel [i, j, k] sits at 352 + 4 * (i + 4 * (j + 5 * k)).
    let at = |i: usize, j: usize, k: usize| 352 + 4 * (i + 4 * (j + 5 * k));
    put(&mut b, at(1, 2, 3), &f32::NAN.to_le_bytes());
    put(&mut b, at(3, 0, 0), &f32::INFINITY.to_le_bytes());
    put(&mut b, at(0, 4, 5), &f32::NEG_INFINITY.to_le_bytes());
    let (_d, p) = file("nan.nii.gz", &gzip(&b));
    let e = refused(&p, "3 voxel(s) are NaN or infinite");
    assert!(e.contains("first at [0, 4, 5]"), "first in array order is [0, 4, 5]: {e}");
    assert!(matches!(read_image(&p), Err(Error::NonFinite { count: 3, .. })));
    let (img, _) = read_image_with(&p, &ReadOptions { replace_non_finite: Some(-1024.0), ..Default::default() }).unwrap();
    assert_eq!(img.data[[1, 2, 3]], -1024.0);
    assert_eq!(img.data[[0, 4, 5]], -1024.0);
    assert_eq!(img.data[[2, 2, 2]], 222.0);
    // A huge slope turns integers infinite too.
    let mut b = i16_file();
    put(&mut b, 112, &f32::MAX.to_le_bytes());
    let (_d, p) = file("slope.nii", &b);
    refused(&p, "voxel(s) are NaN or infinite");
}

#[test]
fn not_nifti_at_all() {
    let (_d, p) = file("notes.nii", b"These are not the voxels you are looking for.\n".repeat(20).as_slice());
    refused(&p, "not a NIfTI-1 file");
    let (_d, p) = file("text.nii.gz", &gzip(&b"plain text, gzipped\n".repeat(50)));
    refused(&p, "not a NIfTI-1 file");
    let (_d, p) = file("empty.nii", b"");
    refused(&p, "not a NIfTI file: only 0 bytes long");
    let png = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];
    let (_d, p) = file("image.nii", &png);
    refused(&p, "not a NIfTI-1 file");
}

#[test]
fn a_directory_or_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("scan.nii.gz");
    std::fs::create_dir(&d).unwrap();
    refused(&d, "is a directory, not a NIfTI file");
    let e = read_labels(&dir.path().join("missing.nii")).unwrap_err().to_string();
    assert!(e.contains("missing.nii") && e.contains("No such file"), "{e}");
}

#[test]
fn labels_that_are_not_integers_0_to_255() {
    let mut b = valid(ImageDtype::F32);
    put(&mut b, 352 + 4 * 7, &1.5f32.to_le_bytes());
    let (_d, p) = file("frac.nii", &b);
    let e = read_labels(&p).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: ", p.display())) && e.contains("not integer labels 0..=255"), "{e}");
    assert!(e.contains("1.5 at [3, 1, 0]"), "{e}");
}
