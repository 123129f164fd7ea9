//! Segmentation losses: the original's focal loss and soft Dice + cross-entropy.
//!
//! The focal loss follows Lin et al., "Focal Loss for Dense Object Detection" (ICCV 2017),
//! in the variant the original project used: it works on softmax probabilities, normalises
//! the class weights to sum to one and smooths the one-hot target. Dice + cross-entropy
//! follows MONAI's `DiceCELoss(to_onehot_y=True, softmax=True)`, the usual alternative.
//!
//! Both take logits `[N, C, D, H, W]` and integer labels `[N, D, H, W]` and return a scalar.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use tch::{Kind, Reduction, Tensor};

use crate::dist::Group;
use crate::error::{Error, Result};

/// Smoothing constant of the original focal loss and of MONAI's Dice loss.
pub const SMOOTH: f64 = 1e-5;

fn check_weights(class_weights: &[f64]) -> Result<()> {
    if class_weights.len() < 2 {
        return Err(Error::config("class_weights", "needs one weight per class, at least two"));
    }
    if class_weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(Error::config("class_weights", format!("weights must be finite and non-negative, got {class_weights:?}")));
    }
    if class_weights.iter().sum::<f64>() <= 0.0 {
        return Err(Error::config("class_weights", "weights must not all be zero"));
    }
    Ok(())
}

/// One-hot `[N, C, D, H, W]` float encoding of labels `[N, D, H, W]`.
fn one_hot(target: &Tensor, num_classes: i64, kind: Kind) -> Tensor {
    let n = target.dim() as i64;
    target.one_hot(num_classes).movedim(&[n][..], &[1][..]).to_kind(kind)
}

/// Checks that logits `[N, C, ...]` and labels `[N, ...]` fit together and the weights.
fn check_shapes(logits: &Tensor, target: &Tensor, classes: usize) -> Result<()> {
    let (l, t) = (logits.size(), target.size());
    if l.len() < 3 || t.len() + 1 != l.len() || l[0] != t[0] || l[2..] != t[1..] {
        return Err(Error::shape(&l, format!("logits [N, C, ...] do not fit labels of shape {t:?} ([N, ...] expected)")));
    }
    if l[1] != classes as i64 {
        return Err(Error::shape(&l, format!("{} class weights but {} classes in the logits", classes, l[1])));
    }
    if target.kind() != Kind::Int64 {
        return Err(Error::shape(&t, format!("labels must be Int64, got {:?}", target.kind())));
    }
    Ok(())
}

/// The original's focal loss.
///
/// With softmax probabilities `p`, `alpha = w / Σw`, the one-hot target clamped to
/// `[smooth / (C − 1), 1 − smooth]` and `pt = Σ_c onehot_c · p_c + smooth`, the loss is the
/// mean over voxels of `−alpha[target] · (1 − pt)^γ · ln pt`.
#[derive(Debug)]
pub struct FocalLoss {
    alpha: Vec<f64>,
    gamma: f64,
    smooth: f64,
}

impl FocalLoss {
    /// A focal loss with one weight per class (normalised here) and focusing parameter
    /// `gamma` (2 in the original).
    ///
    /// # Panics
    /// If the weights are fewer than two, negative or all zero ([`FocalLoss::try_new`]
    /// returns an error instead).
    pub fn new(class_weights: &[f64], gamma: f64) -> Self {
        Self::try_new(class_weights, gamma).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`FocalLoss::new`] returning an error for weights that cannot work.
    pub fn try_new(class_weights: &[f64], gamma: f64) -> Result<Self> {
        check_weights(class_weights)?;
        if !(gamma.is_finite() && gamma >= 0.0) {
            return Err(Error::config("gamma", format!("must be finite and ≥ 0, got {gamma}")));
        }
        let sum: f64 = class_weights.iter().sum();
        Ok(FocalLoss { alpha: class_weights.iter().map(|w| w / sum).collect(), gamma, smooth: SMOOTH })
    }

    /// The normalised class weights `alpha`.
    pub fn alpha(&self) -> &[f64] {
        &self.alpha
    }

    /// Checks that `logits` and `target` can go through [`FocalLoss::forward`].
    pub fn check(&self, logits: &Tensor, target: &Tensor) -> Result<()> {
        check_shapes(logits, target, self.alpha.len())
    }

    /// The mean focal loss.
    ///
    /// # Shapes
    /// - `logits`: `[N, C, D, H, W]` float
    /// - `target`: `[N, D, H, W]` Int64 with values in `0..C`
    /// - returns: a scalar of the logits' kind
    pub fn forward(&self, logits: &Tensor, target: &Tensor) -> Tensor {
        let kind = logits.kind();
        let c = self.alpha.len() as i64;
        let p = logits.softmax(1, kind);
        let onehot = one_hot(target, c, kind).clamp(self.smooth / (c - 1) as f64, 1.0 - self.smooth);
        let pt = (onehot * p).sum_dim_intlist(1, false, kind) + self.smooth;
        let alpha = Tensor::from_slice(&self.alpha).to_kind(kind).to_device(logits.device());
        let a = alpha.index_select(0, &target.flatten(0, -1)).view_as(target);
        let focus = (pt.ones_like() - &pt).pow_tensor_scalar(self.gamma);
        (-(a * focus * pt.log())).mean(kind)
    }
}

/// Soft Dice + cross-entropy, as MONAI's `DiceCELoss(to_onehot_y=True, softmax=True,
/// weight=w)`.
///
/// Dice is computed per sample and class over the volume, `1 − (2·tp + s) / (Σp + Σy + s)`
/// with `s` = 1e-5, multiplied by the class weight and averaged over samples and classes;
/// cross-entropy is PyTorch's class-weighted mean. Without weights all classes count 1.
/// This is MONAI's `DiceCELoss(to_onehot_y=True, softmax=True)`, including its `batch` and
/// `include_background` switches ([`DiceCeLoss::batch`], [`DiceCeLoss::include_background`]).
#[derive(Debug)]
pub struct DiceCeLoss {
    weights: Option<Vec<f64>>,
    batch: bool,
    include_background: bool,
    /// The data-parallel group whose ranks' batches make up the batch (see [`DiceCeLoss::across`]).
    group: Option<Arc<Group>>,
}

impl DiceCeLoss {
    /// Dice + cross-entropy with the given class weights (used as given, not normalised).
    ///
    /// # Panics
    /// If the weights are fewer than two, negative or all zero.
    pub fn new(class_weights: &[f64]) -> Self {
        Self::try_new(Some(class_weights)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Dice + cross-entropy with every class weighted 1.
    pub fn unweighted() -> Self {
        DiceCeLoss { weights: None, batch: false, include_background: true, group: None }
    }

    /// [`DiceCeLoss::new`] returning an error for weights that cannot work.
    pub fn try_new(class_weights: Option<&[f64]>) -> Result<Self> {
        if let Some(w) = class_weights {
            check_weights(w)?;
        }
        Ok(DiceCeLoss { weights: class_weights.map(<[f64]>::to_vec), batch: false, include_background: true, group: None })
    }

    /// Sums Dice's intersection and volumes over the whole batch before dividing (nnU-Net's
    /// "batch Dice"), so a patch without tumour does not drive the tumour Dice to 1 by itself.
    pub fn batch(mut self, on: bool) -> Self {
        self.batch = on;
        self
    }

    /// Whether the background class has a Dice term (cross-entropy always covers it). Without
    /// it, the class weights from the second on weight the Dice terms, as in MONAI.
    pub fn include_background(mut self, on: bool) -> Self {
        self.include_background = on;
        self
    }

    /// Makes the loss that of the batch every rank of `group` holds a share of: batch Dice's
    /// sums and the class-weighted cross-entropy's numerator and denominator are summed over
    /// the ranks by a differentiable all-reduce (as nnU-Net gathers batch Dice's terms), so
    /// that N ranks train as one process on their batches together. (Per-sample Dice and an
    /// unweighted mean need nothing: equal shares average to the whole.)
    pub fn across(mut self, group: Option<Arc<Group>>) -> Self {
        self.group = group;
        self
    }

    /// Checks that `logits` and `target` can go through [`DiceCeLoss::forward`].
    pub fn check(&self, logits: &Tensor, target: &Tensor) -> Result<()> {
        let classes = match &self.weights {
            Some(w) => w.len(),
            None => logits.size().get(1).copied().unwrap_or(0) as usize,
        };
        check_shapes(logits, target, classes)
    }

    /// The loss value.
    ///
    /// # Shapes
    /// - `logits`: `[N, C, D, H, W]` float
    /// - `target`: `[N, D, H, W]` Int64 with values in `0..C`
    /// - returns: a scalar of the logits' kind
    pub fn forward(&self, logits: &Tensor, target: &Tensor) -> Tensor {
        self.f_forward(logits, target).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`DiceCeLoss::forward`], with the error of a failed collective when the loss spans
    /// ranks ([`DiceCeLoss::across`]); never fails otherwise.
    pub fn f_forward(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        let kind = logits.kind();
        let c = logits.size()[1];
        let weight = self.weights.as_ref().map(|w| Tensor::from_slice(w).to_kind(kind).to_device(logits.device()));
        let p = logits.softmax(1, kind);
        let y = one_hot(target, c, kind);
        let (p, y, dice_weight) = if self.include_background {
            (p, y, weight.as_ref().map(Tensor::shallow_clone))
        } else {
            (p.narrow(1, 1, c - 1), y.narrow(1, 1, c - 1), weight.as_ref().map(|w| w.narrow(0, 1, c - 1)))
        };
        // Spatial axes, and the batch axis too for batch Dice.
        let reduce: Vec<i64> = (0..logits.dim() as i64).filter(|&a| a >= 2 || (a == 0 && self.batch)).collect();
        let reduce = &reduce[..];
        let mut tp = (&p * &y).sum_dim_intlist(reduce, false, kind);
        let mut denom = p.sum_dim_intlist(reduce, false, kind) + y.sum_dim_intlist(reduce, false, kind);
        if let (Some(g), true) = (&self.group, self.batch) {
            let k = tp.size()[0];
            let both = g.all_reduce_autograd(&Tensor::cat(&[&tp, &denom], 0))?;
            tp = both.narrow(0, 0, k);
            denom = both.narrow(0, k, k);
        }
        let mut dice = (tp * 2.0 + SMOOTH) / (denom + SMOOTH);
        dice = dice.ones_like() - dice;
        if let Some(w) = &dice_weight {
            dice *= w;
        }
        let ce = match (&self.group, &weight) {
            // PyTorch's weighted mean, Σ w_y · ce / Σ w_y, with both sums over every rank.
            (Some(g), Some(w)) => {
                let num = logits.cross_entropy_loss(target, Some(w), Reduction::Sum, -100, 0.0);
                let den = w.index_select(0, &target.flatten(0, -1)).sum(kind);
                // Every rank's loss is the whole batch's; averaging the ranks' gradients
                // (each carrying the sum over the ranks through the all-reduce) gives its
                // gradient, as one process would.
                let both = g.all_reduce_autograd(&Tensor::stack(&[num, den], 0))?;
                both.get(0) / both.get(1)
            }
            _ => logits.cross_entropy_loss(target, weight.as_ref(), Reduction::Mean, -100, 0.0),
        };
        Ok(dice.mean(kind) + ce)
    }
}

/// Which loss to train with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// The original's [`FocalLoss`].
    Focal,
    /// [`DiceCeLoss`].
    DiceCe,
}

/// A loss as a run configuration names it. `Default` is the original's: focal, γ = 2,
/// class weights 0.2, 1.0, 2.5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// Which loss.
    pub kind: LossKind,
    /// One weight per class.
    pub class_weights: Vec<f64>,
    /// Focusing parameter of the focal loss (ignored by Dice + cross-entropy).
    pub gamma: f64,
    /// Dice + cross-entropy only: Dice over the whole batch rather than per sample
    /// (default false, as MONAI; nnU-Net trains with it on).
    pub batch_dice: bool,
    /// Dice + cross-entropy only: give the background a Dice term (default true, as MONAI;
    /// nnU-Net leaves it out).
    pub dice_background: bool,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig { kind: LossKind::Focal, class_weights: vec![0.2, 1.0, 2.5], gamma: 2.0, batch_dice: false, dice_background: true }
    }
}

impl LossConfig {
    /// Builds the loss, checking the values.
    pub fn build(&self) -> Result<Loss> {
        Ok(match self.kind {
            LossKind::Focal => Loss::Focal(FocalLoss::try_new(&self.class_weights, self.gamma)?),
            LossKind::DiceCe => Loss::DiceCe(
                DiceCeLoss::try_new(Some(&self.class_weights))?.batch(self.batch_dice).include_background(self.dice_background),
            ),
        })
    }
}

/// Either loss behind one `forward`.
#[derive(Debug)]
pub enum Loss {
    /// [`FocalLoss`].
    Focal(FocalLoss),
    /// [`DiceCeLoss`].
    DiceCe(DiceCeLoss),
}

impl Loss {
    /// Checks that `logits` and `target` fit the loss.
    pub fn check(&self, logits: &Tensor, target: &Tensor) -> Result<()> {
        match self {
            Loss::Focal(l) => l.check(logits, target),
            Loss::DiceCe(l) => l.check(logits, target),
        }
    }

    /// The loss value (see the variants).
    pub fn forward(&self, logits: &Tensor, target: &Tensor) -> Tensor {
        match self {
            Loss::Focal(l) => l.forward(logits, target),
            Loss::DiceCe(l) => l.forward(logits, target),
        }
    }

    /// The loss of the batch the ranks of `group` share (see [`DiceCeLoss::across`]; the
    /// focal loss is a plain mean and needs nothing).
    pub fn across(self, group: Option<Arc<Group>>) -> Self {
        match self {
            Loss::DiceCe(l) => Loss::DiceCe(l.across(group)),
            focal => focal,
        }
    }

    /// [`Loss::forward`], with the error of a failed collective (see [`Loss::across`]).
    pub fn f_forward(&self, logits: &Tensor, target: &Tensor) -> Result<Tensor> {
        match self {
            Loss::Focal(l) => Ok(l.forward(logits, target)),
            Loss::DiceCe(l) => l.f_forward(logits, target),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_is_normalised_like_the_original() {
        let l = FocalLoss::new(&[0.2, 1.0, 2.5], 2.0);
        let want = [0.2 / 3.7, 1.0 / 3.7, 2.5 / 3.7];
        for (a, w) in l.alpha().iter().zip(want) {
            assert!((a - w).abs() < 1e-15);
        }
        assert!((l.alpha()[2] - 0.676).abs() < 1e-3);
    }

    #[test]
    fn focal_loss_of_one_voxel_by_hand() {
        // Two classes, logits (0, ln 3): p = (0.25, 0.75); target 1; onehot clamped to
        // (1e-5, 1 − 1e-5); pt = 0.25e-5 + 0.75(1 − 1e-5) + 1e-5; alpha = 0.5.
        let logits = Tensor::from_slice(&[0.0f64, 3f64.ln()]).view([1, 2, 1, 1, 1]);
        let target = Tensor::from_slice(&[1i64]).view([1, 1, 1, 1]);
        let l = FocalLoss::new(&[1.0, 1.0], 2.0).forward(&logits, &target).double_value(&[]);
        let pt = 0.25 * 1e-5 + 0.75 * (1.0 - 1e-5) + 1e-5;
        let want = -0.5 * (1.0 - pt) * (1.0 - pt) * f64::ln(pt);
        assert!((l - want).abs() < 1e-15, "{l} vs {want}");
    }

    #[test]
    fn perfect_dice_ce_is_near_zero_and_shapes_are_checked() {
        let target = Tensor::from_slice(&[0i64, 1, 2, 1]).view([1, 1, 2, 2]);
        let logits = target.one_hot(3).permute([0, 4, 1, 2, 3]).to_kind(Kind::Double) * 50.0;
        let loss = DiceCeLoss::unweighted();
        assert!(loss.check(&logits, &target).is_ok());
        assert!(loss.forward(&logits, &target).double_value(&[]) < 1e-6);
        let bad = Tensor::zeros([1, 2, 2, 1], (Kind::Int64, tch::Device::Cpu));
        assert!(loss.check(&logits, &bad).is_err());
        let focal = FocalLoss::new(&[1.0, 1.0], 2.0);
        assert!(focal.check(&logits, &target).unwrap_err().to_string().contains("2 class weights"));
    }

    #[test]
    fn bad_weights_are_config_errors() {
        assert!(FocalLoss::try_new(&[1.0], 2.0).is_err());
        assert!(FocalLoss::try_new(&[0.0, 0.0], 2.0).is_err());
        assert!(DiceCeLoss::try_new(Some(&[-1.0, 1.0])).is_err());
        let cfg: LossConfig = serde_json::from_str(r#"{"kind": "dice_ce"}"#).unwrap();
        assert!(matches!(cfg.build().unwrap(), Loss::DiceCe(_)));
        assert!(matches!(LossConfig::default().build().unwrap(), Loss::Focal(_)));
    }
}
