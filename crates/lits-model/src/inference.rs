//! Whole-volume inference by overlapping sliding windows.
//!
//! Windows are placed and weighted as MONAI's `sliding_window_inference` places them
//! (same starts, same Gaussian importance map with σ = patch · `sigma_scale`, clamped at
//! its minimum or 1e-3), and as nnU-Net does by default (overlap 0.5, σ = patch/8,
//! optional mirroring over all axes, Isensee et al., Nature Methods 2021). Each window's
//! softmax is multiplied by the importance map and added in place into one output tensor,
//! so memory is the output plus one batch of windows; the output's class sum at every
//! voxel is the total weight there (probabilities sum to one), so no separate count map
//! is kept.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::unet::{UNet3d, UNetConfig};

/// How windows are laid over a volume and combined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlidingWindowConfig {
    /// Window size `[D, H, W]` in voxels.
    pub patch: [i64; 3],
    /// Fraction of a window shared with its neighbour, in `[0, 1)`.
    pub overlap: f64,
    /// Gaussian importance weighting (`false`: every voxel of a window weighs 1).
    pub gaussian: bool,
    /// σ of the Gaussian as a fraction of the window size.
    pub sigma_scale: f64,
    /// Windows per forward call.
    pub batch: usize,
    /// Average the softmax over all 8 combinations of flipping D, H and W.
    pub mirror_tta: bool,
}

impl Default for SlidingWindowConfig {
    fn default() -> Self {
        SlidingWindowConfig { patch: [128, 128, 128], overlap: 0.5, gaussian: true, sigma_scale: 0.125, batch: 1, mirror_tta: false }
    }
}

impl SlidingWindowConfig {
    /// Checks that every value can work (every problem at once).
    pub fn validate(&self) -> Result<()> {
        let mut p = lits_data::Problems::new();
        self.check(&mut p);
        Ok(p.into_result()?)
    }

    /// Records every value that cannot work.
    pub fn check(&self, p: &mut lits_data::Problems) {
        p.require(self.patch.iter().all(|&n| (1..=MAX_WINDOW_SIDE).contains(&n)), "patch", || {
            format!("sizes must be in 1..={MAX_WINDOW_SIDE}, got {:?}", self.patch)
        });
        p.require((0.0..1.0).contains(&self.overlap), "overlap", || format!("must be in [0, 1), got {}", self.overlap));
        p.require(self.sigma_scale.is_finite() && self.sigma_scale > 0.0, "sigma_scale", || {
            format!("must be positive, got {}", self.sigma_scale)
        });
        p.require((1..=MAX_WINDOW_BATCH).contains(&self.batch), "batch", || {
            format!("must be in 1..={MAX_WINDOW_BATCH}, got {}", self.batch)
        });
    }
}

/// The largest sliding-window side a config may ask for.
pub const MAX_WINDOW_SIDE: i64 = 1024;

/// The most windows per forward call a config may ask for.
pub const MAX_WINDOW_BATCH: usize = 256;

/// Window start positions along one axis of (padded) length `size` (MONAI's
/// `dense_patch_slices`): a regular step of `patch · (1 − overlap)`, the last window
/// shifted back to end at the border.
pub fn window_starts(size: i64, patch: i64, overlap: f64) -> Vec<i64> {
    let size = size.max(patch);
    let step = if patch == size { patch } else { ((patch as f64 * (1.0 - overlap)) as i64).max(1) };
    let count = (0..).find(|&d| d * step + patch >= size).unwrap_or(0) + 1;
    (0..count).map(|i| i * step - (i * step + patch - size).max(0)).collect()
}

/// The importance map `[D, H, W]` (float) of one window.
pub fn importance_map(patch: [i64; 3], gaussian: bool, sigma_scale: f64, device: tch::Device) -> Tensor {
    let opts = (Kind::Float, device);
    if !gaussian {
        return Tensor::ones(patch, opts);
    }
    // Computed in float32 in MONAI's order so that both give the same weights.
    let axis = |n: i64| {
        let sigma = n as f64 * sigma_scale;
        let x = Tensor::arange(n, opts) - (n - 1) as f64 / 2.0;
        (x.square() / (-2.0 * sigma * sigma)).exp()
    };
    let map = axis(patch[0]).view([-1, 1, 1]) * axis(patch[1]).view([1, -1, 1]);
    let map = map * axis(patch[2]).view([1, 1, -1]);
    let floor = map.min().double_value(&[]).max(1e-3);
    map.clamp_min(floor)
}

/// All eight subsets of the spatial axes of a `[N, C, D, H, W]` batch, the empty one first.
const MIRRORS: [&[i64]; 8] = [&[], &[2], &[3], &[4], &[2, 3], &[2, 4], &[3, 4], &[2, 3, 4]];

/// Softmax probabilities of every class over a whole volume.
///
/// `net` maps a batch `[B, C, pD, pH, pW]` to logits `[B, num_classes, pD, pH, pW]`; it
/// is called without gradient tracking. A volume smaller than the window along an axis is
/// zero-padded there (half before, half after) and the result cropped back.
///
/// # Shapes
/// - `volume`: `[C, D, H, W]` float
/// - returns: `[num_classes, D, H, W]` float, summing to one over classes
pub fn sliding_window(net: &dyn Fn(&Tensor) -> Tensor, volume: &Tensor, num_classes: i64, cfg: &SlidingWindowConfig) -> Result<Tensor> {
    check_volume(volume, num_classes, num_classes, cfg)?;
    let softmax = |xs: &Tensor| -> Tensor {
        let mut probs = net(xs).softmax(1, Kind::Float);
        if cfg.mirror_tta {
            for axes in &MIRRORS[1..] {
                probs += net(&xs.flip(*axes)).softmax(1, Kind::Float).flip(*axes);
            }
            probs /= MIRRORS.len() as f64;
        }
        probs
    };
    tch::no_grad(|| run(&|xs| Ok(softmax(xs)), volume, num_classes, num_classes, cfg))
}

/// [`sliding_window`] for windows that bring maps of their own beside the probabilities:
/// `windows` maps a batch `[B, C, pD, pH, pW]` to `[B, channels, pD, pH, pW]` whose first
/// `num_classes` channels are class probabilities (summing to one) and the rest any map;
/// every channel is blended with the same importance weights and divided by the total
/// weight, as the probabilities are. Mirroring is left to `windows`, which is called
/// without gradient tracking unless it turns tracking on itself (`tch::with_grad`).
///
/// # Shapes
/// - `volume`: `[C, D, H, W]` float
/// - returns: `[channels, D, H, W]` float
pub fn sliding_window_maps(
    windows: &dyn Fn(&Tensor) -> Result<Tensor>,
    volume: &Tensor,
    num_classes: i64,
    channels: i64,
    cfg: &SlidingWindowConfig,
) -> Result<Tensor> {
    check_volume(volume, num_classes, channels, cfg)?;
    tch::no_grad(|| run(windows, volume, num_classes, channels, cfg))
}

/// Whether the windows of `cfg` can go over `volume` into `channels` maps, the first
/// `num_classes` of them probabilities.
fn check_volume(volume: &Tensor, num_classes: i64, channels: i64, cfg: &SlidingWindowConfig) -> Result<()> {
    cfg.validate()?;
    let shape = volume.size();
    if shape.len() != 4 || shape.iter().any(|&n| n < 1) {
        return Err(Error::shape(&shape, "expected a non-empty volume [C, D, H, W]"));
    }
    if !matches!(volume.kind(), Kind::Float) {
        return Err(Error::shape(&shape, format!("expected Float values, got {:?}", volume.kind())));
    }
    if num_classes < 1 {
        return Err(Error::config("num_classes", "must be at least 1"));
    }
    if channels < num_classes {
        return Err(Error::config("channels", format!("{channels} maps cannot hold {num_classes} class probabilities")));
    }
    Ok(())
}

fn run(
    windows: &dyn Fn(&Tensor) -> Result<Tensor>,
    volume: &Tensor,
    classes: i64,
    channels: i64,
    cfg: &SlidingWindowConfig,
) -> Result<Tensor> {
    let shape = volume.size();
    let (orig, patch) = ([shape[1], shape[2], shape[3]], cfg.patch);
    // Padding as MONAI: the missing amount split in half, the odd voxel after.
    let before: [i64; 3] = std::array::from_fn(|a| (patch[a] - orig[a]).max(0) / 2);
    let padded_size: [i64; 3] = std::array::from_fn(|a| orig[a].max(patch[a]));
    let padded = if padded_size != orig {
        let after: [i64; 3] = std::array::from_fn(|a| padded_size[a] - orig[a] - before[a]);
        volume.constant_pad_nd([before[2], after[2], before[1], after[1], before[0], after[0]])
    } else {
        volume.shallow_clone()
    };

    let starts: Vec<Vec<i64>> = (0..3).map(|a| window_starts(padded_size[a], patch[a], cfg.overlap)).collect();
    let mut starts_of_windows = Vec::new();
    for &d in &starts[0] {
        for &h in &starts[1] {
            starts_of_windows.extend(starts[2].iter().map(|&w| [d, h, w]));
        }
    }
    let weight = importance_map(patch, cfg.gaussian, cfg.sigma_scale, volume.device());
    let out = Tensor::zeros([channels, padded_size[0], padded_size[1], padded_size[2]], (Kind::Float, volume.device()));
    let expected = |b: usize| vec![b as i64, channels, patch[0], patch[1], patch[2]];

    for group in starts_of_windows.chunks(cfg.batch) {
        let crops: Vec<Tensor> = group.iter().map(|s| crop(&padded, s, &patch)).collect();
        let xs = Tensor::stack(&crops, 0);
        let mut probs = windows(&xs)?;
        if probs.size() != expected(group.len()) {
            return Err(Error::shape(
                &probs.size(),
                format!("the network returned this for windows {:?}, expected {:?}", xs.size(), expected(group.len())),
            ));
        }
        probs *= &weight;
        for (i, s) in group.iter().enumerate() {
            let _ = crop(&out, s, &patch).g_add_(&probs.get(i as i64));
        }
    }

    // Σ_c Σ_w weight·p_c = Σ_w weight: the class sum is the normalising weight.
    let total = out.narrow(0, 0, classes).sum_dim_intlist(0, true, Kind::Float);
    let mut out = out;
    out /= total;
    if padded_size != orig {
        let s = [before[0], before[1], before[2]];
        return Ok(crop(&out, &s, &orig).contiguous());
    }
    Ok(out)
}

/// [`sliding_window`] with a [`UNet3d`] in eval mode, after checking that the network can
/// take the configured windows and the volume's channels. Runs the network's
/// [fused](UNet3d::fused) inference form.
pub fn predict(net: &UNet3d, volume: &Tensor, cfg: &SlidingWindowConfig) -> Result<Tensor> {
    check_windows(net, volume, cfg)?;
    let fused = net.fused();
    sliding_window(&|x| fused.forward(x), volume, net.config().num_classes, cfg)
}

/// Monte-Carlo dropout: the mean softmax of `passes` [`sliding_window`] passes of `net`
/// with its channel dropout active and BatchNorm in eval mode
/// ([`InferenceUNet3d::forward_mc`](crate::unet::InferenceUNet3d::forward_mc)). The
/// masks come from libtorch's global generator: seed it (`tch::manual_seed`) first for a
/// repeatable result. A network without dropout, or zero passes, is a config error.
///
/// # Shapes
/// As [`predict`].
pub fn predict_mc_dropout(net: &UNet3d, volume: &Tensor, cfg: &SlidingWindowConfig, passes: u32) -> Result<Tensor> {
    check_mc_dropout(net.config(), passes)?;
    check_windows(net, volume, cfg)?;
    let fused = net.fused();
    let classes = net.config().num_classes;
    let mut mean = sliding_window(&|x| fused.forward_mc(x), volume, classes, cfg)?;
    for _ in 1..passes {
        mean += sliding_window(&|x| fused.forward_mc(x), volume, classes, cfg)?;
    }
    mean /= f64::from(passes);
    Ok(mean)
}

/// Refuses Monte-Carlo dropout that cannot work: zero passes, or a network without dropout
/// (every pass would be the same prediction).
pub fn check_mc_dropout(net: &UNetConfig, passes: u32) -> Result<()> {
    if passes == 0 {
        return Err(Error::config("passes", "Monte-Carlo dropout needs at least one pass"));
    }
    if net.dropout == 0.0 && net.updown_dropout == 0.0 {
        return Err(Error::config(
            "model.dropout",
            "the network has no dropout (dropout and updown_dropout are 0), so Monte-Carlo dropout would repeat one prediction",
        ));
    }
    Ok(())
}

/// Whether `net` can take the configured windows of `volume`'s channels.
fn check_windows(net: &UNet3d, volume: &Tensor, cfg: &SlidingWindowConfig) -> Result<()> {
    cfg.validate()?;
    let channels = volume.size().first().copied().unwrap_or(0);
    let [d, h, w] = cfg.patch;
    net.check_input(&[cfg.batch as i64, channels, d, h, w])
}

/// The `[.., d.., h.., w..]` view of a `[C, D, H, W]` tensor.
fn crop(t: &Tensor, start: &[i64; 3], size: &[i64; 3]) -> Tensor {
    t.narrow(1, start[0], size[0]).narrow(2, start[1], size[1]).narrow(3, start[2], size[2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn starts_follow_monai() {
        // dense_patch_slices(image 128, patch 64, interval 32) → 0, 32, 64.
        assert_eq!(window_starts(128, 64, 0.5), [0, 32, 64]);
        assert_eq!(window_starts(96, 64, 0.5), [0, 32]);
        // 100 with step 32: 0, 32, then 64 → 36 clamps to the end.
        assert_eq!(window_starts(100, 64, 0.5), [0, 32, 36]);
        assert_eq!(window_starts(64, 64, 0.5), [0]);
        assert_eq!(window_starts(40, 64, 0.5), [0]);
        assert_eq!(window_starts(10, 4, 0.0), [0, 4, 6]);
    }

    #[test]
    fn gaussian_map_is_symmetric_and_clamped() {
        let m = importance_map([8, 6, 4], true, 0.125, Device::Cpu);
        assert_eq!(m.size(), [8, 6, 4]);
        assert!(m.equal(&m.flip([0, 1, 2])));
        assert!((m.min().double_value(&[]) - 1e-3).abs() < 1e-9, "σ = 1/8 of the patch: corners clamp");
        let c = importance_map([4, 4, 4], false, 0.125, Device::Cpu);
        assert_eq!(c.sum(Kind::Float).double_value(&[]), 64.0);
    }

    #[test]
    fn a_constant_net_gives_its_softmax_everywhere() {
        // Logits (0, ln 3) everywhere → probabilities (0.25, 0.75) whatever the blending.
        let net = |x: &Tensor| {
            let s = x.size();
            let l = Tensor::from_slice(&[0.0f32, 3f32.ln()]).view([1, 2, 1, 1, 1]);
            l.expand([s[0], 2, s[2], s[3], s[4]], false).contiguous()
        };
        let vol = Tensor::randn([1, 10, 7, 5], (Kind::Float, Device::Cpu));
        for mirror in [false, true] {
            let cfg = SlidingWindowConfig { patch: [4, 8, 4], batch: 3, mirror_tta: mirror, ..Default::default() };
            let p = sliding_window(&net, &vol, 2, &cfg).unwrap();
            assert_eq!(p.size(), [2, 10, 7, 5]);
            assert!((p.get(1) - 0.75).abs().max().double_value(&[]) < 1e-6);
        }
    }

    #[test]
    fn mirroring_an_identity_like_net_keeps_positions() {
        // A net whose logit for class 1 is the input: flipped in, flipped back out, so
        // mirroring must not move anything.
        let net = |x: &Tensor| Tensor::cat(&[x.zeros_like(), x.shallow_clone()], 1);
        let vol = Tensor::randn([1, 6, 6, 6], (Kind::Float, Device::Cpu));
        let base = SlidingWindowConfig { patch: [4, 4, 4], ..Default::default() };
        let plain = sliding_window(&net, &vol, 2, &base).unwrap();
        let tta = sliding_window(&net, &vol, 2, &SlidingWindowConfig { mirror_tta: true, ..base }).unwrap();
        assert!((plain - tta).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let net = |x: &Tensor| x.shallow_clone();
        let vol = Tensor::zeros([1, 4, 4, 4], (Kind::Float, Device::Cpu));
        let cfg = SlidingWindowConfig { patch: [4, 4, 4], ..Default::default() };
        let e = sliding_window(&net, &vol, 3, &cfg).unwrap_err().to_string();
        assert!(e.contains("expected [1, 3, 4, 4, 4]"), "{e}");
        assert!(sliding_window(&net, &vol.view([4, 4, 4]), 1, &cfg).is_err());
        let bad = SlidingWindowConfig { overlap: 1.0, ..cfg };
        assert!(sliding_window(&net, &vol, 1, &bad).unwrap_err().to_string().contains("overlap"));
    }
}
