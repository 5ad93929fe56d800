//! Optimizers: turn the gradients of one step into parameter updates.
//!
//! - [`Sgd`]: stochastic gradient descent with momentum (and Nesterov, weight decay), as `torch.optim.SGD`.
//! - [`Adam`]: Adam with bias correction, as `torch.optim.Adam`; [`Adam::adamw`] gives decoupled weight decay,
//!   as `torch.optim.AdamW`.
//! - [`clip_grad_norm`]: scale all gradients together so their global L2 norm is at most a bound.
//! - [`Ema`]: an exponential moving average of the parameters (what diffusion models sample with).
//!
//! A parameter without a gradient this step (not used by the loss) is left alone, state included, as in
//! PyTorch where `p.grad is None`.

mod adam;
mod ema;
mod sgd;
#[cfg(test)]
mod tests;

pub use adam::{adam_update_at, Adam, AdamState, AdamStep};
pub use ema::Ema;
pub use sgd::Sgd;

use rayon::prelude::*;

use crate::params::ParamStore;
use crate::tape::Gradients;

/// One update of every parameter that has a gradient.
pub trait Optimizer {
    fn step(&mut self, params: &mut ParamStore, grads: &Gradients);
    /// The learning rate used by the next step (schedules change it between steps).
    fn set_lr(&mut self, lr: f32);
    fn lr(&self) -> f32;
}

/// Scales every gradient by the same factor so that their global norm ‖g‖ = √(Σ over all parameters of
/// Σ g²) is at most `max_norm`; returns the norm before clipping.
/// ```text
/// coef = max_norm / (‖g‖ + 1e-6);  if coef < 1: g ← coef · g      (torch.nn.utils.clip_grad_norm_)
/// ```
pub fn clip_grad_norm(grads: &mut Gradients, max_norm: f32) -> f32 {
    // Σ g² in f64 over fixed chunks of every gradient, in parallel, then over the chunks in order: the same
    // result at any thread count and SIMD level (each chunk's sum is the same f64 operations in the same
    // order).
    let level = crate::cpu::simd();
    let chunks: Vec<&[f32]> = grads.params().flat_map(|(_, g)| g.data().chunks(CHUNK)).collect();
    let partial: Vec<f64> = chunks.into_par_iter().map(|c| sum_of_squares(level, c)).collect();
    let norm = partial.iter().sum::<f64>().sqrt() as f32;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let mut chunks: Vec<&mut [f32]> =
            grads.params_mut().flat_map(|(_, g)| g.data_mut().chunks_mut(CHUNK)).collect();
        chunks.par_iter_mut().for_each(|c| c.iter_mut().for_each(|v| *v *= coef));
    }
    norm
}

/// Elements per parallel task of [`clip_grad_norm`].
const CHUNK: usize = 1 << 15;

/// Σ x² in f64, with 8 independent accumulators so that it vectorizes, added up pairwise at the end.
#[inline(always)]
fn sum_of_squares_body(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let blocks = x.chunks_exact(8);
    let rest = blocks.remainder();
    for block in blocks {
        for (a, &v) in acc.iter_mut().zip(block) {
            *a += v as f64 * v as f64;
        }
    }
    for (a, &v) in acc.iter_mut().zip(rest) {
        *a += v as f64 * v as f64;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}
crate::multiversion!(fn sum_of_squares(level: Simd, x: &[f32]) -> f64 => sum_of_squares_body);
