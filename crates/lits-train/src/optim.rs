//! Optimisers whose whole state is a set of named tensors and numbers, so a checkpoint
//! can store it and a resumed run continues bit-identically.
//!
//! Hand-written because tch's `nn::Optimizer` keeps its state inside libtorch where it
//! cannot be saved; these re-state PyTorch's single-tensor (`foreach=False`) updates of
//! `torch.optim.Adam`, `AdamW` and `SGD` operation for operation.

use serde::{Deserialize, Serialize};
use tch::{nn, no_grad, Tensor};

use lits_data::Problems;

use crate::error::{Error, Result};

/// Which optimiser, with its hyperparameters (learning rate lives in the schedule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// Adam (Kingma & Ba, 2015), L2 weight decay added to the gradient as PyTorch does.
    Adam {
        /// Learning rate at the start.
        lr: f64,
        /// Decay rates of the first and second moment estimates.
        #[serde(default = "default_betas")]
        betas: (f64, f64),
        /// Added to the denominator for stability.
        #[serde(default = "default_eps")]
        eps: f64,
        /// L2 penalty.
        #[serde(default)]
        weight_decay: f64,
    },
    /// AdamW (Loshchilov & Hutter, 2019): decoupled weight decay.
    AdamW {
        /// Learning rate at the start.
        lr: f64,
        /// Decay rates of the first and second moment estimates.
        #[serde(default = "default_betas")]
        betas: (f64, f64),
        /// Added to the denominator for stability.
        #[serde(default = "default_eps")]
        eps: f64,
        /// Decoupled weight decay.
        #[serde(default = "default_adamw_decay")]
        weight_decay: f64,
    },
    /// SGD with (optionally Nesterov) momentum.
    Sgd {
        /// Learning rate at the start.
        lr: f64,
        /// Momentum factor.
        #[serde(default)]
        momentum: f64,
        /// Nesterov momentum.
        #[serde(default)]
        nesterov: bool,
        /// L2 penalty.
        #[serde(default)]
        weight_decay: f64,
    },
}

fn default_betas() -> (f64, f64) {
    (0.9, 0.999)
}
fn default_eps() -> f64 {
    1e-8
}
fn default_adamw_decay() -> f64 {
    1e-2
}

impl Default for OptimizerConfig {
    /// The original's: Adam, lr 1e-4, no weight decay.
    fn default() -> Self {
        OptimizerConfig::Adam { lr: 1e-4, betas: default_betas(), eps: default_eps(), weight_decay: 0.0 }
    }
}

impl OptimizerConfig {
    /// The initial learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Adam { lr, .. } | OptimizerConfig::AdamW { lr, .. } | OptimizerConfig::Sgd { lr, .. } => *lr,
        }
    }

    /// Records every value that cannot work, under `optimizer.`.
    pub fn check(&self, p: &mut Problems) {
        let lr = self.lr();
        p.require(lr.is_finite() && lr > 0.0, "optimizer.lr", || format!("must be a positive number, got {lr}"));
        let weight_decay = match self {
            OptimizerConfig::Adam { betas, eps, weight_decay, .. } | OptimizerConfig::AdamW { betas, eps, weight_decay, .. } => {
                for (f, b) in [("optimizer.betas[0]", betas.0), ("optimizer.betas[1]", betas.1)] {
                    p.require((0.0..1.0).contains(&b), f, || format!("must be in [0, 1), got {b}"));
                }
                p.require(eps.is_finite() && *eps > 0.0, "optimizer.eps", || format!("must be positive, got {eps}"));
                *weight_decay
            }
            OptimizerConfig::Sgd { momentum, weight_decay, nesterov, .. } => {
                p.require((0.0..1.0).contains(momentum), "optimizer.momentum", || format!("must be in [0, 1), got {momentum}"));
                p.require(!*nesterov || *momentum != 0.0, "optimizer.nesterov", || "needs a momentum above 0".into());
                *weight_decay
            }
        };
        p.require(weight_decay.is_finite() && weight_decay >= 0.0, "optimizer.weight_decay", || {
            format!("must be 0 or positive, got {weight_decay}")
        });
    }
}

/// An optimiser over the trainable variables of a `VarStore`.
#[derive(Debug)]
pub struct Optimizer {
    cfg: OptimizerConfig,
    /// Trainable variables by name, in name order.
    params: Vec<(String, Tensor)>,
    /// Per-variable state tensors: Adam's `exp_avg`, `exp_avg_sq`; SGD's `momentum_buffer`.
    state: Vec<Vec<Tensor>>,
    /// Updates taken so far (Adam's `step`).
    steps: u64,
}

impl Optimizer {
    /// An optimiser for every trainable variable of `vs`.
    pub fn new(vs: &nn::VarStore, cfg: OptimizerConfig) -> Self {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = match cfg {
            OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => 2,
            OptimizerConfig::Sgd { momentum, .. } => usize::from(momentum > 0.0),
        };
        let state = params.iter().map(|(_, p)| (0..slots).map(|_| p.zeros_like().detach()).collect()).collect();
        Optimizer { cfg, params, state, steps: 0 }
    }

    /// The configuration.
    pub fn config(&self) -> &OptimizerConfig {
        &self.cfg
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Sets the count of updates taken (a rank handed rank 0's state).
    pub fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }

    /// The trainable variables, in name order (the order gradients are averaged in).
    pub fn params(&self) -> Vec<Tensor> {
        self.params.iter().map(|(_, p)| p.shallow_clone()).collect()
    }

    /// Sets every gradient to zero (`set_to_none` semantics are not needed: the next
    /// backward pass accumulates into zeros, as `zero_grad(set_to_none=False)`).
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// One update with learning rate `lr` from the gradients in place.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let t = self.steps as i32;
        no_grad(|| {
            for ((_, p), st) in self.params.iter_mut().zip(self.state.iter_mut()) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                match self.cfg {
                    OptimizerConfig::Adam { betas, eps, weight_decay, .. } | OptimizerConfig::AdamW { betas, eps, weight_decay, .. } => {
                        let decoupled = matches!(self.cfg, OptimizerConfig::AdamW { .. });
                        let g = if weight_decay != 0.0 && !decoupled { &g + &*p * weight_decay } else { g };
                        if decoupled && weight_decay != 0.0 {
                            let _ = p.g_mul_scalar_(1.0 - lr * weight_decay);
                        }
                        let (b1, b2) = betas;
                        let (m, v) = st.split_at_mut(1);
                        let _ = m[0].lerp_(&g, 1.0 - b1);
                        let _ = v[0].g_mul_scalar_(b2).g_add_(&(&g * &g * (1.0 - b2)));
                        let bc1 = 1.0 - b1.powi(t);
                        let bc2 = 1.0 - b2.powi(t);
                        let step_size = lr / bc1;
                        let denom = (v[0].sqrt() / bc2.sqrt()) + eps;
                        let _ = p.g_sub_(&(&m[0] / &denom * step_size));
                    }
                    OptimizerConfig::Sgd { momentum, nesterov, weight_decay, .. } => {
                        let mut d = if weight_decay != 0.0 { &g + &*p * weight_decay } else { g };
                        if momentum > 0.0 {
                            let buf = &mut st[0];
                            if t == 1 {
                                buf.copy_(&d);
                            } else {
                                let _ = buf.g_mul_scalar_(momentum).g_add_(&d);
                            }
                            d = if nesterov { &d + &*buf * momentum } else { buf.shallow_clone() };
                        }
                        let _ = p.g_sub_(&(d * lr));
                    }
                }
            }
        });
    }

    /// The state as named tensors (`<param>.exp_avg`, …) for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let names: &[&str] = match self.cfg {
            OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. } => &["exp_avg", "exp_avg_sq"],
            OptimizerConfig::Sgd { .. } => &["momentum_buffer"],
        };
        self.params
            .iter()
            .zip(&self.state)
            .flat_map(|((n, _), st)| st.iter().zip(names).map(move |(t, s)| (format!("{n}.{s}"), t.shallow_clone())))
            .collect()
    }

    /// Restores the state saved by [`Optimizer::state_tensors`] after `steps` updates.
    pub fn load_state(&mut self, steps: u64, tensors: &[(String, Tensor)]) -> Result<()> {
        let want = self.state_tensors();
        let mut missing = Vec::new();
        no_grad(|| {
            for (name, mut dst) in want {
                match tensors.iter().find(|(n, _)| *n == name) {
                    Some((_, src)) if src.size() == dst.size() => dst.copy_(src),
                    Some((_, src)) => missing.push(format!("{name}: expected {:?}, found {:?}", dst.size(), src.size())),
                    None => missing.push(format!("{name}: missing")),
                }
            }
        });
        if !missing.is_empty() {
            return Err(Error::Checkpoint(format!("optimizer state does not fit the model: {}", missing.join("; "))));
        }
        self.steps = steps;
        Ok(())
    }
}
