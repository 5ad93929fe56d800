//! `dropout`: zero each element with probability p during training, scaling the survivors by 1/(1 − p) so
//! the expected value is unchanged (inverted dropout). Randomness comes from the caller's seeded generator.

#[cfg(test)]
mod tests;

use rand::rngs::StdRng;
use rand::RngExt;

use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    /// Inverted dropout with drop probability `p` (call it only in training; evaluation skips it).
    /// ```text
    /// # Shapes    x → y, same shape
    /// # Forward   mᵢ = [uᵢ ≥ p] / (1 − p),  uᵢ ~ U[0, 1) from rng;  y = x ⊙ m
    /// # Backward  dx = dy ⊙ m
    /// # Saved     m
    /// # Reference torch.nn.functional.dropout; Srivastava et al. 2014
    /// ```
    #[track_caller]
    pub fn dropout(&mut self, x: &Var, p: f32, rng: &mut StdRng) -> Var {
        if !(0.0..1.0).contains(&p) {
            panic!("dropout: p = {p} must be in [0, 1)");
        }
        let keep = 1.0 / (1.0 - p);
        let mask: Vec<f32> =
            (0..x.value().numel()).map(|_| if rng.random::<f32>() >= p { keep } else { 0.0 }).collect();
        let y = x.value().data().iter().zip(&mask).map(|(v, m)| v * m).collect();
        let op = DropoutOp { mask: Tensor::from_vec(x.shape(), mask) };
        self.record(op, &[x], Tensor::from_vec(x.shape(), y))
    }
}

struct DropoutOp {
    mask: Tensor,
}
impl Op for DropoutOp {
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn backward(&self, dy: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: mᵢ = [uᵢ ≥ p] / (1 − p),  uᵢ ~ U[0, 1) from rng;  y = x ⊙ m
        let dx = dy.data().iter().zip(self.mask.data()).map(|(g, m)| g * m).collect();
        vec![Some(Tensor::from_vec(dy.shape(), dx))]
    }
}
