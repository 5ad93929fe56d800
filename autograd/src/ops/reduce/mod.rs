//! Reductions over chosen axes: `sum` and `mean`, with or without keeping the reduced axes (as size 1).

mod kernels;
#[cfg(test)]
mod tests;

pub use kernels::{sum_forward, sum_forward_naive};

use crate::shape::expand;
use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

/// Checks the axes and returns x's shape with every reduced axis set to 1 (the keepdim shape).
#[track_caller]
fn keepdim_shape(op: &str, x: &Var, axes: &[usize]) -> Vec<usize> {
    let mut shape = x.shape().to_vec();
    for (i, &axis) in axes.iter().enumerate() {
        if axis >= shape.len() {
            panic!("{op}: axis {axis} is out of range for x {:?}", x.shape());
        }
        if axes[..i].contains(&axis) {
            panic!("{op}: axis {axis} is listed twice in {axes:?}");
        }
        shape[axis] = 1;
    }
    shape
}

/// The output shape: the keepdim shape, or the same with the reduced axes removed.
fn output_shape(x_shape: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    (0..x_shape.len())
        .filter_map(|d| match (axes.contains(&d), keepdim) {
            (false, _) => Some(x_shape[d]),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

impl Tape {
    /// Sum over `axes`.
    /// ```text
    /// # Shapes    x [d₀, …, dₖ] → out: x's shape without `axes` (or with them as 1 if keepdim)
    /// # Forward   out = Σ_{axes} x
    /// # Backward  dx = broadcast(dout, x.shape)    (every summed element gets the whole gradient)
    /// # Saved     x's shape
    /// # Reference torch.sum(x, dim, keepdim)
    /// ```
    #[track_caller]
    pub fn sum(&mut self, x: &Var, axes: &[usize], keepdim: bool) -> Var {
        let keep = keepdim_shape("sum", x, axes);
        let out = sum_forward(x.value().data(), x.shape(), &keep);
        let out = Tensor::from_vec(&output_shape(x.shape(), axes, keepdim), out);
        self.record(SumOp { x_shape: x.shape().to_vec(), keep, scale: 1.0, name: "sum" }, &[x], out)
    }

    /// Mean over `axes`.
    /// ```text
    /// # Shapes    as sum
    /// # Forward   out = (1/M) Σ_{axes} x,   M = product of the reduced sizes
    /// # Backward  dx = broadcast(dout, x.shape) / M
    /// # Saved     x's shape
    /// # Reference torch.mean(x, dim, keepdim)
    /// ```
    #[track_caller]
    pub fn mean(&mut self, x: &Var, axes: &[usize], keepdim: bool) -> Var {
        let keep = keepdim_shape("mean", x, axes);
        let count: usize = axes.iter().map(|&a| x.shape()[a]).product();
        let scale = 1.0 / count as f32;
        let mut out = sum_forward(x.value().data(), x.shape(), &keep);
        out.iter_mut().for_each(|v| *v *= scale);
        let out = Tensor::from_vec(&output_shape(x.shape(), axes, keepdim), out);
        self.record(SumOp { x_shape: x.shape().to_vec(), keep, scale, name: "mean" }, &[x], out)
    }

    /// Sum of every element, as a 0-dimensional tensor.
    pub fn sum_all(&mut self, x: &Var) -> Var {
        let axes: Vec<usize> = (0..x.shape().len()).collect();
        self.sum(x, &axes, false)
    }

    /// Mean of every element, as a 0-dimensional tensor.
    pub fn mean_all(&mut self, x: &Var) -> Var {
        let axes: Vec<usize> = (0..x.shape().len()).collect();
        self.mean(x, &axes, false)
    }
}

/// Backward of sum (scale 1) and mean (scale 1/M).
struct SumOp {
    name: &'static str,
    x_shape: Vec<usize>,
    keep: Vec<usize>,
    scale: f32,
}
impl Op for SumOp {
    fn name(&self) -> &'static str {
        self.name
    }
    fn backward(&self, dout: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: out = scale · Σ_{axes} x    (scale 1 for sum, 1/M for mean)
        // dout has the keepdim shape's values (removing size-1 axes does not move any value).
        let mut dx = expand(dout.data(), &self.keep, &self.x_shape);
        if self.scale != 1.0 {
            dx.iter_mut().for_each(|v| *v *= self.scale);
        }
        vec![Some(Tensor::from_vec(&self.x_shape, dx))]
    }
}
