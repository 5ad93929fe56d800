//! `scaled_dot_product_attention`: softmax(q·kᵀ/√d)·v over the last two axes, with a flash-attention
//! kernel that never stores the [seq, seq] score matrix (the U-Net's self-attention at 32×32 has seq = 1024).
//!
//! The files: `shape.rs` the sizes of one call; `kernels.rs` the naive reference and flash attention;
//! `short.rs` sequences of at most 64 positions (the U-Net's 7×7 level), whose whole score matrix fits in
//! L1, which `kernels.rs` hands them to; `tests.rs`.

mod kernels;
mod shape;
mod short;
#[cfg(test)]
mod tests;

pub use kernels::{
    attention_backward, attention_backward_at, attention_backward_naive, attention_forward, attention_forward_at,
    attention_forward_naive, TILE_K, TILE_Q,
};
pub use shape::{AttentionShape, Saved};

use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    /// Scaled dot-product attention, multi-head when the leading axes are [batch, heads].
    /// ```text
    /// # Shapes    q [..., Sq, D], k [..., Sk, D], v [..., Sk, Dv] → o [..., Sq, Dv]  (same leading axes)
    /// # Forward   s = q·kᵀ/√D,  p = softmax_rows(s),  o = p·v
    /// # Backward  dv = pᵀ·do
    ///             dq = ds·k/√D,   dk = dsᵀ·q/√D,   ds = p ⊙ (do·vᵀ − D_i),  D_i = Σ_c do_ic·o_ic
    /// # Saved     q, k, v, o and lse [..., Sq] (log-sum-exp of each row of s): O(Sq) beyond the inputs,
    ///             not the [Sq, Sk] matrix p, which backward recomputes tile by tile; except for
    ///             sequences of at most 64 (`short.rs`), whose p is saved (smaller than q, k, v there)
    /// # Reference torch.nn.functional.scaled_dot_product_attention; Dao et al. 2022 "FlashAttention";
    ///             Dao 2023 "FlashAttention-2" (D_i)
    /// ```
    #[track_caller]
    pub fn scaled_dot_product_attention(&mut self, q: &Var, k: &Var, v: &Var) -> Var {
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        let r = qs.len();
        let ok = r >= 2
            && ks.len() == r
            && vs.len() == r
            && qs[..r - 2] == ks[..r - 2]
            && qs[..r - 2] == vs[..r - 2]
            && qs[r - 1] == ks[r - 1]
            && ks[r - 2] == vs[r - 2];
        if !ok {
            panic!(
                "scaled_dot_product_attention: q {qs:?}, k {ks:?}, v {vs:?} must be [..., Sq, D], [..., Sk, D], [..., Sk, Dv]"
            );
        }
        let s = AttentionShape {
            batch: qs[..r - 2].iter().product(),
            sq: qs[r - 2],
            sk: ks[r - 2],
            d: qs[r - 1],
            dv: vs[r - 1],
        };
        let (o, saved) = attention_forward(q.value().data(), k.value().data(), v.value().data(), &s);
        let mut o_shape = qs.to_vec();
        o_shape[r - 1] = s.dv;
        let o = Tensor::from_vec(&o_shape, o);
        let op = AttentionOp {
            q: q.value().clone(),
            k: k.value().clone(),
            v: v.value().clone(),
            o: o.clone(),
            saved,
            shape: s,
        };
        self.record(op, &[q, k, v], o)
    }
}

struct AttentionOp {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    saved: Saved,
    shape: AttentionShape,
}
impl Op for AttentionOp {
    fn name(&self) -> &'static str {
        "scaled_dot_product_attention"
    }
    fn backward(&self, dout: &Tensor, wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: s = q·kᵀ/√D,  p = softmax_rows(s),  o = p·v
        let (dq, dk, dv) = attention_backward(
            self.q.data(),
            self.k.data(),
            self.v.data(),
            self.o.data(),
            &self.saved,
            dout.data(),
            &self.shape,
        );
        vec![
            wants[0].then(|| Tensor::from_vec(self.q.shape(), dq)),
            wants[1].then(|| Tensor::from_vec(self.k.shape(), dk)),
            wants[2].then(|| Tensor::from_vec(self.v.shape(), dv)),
        ]
    }
}
