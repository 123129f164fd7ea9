//! Times `lits_data::nifti::read_image` on one file, for scripts/bench/nifti_read.sh; for
//! a `.nii.gz` also the two gzip decoders in the build (libdeflate, used by the reader, and
//! flate2 with its zlib-rs backend) on the same bytes.
//!
//! Usage: read_bench FILE REPEATS
//! Prints one JSON line per measurement: its name, each run's wall time in seconds, and a
//! checksum (the voxel sum, or the decompressed length).

use std::io::Read;
use std::path::Path;
use std::time::Instant;

fn time<T>(repeats: usize, mut f: impl FnMut() -> T) -> (Vec<f64>, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..repeats {
        let t = Instant::now();
        let out = f();
        times.push(t.elapsed().as_secs_f64());
        last = Some(out);
    }
    (times, last.expect("at least one run"))
}

fn report(name: &str, times: &[f64], check: f64) {
    println!("{{\"what\": \"{name}\", \"seconds\": {times:?}, \"check\": {check}}}");
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    assert_eq!(a.len(), 3, "usage: read_bench FILE REPEATS");
    let path = Path::new(&a[1]);
    let repeats: usize = a[2].parse().expect("REPEATS is a number");

    let (times, (img, _)) = time(repeats, || lits_data::nifti::read_image(path).expect("readable file"));
    report("read_image", &times, img.data.iter().map(|&v| f64::from(v)).sum::<f64>());
    drop(img);

    let bytes = std::fs::read(path).expect("readable file");
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let isize = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
        let (times, n) = time(repeats, || {
            let mut out = vec![0u8; isize];
            libdeflater::Decompressor::new().gzip_decompress(&bytes, &mut out).expect("single-member gzip")
        });
        report("gunzip_libdeflate", &times, n as f64);
        let (times, n) = time(repeats, || {
            let mut out = Vec::with_capacity(isize);
            flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut out).expect("gzip")
        });
        report("gunzip_flate2_zlib_rs", &times, n as f64);
    }
}
