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
    // Sum per parameter in f64, then over parameters in their fixed order: the same result every run.
    let total: f64 =
        grads.params().map(|(_, g)| g.data().iter().map(|&v| v as f64 * v as f64).sum::<f64>()).sum::<f64>();
    let norm = total.sqrt() as f32;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for (_, g) in grads.params_mut() {
            g.data_mut().iter_mut().for_each(|v| *v *= coef);
        }
    }
    norm
}
