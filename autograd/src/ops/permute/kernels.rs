//! Permute kernels. Legend: `x` [x_shape]; `out` [x_shape[dims[0]], …]; `strides` = x's strides read in
//! the output's axis order.

use rayon::prelude::*;

use crate::cpu;
use crate::ops::conv2d::transpose::{transpose_into, ToChannelMinor};
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
/// and the inner loop is a strided gather (a plain copy when the last axis stays last). A swap of the last
/// two axes (attention's q, k, v and output, [B, heads, d, hw] ↔ [B, heads, hw, d]) takes
/// [`swap_last_two`] instead.
pub fn permute_forward(x: &[f32], x_shape: &[usize], dims: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let (shape, strides) = permuted(x_shape, dims);
    let rank = dims.len();
    let swaps_last_two = rank >= 2
        && dims[rank - 2] == rank - 1
        && dims[rank - 1] == rank - 2
        && dims[..rank - 2].iter().enumerate().all(|(a, &d)| a == d);
    if swaps_last_two && !x.is_empty() {
        return (swap_last_two(x, x_shape[rank - 2], x_shape[rank - 1]), shape);
    }
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

/// x as matrices [rows, cols] one after another, each transposed to [cols, rows]: in registers, blocks of a
/// vector's lanes square (conv2d's channel-minor transpose, its channels the rows, its one row of pixels the
/// columns), the matrices in parallel. The strided gather moved one float at a time: the U-Net's 12
/// permutes of [32, 4, 32, 49] a step (forward and backward) took 6.1 ms of its 318 (`--profile`).
fn swap_last_two(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let level = cpu::simd();
    let mut out = crate::pool::take_dirty(x.len());
    out.par_chunks_mut(rows * cols).zip(x.par_chunks(rows * cols)).for_each(|(dst, src)| {
        transpose_into(level, ToChannelMinor { src, c: rows, h: 1, w: cols, off: 0, cols, cp: rows, dst });
    });
    out
}
