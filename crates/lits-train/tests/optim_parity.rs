//! lits-train's own optimisers against `torch.optim`: three focal-loss training steps of a
//! small U-Net from the same weights under Adam (with L2 weight decay), AdamW and SGD with
//! Nesterov momentum (`scripts/reference/parity.py optim`) give the same weights and
//! BatchNorm state within 1e-6 (SGD) and 2e-6 (Adam, AdamW).

#[path = "../../lits-model/tests/common/mod.rs"]
mod common;

use lits_model::loss::FocalLoss;
use lits_model::unet::{UNet3d, UNetConfig};
use lits_model::weights::load_safetensors;
use lits_train::optim::{Optimizer, OptimizerConfig};
use tch::nn::{self, ModuleT};
use tch::Device;

use common::{max_abs, read, reference};

/// The biases of the 3×3×3 convolutions of a ConvBlock, each followed by BatchNorm (the
/// same rule as `feeds_batchnorm` in parity.py).
fn feeds_batchnorm(param: &str) -> bool {
    param.ends_with(".conv_1.bias") && !param.starts_with("outc.") || param.ends_with(".conv_2.bias")
}

#[test]
fn three_steps_of_each_optimiser_match_torch_optim() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    reference("optim", dir.path(), &["--base", "4", "--shape", "2,1,8,12,8", "--seed", "5"]);
    let want = read(&dir.path().join("expected.safetensors"));
    let cfg = UNetConfig { base_channels: 4, dropout: 0.0, updown_dropout: 0.0, ..UNetConfig::default() };
    // Adam divides each gradient by its own running magnitude, so a weight whose gradient
    // is small comes out of a step with the gradient's last-bit differences (the two sides
    // round `v + (1-β2)·g²` and `m/denom·lr` in another order) scaled up to about 1e-3 of lr:
    // measured 1.3e-7 (Adam) and 1.2e-6 (AdamW) on an AMD EPYC, under 1e-6 on the Intel CPU
    // of earlier runs. SGD does not amplify them.
    let optimisers = [
        ("adam", OptimizerConfig::Adam { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 1e-3 }, 1e-3, 2e-6),
        ("adamw", OptimizerConfig::AdamW { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 1e-2 }, 1e-3, 2e-6),
        ("sgd", OptimizerConfig::Sgd { lr: 1e-2, momentum: 0.9, nesterov: true, weight_decay: 3e-5 }, 1e-2, 1e-6),
    ];
    let loss = FocalLoss::new(&[0.2, 1.0, 2.5], 2.0);
    let before = read(&dir.path().join("weights.safetensors"));
    for (name, opt_cfg, lr, tolerance) in optimisers {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = UNet3d::new(&vs.root(), &cfg);
        load_safetensors(&mut vs, &dir.path().join("weights.safetensors")).unwrap();
        // A convolution bias right before BatchNorm has a gradient that is zero in exact
        // arithmetic: both sides see only rounding noise, which Adam's normalisation scales
        // up to a step of lr. The reference freezes those biases, and so does this side.
        for (param, t) in vs.variables() {
            if feeds_batchnorm(&param) {
                let _ = t.set_requires_grad(false);
            }
        }
        let mut opt = Optimizer::new(&vs, opt_cfg);
        for _ in 0..3 {
            opt.zero_grad();
            loss.forward(&net.forward_t(&want["input"], true), &want["target"]).backward();
            opt.step(lr);
        }
        let mut worst = (0.0f64, String::new());
        for (param, t) in vs.variables() {
            let w = &want[&format!("{name}.{param}")];
            let d = max_abs(&t, w);
            if d > worst.0 {
                worst = (d, param);
            }
        }
        println!("{name}: largest difference after three steps {:.2e} ({})", worst.0, worst.1);
        assert!(worst.0 < tolerance, "{name}: {} differs by {}", worst.1, worst.0);
        // The steps moved the weights well beyond the tolerance.
        let moved = (&vs.variables()["mid.conv_1.weight"] - &before["mid.conv_1.weight"]).abs().max().double_value(&[]);
        assert!(moved > 1e-4, "{name}: weights moved only {moved}");
    }
}
