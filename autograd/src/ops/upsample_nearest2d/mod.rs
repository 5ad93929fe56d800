//! `upsample_nearest2d`: enlarge each image by an integer factor, repeating every pixel (the U-Net's
//! upsampling, before a convolution).

mod kernels;
#[cfg(test)]
mod tests;

pub use kernels::{upsample_backward, upsample_backward_naive, upsample_forward, upsample_forward_naive};

use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    /// Nearest-neighbour upsampling by an integer `scale_factor`.
    /// ```text
    /// # Shapes    x [N, C, H, W] → y [N, C, H·s, W·s]
    /// # Forward   y[n, c, i, j] = x[n, c, ⌊i/s⌋, ⌊j/s⌋]
    /// # Backward  dx[n, c, a, b] = Σ_{u, v < s} dy[n, c, a·s + u, b·s + v]
    /// # Saved     x's shape
    /// # Reference torch.nn.functional.interpolate(mode='nearest', scale_factor=s)
    /// ```
    #[track_caller]
    pub fn upsample_nearest2d(&mut self, x: &Var, scale_factor: usize) -> Var {
        let xs = x.shape();
        if xs.len() != 4 || scale_factor == 0 {
            panic!("upsample_nearest2d: x {xs:?} must be [N, C, H, W] and scale_factor {scale_factor} at least 1");
        }
        let (planes, h, w, s) = (xs[0] * xs[1], xs[2], xs[3], scale_factor);
        let y = upsample_forward(x.value().data(), planes, h, w, s);
        let y = Tensor::from_vec(&[xs[0], xs[1], h * s, w * s], y);
        self.record(UpsampleOp { x_shape: xs.to_vec(), scale: s }, &[x], y)
    }
}

struct UpsampleOp {
    x_shape: Vec<usize>,
    scale: usize,
}
impl Op for UpsampleOp {
    fn name(&self) -> &'static str {
        "upsample_nearest2d"
    }
    fn backward(&self, dy: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: y[n, c, i, j] = x[n, c, ⌊i/s⌋, ⌊j/s⌋]
        let s = &self.x_shape;
        let dx = upsample_backward(dy.data(), s[0] * s[1], s[2], s[3], self.scale);
        vec![Some(Tensor::from_vec(s, dx))]
    }
}
