//! Inputs that lits mishandled, kept in tests/fuzz_regressions/: found by the fuzz targets
//! (fuzz/, scripts/fuzz.sh) or written for a hole found while writing them. Each is now
//! refused with an error that names the file and the problem; every file there has a row.

use std::path::{Path, PathBuf};

use lits_data::cache::npy;
use lits_data::nifti::{inspect, read_header, read_image, read_labels};

/// The regression files: name, what reads it, and the problem its error must state.
const CASES: &[(&str, Reader, &str)] = &[
    // vox_offset 6.5e21 (big-endian header): adding the voxel bytes to it overflowed.
    ("nifti_vox_offset_overflow.nii", Reader::Nifti, "data shorter than the header says"),
    // A header promising a 100000³ array in a 136-byte file: ndarray-npy allocated the
    // array from the header before reading (4 TB of float32).
    ("npy_huge_shape.npy", Reader::Npy, "shape [100000, 100000, 100000] needs more than the 8 bytes of data"),
    // A version 2 header whose length field says 4 GiB: ndarray-npy allocated that first.
    ("npy_header_length_4gib.npy", Reader::Npy, "header ends at byte 4294967292, after the file's end"),
];

#[derive(Debug, Clone, Copy)]
enum Reader {
    /// Every NIfTI reader: header, image, inspect, labels.
    Nifti,
    /// The cache's `.npy` readers, float32 and uint8.
    Npy,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions")
}

fn errors(reader: Reader, path: &Path) -> Vec<String> {
    let err = |r: Result<(), lits_data::Error>| r.expect_err("a fuzz finding was read as valid").to_string();
    match reader {
        Reader::Nifti => vec![
            err(read_header(path).map(drop)),
            err(read_image(path).map(drop)),
            err(inspect(path).map(drop)),
            err(read_labels(path).map(drop)),
        ],
        Reader::Npy => vec![err(npy::read_f32(path).map(drop)), err(npy::read_u8(path).map(drop))],
    }
}

#[test]
fn every_fuzz_finding_is_refused_naming_the_file_and_the_problem() {
    for &(name, reader, problem) in CASES {
        let path = dir().join(name);
        for e in errors(reader, &path) {
            assert!(e.starts_with(&format!("{}: ", path.display())), "{name}: error does not name the file: {e}");
            assert!(e.contains(problem), "{name}: error lacks {problem:?}: {e}");
        }
    }
}

#[test]
fn every_file_in_the_folder_is_checked() {
    let mut files: Vec<String> = std::fs::read_dir(dir()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.0.to_owned()).collect();
    listed.sort();
    assert_eq!(files, listed);
}
