//! `concat`: join tensors along one axis (the U-Net's skip connections concatenate channels).

mod kernels;
#[cfg(test)]
mod tests;

pub use kernels::{concat_forward, min_rows, narrow_copy};

use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    /// Concatenates along `axis`; all other sizes must agree.
    /// ```text
    /// # Shapes    xᵢ [.., aᵢ, ..] → out [.., Σaᵢ, ..]
    /// # Forward   out = [x₀ | x₁ | …] along axis
    /// # Backward  dxᵢ = narrow(dout, axis, Σ_{j<i} aⱼ, aᵢ)
    /// # Saved     each input's size along axis
    /// # Reference torch.cat
    /// ```
    #[track_caller]
    pub fn concat(&mut self, xs: &[&Var], axis: usize) -> Var {
        let Some(first) = xs.first() else { panic!("concat: needs at least one tensor") };
        let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
        let rank = first.shape().len();
        if axis >= rank {
            panic!("concat: axis {axis} is out of range for shapes {shapes:?}");
        }
        let compatible =
            shapes.iter().all(|s| s.len() == rank && (0..rank).all(|d| d == axis || s[d] == first.shape()[d]));
        if !compatible {
            panic!("concat: shapes {shapes:?} differ outside axis {axis}");
        }
        let sizes: Vec<usize> = shapes.iter().map(|s| s[axis]).collect();
        let mut out_shape = first.shape().to_vec();
        out_shape[axis] = sizes.iter().sum();
        let parts: Vec<&[f32]> = xs.iter().map(|x| x.value().data()).collect();
        let out = concat_forward(&parts, &sizes, &out_shape, axis);
        self.record(ConcatOp { sizes, axis }, xs, Tensor::from_vec(&out_shape, out))
    }
}

struct ConcatOp {
    sizes: Vec<usize>,
    axis: usize,
}
impl Op for ConcatOp {
    fn name(&self) -> &'static str {
        "concat"
    }
    fn backward(&self, dout: &Tensor, wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: out = [x₀ | x₁ | …] along axis
        let mut start = 0;
        let mut grads = Vec::with_capacity(self.sizes.len());
        for (&size, &want) in self.sizes.iter().zip(wants) {
            grads.push(want.then(|| {
                let mut shape = dout.shape().to_vec();
                shape[self.axis] = size;
                Tensor::from_vec(&shape, narrow_copy(dout.data(), dout.shape(), self.axis, start, size))
            }));
            start += size;
        }
        grads
    }
}
