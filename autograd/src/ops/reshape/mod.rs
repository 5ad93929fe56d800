//! `reshape`: the same values under another shape. No data moves (the tensor is row-major and contiguous,
//! so any shape with the same element count reads the same buffer).

#[cfg(test)]
mod tests;

use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    /// View x under a new shape with the same number of elements.
    /// ```text
    /// # Shapes    x [any] → out [shape],  numel equal
    /// # Forward   out = x, reinterpreted
    /// # Backward  dx = dout reinterpreted as x's shape
    /// # Saved     x's shape
    /// # Reference torch.reshape
    /// ```
    #[track_caller]
    pub fn reshape(&mut self, x: &Var, shape: &[usize]) -> Var {
        let numel: usize = shape.iter().product();
        if numel != x.value().numel() {
            panic!(
                "reshape: cannot view x {:?} ({} values) as {shape:?} ({numel} values)",
                x.shape(),
                x.value().numel()
            );
        }
        let out = x.value().reshape(shape);
        self.record(ReshapeOp { x_shape: x.shape().to_vec() }, &[x], out)
    }
}

struct ReshapeOp {
    x_shape: Vec<usize>,
}
impl Op for ReshapeOp {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn backward(&self, dout: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: out = x, reinterpreted
        vec![Some(dout.reshape(&self.x_shape))]
    }
}
