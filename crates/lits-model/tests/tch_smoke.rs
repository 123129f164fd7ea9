//! libtorch is linked and computes: a small 3-D convolution on the CPU checked against a
//! sum written out by hand.

use tch::{Device, Kind, Tensor};

#[test]
fn conv3d_forward_matches_a_hand_computed_value() {
    // Input 1×1×3×4×5 holding 0..60, a 2×2×2 kernel of ones plus bias 0.5, stride 1.
    let x = Tensor::arange(60, (Kind::Float, Device::Cpu)).reshape([1, 1, 3, 4, 5]);
    let w = Tensor::ones([1, 1, 2, 2, 2], (Kind::Float, Device::Cpu));
    let b = Tensor::from_slice(&[0.5f32]);
    let y = x.conv3d(&w, Some(&b), [1, 1, 1], [0, 0, 0], [1, 1, 1], 1);
    assert_eq!(y.size(), [1, 1, 2, 3, 4]);

    // Output voxel (d, h, w) = 0.5 + sum over the 2×2×2 block starting there of
    // 20·d' + 5·h' + w'. At (1, 2, 3) that is 8·(20 + 10 + 3) + 4·(20 + 5 + 1) + 0.5.
    let at = |d: i64, h: i64, w: i64| {
        let mut s = 0.5f64;
        for (dd, hh, ww) in itertools3() {
            s += (20 * (d + dd) + 5 * (h + hh) + (w + ww)) as f64;
        }
        s
    };
    assert_eq!(at(1, 2, 3), 8.0 * 33.0 + 4.0 * 26.0 + 0.5);
    for (d, h, w) in [(0, 0, 0), (1, 2, 3), (0, 1, 2)] {
        let got = y.double_value(&[0, 0, d, h, w]);
        assert_eq!(got, at(d, h, w), "voxel ({d}, {h}, {w})");
    }
}

fn itertools3() -> impl Iterator<Item = (i64, i64, i64)> {
    (0..2).flat_map(|a| (0..2).flat_map(move |b| (0..2).map(move |c| (a, b, c))))
}
