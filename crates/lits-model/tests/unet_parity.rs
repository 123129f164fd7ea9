//! The U-Net against its PyTorch re-statement (`scripts/reference/unet.py`) with the same
//! weights and input: logits in eval and train mode, BatchNorm statistics after a
//! train-mode forward, and one Adam step of the focal loss.

mod common;

use lits_model::loss::FocalLoss;
use lits_model::unet::{parameter_count, UNet3d, UNetConfig};
use lits_model::weights::load_safetensors;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Tensor};

/// Held while a test seeds libtorch's global generator and draws from it.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn net(base: i64) -> (nn::VarStore, UNet3d) {
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = UNetConfig { base_channels: base, dropout: 0.0, updown_dropout: 0.0, ..Default::default() };
    let net = UNet3d::new(&vs.root(), &cfg);
    (vs, net)
}

fn check_forward(base: i64, shape: &str, seed: &str) {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    common::reference("unet", dir.path(), &["--base", &base.to_string(), "--shape", shape, "--seed", seed]);
    let want = common::read(&dir.path().join("expected.safetensors"));
    let (mut vs, net) = net(base);
    load_safetensors(&mut vs, &dir.path().join("weights.safetensors")).unwrap();

    let x = &want["input"];
    let eval = tch::no_grad(|| net.f_forward_t(x, false)).unwrap();
    let d = common::max_abs(&eval, &want["eval"]);
    println!("{shape} base {base}: eval max |Δ| = {d:.2e}");
    assert!(d < 1e-5, "eval logits differ by {d}");

    let train = tch::no_grad(|| net.f_forward_t(x, true)).unwrap();
    let d = common::max_abs(&train, &want["train"]);
    println!("{shape} base {base}: train max |Δ| = {d:.2e}");
    assert!(d < 1e-5, "train logits differ by {d}");

    let mut compared = 0;
    for (name, t) in vs.variables() {
        let w = &want[&format!("after.{name}")];
        if name.ends_with("num_batches_tracked") {
            assert_eq!(t.int64_value(&[]), w.int64_value(&[]), "{name}");
        } else if name.contains("running_") {
            let d = common::max_abs(&t, w);
            assert!(d < 1e-6, "{name} differs by {d}");
            compared += 1;
        }
    }
    assert_eq!(compared, 6 * 2 * 2, "every BatchNorm's running mean and variance");

    // Dropout 0.25 / 0.001 as the original, same generator seed: the channel masks are
    // drawn in the same order, so even dropout agrees.
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = UNetConfig { base_channels: base, ..Default::default() };
    let dropped = UNet3d::new(&vs.root(), &cfg);
    let mut vs = vs;
    load_safetensors(&mut vs, &dir.path().join("weights.safetensors")).unwrap();
    let y = {
        // The generator is global and tests run in parallel threads.
        let _only_me = RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(seed.parse::<i64>().unwrap() + 1000);
        tch::no_grad(|| dropped.forward_t(x, true))
    };
    let d = common::max_abs(&y, &want["train_dropout"]);
    println!("{shape} base {base}: train with dropout max |Δ| = {d:.2e}");
    assert!(d < 1e-5, "train logits with dropout differ by {d}");
    assert!(common::max_abs(&y, &train) > 1e-3, "dropout changed nothing");

    // Monte-Carlo dropout in the fused inference net, on fresh weights: dropout as in
    // training, BatchNorm folded from its eval-mode statistics.
    let vs = nn::VarStore::new(Device::Cpu);
    let mc_net = UNet3d::new(&vs.root(), &cfg);
    let mut vs = vs;
    load_safetensors(&mut vs, &dir.path().join("weights.safetensors")).unwrap();
    let fused = mc_net.fused();
    let y = {
        let _only_me = RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(seed.parse::<i64>().unwrap() + 2000);
        fused.forward_mc(x)
    };
    let want_mc = &want["mc_dropout"];
    let d = common::max_abs(&y, want_mc);
    let scale = 1.0 + want_mc.abs().max().double_value(&[]);
    println!("{shape} base {base}: Monte-Carlo dropout max |Δ| = {d:.2e}");
    assert!(d < 1e-4 * scale, "Monte-Carlo dropout logits differ by {d}");
    assert!(common::max_abs(&y, &want["eval"]) > 1e-3, "Monte-Carlo dropout changed nothing");
}

#[test]
fn logits_and_batchnorm_match_pytorch_on_an_odd_volume() {
    check_forward(4, "1,1,24,40,32", "1");
}

#[test]
fn logits_and_batchnorm_match_pytorch_for_a_batch_of_two() {
    check_forward(3, "2,1,12,8,20", "2");
}

#[test]
fn one_adam_step_of_the_focal_loss_matches_pytorch() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    common::reference("adam", dir.path(), &["--base", "4", "--shape", "2,1,8,12,8", "--seed", "3"]);
    let want = common::read(&dir.path().join("expected.safetensors"));
    let (mut vs, net) = net(4);
    load_safetensors(&mut vs, &dir.path().join("weights.safetensors")).unwrap();

    let mut opt = nn::Adam::default().build(&vs, 1e-4).unwrap();
    let loss = FocalLoss::new(&[0.2, 1.0, 2.5], 2.0);
    let logits = net.forward_t(&want["input"], true);
    let l = loss.forward(&logits, &want["target"]);
    let d = (l.double_value(&[]) - want["loss"].double_value(&[0])).abs();
    assert!(d < 1e-6, "loss differs by {d}");
    opt.zero_grad();
    l.backward();
    opt.step();

    let mut worst = (0.0f64, String::new());
    for (name, t) in vs.variables() {
        let w = &want[&format!("after.{name}")];
        let d = if name.ends_with("num_batches_tracked") {
            (t.int64_value(&[]) - w.int64_value(&[])).abs() as f64
        } else {
            common::max_abs(&t, w)
        };
        if d > worst.0 {
            worst = (d, name);
        }
    }
    println!("largest difference after one Adam step: {:.2e} {}", worst.0, worst.1);
    assert!(worst.0 < 1e-6, "{} differs by {}", worst.1, worst.0);
    // The step did move the weights: Adam's first step is about lr · sign(gradient).
    let before = common::read(&dir.path().join("weights.safetensors"));
    let moved = common::max_abs(&vs.variables()["mid.conv_1.weight"], &before["mid.conv_1.weight"]);
    assert!((moved - 1e-4).abs() < 1e-6, "first Adam step moved weights by {moved}");
}

#[test]
fn default_model_has_the_original_parameter_count_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.safetensors");
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = UNet3d::new(&vs.root(), &UNetConfig::default());
    let n = parameter_count(&vs);
    println!("default UNet3d: {n} trainable parameters");
    lits_model::weights::save_safetensors(&vs, &path).unwrap();
    // PyTorch loads the file with strict names and shapes and counts its own parameters.
    let out = common::python("reference/parity.py", &["check", "--base", "32", "--out", path.to_str().unwrap()]);
    assert_eq!(out.trim(), format!("ok {n}"));
    assert_eq!(n, 2_339_491);
}

#[test]
fn inputs_the_network_cannot_take_are_errors() {
    let (_vs, net) = net(2);
    for shape in [[1i64, 1, 10, 8, 8], [1, 2, 8, 8, 8], [1, 1, 0, 8, 8]] {
        let x = Tensor::zeros(shape, (tch::Kind::Float, Device::Cpu));
        let e = net.f_forward_t(&x, false).unwrap_err();
        println!("{shape:?}: {e}");
    }
    let x = Tensor::zeros([1, 1, 4, 4, 4], (tch::Kind::Float, Device::Cpu));
    assert!(net.f_forward_t(&x, true).is_err(), "one value per channel cannot train");
}
