//! `narrow`: a slice start..start+len along one axis.

#[cfg(test)]
mod tests;

use rayon::prelude::*;

use crate::ops::concat::{min_rows, narrow_copy};
use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    /// Keeps positions start..start+len along `axis`.
    /// ```text
    /// # Shapes    x [.., a, ..] → out [.., len, ..]
    /// # Forward   out = x[.., start..start+len, ..]
    /// # Backward  dx = zeros with dout written at start..start+len along axis
    /// # Saved     x's shape, axis, start
    /// # Reference torch.narrow
    /// ```
    #[track_caller]
    pub fn narrow(&mut self, x: &Var, axis: usize, start: usize, len: usize) -> Var {
        if axis >= x.shape().len() || start + len > x.shape()[axis] {
            panic!("narrow: range {start}..{} on axis {axis} is out of bounds for x {:?}", start + len, x.shape());
        }
        let mut shape = x.shape().to_vec();
        shape[axis] = len;
        let out = Tensor::from_vec(&shape, narrow_copy(x.value().data(), x.shape(), axis, start, len));
        self.record(NarrowOp { x_shape: x.shape().to_vec(), axis, start }, &[x], out)
    }
}

struct NarrowOp {
    x_shape: Vec<usize>,
    axis: usize,
    start: usize,
}
impl Op for NarrowOp {
    fn name(&self) -> &'static str {
        "narrow"
    }
    fn backward(&self, dout: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: out = x[.., start..start+len, ..]
        // [outer, a, inner] view: write dout's [outer, len, inner] blocks at offset start along a.
        let outer: usize = self.x_shape[..self.axis].iter().product();
        let inner: usize = self.x_shape[self.axis + 1..].iter().product();
        let row = self.x_shape[self.axis] * inner;
        let block = dout.shape()[self.axis] * inner;
        let mut dx = crate::pool::take_dirty(outer * row);
        if row > 0 {
            // Each row of dx is zeros around its block: written whole, the rows in parallel.
            let (before, after) = (self.start * inner, self.start * inner + block);
            dx.par_chunks_mut(row).enumerate().with_min_len(min_rows(row)).for_each(|(o, dst)| {
                dst[..before].fill(0.0);
                dst[before..after].copy_from_slice(&dout.data()[o * block..(o + 1) * block]);
                dst[after..].fill(0.0);
            });
        }
        vec![Some(Tensor::from_vec(&self.x_shape, dx))]
    }
}
