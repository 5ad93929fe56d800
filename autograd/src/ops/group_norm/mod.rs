//! `group_norm`: normalize each group of channels of each sample, then scale and shift per channel
//! (Wu & He 2018). The U-Net normalizes with it before every convolution and attention.

mod kernels;
#[cfg(test)]
mod tests;

pub use kernels::{
    group_norm_backward, group_norm_backward_at, group_norm_backward_naive, group_norm_forward, group_norm_forward_at,
    group_norm_forward_naive, group_norm_silu_backward_at, group_norm_silu_backward_naive, group_norm_silu_forward_at,
    group_norm_silu_forward_naive, GroupNormShape,
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
        self.group_norm_maybe_silu(x, num_groups, weight, bias, eps, false)
    }

    /// Group normalization followed by SiLU, as one op: y = z·σ(z), z = group_norm(x). Equal, bit for bit,
    /// to `silu(group_norm(x))`, in one pass over the activations instead of two each way.
    /// ```text
    /// # Shapes    as group_norm
    /// # Forward   z = γ_c·x̂ + β_c as in group_norm;  y = z·σ(z)
    /// # Backward  dz = dy · σ(z)·(1 + z·(1 − σ(z)))   (z recomputed from x, μ, rstd, γ, β)
    ///             then group_norm's backward with dz in place of dy
    /// # Saved     x, γ, β, mean and rstd [N, G]
    /// # Reference torch.nn.functional.group_norm then torch.nn.functional.silu
    /// ```
    #[track_caller]
    pub fn group_norm_silu(&mut self, x: &Var, num_groups: usize, weight: &Var, bias: &Var, eps: f32) -> Var {
        self.group_norm_maybe_silu(x, num_groups, weight, bias, eps, true)
    }

    #[track_caller]
    fn group_norm_maybe_silu(&mut self, x: &Var, groups: usize, weight: &Var, bias: &Var, eps: f32, silu: bool) -> Var {
        let name = if silu { "group_norm_silu" } else { "group_norm" };
        let xs = x.shape();
        if xs.len() < 2 || groups == 0 || !xs[1].is_multiple_of(groups) {
            panic!("{name}: x {xs:?} must be [N, C, …] with C divisible by num_groups = {groups}");
        }
        let c = xs[1];
        if weight.shape() != [c] || bias.shape() != [c] {
            panic!("{name}: weight {:?} and bias {:?} must both be [{c}] for x {xs:?}", weight.shape(), bias.shape());
        }
        let s = GroupNormShape { n: xs[0], c, hw: xs[2..].iter().product(), groups };
        let (level, (x_data, gamma, beta)) =
            (crate::cpu::simd(), (x.value().data(), weight.value().data(), bias.value().data()));
        let (y, mean, rstd) = if silu {
            group_norm_silu_forward_at(level, x_data, gamma, beta, &s, eps)
        } else {
            group_norm_forward_at(level, x_data, gamma, beta, &s, eps)
        };
        let op = GroupNormOp {
            name,
            x: x.value().clone(),
            gamma: weight.value().clone(),
            silu_beta: silu.then(|| bias.value().clone()),
            mean,
            rstd,
            shape: s,
        };
        self.record(op, &[x, weight, bias], Tensor::from_vec(xs, y))
    }
}

struct GroupNormOp {
    name: &'static str,
    x: Tensor,
    gamma: Tensor,
    /// β, for the fused SiLU's backward (which recomputes z); None for plain group norm.
    silu_beta: Option<Tensor>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    shape: GroupNormShape,
}
impl Op for GroupNormOp {
    fn name(&self) -> &'static str {
        self.name
    }
    fn attributes(&self) -> String {
        format!("groups {}", self.shape.groups)
    }
    fn backward(&self, dy: &Tensor, wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: x̂ = (x − μ)·rstd, rstd = 1/√(var(x) + ε) per (image, group); y = γ_c·x̂ + β_c
        //          (fused with SiLU: z = γ_c·x̂ + β_c, y = z·σ(z))
        let (level, x, gamma, s) = (crate::cpu::simd(), self.x.data(), self.gamma.data(), &self.shape);
        let (dx, dgamma, dbeta) = match &self.silu_beta {
            Some(beta) => {
                group_norm_silu_backward_at(level, x, gamma, beta.data(), &self.mean, &self.rstd, dy.data(), s)
            }
            None => group_norm_backward_at(level, x, gamma, &self.mean, &self.rstd, dy.data(), s),
        };
        let c = self.shape.c;
        vec![
            wants[0].then(|| Tensor::from_vec(self.x.shape(), dx)),
            wants[1].then(|| Tensor::from_vec(&[c], dgamma)),
            wants[2].then(|| Tensor::from_vec(&[c], dbeta)),
        ]
    }
}
