//! The preprocessed cache's `.npy` arrays (images as float32, labels as uint8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lits_data::cache::npy::{read_f32, read_u8};

fuzz_target!(|data: &[u8]| {
    let path = lits_fuzz::scratch("image.npy", data);
    for result in [read_f32(&path).map(|(s, v)| (s, v.len())), read_u8(&path).map(|(s, v)| (s, v.len()))] {
        match result {
            Ok((shape, len)) => assert_eq!(shape.iter().product::<usize>(), len),
            Err(e) => lits_fuzz::names_file(&path, &e),
        }
    }
});
