//! `mse_loss`: mean squared error, the ε-prediction objective of a diffusion model.

#[cfg(test)]
mod tests;

use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    /// Mean squared error over all elements.
    /// ```text
    /// # Shapes    pred, target same shape → loss [] (a scalar);  N = number of elements
    /// # Forward   loss = (1/N) Σ (pred − target)²
    /// # Backward  dpred   =  dloss · 2(pred − target)/N
    ///             dtarget = −dloss · 2(pred − target)/N
    /// # Saved     pred − target
    /// # Reference torch.nn.functional.mse_loss (reduction='mean')
    /// ```
    #[track_caller]
    pub fn mse_loss(&mut self, pred: &Var, target: &Var) -> Var {
        if pred.shape() != target.shape() {
            panic!("mse_loss: pred {:?} and target {:?} must have the same shape", pred.shape(), target.shape());
        }
        let diff = pred.value().data().iter().zip(target.value().data()).map(|(p, t)| p - t);
        let diff = crate::pool::collect(pred.value().numel(), diff);
        let n = diff.len() as f64;
        let loss = (diff.iter().map(|&d| d as f64 * d as f64).sum::<f64>() / n) as f32;
        let op = MseLossOp { diff: Tensor::from_vec(pred.shape(), diff) };
        self.record(op, &[pred, target], Tensor::scalar(loss))
    }
}

struct MseLossOp {
    diff: Tensor,
}
impl Op for MseLossOp {
    fn name(&self) -> &'static str {
        "mse_loss"
    }
    fn backward(&self, dloss: &Tensor, wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: loss = (1/N) Σ (pred − target)²
        let scale = 2.0 * dloss.item() / self.diff.numel() as f32;
        let grad = |sign: f32| {
            let g = crate::pool::collect(self.diff.numel(), self.diff.data().iter().map(|d| sign * scale * d));
            Tensor::from_vec(self.diff.shape(), g)
        };
        vec![wants[0].then(|| grad(1.0)), wants[1].then(|| grad(-1.0))]
    }
}
