//! `broadcast_to`: copy a tensor out to a larger shape by the broadcasting rules (PyTorch's `expand`, but
//! materialized, since tensors here are always contiguous).

#[cfg(test)]
mod tests;

use crate::shape::{broadcast_shape, expand, sum_to};
use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    /// Broadcasts x to `shape`.
    /// ```text
    /// # Shapes    x [..] → out [shape], x must broadcast to shape
    /// # Forward   out[i] = x[i with broadcast axes at 0]
    /// # Backward  dx = sum_to(dout, x.shape)  (sum over the copies)
    /// # Saved     x's shape
    /// # Reference torch.broadcast_to
    /// ```
    #[track_caller]
    pub fn broadcast_to(&mut self, x: &Var, shape: &[usize]) -> Var {
        if broadcast_shape(x.shape(), shape).as_deref() != Some(shape) {
            panic!("broadcast_to: x {:?} does not broadcast to {shape:?}", x.shape());
        }
        let out = Tensor::from_vec(shape, expand(x.value().data(), x.shape(), shape));
        self.record(BroadcastToOp { x_shape: x.shape().to_vec() }, &[x], out)
    }
}

struct BroadcastToOp {
    x_shape: Vec<usize>,
}
impl Op for BroadcastToOp {
    fn name(&self) -> &'static str {
        "broadcast_to"
    }
    fn backward(&self, dout: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: out[i] = x[i with broadcast axes at 0]
        vec![Some(Tensor::from_vec(&self.x_shape, sum_to(dout.data(), dout.shape(), &self.x_shape)))]
    }
}
