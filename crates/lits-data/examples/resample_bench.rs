//! Times loading a CT and resampling it to a target spacing (used by
//! scripts/bench/resample.sh).
//!
//! Usage: resample_bench FILE TARGET_MM REPEATS
//! Prints one JSON line: seconds per repeat for loading and for resampling, the output
//! shape and a checksum of the output.

use std::path::Path;
use std::time::Instant;

use lits_data::nifti;
use lits_data::resample::{self, Alignment};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, target, repeats] = &args[..] else {
        return Err("usage: resample_bench FILE TARGET_MM REPEATS".into());
    };
    let target: f64 = target.parse()?;
    let repeats: usize = repeats.parse()?;
    let (mut load, mut resample) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..repeats {
        let t = Instant::now();
        let (img, _) = nifti::read_image(Path::new(path))?;
        load.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let out = resample::image_to_spacing(&img, [target; 3], Alignment::Origin)?;
        resample.push(t.elapsed().as_secs_f64());
        drop(img);
        last = Some(out);
    }
    let out = last.ok_or("REPEATS must be at least 1")?;
    let checksum: f64 = out.data.iter().map(|&v| v as f64).sum();
    println!(
        "{{\"load_s\": {load:?}, \"resample_s\": {resample:?}, \"shape\": {:?}, \"check\": {checksum}, \"threads\": {}}}",
        out.shape(),
        rayon::current_num_threads()
    );
    Ok(())
}
