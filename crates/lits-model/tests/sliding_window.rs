//! Sliding-window inference against MONAI's `sliding_window_inference` with the same
//! weights, window, overlap and blending.

mod common;

use lits_model::inference::{predict, SlidingWindowConfig};
use lits_model::unet::{UNet3d, UNetConfig};
use lits_model::weights::load_safetensors;
use tch::{nn, Device};

#[test]
fn windows_match_monai_gaussian_constant_and_padded() {
    tch::set_num_threads(1);
    // (volume, patch, overlap, Gaussian, windows per forward); the second volume is
    // smaller than the patch along D and W, so both pad and crop back.
    let cases = [
        ("1,40,36,28", [16, 16, 16], 0.5, true, 2),
        ("1,12,36,13", [16, 16, 16], 0.25, false, 3),
        ("1,24,20,24", [8, 16, 12], 0.5, true, 1),
    ];
    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<String> = cases
        .iter()
        .map(|(v, p, o, g, b)| {
            let mode = if *g { "gaussian" } else { "constant" };
            format!("{v};{},{},{};{o};{mode};{b}", p[0], p[1], p[2])
        })
        .collect();
    let mut args = vec!["--seed", "4"];
    for s in &specs {
        args.extend(["--case", s.as_str()]);
    }
    common::reference("sliding", dir.path(), &args);

    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = UNet3d::new(&vs.root(), &UNetConfig { base_channels: 4, ..Default::default() });
    load_safetensors(&mut vs, &dir.path().join("weights.safetensors")).unwrap();
    for (i, (volume, patch, overlap, gaussian, batch)) in cases.into_iter().enumerate() {
        let want = common::read(&dir.path().join(format!("expected_{i}.safetensors")));
        let cfg = SlidingWindowConfig { patch, overlap, gaussian, batch, ..Default::default() };
        let got = predict(&net, &want["volume"], &cfg).unwrap();
        let d = common::max_abs(&got, &want["prob"]);
        println!("volume {volume}, patch {patch:?}, overlap {overlap}, Gaussian {gaussian}: max |Δ| = {d:.2e}");
        assert!(d < 1e-5, "case {i} differs from MONAI by {d}");
    }
}

#[test]
fn a_patch_the_network_cannot_take_is_an_error() {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = UNet3d::new(&vs.root(), &UNetConfig { base_channels: 2, ..Default::default() });
    let vol = tch::Tensor::zeros([1, 20, 20, 20], (tch::Kind::Float, Device::Cpu));
    let cfg = SlidingWindowConfig { patch: [16, 15, 16], ..Default::default() };
    let e = predict(&net, &vol, &cfg).unwrap_err().to_string();
    assert!(e.contains("H = 15"), "{e}");
}
