//! NIfTI-1 header and voxels, plain or gzip: every reader lits has for scans and labels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lits_data::nifti::{inspect, read_header, read_image, read_labels};

fuzz_target!(|data: &[u8]| {
    let path = lits_fuzz::scratch("input.nii", data);
    let header = read_header(&path);
    if let Err(e) = &header {
        lits_fuzz::names_file(&path, e);
    }
    for result in [read_image(&path).map(|(v, _)| v.shape()), inspect(&path).map(|i| i.shape), read_labels(&path).map(|(v, _)| v.shape())] {
        match (result, &header) {
            // Whatever reads the voxels agrees with the header on the shape.
            (Ok(shape), Ok(h)) => assert_eq!(shape, h.shape),
            (Ok(_), Err(e)) => panic!("voxels read, but the header was refused: {e}"),
            (Err(e), _) => lits_fuzz::names_file(&path, &e),
        }
    }
});
