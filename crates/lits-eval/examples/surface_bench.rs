//! Times `lits_eval::distance::surface_distances` on two raw uint8 masks (C order), for
//! scripts/bench/surface.sh.
//!
//! Usage: surface_bench PRED.raw REF.raw I J K SI SJ SK REPEATS
//! Prints one JSON line: the best wall time in seconds (masks already in memory), the CPU
//! time of that run summed over threads (Linux `/proc/self/stat`), and the metrics.

use std::time::Instant;

use lits_eval::distance::surface_distances;
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
    let (mut best, mut best_cpu) = (f64::INFINITY, f64::INFINITY);
    let mut d = None;
    for _ in 0..repeats {
        let (t, cpu) = (Instant::now(), cpu_seconds());
        d = surface_distances(&pred.view(), &reference.view(), spacing);
        let wall = t.elapsed().as_secs_f64();
        if wall < best {
            (best, best_cpu) = (wall, cpu_seconds() - cpu);
        }
    }
    let d = d.expect("both masks non-empty");
    println!(
        "{{\"seconds\": {best}, \"cpu_seconds\": {best_cpu}, \"threads\": {}, \"assd\": {}, \"rmsd\": {}, \"hd\": {}, \"hd95\": {}}}",
        rayon::current_num_threads(),
        d.assd,
        d.rmsd,
        d.msd,
        d.hd95
    );
}

/// User plus system time of this process, all threads, from `/proc/self/stat` (clock ticks
/// of 1/100 s, the Linux default).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the parenthesised command name come state, ppid, ...: utime and stime are the
    // 12th and 13th of those.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
    tick(11).zip(tick(12)).map(|(u, s)| (u + s) / 100.0).unwrap_or(f64::NAN)
}
