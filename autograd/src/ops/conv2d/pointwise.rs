//! 1×1 convolutions (stride 1, no padding) on the register-tiled kernel of `direct.rs`, several images side
//! by side. A 1×1 convolution is a matrix product per image, y_n [c_out, hw] = weight [c_out, c_in] · x_n
//! [c_in, hw], which is the direct kernel with one tap: a tile of C output channels × L positions takes, for
//! every input channel, NV vector loads of x and C·NV fused multiply-adds with broadcast weights.
//!
//! On the U-Net's 7×7 maps one image has 49 positions, which fill tiles of 32 to 77% and leave the general
//! matrix product (matrixmultiply) with short panels: [32, 128, 7, 7] → 384, 154 MFLOP, took 0.84–0.96 ms
//! that way on the Intel Xeon of the README's sitting (160–180 GFLOP/s), 0.62–0.64 ms this way. So G images go side by side in one flat row of
//! G·hw positions per channel ([`images_per_group`]), copied there from x [n, c_in, hw] (the copy the direct
//! kernel makes anyway, to pad); the tiles store each output straight to its image's place in y (a flat
//! layout whose rows are the images, `Flat::out_row` = c_out·hw apart).
//!
//! ```text
//! xg [c_in, G·hw]:      xg[ci, j·hw + p] = x[n0 + j, ci, p]          (zeros after, up to whole tiles)
//! y[n0 + j, co, p] = bias[co] + Σ_ci weight[co, ci] · xg[ci, j·hw + p]   (direct_image, one tap)
//! ```
//! The input gradient is the same product with the weight transposed (`direct::pack` with `rotate`, which
//! for one tap is the transpose): dx_n = weightᵀ · dy_n. Every result must equal `conv2d_forward_naive`
//! up to rounding; each output is one dot product over c_in in order, whatever the grouping or threads.

use rayon::prelude::*;

use super::direct::{direct_image, forward_flat, DirectImage};
use super::shape::{ConvShape, SameConv};
use crate::cpu::Simd;
use crate::pool::Scratch;

/// True for the convolutions this file can compute: 1×1, stride 1, no padding.
pub fn is_pointwise_conv(s: &ConvShape) -> bool {
    s.is_pointwise()
}

/// The largest map (h·w) whose forward the dispatch (`path.rs`) sends here (input gradients up to
/// `path::POINTWISE_BACKWARD_MAX_PIXELS`). Measured forward against im2col on this
/// Intel Xeon (`unet_kernels`, two rounds, ms): [32, 128, 7, 7] → 384 0.84, 0.96 → 0.64, 0.62; → 128 0.29,
/// 0.32 → 0.23, 0.23; but [32, 192, 14, 14] → 64 0.69, 0.72 → 0.76, 0.76 and [32, 96, 28, 28] → 32 0.83,
/// 0.81 → 0.91, 0.88: from 14×14 up the matrix product's panels are long enough, and the copy into the
/// side-by-side layout costs more than the rounding it saves.
pub const MAX_PIXELS: usize = 100;

/// Images per group: at most enough for 512 positions side by side (10 of 7×7, 2 of 14×14, 1 of 28×28),
/// so that the last tile's rounding wastes little, and few enough for at least two groups per thread; spread
/// evenly over the groups (a batch of 32 at 7×7 on 2 threads: 4 groups of 8). The grouping depends on the
/// number of threads, the result does not: each output is the same chain of fused multiply-adds, bias
/// first, then c_in in order, in whichever group, tile or lane it is computed.
pub fn images_per_group(s: &ConvShape, threads: usize) -> usize {
    let most = (512 / s.ohw().max(1)).min(s.n.div_ceil(2 * threads.max(1))).max(1);
    s.n.div_ceil(s.n.div_ceil(most).max(1)).max(1)
}

/// Images n0..n0 + count of src [n, channels, hw] side by side: rows [channels, len], row c holding image
/// n0 + j's channel c at j·hw, zeros after the count·hw real values (xg in the module doc; also
/// `pointwise_dweight.rs`'s x and dy).
pub fn side_by_side(src: &[f32], channels: usize, hw: usize, (n0, count): (usize, usize), len: usize) -> Scratch {
    assert!(count * hw <= len && src.len() >= (n0 + count) * channels * hw, "side_by_side: {count} × {hw} in {len}");
    let mut rows = crate::pool::scratch(channels * len);
    for (c, row) in rows.chunks_exact_mut(len).enumerate() {
        for j in 0..count {
            row[j * hw..][..hw].copy_from_slice(&src[((n0 + j) * channels + c) * hw..][..hw]);
        }
        row[count * hw..].fill(0.0);
    }
    rows
}

/// out [n, ch_out, hw] = bias + the 1×1 convolution of `job`'s input [n, ch_in, hw] with its weight, packed
/// by `direct::pack` at this level (with `rotate` for the input gradient). In parallel over groups of
/// images; the tiles write each image's outputs straight to its place in `out`.
pub fn conv(level: Simd, job: SameConv) -> Vec<f32> {
    let SameConv { input, ch_in, packed, ch_out, bias, shape: s } = job;
    assert!(is_pointwise_conv(s), "pointwise::conv: not a 1×1 convolution: {s:?}");
    let hw = s.ohw();
    let group = images_per_group(s, rayon::current_num_threads());
    let mut out = crate::pool::take_dirty(s.n * ch_out * hw);
    out.par_chunks_mut(group * ch_out * hw).enumerate().for_each(|(g, out_g)| {
        let images = out_g.len() / (ch_out * hw);
        // The group as one image of `images` rows of hw positions, each row going to its own image in y.
        let rows = ConvShape::new(&[1, ch_in, images, hw], &[ch_out, ch_in, 1, 1], 1, 0).expect("a 1×1 shape");
        let mut flat = forward_flat(level, &rows);
        (flat.out_row, flat.out_channel) = (ch_out * hw, hw);
        let xg = side_by_side(input, ch_in, hw, (g * group, images), flat.plane);
        let job =
            DirectImage { xpad: &xg, flat: &flat, taps: &[0], c_in: ch_in, packed, c_out: ch_out, bias, y: out_g };
        direct_image(level, job);
    });
    out
}
