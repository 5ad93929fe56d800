//! `softmax` and `log_softmax` over one axis, computed stably (the row maximum is subtracted first).

mod kernels;
#[cfg(test)]
mod tests;

pub use kernels::{log_softmax_forward, softmax_forward, softmax_forward_naive};

use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

/// (outer, size, inner): x viewed as [outer, size along axis, inner].
#[track_caller]
fn split(op: &str, x: &Var, axis: usize) -> (usize, usize, usize) {
    let s = x.shape();
    if axis >= s.len() {
        panic!("{op}: axis {axis} is out of range for x {s:?}");
    }
    (s[..axis].iter().product(), s[axis], s[axis + 1..].iter().product())
}

impl Tape {
    /// Softmax along `axis`.
    /// ```text
    /// # Shapes    x → y, same shape
    /// # Forward   y = e^(x − max) / Σ_axis e^(x − max)
    /// # Backward  dx = y ⊙ (dy − Σ_axis dy ⊙ y)
    /// # Saved     y
    /// # Reference torch.softmax(x, dim)
    /// ```
    #[track_caller]
    pub fn softmax(&mut self, x: &Var, axis: usize) -> Var {
        let dims = split("softmax", x, axis);
        let y = Tensor::from_vec(x.shape(), softmax_forward(x.value().data(), dims));
        self.record(SoftmaxOp { y: y.clone(), dims }, &[x], y)
    }

    /// Log of the softmax along `axis`.
    /// ```text
    /// # Shapes    x → y, same shape
    /// # Forward   y = x − lse(x),  lse = max + ln Σ_axis e^(x − max)
    /// # Backward  dx = dy − softmax(x) ⊙ Σ_axis dy,   softmax(x) = e^y
    /// # Saved     y
    /// # Reference torch.log_softmax(x, dim)
    /// ```
    #[track_caller]
    pub fn log_softmax(&mut self, x: &Var, axis: usize) -> Var {
        let dims = split("log_softmax", x, axis);
        let y = Tensor::from_vec(x.shape(), log_softmax_forward(x.value().data(), dims));
        self.record(LogSoftmaxOp { y: y.clone(), dims }, &[x], y)
    }
}

/// Calls `f(offset, stride)` for every line along the axis: element j of the line is at offset + j·stride.
fn for_each_line((outer, size, inner): (usize, usize, usize), mut f: impl FnMut(usize, usize)) {
    for o in 0..outer {
        for i in 0..inner {
            f(o * size * inner + i, inner);
        }
    }
}

struct SoftmaxOp {
    y: Tensor,
    dims: (usize, usize, usize),
}
impl Op for SoftmaxOp {
    fn name(&self) -> &'static str {
        "softmax"
    }
    fn backward(&self, dy: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: y = e^(x − max) / Σ_axis e^(x − max)
        let (y, g) = (self.y.data(), dy.data());
        let mut dx = vec![0.0; y.len()];
        for_each_line(self.dims, |off, stride| {
            let idx = |j: usize| off + j * stride;
            let dot: f32 = (0..self.dims.1).map(|j| g[idx(j)] * y[idx(j)]).sum();
            for j in 0..self.dims.1 {
                dx[idx(j)] = y[idx(j)] * (g[idx(j)] - dot);
            }
        });
        vec![Some(Tensor::from_vec(dy.shape(), dx))]
    }
}

struct LogSoftmaxOp {
    y: Tensor,
    dims: (usize, usize, usize),
}
impl Op for LogSoftmaxOp {
    fn name(&self) -> &'static str {
        "log_softmax"
    }
    fn backward(&self, dy: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: y = x − lse(x),  lse = max + ln Σ_axis e^(x − max)
        let (y, g) = (self.y.data(), dy.data());
        let mut dx = vec![0.0; y.len()];
        for_each_line(self.dims, |off, stride| {
            let idx = |j: usize| off + j * stride;
            let total: f32 = (0..self.dims.1).map(|j| g[idx(j)]).sum();
            for j in 0..self.dims.1 {
                dx[idx(j)] = g[idx(j)] - y[idx(j)].exp() * total;
            }
        });
        vec![Some(Tensor::from_vec(dy.shape(), dx))]
    }
}
