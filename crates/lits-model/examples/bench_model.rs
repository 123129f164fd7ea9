//! Timing harness for `scripts/bench/model_bench.py`: forward pass, training step or
//! sliding-window inference of the U-Net with given weights, printed as one JSON line.
//!
//! ```text
//! bench_model forward|train|sliding --weights W.safetensors [--size 64] [--threads 2]
//!     [--iters 5] [--volume 128,128,96] [--patch 64] [--batch 1] [--plain] [--device cpu]
//! ```
//! `--plain` runs inference through `forward_t` instead of the fused inference network.
//! `--device cuda` runs forward (plain) and training steps on the GPU, synchronising after
//! each timed iteration.

use std::path::PathBuf;
use std::time::Instant;

use lits_model::inference::{sliding_window, SlidingWindowConfig};
use lits_model::loss::FocalLoss;
use lits_model::unet::{UNet3d, UNetConfig};
use lits_model::weights::load_safetensors;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

struct Args {
    what: String,
    weights: PathBuf,
    size: i64,
    threads: i32,
    iters: usize,
    volume: Vec<i64>,
    patch: i64,
    batch: usize,
    plain: bool,
    device: Device,
}

fn parse() -> Args {
    let mut it = std::env::args().skip(1);
    let what = it.next().expect("forward, train or sliding");
    let mut a = Args {
        what,
        weights: PathBuf::new(),
        size: 64,
        threads: 2,
        iters: 5,
        volume: vec![128, 128, 96],
        patch: 64,
        batch: 1,
        plain: false,
        device: Device::Cpu,
    };
    while let Some(flag) = it.next() {
        if flag == "--plain" {
            a.plain = true;
            continue;
        }
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--weights" => a.weights = v.into(),
            "--size" => a.size = v.parse().unwrap(),
            "--threads" => a.threads = v.parse().unwrap(),
            "--iters" => a.iters = v.parse().unwrap(),
            "--volume" => a.volume = v.split(',').map(|s| s.parse().unwrap()).collect(),
            "--patch" => a.patch = v.parse().unwrap(),
            "--batch" => a.batch = v.parse().unwrap(),
            "--device" => {
                a.device = match v.as_str() {
                    "cpu" => Device::Cpu,
                    "cuda" => Device::Cuda(0),
                    d => Device::Cuda(d.strip_prefix("cuda:").and_then(|n| n.parse().ok()).expect("cpu, cuda or cuda:N")),
                }
            }
            _ => panic!("unknown flag {flag}"),
        }
    }
    a
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn time(iters: usize, device: Device, mut f: impl FnMut()) -> Vec<f64> {
    (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            if let Device::Cuda(n) = device {
                tch::Cuda::synchronize(n as i64);
            }
            t.elapsed().as_secs_f64()
        })
        .collect()
}

fn main() {
    let a = parse();
    tch::set_num_threads(a.threads);
    tch::manual_seed(0);
    let dev = a.device;
    let mut vs = nn::VarStore::new(dev);
    let net = UNet3d::new(&vs.root(), &UNetConfig::default());
    load_safetensors(&mut vs, &a.weights).unwrap();
    let s = a.size;
    let times = match a.what.as_str() {
        "forward" => {
            let x = Tensor::randn([1, 1, s, s, s], (Kind::Float, dev));
            if a.plain || dev != Device::Cpu {
                let _ = tch::no_grad(|| net.forward_t(&x, false));
                time(a.iters, dev, || {
                    let _ = tch::no_grad(|| net.forward_t(&x, false));
                })
            } else {
                let fused = net.fused();
                let _ = fused.forward(&x);
                time(a.iters, dev, || {
                    let _ = fused.forward(&x);
                })
            }
        }
        "train" => {
            let x = Tensor::randn([1, 1, s, s, s], (Kind::Float, dev));
            let y = Tensor::randint(3, [1, s, s, s], (Kind::Int64, dev));
            let loss = FocalLoss::new(&[0.2, 1.0, 2.5], 2.0);
            let mut opt = nn::Adam::default().build(&vs, 1e-4).unwrap();
            let mut step = || {
                opt.zero_grad();
                let l = loss.forward(&net.forward_t(&x, true), &y);
                l.backward();
                opt.step();
            };
            step();
            time(a.iters, dev, step)
        }
        "sliding" => {
            let v = &a.volume;
            let vol = Tensor::randn([1, v[0], v[1], v[2]], (Kind::Float, dev));
            let cfg = SlidingWindowConfig { patch: [a.patch; 3], batch: a.batch, ..Default::default() };
            let fused = net.fused();
            time(a.iters, dev, || {
                let p = if a.plain {
                    sliding_window(&|x| net.forward_t(x, false), &vol, 3, &cfg).unwrap()
                } else {
                    sliding_window(&|x| fused.forward(x), &vol, 3, &cfg).unwrap()
                };
                assert_eq!(p.size(), [3, v[0], v[1], v[2]]);
            })
        }
        other => panic!("unknown benchmark {other}"),
    };
    println!("{{\"impl\": \"lits\", \"what\": \"{}\", \"times\": {:?}, \"peak_rss_mib\": {:.1}}}", a.what, times, peak_rss_mib());
}
