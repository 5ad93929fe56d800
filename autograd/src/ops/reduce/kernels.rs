//! Sum kernels. Legend: `x` [x_shape]; `keep` = x_shape with each reduced axis set to 1.

use crate::shape::{broadcast_strides, contiguous_strides, sum_to};

/// Plain reference: each input element is added to the output element it reduces into.
pub fn sum_forward_naive(x: &[f32], x_shape: &[usize], keep: &[usize]) -> Vec<f32> {
    let mut out = vec![0.0f32; keep.iter().product()];
    let sx = contiguous_strides(x_shape);
    let so = broadcast_strides(keep, x_shape);
    for (flat, &v) in x.iter().enumerate() {
        let o: usize = (0..x_shape.len()).map(|d| flat / sx[d] % x_shape[d] * so[d]).sum();
        out[o] += v;
    }
    out
}

/// Must equal [`sum_forward_naive`] up to rounding order. Why it is faster: `sum_to` walks the input row
/// by row, so the inner loop is either a contiguous sum (last axis reduced) or a contiguous add of one
/// row into another (last axis kept), and index arithmetic happens once per row.
pub fn sum_forward(x: &[f32], x_shape: &[usize], keep: &[usize]) -> Vec<f32> {
    sum_to(x, x_shape, keep)
}
