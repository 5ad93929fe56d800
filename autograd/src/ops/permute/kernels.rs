//! Permute kernels. Legend: `x` [x_shape]; `out` [x_shape[dims[0]], …]; `strides` = x's strides read in
//! the output's axis order.

use crate::shape::{contiguous_strides, for_each_row};

fn permuted(x_shape: &[usize], dims: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let sx = contiguous_strides(x_shape);
    (dims.iter().map(|&d| x_shape[d]).collect(), dims.iter().map(|&d| sx[d]).collect())
}

/// Plain reference: compute the source offset of every output element.
pub fn permute_forward_naive(x: &[f32], x_shape: &[usize], dims: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let (shape, strides) = permuted(x_shape, dims);
    let so = contiguous_strides(&shape);
    let out = (0..x.len())
        .map(|flat| x[(0..shape.len()).map(|a| flat / so[a] % shape[a] * strides[a]).sum::<usize>()])
        .collect();
    (out, shape)
}

/// Must equal [`permute_forward_naive`]. Why it is faster: the source offset advances once per output row,
/// and the inner loop is a strided gather (a plain copy when the last axis stays last).
pub fn permute_forward(x: &[f32], x_shape: &[usize], dims: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let (shape, strides) = permuted(x_shape, dims);
    let mut out = crate::pool::take(x.len());
    if shape.is_empty() {
        return (crate::pool::collect(x.len(), x.iter().copied()), shape);
    }
    let inner = shape[shape.len() - 1];
    let step = strides[strides.len() - 1];
    for_each_row(&shape, [&strides], |[o]| {
        if step == 1 {
            out.extend_from_slice(&x[o..o + inner]);
        } else {
            out.extend((0..inner).map(|i| x[o + i * step]));
        }
    });
    (out, shape)
}
