//! `permute` (and `transpose`, the permutation that swaps two axes): reorder a tensor's axes.

mod kernels;
#[cfg(test)]
mod tests;

pub use kernels::{permute_forward, permute_forward_naive};

use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    /// Reorders axes: output axis i is input axis `dims[i]`.
    /// ```text
    /// # Shapes    x [d₀, …, dₖ] → out [d_dims[0], …, d_dims[k]]
    /// # Forward   out[i₀, …, iₖ] = x[j] with j[dims[a]] = i[a]
    /// # Backward  dx = permute(dout, inverse(dims)),  inverse[dims[a]] = a
    /// # Saved     dims
    /// # Reference torch.permute
    /// ```
    #[track_caller]
    pub fn permute(&mut self, x: &Var, dims: &[usize]) -> Var {
        let rank = x.shape().len();
        let mut seen = vec![false; rank];
        let is_permutation =
            dims.len() == rank && dims.iter().all(|&d| d < rank && !std::mem::replace(&mut seen[d], true));
        if !is_permutation {
            panic!("permute: dims {dims:?} is not a permutation of the axes of x {:?}", x.shape());
        }
        let (out, shape) = permute_forward(x.value().data(), x.shape(), dims);
        self.record(PermuteOp { dims: dims.to_vec() }, &[x], Tensor::from_vec(&shape, out))
    }

    /// Swaps two axes.
    /// ```text
    /// # Forward   out = x with axes a and b exchanged
    /// # Backward  dx = transpose(dout, a, b)
    /// # Reference torch.transpose
    /// ```
    #[track_caller]
    pub fn transpose(&mut self, x: &Var, a: usize, b: usize) -> Var {
        let rank = x.shape().len();
        if a >= rank || b >= rank {
            panic!("transpose: axes {a} and {b} must be below the rank of x {:?}", x.shape());
        }
        let mut dims: Vec<usize> = (0..rank).collect();
        dims.swap(a, b);
        self.permute(x, &dims)
    }
}

struct PermuteOp {
    dims: Vec<usize>,
}
impl Op for PermuteOp {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn backward(&self, dout: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: out[i₀, …, iₖ] = x[j] with j[dims[a]] = i[a]  (transpose: axes a and b exchanged)
        let mut inverse = vec![0; self.dims.len()];
        for (a, &d) in self.dims.iter().enumerate() {
            inverse[d] = a;
        }
        let (dx, shape) = permute_forward(dout.data(), dout.shape(), &inverse);
        vec![Some(Tensor::from_vec(&shape, dx))]
    }
}
