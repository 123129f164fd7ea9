//! Times `lits_data::distance::surface_distances` on two raw uint8 masks (C order), for
//! scripts/bench/surface.sh.
//!
//! Usage: surface_bench PRED.raw REF.raw I J K SI SJ SK REPEATS
//! Prints one JSON line: the best wall time in seconds (masks already in memory) and the
//! metrics.

use std::time::Instant;

use lits_data::distance::surface_distances;
use ndarray::Array3;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    assert_eq!(a.len(), 10, "usage: surface_bench PRED.raw REF.raw I J K SI SJ SK REPEATS");
    let dim = (a[3].parse().unwrap(), a[4].parse().unwrap(), a[5].parse().unwrap());
    let spacing = [a[6].parse().unwrap(), a[7].parse().unwrap(), a[8].parse().unwrap()];
    let repeats: usize = a[9].parse().unwrap();
    let load = |p: &str| {
        let bytes = std::fs::read(p).unwrap();
        Array3::from_shape_vec(dim, bytes.into_iter().map(|b| b != 0).collect()).unwrap()
    };
    let (pred, reference) = (load(&a[1]), load(&a[2]));
    let mut best = f64::INFINITY;
    let mut d = None;
    for _ in 0..repeats {
        let t = Instant::now();
        d = surface_distances(&pred.view(), &reference.view(), spacing);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let d = d.expect("both masks non-empty");
    println!(
        "{{\"seconds\": {best}, \"threads\": {}, \"assd\": {}, \"rmsd\": {}, \"hd\": {}, \"hd95\": {}}}",
        rayon::current_num_threads(),
        d.assd,
        d.rmsd,
        d.msd,
        d.hd95
    );
}
