//! `group_norm`: normalize each group of channels of each sample, then scale and shift per channel
//! (Wu & He 2018). The U-Net normalizes with it before every convolution and attention.

mod kernels;
#[cfg(test)]
mod tests;

pub use kernels::{
    group_norm_backward, group_norm_backward_at, group_norm_backward_naive, group_norm_forward, group_norm_forward_at,
    group_norm_forward_naive, GroupNormShape,
};

use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    /// Group normalization: per (n, g), M = (C/G)·H·W elements.
    /// ```text
    /// # Shapes    x [N, C, H, W] (or [N, C, …]), weight γ [C], bias β [C] → y like x;  C divisible by G
    /// # Forward   μ = mean(x), rstd = 1/√(var(x) + ε), x̂ = (x − μ)·rstd, y = γ_c·x̂ + β_c
    /// # Backward  dβ_c = Σ dy    dγ_c = Σ dy·x̂    (over n and pixels)
    ///             dx = rstd·(dx̂ − mean_g(dx̂) − x̂·mean_g(dx̂·x̂)),  dx̂ = γ_c·dy
    /// # Saved     x, γ, mean and rstd [N, G]
    /// # Reference torch.nn.functional.group_norm; Wu & He 2018, "Group Normalization"
    /// ```
    #[track_caller]
    pub fn group_norm(&mut self, x: &Var, num_groups: usize, weight: &Var, bias: &Var, eps: f32) -> Var {
        let xs = x.shape();
        if xs.len() < 2 || num_groups == 0 || !xs[1].is_multiple_of(num_groups) {
            panic!("group_norm: x {xs:?} must be [N, C, …] with C divisible by num_groups = {num_groups}");
        }
        let c = xs[1];
        if weight.shape() != [c] || bias.shape() != [c] {
            panic!(
                "group_norm: weight {:?} and bias {:?} must both be [{c}] for x {xs:?}",
                weight.shape(),
                bias.shape()
            );
        }
        let s = GroupNormShape { n: xs[0], c, hw: xs[2..].iter().product(), groups: num_groups };
        let (y, mean, rstd) = group_norm_forward(x.value().data(), weight.value().data(), bias.value().data(), &s, eps);
        let op = GroupNormOp { x: x.value().clone(), gamma: weight.value().clone(), mean, rstd, shape: s };
        self.record(op, &[x, weight, bias], Tensor::from_vec(xs, y))
    }
}

struct GroupNormOp {
    x: Tensor,
    gamma: Tensor,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    shape: GroupNormShape,
}
impl Op for GroupNormOp {
    fn name(&self) -> &'static str {
        "group_norm"
    }
    fn backward(&self, dy: &Tensor, wants: &[bool]) -> Vec<Option<Tensor>> {
        let (dx, dgamma, dbeta) =
            group_norm_backward(self.x.data(), self.gamma.data(), &self.mean, &self.rstd, dy.data(), &self.shape);
        let c = self.shape.c;
        vec![
            wants[0].then(|| Tensor::from_vec(self.x.shape(), dx)),
            wants[1].then(|| Tensor::from_vec(&[c], dgamma)),
            wants[2].then(|| Tensor::from_vec(&[c], dbeta)),
        ]
    }
}
