//! Which input voxels drove a segmentation: Grad-CAM and Guided Grad-CAM of the U-Net,
//! computed as Captum computes them.
//!
//! Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
//! Gradient-based Localization", ICCV 2017) weighs a layer's channels by the mean over space
//! of the target's gradient, keeps the positive part of the weighted sum and brings it to the
//! input's size by nearest-neighbour upsampling. Guided backpropagation (Springenberg et al.,
//! "Striving for Simplicity: The All Convolutional Net", ICLR 2015 workshop) is the target's
//! gradient with respect to the input where every ReLU also stops negative gradient. Guided
//! Grad-CAM is their product; the map is its absolute value.
//!
//! The target for a class is the original project's: the segmentation made one number per
//! class, the sum of that class's logits over the voxels where it is the argmax (the argmax
//! is taken as given, not differentiated), and Grad-CAM is taken by default at the last
//! convolution, `outc`.
//!
//! tch has no custom autograd functions, so the guided backward is carried by hand: the
//! forward pass is cut after every ReLU (its output becomes a fresh leaf), libtorch's
//! autograd differentiates each piece between two cuts, and at each cut the gradient passes
//! the ReLU by its rule: `g·[z > 0]` for the ordinary gradient, `max(g, 0)·[z > 0]` for the
//! guided one (Captum's hook: the ReLU of the ReLU's input gradient).

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::inference::{self, SlidingWindowConfig};
use crate::unet::{upsample2, ConvBlock, UNet3d};

/// How the attribution is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Guided backpropagation times upsampled Grad-CAM (Captum's `GuidedGradCam`).
    GuidedGradCam,
    /// Grad-CAM alone, upsampled to the input (Captum's `LayerGradCam` with
    /// `relu_attributions`, then `LayerAttribution.interpolate`).
    GradCam,
}

/// A choice made by name on the command line: every value with its name.
pub trait Choice: Copy + PartialEq + 'static {
    /// What is chosen, for errors.
    const WHAT: &'static str;
    /// Every value, by name.
    const ALL: &'static [(&'static str, Self)];

    /// The value's name.
    fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, v)| *v == self).map_or("?", |(n, _)| *n)
    }

    /// The value named `s`, or an error naming every choice.
    fn parse(s: &str) -> Result<Self> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, v)| *v).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
            Error::config(Self::WHAT, format!("unknown {} `{s}`: choose one of {}", Self::WHAT, names.join(", ")))
        })
    }
}

impl Choice for Method {
    const WHAT: &'static str = "method";
    const ALL: &'static [(&'static str, Self)] = &[("guided-gradcam", Method::GuidedGradCam), ("gradcam", Method::GradCam)];
}

/// The layer Grad-CAM is taken at: the output of one of the U-Net's blocks, named as the
/// original's modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The input block (full resolution, `base_channels`).
    Inc,
    /// The first down-sampling block (½ resolution).
    Down1,
    /// The second down-sampling block (¼ resolution).
    Down2,
    /// The bottom block (¼ resolution).
    Mid,
    /// The first up-sampling block (½ resolution).
    Up1,
    /// The second up-sampling block (full resolution).
    Up2,
    /// The last convolution: the logits.
    Outc,
}

impl Choice for Layer {
    const WHAT: &'static str = "layer";
    /// In the order of the forward pass.
    const ALL: &'static [(&'static str, Self)] = &[
        ("inc", Layer::Inc),
        ("down1", Layer::Down1),
        ("down2", Layer::Down2),
        ("mid", Layer::Mid),
        ("up1", Layer::Up1),
        ("up2", Layer::Up2),
        ("outc", Layer::Outc),
    ];
}

/// What to explain and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Explain {
    /// The class whose segmentation is explained (0 background, 1 liver, 2 tumor).
    pub class: i64,
    /// The attribution method.
    pub method: Method,
    /// The layer of Grad-CAM.
    pub layer: Layer,
}

impl Default for Explain {
    fn default() -> Self {
        Explain { class: 2, method: Method::GuidedGradCam, layer: Layer::Outc }
    }
}

impl Explain {
    /// Refuses a class the network does not have.
    pub fn check(&self, net: &UNet3d) -> Result<()> {
        let classes = net.config().num_classes;
        if !(0..classes).contains(&self.class) {
            return Err(Error::config("class", format!("the network has classes 0..{classes}, not {}", self.class)));
        }
        Ok(())
    }
}

/// The forward pass cut after every ReLU: node 0 is the input, node `k + 1` the output of
/// piece `k` (after its ReLU, if it has one), each a leaf that requires gradient.
struct Tape {
    nodes: Vec<Tensor>,
    pieces: Vec<Piece>,
}

/// The part of the network between two cuts.
struct Piece {
    /// The nodes it reads.
    inputs: Vec<usize>,
    /// Its output before the ReLU, still attached to the autograd graph of the piece.
    z: Tensor,
    relu: bool,
}

impl Tape {
    fn new(xs: &Tensor) -> Self {
        Tape { nodes: vec![xs.detach().set_requires_grad(true)], pieces: Vec::new() }
    }

    /// Runs `f` on the nodes `inputs` with gradient tracking and cuts after it (and its ReLU).
    fn cut(&mut self, inputs: &[usize], relu: bool, f: impl FnOnce(&[&Tensor]) -> Tensor) -> usize {
        let z = {
            let xs: Vec<&Tensor> = inputs.iter().map(|&i| &self.nodes[i]).collect();
            f(&xs)
        };
        let out = tch::no_grad(|| if relu { z.relu() } else { z.detach() });
        self.nodes.push(out.set_requires_grad(true));
        self.pieces.push(Piece { inputs: inputs.to_vec(), z, relu });
        self.nodes.len() - 1
    }

    /// One [`ConvBlock`] after `pre` (what comes before its first convolution): two pieces.
    fn block(&mut self, inputs: &[usize], b: &ConvBlock, pre: impl FnOnce(&[&Tensor]) -> Tensor) -> usize {
        let a = self.cut(inputs, true, |x| b.batch_norm_1.forward_t(&b.conv_1.forward(&pre(x)), false));
        self.cut(&[a], true, |x| b.batch_norm_2.forward_t(&b.conv_2.forward(x[0]), false))
    }

    /// The gradient at node `stop` of the target whose gradient at the last node is `top`,
    /// passing each ReLU by the guided rule or the ordinary one. `keep` keeps the pieces'
    /// graphs for another pass.
    fn backward(&self, top: Tensor, stop: usize, guided: bool, keep: bool) -> Result<Tensor> {
        let mut grads: Vec<Option<Tensor>> = self.nodes.iter().map(|_| None).collect();
        grads[self.nodes.len() - 1] = Some(top);
        // Every reader of a node comes after it, so a node's gradient is complete when the
        // walk back reaches the piece that made it.
        for (k, piece) in self.pieces.iter().enumerate().rev() {
            if k < stop {
                break;
            }
            let Some(g) = grads[k + 1].take() else {
                continue;
            };
            let g = if piece.relu {
                let pass = tch::no_grad(|| piece.z.gt(0.0));
                if guided {
                    g.clamp_min(0.0) * pass
                } else {
                    g * pass
                }
            } else {
                g
            };
            let inputs: Vec<&Tensor> = piece.inputs.iter().map(|&i| &self.nodes[i]).collect();
            let target = (&piece.z * &g).sum(Kind::Float);
            let got = Tensor::f_run_backward(&[target], &inputs, keep, false)?;
            for (&i, gi) in piece.inputs.iter().zip(got) {
                grads[i] = Some(match grads[i].take() {
                    Some(sum) => sum + gi,
                    None => gi,
                });
            }
        }
        grads[stop].take().ok_or_else(|| Error::config("layer", "the layer does not lead to the output"))
    }
}

/// The eval-mode forward pass of `net` on the tape; returns it with the node of each
/// [`Layer`], in [`Layer::ALL`]'s order.
fn forward(net: &UNet3d, xs: &Tensor) -> (Tape, [usize; 7]) {
    let mut t = Tape::new(xs);
    let x1 = t.block(&[0], &net.inc, |x| x[0].shallow_clone());
    let x2 = t.block(&[x1], &net.down1.block, |x| net.down1.conv.forward(x[0]));
    let x3 = t.block(&[x2], &net.down2.block, |x| net.down2.conv.forward(x[0]));
    let mid = t.block(&[x3], &net.mid, |x| x[0].shallow_clone());
    let up = |x: &[&Tensor]| Tensor::cat(&[&upsample2(x[0]), x[1]], 1);
    let u1 = t.block(&[mid, x2], &net.up1.block, up);
    let u2 = t.block(&[u1, x1], &net.up2.block, up);
    let logits = t.cut(&[u2], false, |x| net.outc.forward(x[0]));
    (t, [x1, x2, x3, mid, u1, u2, logits])
}

/// The attribution of one batch of windows, with the logits of the same forward pass.
///
/// # Shapes
/// - `xs`: `[N, in_channels, D, H, W]` float, as [`UNet3d::forward_t`] takes
/// - returns: logits `[N, num_classes, D, H, W]` and the map `[N, 1, D, H, W]`, both
///   without gradient; the map is `|guided backprop · Grad-CAM|` summed over input
///   channels, or Grad-CAM alone
pub fn attribute(net: &UNet3d, xs: &Tensor, what: &Explain) -> Result<(Tensor, Tensor)> {
    net.check_input(&xs.size())?;
    what.check(net)?;
    tch::with_grad(|| {
        let (tape, layers) = forward(net, xs);
        let logits = tape.nodes[layers[6]].detach();
        // d target / d logits: 1 in the class's channel where the class is the argmax.
        let top = tch::no_grad(|| {
            let classes = logits.size()[1];
            let channel = Tensor::arange(classes, (Kind::Int64, logits.device())).eq(what.class).view([1, -1, 1, 1, 1]);
            logits.argmax(1, true).eq(what.class).logical_and(&channel).to_kind(logits.kind())
        });
        let at = layers[Layer::ALL.iter().position(|(_, l)| *l == what.layer).unwrap_or(6)];
        let guided = what.method == Method::GuidedGradCam;
        let grad = if at == layers[6] { top.shallow_clone() } else { tape.backward(top.shallow_clone(), at, false, guided)? };
        let cam = tch::no_grad(|| {
            let weights = grad.mean_dim([2i64, 3, 4].as_slice(), true, Kind::Float);
            let cam = (weights * tape.nodes[at].detach()).sum_dim_intlist(1, true, Kind::Float).relu();
            let size = xs.size()[2..].to_vec();
            if cam.size()[2..] == size[..] {
                cam
            } else {
                cam.upsample_nearest3d(size, None, None, None)
            }
        });
        let map = match what.method {
            Method::GradCam => cam,
            Method::GuidedGradCam => {
                let g = tape.backward(top, 0, true, false)?;
                tch::no_grad(|| (g * cam).abs().sum_dim_intlist(1, true, Kind::Float))
            }
        };
        Ok((logits, map))
    })
}

/// The attribution map over a whole volume by sliding windows, beside the softmax of the
/// same forward passes: each window's map is blended with the importance weights of
/// [`inference::sliding_window`] (no mirroring), the probabilities exactly as there.
///
/// # Shapes
/// - `volume`: `[in_channels, D, H, W]` float
/// - returns: `[num_classes + 1, D, H, W]`: the class probabilities, then the map
pub fn explain_volume(net: &UNet3d, volume: &Tensor, cfg: &SlidingWindowConfig, what: &Explain) -> Result<Tensor> {
    what.check(net)?;
    let classes = net.config().num_classes;
    let windows = |xs: &Tensor| -> Result<Tensor> {
        let (logits, map) = attribute(net, xs, what)?;
        Ok(Tensor::cat(&[logits.softmax(1, Kind::Float), map], 1))
    };
    inference::sliding_window_maps(&windows, volume, classes, classes + 1, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unet::UNetConfig;
    use tch::{nn, nn::ModuleT, Device};

    fn net(seed: i64) -> (nn::VarStore, UNet3d) {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = UNet3d::new(&vs.root(), &UNetConfig { base_channels: 2, ..Default::default() });
        (vs, net)
    }

    #[test]
    fn names_are_parsed_and_unknown_ones_list_the_choices() {
        assert_eq!(Layer::parse("up2").unwrap(), Layer::Up2);
        assert_eq!(Method::parse("gradcam").unwrap(), Method::GradCam);
        assert_eq!(Layer::Mid.name(), "mid");
        assert_eq!(Method::GuidedGradCam.name(), "guided-gradcam");
        let e = Layer::parse("conv9").unwrap_err().to_string();
        assert!(e.contains("unknown layer `conv9`: choose one of inc, down1, down2, mid, up1, up2, outc"), "{e}");
        let e = Method::parse("lime").unwrap_err().to_string();
        assert!(e.contains("guided-gradcam, gradcam"), "{e}");
    }

    #[test]
    fn the_tape_gives_the_eval_logits_and_autograd_gradients() {
        let (_vs, net) = net(1);
        let x = Tensor::randn([1, 1, 8, 8, 4], (Kind::Float, Device::Cpu));
        let want = tch::no_grad(|| net.forward_t(&x, false));
        let (tape, layers) = tch::with_grad(|| forward(&net, &x));
        assert!(tape.nodes[layers[6]].allclose(&want, 1e-6, 1e-6, false));
        // Without the guided rule, the hand-carried gradient is plain autograd's.
        let w = Tensor::randn(want.size(), (Kind::Float, Device::Cpu));
        let got = tch::with_grad(|| tape.backward(w.shallow_clone(), 0, false, false)).unwrap();
        let xg = x.detach().set_requires_grad(true);
        let y = tch::with_grad(|| (net.forward_t(&xg, false) * &w).sum(Kind::Float));
        let plain = Tensor::run_backward(&[y], &[&xg], false, false).remove(0);
        let d = (got - &plain).abs().max().double_value(&[]);
        assert!(d <= 1e-5 * (1.0 + plain.abs().max().double_value(&[])), "differs by {d}");
    }

    #[test]
    fn maps_are_non_negative_and_a_wrong_class_is_refused() {
        let (_vs, net) = net(2);
        let x = Tensor::randn([2, 1, 8, 4, 8], (Kind::Float, Device::Cpu));
        for &(_, layer) in Layer::ALL {
            for &(_, method) in Method::ALL {
                let what = Explain { class: 1, method, layer };
                let (logits, map) = attribute(&net, &x, &what).unwrap();
                assert_eq!(logits.size(), [2, 3, 8, 4, 8]);
                assert_eq!(map.size(), [2, 1, 8, 4, 8], "{layer:?}");
                assert!(map.min().double_value(&[]) >= 0.0);
            }
        }
        let e = attribute(&net, &x, &Explain { class: 3, ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains("classes 0..3, not 3"), "{e}");
        let cfg = SlidingWindowConfig { patch: [8, 4, 4], ..Default::default() };
        let v = explain_volume(&net, &x.get(0), &cfg, &Explain::default()).unwrap();
        assert_eq!(v.size(), [4, 8, 4, 8]);
        let sums = v.narrow(0, 0, 3).sum_dim_intlist(0, false, Kind::Float);
        assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-5, "probabilities sum to one");
    }
}
