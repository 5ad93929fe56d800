use super::Optimizer;
use crate::params::ParamStore;
use crate::tape::Gradients;

/// Stochastic gradient descent with momentum, as `torch.optim.SGD` (dampening 0).
/// ```text
/// g ← g + weight_decay · p
/// b ← g                     on a parameter's first step
/// b ← momentum · b + g      afterwards
/// g ← g + momentum · b      if nesterov, else g ← b       (when momentum ≠ 0)
/// p ← p − lr · g
/// ```
/// Reference: Sutskever et al. 2013; PyTorch's `SGD` documentation (the algorithm box).
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    /// Momentum buffer per parameter, created on its first step.
    buffers: Vec<Option<Vec<f32>>>,
}

impl Sgd {
    pub fn new(lr: f32, momentum: f32) -> Sgd {
        Sgd { lr, momentum, weight_decay: 0.0, nesterov: false, buffers: Vec::new() }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &mut ParamStore, grads: &Gradients) {
        self.buffers.resize(params.len(), None);
        for (id, grad) in grads.params() {
            let p = params.get_mut(id).data_mut();
            let buffer = &mut self.buffers[id.0];
            let first = buffer.is_none();
            let buf = buffer.get_or_insert_with(|| vec![0.0; p.len()]);
            for ((p, &g), b) in p.iter_mut().zip(grad.data()).zip(buf.iter_mut()) {
                let mut g = g + self.weight_decay * *p;
                if self.momentum != 0.0 {
                    *b = if first { g } else { self.momentum * *b + g };
                    g = if self.nesterov { g + self.momentum * *b } else { *b };
                }
                *p -= self.lr * g;
            }
        }
    }
    fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }
    fn lr(&self) -> f32 {
        self.lr
    }
}
