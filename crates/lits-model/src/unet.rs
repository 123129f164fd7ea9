//! The reduced 3D U-Net of mlf-core `liver-ct-segmentation`.
//!
//! A two-level encoder-decoder after Çiçek et al., "3D U-Net: Learning Dense Volumetric
//! Segmentation from Sparse Annotation" (MICCAI 2016), reduced as the original project did:
//! strided 2×2×2 convolutions instead of max-pooling, nearest-neighbour upsampling instead
//! of transposed convolutions, channel dropout before every convolution. Variables live
//! under the same names as the original's PyTorch `state_dict`, BatchNorm running
//! statistics and `num_batches_tracked` included, so weights move both ways unchanged.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use tch::nn::{self, ModuleT};

use tch::{Kind, Tensor};

use crate::dist::Group;
use crate::error::{Error, Result};

/// BatchNorm settings of PyTorch's `BatchNorm3d` defaults, which the original kept.
const BN_MOMENTUM: f64 = 0.1;
const BN_EPS: f64 = 1e-5;

/// Shape and regularisation of the network. `Default` is the original model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UNetConfig {
    /// Input channels (1 for CT).
    pub in_channels: i64,
    /// Output classes (background, liver, tumor).
    pub num_classes: i64,
    /// Channels of the first level; the levels below have 2× and 4× as many.
    pub base_channels: i64,
    /// Channel-dropout probability before each 3×3×3 convolution.
    pub dropout: f64,
    /// Channel-dropout probability before each down- and up-sampling.
    pub updown_dropout: f64,
}

impl Default for UNetConfig {
    fn default() -> Self {
        UNetConfig { in_channels: 1, num_classes: 3, base_channels: 32, dropout: 0.25, updown_dropout: 0.001 }
    }
}

impl UNetConfig {
    /// Checks that every value can build a network (every problem at once).
    pub fn validate(&self) -> Result<()> {
        let mut p = lits_data::Problems::new();
        self.check(&mut p);
        Ok(p.into_result()?)
    }

    /// Records every value that cannot build a network, or one too large to allocate.
    pub fn check(&self, p: &mut lits_data::Problems) {
        for (field, v, max) in
            [("in_channels", self.in_channels, 64), ("num_classes", self.num_classes, 255), ("base_channels", self.base_channels, 1024)]
        {
            p.require((1..=max).contains(&v), field, || format!("must be in 1..={max}, got {v}"));
        }
        for (field, v) in [("dropout", self.dropout), ("updown_dropout", self.updown_dropout)] {
            p.require((0.0..1.0).contains(&v), field, || format!("must be in [0, 1), got {v}"));
        }
    }
}

/// A 3-D convolution with bias, initialised like PyTorch's `Conv3d`.
#[derive(Debug)]
pub(crate) struct Conv {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    stride: i64,
    padding: i64,
}

impl Conv {
    fn new(p: nn::Path, cin: i64, cout: i64, kernel: i64, stride: i64, padding: i64) -> Self {
        // PyTorch draws weight and bias from U(-1/√fan_in, 1/√fan_in) (kaiming_uniform with
        // a = √5); doing the same keeps training from scratch statistically the original's.
        let bound = 1.0 / ((cin * kernel * kernel * kernel) as f64).sqrt();
        let init = nn::Init::Uniform { lo: -bound, up: bound };
        let weight = p.var("weight", &[cout, cin, kernel, kernel, kernel], init);
        let bias = p.var("bias", &[cout], init);
        Conv { weight, bias, stride, padding }
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Tensor {
        let (s, p) = (self.stride, self.padding);
        xs.conv3d(&self.weight, Some(&self.bias), [s, s, s], [p, p, p], [1, 1, 1], 1)
    }
}

/// How training-mode BatchNorm takes its statistics.
#[derive(Debug, Clone, Default)]
enum BatchStats {
    /// From this process's batch, by libtorch's `batch_norm` (the original's BatchNorm3d).
    #[default]
    Local,
    /// From the batches of every rank (PyTorch's SyncBatchNorm): per-channel sums summed
    /// over the ranks by a differentiable all-reduce. Without a group (one process) the same
    /// arithmetic on the one batch, so that one process and several differ only in the
    /// order of the sums.
    Sync { group: Option<Arc<Group>>, failure: Arc<Mutex<Option<String>>> },
}

/// `BatchNorm3d` with PyTorch's variables, `num_batches_tracked` included.
#[derive(Debug)]
pub(crate) struct BatchNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) running_mean: Tensor,
    pub(crate) running_var: Tensor,
    num_batches_tracked: Tensor,
    stats: BatchStats,
}

impl BatchNorm {
    fn new(p: nn::Path, channels: i64) -> Self {
        let num_batches_tracked = p.add("num_batches_tracked", Tensor::zeros([], (Kind::Int64, p.device())), false);
        BatchNorm {
            weight: p.var("weight", &[channels], nn::Init::Const(1.0)),
            bias: p.var("bias", &[channels], nn::Init::Const(0.0)),
            running_mean: p.zeros_no_train("running_mean", &[channels]),
            running_var: p.ones_no_train("running_var", &[channels]),
            num_batches_tracked,
            stats: BatchStats::Local,
        }
    }

    /// Training-mode normalisation with statistics over every rank's batch (see
    /// [`BatchStats::Sync`]); running statistics updated as `BatchNorm3d` does (unbiased
    /// variance). A failed collective is recorded in `failure` and the local statistics
    /// are used, so the step ends and the trainer reports the failure.
    fn forward_sync(&self, xs: &Tensor, group: Option<&Group>, failure: &Mutex<Option<String>>) -> Tensor {
        let c = xs.size()[1];
        let dims: &[i64] = &[0, 2, 3, 4];
        // Summed over the ranks; a failed collective leaves the local value (see above).
        let total = |local: Tensor| match group.map(|g| g.all_reduce_autograd(&local)) {
            None => local,
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                failure.lock().expect("failure lock").get_or_insert(e.to_string());
                local
            }
        };
        let count = (xs.numel() as i64 / c) as f32;
        // Two passes, the mean first, then the squared deviations from it: E[x²] − E[x]²
        // would cancel away the variance's low bits wherever the mean is large.
        let sums =
            total(Tensor::cat(&[xs.sum_dim_intlist(dims, false, Kind::Float), Tensor::from_slice(&[count]).to_device(xs.device())], 0));
        let n = sums.narrow(0, c, 1);
        let mean = sums.narrow(0, 0, c) / &n;
        let shape = [1, c, 1, 1, 1];
        let centred = xs - mean.view(shape);
        let var = total((&centred * &centred).sum_dim_intlist(dims, false, Kind::Float)) / &n;
        tch::no_grad(|| {
            let n = n.double_value(&[0]);
            let unbiased = &var * (n / (n - 1.0).max(1.0));
            let mut rm = self.running_mean.shallow_clone();
            let mut rv = self.running_var.shallow_clone();
            let _ = rm.g_mul_scalar_(1.0 - BN_MOMENTUM).g_add_(&(&mean * BN_MOMENTUM));
            let _ = rv.g_mul_scalar_(1.0 - BN_MOMENTUM).g_add_(&(unbiased * BN_MOMENTUM));
        });
        let scale = &self.weight / (var + BN_EPS).sqrt();
        centred * scale.view(shape) + self.bias.view(shape)
    }

    pub(crate) fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        if train {
            // PyTorch counts batches even with a fixed momentum; keeping the count makes
            // saved state dicts identical.
            tch::no_grad(|| {
                let _ = self.num_batches_tracked.shallow_clone().g_add_scalar_(1);
            });
            if let BatchStats::Sync { group, failure } = &self.stats {
                return self.forward_sync(xs, group.as_deref(), failure);
            }
        }
        Tensor::batch_norm(
            xs,
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            BN_MOMENTUM,
            BN_EPS,
            true,
        )
    }
}

/// [Dropout3d → Conv3d 3×3×3 → BatchNorm3d → ReLU] × 2.
#[derive(Debug)]
pub(crate) struct ConvBlock {
    dropout: f64,
    pub(crate) conv_1: Conv,
    pub(crate) batch_norm_1: BatchNorm,
    pub(crate) conv_2: Conv,
    pub(crate) batch_norm_2: BatchNorm,
}

impl ConvBlock {
    fn new(p: nn::Path, cin: i64, cout: i64, dropout: f64) -> Self {
        ConvBlock {
            dropout,
            conv_1: Conv::new(&p / "conv_1", cin, cout, 3, 1, 1),
            batch_norm_1: BatchNorm::new(&p / "batch_norm_1", cout),
            conv_2: Conv::new(&p / "conv_2", cout, cout, 3, 1, 1),
            batch_norm_2: BatchNorm::new(&p / "batch_norm_2", cout),
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = xs.feature_dropout(self.dropout, train);
        let mut xs = self.batch_norm_1.forward_t(&self.conv_1.forward(&xs), train);
        let xs = xs.relu_().feature_dropout(self.dropout, train);
        let mut xs = self.batch_norm_2.forward_t(&self.conv_2.forward(&xs), train);
        xs.relu_()
    }
}

/// Dropout3d → Conv3d 2×2×2 stride 2 → ConvBlock (PyTorch: `down.0`, `down.1`, `down.2`).
#[derive(Debug)]
pub(crate) struct Down {
    dropout: f64,
    pub(crate) conv: Conv,
    pub(crate) block: ConvBlock,
}

impl Down {
    fn new(p: nn::Path, cin: i64, cout: i64, cfg: &UNetConfig) -> Self {
        let p = &p / "down";
        Down {
            dropout: cfg.updown_dropout,
            conv: Conv::new(&p / 1, cin, cin, 2, 2, 0),
            block: ConvBlock::new(&p / 2, cin, cout, cfg.dropout),
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = self.conv.forward(&xs.feature_dropout(self.dropout, train));
        self.block.forward_t(&xs, train)
    }
}

/// Dropout3d → nearest upsampling ×2 → concat(upsampled, skip) → ConvBlock (`conv`).
#[derive(Debug)]
pub(crate) struct Up {
    dropout: f64,
    pub(crate) block: ConvBlock,
}

impl Up {
    fn new(p: nn::Path, cin: i64, cout: i64, cfg: &UNetConfig) -> Self {
        Up { dropout: cfg.updown_dropout, block: ConvBlock::new(&p / "conv", cin, cout, cfg.dropout) }
    }

    fn forward_t(&self, xs: &Tensor, skip: &Tensor, train: bool) -> Tensor {
        let up = upsample2(&xs.feature_dropout(self.dropout, train));
        self.block.forward_t(&Tensor::cat(&[&up, skip], 1), train)
    }
}

/// Nearest-neighbour upsampling by 2 along D, H and W, as `nn.Upsample(scale_factor=2)`.
pub(crate) fn upsample2(xs: &Tensor) -> Tensor {
    let s = xs.size();
    xs.upsample_nearest3d([2 * s[2], 2 * s[3], 2 * s[4]], 2.0, 2.0, 2.0)
}

/// The reduced 3D U-Net.
#[derive(Debug)]
pub struct UNet3d {
    cfg: UNetConfig,
    pub(crate) inc: ConvBlock,
    pub(crate) down1: Down,
    pub(crate) down2: Down,
    pub(crate) mid: ConvBlock,
    pub(crate) up1: Up,
    pub(crate) up2: Up,
    pub(crate) outc: Conv,
}

impl UNet3d {
    /// Creates the network's variables under `p`, named as the original's `state_dict`.
    ///
    /// # Panics
    /// If `cfg` fails [`UNetConfig::validate`]; call that first on user input.
    pub fn new(p: &nn::Path, cfg: &UNetConfig) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("invalid UNetConfig: {e}");
        }
        let c = cfg.base_channels;
        UNet3d {
            cfg: cfg.clone(),
            inc: ConvBlock::new(p / "inc" / "conv_block_1", cfg.in_channels, c, cfg.dropout),
            down1: Down::new(p / "down1", c, 2 * c, cfg),
            down2: Down::new(p / "down2", 2 * c, 4 * c, cfg),
            mid: ConvBlock::new(p / "mid", 4 * c, 4 * c, cfg.dropout),
            up1: Up::new(p / "up1", 4 * c + 2 * c, 2 * c, cfg),
            up2: Up::new(p / "up2", 2 * c + c, c, cfg),
            outc: Conv::new(p / "outc" / "conv_1", c, cfg.num_classes, 1, 1, 0),
        }
    }

    /// The configuration the network was built with.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        [&mut self.inc, &mut self.down1.block, &mut self.down2.block, &mut self.mid, &mut self.up1.block, &mut self.up2.block]
            .into_iter()
            .flat_map(|b| [&mut b.batch_norm_1, &mut b.batch_norm_2])
            .collect()
    }

    /// Makes every BatchNorm take its training statistics over the batches of all ranks of
    /// `group` (SyncBatchNorm), or with `None` over this process's batch by the same
    /// arithmetic. Evaluation is unchanged (running statistics).
    pub fn sync_batch_norm(&mut self, group: Option<Arc<Group>>) {
        let failure = Arc::new(Mutex::new(None));
        for bn in self.batch_norms_mut() {
            bn.stats = BatchStats::Sync { group: group.clone(), failure: failure.clone() };
        }
    }

    /// The first collective of SyncBatchNorm that failed since the last call, if any: a
    /// trainer checks it after each forward pass (the forward itself cannot fail).
    pub fn take_sync_failure(&self) -> Option<Error> {
        match &self.inc.batch_norm_1.stats {
            BatchStats::Sync { failure, .. } => failure.lock().expect("failure lock").take().map(Error::Collective),
            BatchStats::Local => None,
        }
    }

    /// Checks that an input of `shape` can go through the network in eval mode: five
    /// dimensions `[N, C, D, H, W]`, `C` equal to `in_channels`, and `D`, `H`, `W`
    /// positive multiples of 4 (two stride-2 levels that the skips must match again).
    pub fn check_input(&self, shape: &[i64]) -> Result<()> {
        if shape.len() != 5 {
            return Err(Error::shape(shape, format!("expected 5 dimensions [N, C, D, H, W], got {}", shape.len())));
        }
        if shape[0] < 1 {
            return Err(Error::shape(shape, "batch size must be at least 1"));
        }
        if shape[1] != self.cfg.in_channels {
            return Err(Error::shape(shape, format!("expected {} input channel(s), got {}", self.cfg.in_channels, shape[1])));
        }
        let bad: Vec<String> = ["D", "H", "W"]
            .iter()
            .zip(&shape[2..])
            .filter(|(_, &n)| n < 4 || n % 4 != 0)
            .map(|(axis, n)| format!("{axis} = {n}"))
            .collect();
        if !bad.is_empty() {
            return Err(Error::shape(shape, format!("spatial sizes must be positive multiples of 4, but {}", bad.join(", "))));
        }
        Ok(())
    }

    /// [`check_input`](Self::check_input), plus what training needs: BatchNorm must see
    /// more than one value per channel at the lowest level, or its variance is undefined.
    pub fn check_train_input(&self, shape: &[i64]) -> Result<()> {
        self.check_input(shape)?;
        let lowest = shape[0] * shape[2..].iter().map(|n| n / 4).product::<i64>();
        if lowest < 2 {
            return Err(Error::shape(
                shape,
                "training needs more than one value per channel at the lowest level \
                 (batch × D/4 × H/4 × W/4 ≥ 2)",
            ));
        }
        Ok(())
    }

    /// [`forward_t`](ModuleT::forward_t) after checking the input's shape, kind and
    /// device, so that user input yields an error instead of a panic inside libtorch.
    pub fn f_forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let shape = xs.size();
        if train {
            self.check_train_input(&shape)?;
        } else {
            self.check_input(&shape)?;
        }
        if xs.kind() != self.outc.weight.kind() {
            return Err(Error::shape(&shape, format!("expected {:?} values, got {:?}", self.outc.weight.kind(), xs.kind())));
        }
        if xs.device() != self.outc.weight.device() {
            return Err(Error::shape(&shape, format!("input is on {:?} but the network on {:?}", xs.device(), self.outc.weight.device())));
        }
        Ok(self.forward_t(xs, train))
    }
}

impl ModuleT for UNet3d {
    /// Logits of every class at every voxel.
    ///
    /// # Shapes
    /// - `xs`: `[N, in_channels, D, H, W]`, float, `D`, `H`, `W` multiples of 4
    /// - returns: `[N, num_classes, D, H, W]`
    ///
    /// Panics inside libtorch on other shapes; use [`UNet3d::f_forward_t`] for user input.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let x1 = self.inc.forward_t(xs, train);
        let x2 = self.down1.forward_t(&x1, train);
        let x3 = self.down2.forward_t(&x2, train);
        let x3 = self.mid.forward_t(&x3, train);
        let x = self.up1.forward_t(&x3, &x2, train);
        let x = self.up2.forward_t(&x, &x1, train);
        self.outc.forward(&x)
    }
}

impl UNet3d {
    /// An eval-only copy for inference, with each BatchNorm folded into the convolution
    /// before it and activations kept channels-last (see [`InferenceUNet3d`]).
    pub fn fused(&self) -> InferenceUNet3d {
        tch::no_grad(|| {
            let block = |b: &ConvBlock| [fold(&b.conv_1, &b.batch_norm_1, 1), fold(&b.conv_2, &b.batch_norm_2, 1)];
            let plain = |c: &Conv, stride: i64, padding: i64| FusedConv {
                weight: channels_last(&c.weight.detach().copy()),
                bias: c.bias.detach().copy(),
                stride,
                padding,
            };
            InferenceUNet3d {
                dropout: self.cfg.dropout,
                updown_dropout: self.cfg.updown_dropout,
                inc: block(&self.inc),
                down1: (plain(&self.down1.conv, 2, 0), block(&self.down1.block)),
                down2: (plain(&self.down2.conv, 2, 0), block(&self.down2.block)),
                mid: block(&self.mid),
                up1: block(&self.up1.block),
                up2: block(&self.up2.block),
                outc: plain(&self.outc, 1, 0),
            }
        })
    }
}

/// Folds eval-mode BatchNorm into the preceding convolution:
/// `w' = w · γ/√(var + ε)`, `b' = (b − mean) · γ/√(var + ε) + β`, in double precision.
fn fold(conv: &Conv, bn: &BatchNorm, padding: i64) -> FusedConv {
    let k = Kind::Double;
    let scale = bn.weight.to_kind(k) / (bn.running_var.to_kind(k) + BN_EPS).sqrt();
    let weight = conv.weight.to_kind(k) * scale.view([-1, 1, 1, 1, 1]);
    let bias = (conv.bias.to_kind(k) - bn.running_mean.to_kind(k)) * &scale + bn.bias.to_kind(k);
    let kind = conv.weight.kind();
    FusedConv { weight: channels_last(&weight.to_kind(kind)), bias: bias.to_kind(kind), stride: 1, padding }
}

/// The same values with channels-last strides (`[N, C, D, H, W]` stored as N, D, H, W, C),
/// the layout oneDNN convolves without reordering.
pub(crate) fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 4, 1]).contiguous().permute([0, 4, 1, 2, 3])
}

#[derive(Debug)]
struct FusedConv {
    weight: Tensor,
    bias: Tensor,
    stride: i64,
    padding: i64,
}

impl FusedConv {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let (s, p) = (self.stride, self.padding);
        if xs.device() == tch::Device::Cpu && xs.kind() == Kind::Float {
            // Straight to oneDNN: `conv3d`'s heuristics send one-channel inputs and 1×1×1
            // kernels to a slower im2col path.
            xs.mkldnn_convolution(&self.weight, Some(&self.bias), [p, p, p], [s, s, s], [1, 1, 1], 1)
        } else {
            xs.conv3d(&self.weight, Some(&self.bias), [s, s, s], [p, p, p], [1, 1, 1], 1)
        }
    }

    fn forward_relu(&self, xs: &Tensor) -> Tensor {
        let mut y = self.forward(xs);
        let _ = y.relu_();
        y
    }
}

/// The U-Net prepared for inference only: BatchNorm folded into the convolutions, ReLU
/// in place, dropout gone (eval mode) unless asked for ([`InferenceUNet3d::forward_mc`]),
/// activations channels-last. Its logits equal [`UNet3d`]'s in eval mode up to float
/// rounding (parity test: 1e-4). Made by [`UNet3d::fused`]; a snapshot, so re-create it
/// after the weights change.
#[derive(Debug)]
pub struct InferenceUNet3d {
    dropout: f64,
    updown_dropout: f64,
    inc: [FusedConv; 2],
    down1: (FusedConv, [FusedConv; 2]),
    down2: (FusedConv, [FusedConv; 2]),
    mid: [FusedConv; 2],
    up1: [FusedConv; 2],
    up2: [FusedConv; 2],
    outc: FusedConv,
}

impl InferenceUNet3d {
    /// Logits of every class at every voxel, without gradient.
    ///
    /// # Shapes
    /// - `xs`: `[N, in_channels, D, H, W]` float, `D`, `H`, `W` multiples of 4
    /// - returns: `[N, num_classes, D, H, W]` (channels-last strides)
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        self.run(xs, false)
    }

    /// One stochastic pass of Monte-Carlo dropout (Gal & Ghahramani, "Dropout as a
    /// Bayesian Approximation", ICML 2016): the logits with every channel dropout active,
    /// as in training, while BatchNorm stays in eval mode. Draws the dropout masks from
    /// libtorch's generator in the order [`UNet3d`]'s training forward does, so with the
    /// same seed it equals PyTorch's eval-mode model with its `Dropout3d` layers switched
    /// to train mode.
    ///
    /// # Shapes
    /// As [`forward`](Self::forward).
    pub fn forward_mc(&self, xs: &Tensor) -> Tensor {
        self.run(xs, true)
    }

    fn run(&self, xs: &Tensor, dropout: bool) -> Tensor {
        tch::no_grad(|| {
            let dropped = |x: &Tensor, p: f64| if dropout { x.feature_dropout(p, true) } else { x.shallow_clone() };
            let (p, q) = (self.dropout, self.updown_dropout);
            let block = |b: &[FusedConv; 2], x: &Tensor| b[1].forward_relu(&dropped(&b[0].forward_relu(&dropped(x, p)), p));
            let x1 = block(&self.inc, &channels_last(xs));
            let x2 = block(&self.down1.1, &self.down1.0.forward(&dropped(&x1, q)));
            let x3 = block(&self.down2.1, &self.down2.0.forward(&dropped(&x2, q)));
            let x3 = block(&self.mid, &x3);
            let x = block(&self.up1, &Tensor::cat(&[&upsample2(&dropped(&x3, q)), &x2], 1));
            drop(x3);
            let x = block(&self.up2, &Tensor::cat(&[&upsample2(&dropped(&x, q)), &x1], 1));
            self.outc.forward(&x)
        })
    }
}

/// Number of trainable values in `vs` (2 339 491 for the default configuration).
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// SyncBatchNorm in one process is BatchNorm3d: the same outputs, gradients and running
    /// statistics (to rounding), by its own arithmetic.
    #[test]
    fn sync_batch_norm_of_one_process_is_batch_norm() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let plain = BatchNorm::new(&vs.root() / "a", 3);
        let mut synced = BatchNorm::new(&vs.root() / "b", 3);
        synced.stats = BatchStats::Sync { group: None, failure: Arc::new(Mutex::new(None)) };
        // A large mean, where a one-pass variance would lose its low bits.
        let x = Tensor::randn([2, 3, 4, 4, 4], (Kind::Float, Device::Cpu)) * 0.5 + 40.0;
        let (xa, xb) = (x.copy().set_requires_grad(true), x.copy().set_requires_grad(true));
        let w = Tensor::randn([2, 3, 4, 4, 4], (Kind::Float, Device::Cpu));
        let ya = plain.forward_t(&xa, true);
        let yb = synced.forward_t(&xb, true);
        (&ya * &w).sum(Kind::Float).backward();
        (&yb * &w).sum(Kind::Float).backward();
        let close = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]) < 1e-4;
        assert!(close(&ya, &yb), "outputs differ");
        assert!(close(&xa.grad(), &xb.grad()), "input gradients differ");
        assert!(close(&plain.weight.grad(), &synced.weight.grad()), "weight gradients differ");
        assert!(close(&plain.running_mean, &synced.running_mean), "running means differ");
        assert!(close(&plain.running_var, &synced.running_var), "running variances differ");
        assert_eq!(i64::try_from(&synced.num_batches_tracked).unwrap(), 1);
    }

    #[test]
    fn default_is_the_original() {
        let cfg = UNetConfig::default();
        assert_eq!((cfg.in_channels, cfg.num_classes, cfg.base_channels), (1, 3, 32));
        assert_eq!((cfg.dropout, cfg.updown_dropout), (0.25, 0.001));
    }

    #[test]
    fn config_rejects_impossible_values() {
        let bad = UNetConfig { dropout: 1.0, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("dropout"));
        let bad = UNetConfig { base_channels: 0, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("base_channels"));
        let partial: UNetConfig = serde_json::from_str(r#"{"base_channels": 8}"#).unwrap();
        assert_eq!(partial, UNetConfig { base_channels: 8, ..Default::default() });
        assert!(serde_json::from_str::<UNetConfig>(r#"{"width": 8}"#).is_err());
    }

    #[test]
    fn names_and_parameter_count_are_the_originals() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _net = UNet3d::new(&vs.root(), &UNetConfig::default());
        // Hand count: inc 28 704, down1 174 496, down2 697 152, mid 885 504,
        // up1 442 752, up2 110 784, outc 99.
        assert_eq!(parameter_count(&vs), 2_339_491);
        let vars = vs.variables();
        for name in [
            "inc.conv_block_1.conv_1.weight",
            "inc.conv_block_1.batch_norm_2.num_batches_tracked",
            "down1.down.1.weight",
            "down2.down.2.batch_norm_1.running_var",
            "mid.conv_2.bias",
            "up1.conv.conv_1.weight",
            "up2.conv.batch_norm_2.running_mean",
            "outc.conv_1.bias",
        ] {
            assert!(vars.contains_key(name), "{name} missing");
        }
        assert_eq!(vars["up1.conv.conv_1.weight"].size(), [64, 192, 3, 3, 3]);
        // 6 conv blocks × (2 BatchNorms × 5 tensors + 2 convs × 2) + 2 strided convs × 2
        // + outc 2.
        assert_eq!(vars.len(), 6 * 14 + 4 + 2);
    }

    #[test]
    fn fused_inference_equals_eval_mode() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = UNet3d::new(&vs.root(), &UNetConfig { base_channels: 4, ..Default::default() });
        // Train-mode passes give the BatchNorms statistics worth folding.
        for _ in 0..3 {
            let x = Tensor::randn([2, 1, 8, 12, 16], (Kind::Float, Device::Cpu)) * 2.0 + 0.5;
            let _ = tch::no_grad(|| net.forward_t(&x, true));
        }
        let x = Tensor::randn([2, 1, 8, 12, 16], (Kind::Float, Device::Cpu));
        let want = tch::no_grad(|| net.forward_t(&x, false));
        let got = net.fused().forward(&x);
        assert_eq!(got.size(), want.size());
        let d = (got - &want).abs().max().double_value(&[]);
        assert!(d < 1e-4 * (1.0 + want.abs().max().double_value(&[])), "fused differs by {d}");
    }

    #[test]
    fn bad_shapes_give_errors_not_panics() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = UNet3d::new(&vs.root(), &UNetConfig { base_channels: 2, ..Default::default() });
        assert!(net.check_input(&[1, 1, 8, 12, 16]).is_ok());
        let e = net.check_input(&[1, 1, 8, 10, 16]).unwrap_err().to_string();
        assert!(e.contains("H = 10"), "{e}");
        let e = net.check_input(&[1, 2, 8, 8, 8]).unwrap_err().to_string();
        assert!(e.contains("1 input channel"), "{e}");
        assert!(net.check_input(&[8, 8, 8]).is_err());
        assert!(net.check_train_input(&[1, 1, 4, 4, 4]).is_err());
        assert!(net.check_train_input(&[2, 1, 4, 4, 4]).is_ok());
        let x = Tensor::zeros([1, 1, 6, 8, 8], (Kind::Float, Device::Cpu));
        assert!(net.f_forward_t(&x, false).is_err());
        let x = Tensor::zeros([1, 1, 8, 8, 8], (Kind::Double, Device::Cpu));
        assert!(net.f_forward_t(&x, false).unwrap_err().to_string().contains("Double"));
    }

    #[test]
    fn forward_keeps_the_spatial_size_and_counts_batches() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = UNet3d::new(&vs.root(), &UNetConfig { base_channels: 2, ..Default::default() });
        let x = Tensor::randn([2, 1, 8, 12, 4], (Kind::Float, Device::Cpu));
        let y = net.f_forward_t(&x, true).unwrap();
        assert_eq!(y.size(), [2, 3, 8, 12, 4]);
        let n = vs.variables()["mid.batch_norm_1.num_batches_tracked"].int64_value(&[]);
        assert_eq!(n, 1);
        let _ = net.forward_t(&x, false);
        let n = vs.variables()["mid.batch_norm_1.num_batches_tracked"].int64_value(&[]);
        assert_eq!(n, 1, "eval must not count");
    }
}
