//! Monte-Carlo dropout over a volume: repeatable from libtorch's seed, changed by the seed
//! and the number of passes, refused without passes or without dropout. Alone in its
//! process, because it seeds libtorch's global generator.

use lits_model::inference::{predict_mc_dropout, SlidingWindowConfig};
use lits_model::unet::{UNet3d, UNetConfig};
use tch::{nn, Device, Kind, Tensor};

#[test]
fn mc_dropout_repeats_with_the_seed_and_needs_dropout_and_passes() {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = UNet3d::new(&vs.root(), &UNetConfig { base_channels: 2, dropout: 0.3, ..Default::default() });
    let vol = Tensor::randn([1, 8, 8, 12], (Kind::Float, Device::Cpu));
    let cfg = SlidingWindowConfig { patch: [8, 8, 8], ..Default::default() };
    let run = |seed: i64, passes: u32| {
        tch::manual_seed(seed);
        predict_mc_dropout(&net, &vol, &cfg, passes).unwrap()
    };
    let (a, b) = (run(1, 3), run(1, 3));
    assert_eq!(a.size(), [3, 8, 8, 12]);
    assert!(a.equal(&b), "same seed, same passes: same result");
    assert!((a.sum_dim_intlist(0, false, Kind::Float) - 1.0).abs().max().double_value(&[]) < 1e-5);
    assert!((&a - run(1, 1)).abs().max().double_value(&[]) > 1e-4, "more passes change the mean");
    assert!((&a - run(2, 3)).abs().max().double_value(&[]) > 1e-4, "the seed matters");
    let e = predict_mc_dropout(&net, &vol, &cfg, 0).unwrap_err().to_string();
    assert!(e.contains("at least one pass"), "{e}");

    let vs = nn::VarStore::new(Device::Cpu);
    let plain = UNetConfig { base_channels: 2, dropout: 0.0, updown_dropout: 0.0, ..Default::default() };
    let net = UNet3d::new(&vs.root(), &plain);
    let e = predict_mc_dropout(&net, &vol, &cfg, 2).unwrap_err().to_string();
    assert!(e.contains("model.dropout") && e.contains("no dropout"), "{e}");
}
