use rayon::prelude::*;

use super::Optimizer;
use crate::cpu::{self, Simd};
use crate::params::ParamStore;
use crate::tape::Gradients;

/// Adam (Kingma & Ba 2015) with bias correction, written in the order `torch.optim.Adam` computes it, so
/// that the results agree to rounding. With `decoupled` it is AdamW (Loshchilov & Hutter 2019).
/// ```text
/// t ← t + 1                                    (per parameter, counting its own steps)
/// Adam:  g ← g + weight_decay · p              (L2 penalty folded into the gradient)
/// AdamW: p ← p · (1 − lr · weight_decay)       (decay applied to the weight directly)
/// m ← β₁ m + (1 − β₁) g
/// v ← β₂ v + (1 − β₂) g²
/// p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
/// ```
pub struct Adam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// AdamW's decoupled weight decay instead of Adam's L2 penalty.
    pub decoupled: bool,
    state: Vec<Option<AdamState>>,
}

/// Per-parameter state: step count and the two moment estimates.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    pub step: u64,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl Adam {
    /// Adam with PyTorch's defaults: β = (0.9, 0.999), ε = 1e-8, no weight decay.
    pub fn new(lr: f32) -> Adam {
        Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false, state: Vec::new() }
    }

    /// AdamW with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8) and the given decoupled weight decay
    /// (PyTorch's default is 0.01).
    pub fn adamw(lr: f32, weight_decay: f32) -> Adam {
        Adam { weight_decay, decoupled: true, ..Adam::new(lr) }
    }

    /// The state of every parameter (for checkpoints); `None` before a parameter's first step.
    pub fn state(&self) -> &[Option<AdamState>] {
        &self.state
    }

    /// Restores state saved with [`Adam::state`].
    pub fn set_state(&mut self, state: Vec<Option<AdamState>>) {
        self.state = state;
    }
}

impl Optimizer for Adam {
    fn step(&mut self, params: &mut ParamStore, grads: &Gradients) {
        self.state.resize(params.len(), None);
        let (lr, b1, b2, eps, wd) = (self.lr, self.beta1, self.beta2, self.eps, self.weight_decay);
        let level = cpu::simd();
        // Every parameter's update, cut into chunks, as one parallel loop: one loop per parameter tensor
        // spent more time starting and joining its threads than updating the U-Net's small tensors.
        let mut jobs = Vec::new();
        for ((id, p), state) in params.iter_mut().zip(self.state.iter_mut()) {
            let Some(grad) = grads.param(id) else { continue };
            let p = p.data_mut();
            let s = state.get_or_insert_with(|| AdamState { step: 0, m: vec![0.0; p.len()], v: vec![0.0; p.len()] });
            s.step += 1;
            let t = s.step as i32;
            let h = AdamStep {
                lr,
                beta1: b1,
                beta2: b2,
                eps,
                weight_decay: wd,
                decoupled: self.decoupled,
                step_size: lr / (1.0 - b1.powi(t)),
                bias_correction2_sqrt: (1.0 - b2.powi(t)).sqrt(),
            };
            let chunks = p.chunks_mut(CHUNK).zip(grad.data().chunks(CHUNK));
            jobs.extend(chunks.zip(s.m.chunks_mut(CHUNK).zip(s.v.chunks_mut(CHUNK))).map(|(pg, mv)| (pg, mv, h)));
        }
        jobs.into_par_iter().for_each(|((p, g), (m, v), h)| adam_chunk(level, p, g, m, v, h));
    }
    fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }
    fn lr(&self) -> f32 {
        self.lr
    }
}

/// The constants of one Adam step.
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub decoupled: bool,
    /// lr / (1 − β₁ᵗ)
    pub step_size: f32,
    /// √(1 − β₂ᵗ)
    pub bias_correction2_sqrt: f32,
}

/// The update of one parameter tensor, element by element (the formulas of [`Adam`]).
#[inline(always)]
fn adam_body(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: AdamStep) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let g = if h.decoupled {
            *p *= 1.0 - h.lr * h.weight_decay;
            g
        } else {
            g + h.weight_decay * *p
        };
        *m = h.beta1 * *m + (1.0 - h.beta1) * g;
        *v = h.beta2 * *v + (1.0 - h.beta2) * g * g;
        let denom = v.sqrt() / h.bias_correction2_sqrt + h.eps;
        *p -= h.step_size * *m / denom;
    }
}
crate::multiversion!(fn adam_chunk(level: Simd, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: AdamStep) => adam_body);

/// Elements per rayon task.
const CHUNK: usize = 1 << 15;

/// One Adam step on one parameter tensor at an explicit SIMD level, large tensors split across threads.
/// Every level gives the same bits: the body has no fused multiply-adds the compiler could form differently
/// (Rust never contracts a·b + c on its own).
pub fn adam_update_at(level: Simd, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: AdamStep) {
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| adam_chunk(level, p, g, m, v, h));
}
