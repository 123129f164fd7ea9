//! Patch sampler throughput (used by scripts/bench/patches.sh).
//!
//! Usage: patch_bench DxHxW BATCH STEPS WORKERS
//! Builds four CT-sized cases in memory (256×256×160, normalised-like values, a liver and a
//! tumor), then times `STEPS` batches of `BATCH` patches of `D×H×W` with the default
//! augmentation: drawn one after another on this thread, and through a `Prefetcher` with
//! `WORKERS` threads. Prints one JSON line with patches per second for both.

use std::sync::Arc;
use std::time::Instant;

use lits_data::patch::{PatchConfig, PatchSampler, Prefetcher};
use lits_data::store::StoreCase;
use lits_data::{Image, Labels, Volume};
use ndarray::Array3;

fn case(seed: usize) -> Arc<(Image, Labels)> {
    let shape = (256, 256, 160);
    let img = Array3::from_shape_fn(shape, |(i, j, k)| ((i * 31 + j * 17 + k * 7 + seed) % 200) as f32 / 100.0 - 1.0);
    let lab = Array3::from_shape_fn(shape, |(i, j, k)| {
        let d = |a: usize, c: usize, r: usize| (a as f64 - c as f64).powi(2) / (r * r) as f64;
        let r = d(i, 150, 60) + d(j, 110, 50) + d(k, 80, 40);
        if r < 0.05 {
            2
        } else {
            u8::from(r < 1.0)
        }
    });
    Arc::new((Volume::with_spacing(img, [1.5; 3]), Volume::with_spacing(lab, [1.5; 3])))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: patch_bench DxHxW BATCH STEPS WORKERS";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [patch, rest @ ..] = &args[..] else {
        return Err(usage.into());
    };
    let dims: Vec<usize> = patch.split('x').map(str::parse).collect::<Result<_, _>>()?;
    let rest: Vec<usize> = rest.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
    let [d, h, w] = dims[..] else {
        return Err(usage.into());
    };
    let [batch, steps, workers] = rest[..] else {
        return Err(usage.into());
    };
    let patch = [d, h, w];
    let cases = (0..4).map(|s| StoreCase::in_memory(case(s))).collect::<Result<_, _>>()?;
    let cfg = PatchConfig { patch, batch_size: batch, ..PatchConfig::default() };
    let sampler = Arc::new(PatchSampler::new(cases, cfg, 0)?);

    let t = Instant::now();
    let mut check = 0.0f64;
    for step in 0..steps as u64 {
        check += sampler.batch(0, step)?.image[0] as f64;
    }
    let sequential = (steps * batch) as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    for b in Prefetcher::new(sampler.clone(), 1, steps as u64, workers, 2 * workers) {
        check += b?.image[0] as f64;
    }
    let prefetched = (steps * batch) as f64 / t.elapsed().as_secs_f64();
    println!(
        "{{\"patch\": {patch:?}, \"batch\": {batch}, \"steps\": {steps}, \"workers\": {workers}, \
         \"sequential_patches_per_s\": {sequential:.1}, \"prefetcher_patches_per_s\": {prefetched:.1}, \"check\": {check}}}"
    );
    Ok(())
}
