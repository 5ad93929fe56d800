//! im2col + matrix product, the path of every convolution the other paths do not take (1×1, unpadded,
//! and the gradients of those with few channels). Chellapilla, Puri & Simard 2006: copy every receptive field of one image into a column of
//! `col` [ckk, ohw]; then the convolution of that image is one matrix product
//! `y [c_out, ohw] = weight [c_out, ckk] · col`, which runs at matrix-product speed. Its two gradients are
//! matrix products too: `dweight += dy · colᵀ` and `dcol = weightᵀ · dy`, which col2im adds back into dx.
//!
//! Legend as in `shape.rs`, plus `ckk` = c_in·kh·kw (one output pixel's receptive field), `ohw` = oh·ow.

use rayon::prelude::*;

use super::parallel::sum_partials;
use super::shape::ConvShape;
use crate::ops::matmul::{gemm, gemm_serial, gemm_serial_strided, GemmFn};

/// Output rows per block of the blocked im2col: about 256 output pixels, so that one block's columns
/// ([ckk, rows·ow], ≤ 1.2 MB for ckk = 1152) stay in cache between im2col writing them and the matrix
/// product reading them, instead of a whole image's (up to 4.7 MB) going out to memory and back.
pub fn block_rows(s: &ConvShape) -> usize {
    (256 / s.ow.max(1)).clamp(1, s.oh.max(1))
}

/// col [ckk, (oy1 − oy0)·ow]: row (ci, ky, kx) holds x_n[ci, oy·s − p + ky, ox·s − p + kx] for the output
/// pixels of rows oy0..oy1. Row r of col starts at `col[r·ld]` (ld ≥ the row's length: several images'
/// columns can sit side by side in one matrix).
pub fn im2col_rows(x_n: &[f32], s: &ConvShape, oy0: usize, oy1: usize, col: &mut [f32], ld: usize) {
    let cols = (oy1 - oy0) * s.ow;
    for ci in 0..s.c_in {
        let plane = &x_n[ci * s.h * s.w..(ci + 1) * s.h * s.w]; // [h, w]
        for ky in 0..s.kh {
            for kx in 0..s.kw {
                let row = &mut col[((ci * s.kh + ky) * s.kw + kx) * ld..][..cols]; // [rows, ow]
                for oy in oy0..oy1 {
                    let out = &mut row[(oy - oy0) * s.ow..(oy - oy0 + 1) * s.ow];
                    let Some(iy) = s.input_index(oy, ky, s.h) else {
                        out.fill(0.0);
                        continue;
                    };
                    let src = &plane[iy * s.w..(iy + 1) * s.w];
                    // ix = ox·stride + kx − p: inside the image for ox in lo..hi, zero padding around it.
                    let (lo, hi) = s.valid_columns(kx);
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    let first = lo * s.stride + kx - s.padding;
                    if s.stride == 1 {
                        out[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
                    } else {
                        let taken = src[first..].iter().step_by(s.stride);
                        out[lo..hi].iter_mut().zip(taken).for_each(|(o, &v)| *o = v);
                    }
                }
            }
        }
    }
}

/// col [ckk, ohw] for the whole image.
pub fn im2col(x_n: &[f32], s: &ConvShape, col: &mut [f32]) {
    im2col_rows(x_n, s, 0, s.oh, col, s.ohw())
}

/// The adjoint of [`im2col_rows`]: adds every entry of col [ckk, (oy1 − oy0)·ow] (rows `ld` apart) back into
/// the pixel of dx_n it was copied from.
pub fn col2im_rows(col: &[f32], s: &ConvShape, oy0: usize, oy1: usize, dx_n: &mut [f32], ld: usize) {
    let cols = (oy1 - oy0) * s.ow;
    for ci in 0..s.c_in {
        let plane = &mut dx_n[ci * s.h * s.w..(ci + 1) * s.h * s.w];
        for ky in 0..s.kh {
            for kx in 0..s.kw {
                let row = &col[((ci * s.kh + ky) * s.kw + kx) * ld..][..cols];
                for oy in oy0..oy1 {
                    let Some(iy) = s.input_index(oy, ky, s.h) else { continue };
                    let src = &row[(oy - oy0) * s.ow..(oy - oy0 + 1) * s.ow];
                    let dst = &mut plane[iy * s.w..(iy + 1) * s.w];
                    let (lo, hi) = s.valid_columns(kx);
                    let first = lo * s.stride + kx - s.padding;
                    if s.stride == 1 {
                        let d = &mut dst[first..first + hi - lo];
                        d.iter_mut().zip(&src[lo..hi]).for_each(|(d, v)| *d += v);
                    } else {
                        let targets = dst[first..].iter_mut().step_by(s.stride);
                        targets.zip(&src[lo..hi]).for_each(|(d, v)| *d += v);
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`].
#[cfg(test)]
pub fn col2im(col: &[f32], s: &ConvShape, dx_n: &mut [f32]) {
    col2im_rows(col, s, 0, s.oh, dx_n, s.ohw())
}

/// Images per group for the matrix products: small images (7×7 has 49 pixels) make products with a short
/// side that wastes most of each register tile, so several images' columns are put side by side, about 256
/// or more per product. Depends on the shape only, never on the number of threads.
pub fn images_per_group(s: &ConvShape) -> usize {
    (256 / s.ohw().max(1)).clamp(1, s.n.max(1))
}

/// The matrix product for per-image work: when there are at least as many images as threads, the images
/// already keep every thread busy and each product runs on its own thread (splitting it further would only
/// pack the same panels twice); with fewer images (sampling one picture) the product itself is split.
fn gemm_for(images: usize) -> GemmFn {
    if images >= rayon::current_num_threads() {
        gemm_serial
    } else {
        gemm
    }
}

/// im2col + matrix product, for every convolution. Must equal [`conv2d_forward_naive`] up to rounding.
/// Two paths:
/// - at least as many images as threads: per image (one task each), blocks of output rows:
///   y_n[:, block] = bias ⊗ 1 + weight [c_out, ckk] · im2col_rows(x_n, block) [ckk, block];
/// - fewer images: the whole image's im2col, and the product split across threads.
///
/// Small images are put side by side, [`images_per_group`] per product.
pub fn conv2d_forward_im2col(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    let (ckk, ohw, image) = (s.ckk(), s.ohw(), s.c_in * s.h * s.w);
    let mut y = crate::pool::take_dirty(s.n * s.c_out * ohw);
    let group = images_per_group(s);
    if group > 1 && !s.is_pointwise() {
        // Small images, `group` at a time: y_g [c_out, group·ohw] = weight · [im2col(x_n) | im2col(x_n+1) | …],
        // then each image's columns (plus bias) copied to its place in y.
        let gemm = gemm_for(s.n.div_ceil(group));
        y.par_chunks_mut(group * s.c_out * ohw).enumerate().for_each(|(gi, y_group)| {
            let images = y_group.len() / (s.c_out * ohw);
            let cols = images * ohw;
            let mut col = crate::pool::scratch(ckk * cols);
            for j in 0..images {
                let x_n = &x[(gi * group + j) * image..][..image];
                im2col_rows(x_n, s, 0, s.oh, &mut col[j * ohw..], cols);
            }
            let mut y_cols = crate::pool::scratch(s.c_out * cols);
            gemm(s.c_out, ckk, cols, weight, (ckk, 1), &col, (cols, 1), &mut y_cols, 0.0);
            for (j, y_n) in y_group.chunks_mut(s.c_out * ohw).enumerate() {
                for (co, out) in y_n.chunks_mut(ohw).enumerate() {
                    let b = bias.map_or(0.0, |b| b[co]);
                    let src = &y_cols[co * cols + j * ohw..][..ohw];
                    out.iter_mut().zip(src).for_each(|(o, &v)| *o = v + b);
                }
            }
        });
        return y;
    }
    let blocked = s.n >= rayon::current_num_threads() && !s.is_pointwise();
    let gemm = gemm_for(s.n);
    let beta = if bias.is_some() { 1.0 } else { 0.0 };
    y.par_chunks_mut(s.c_out * ohw).enumerate().for_each(|(n, y_n)| {
        let x_n = &x[n * image..(n + 1) * image];
        let fill_bias = |y_n: &mut [f32], oy0: usize, oy1: usize| {
            if let Some(b) = bias {
                for (row, &bv) in y_n.chunks_mut(ohw).zip(b) {
                    row[oy0 * s.ow..oy1 * s.ow].fill(bv);
                }
            }
        };
        if s.is_pointwise() {
            fill_bias(y_n, 0, s.oh);
            gemm(s.c_out, ckk, ohw, weight, (ckk, 1), x_n, (ohw, 1), y_n, beta);
        } else if blocked {
            let rows = block_rows(s);
            let mut col = crate::pool::scratch(ckk * rows * s.ow);
            for oy0 in (0..s.oh).step_by(rows) {
                let oy1 = (oy0 + rows).min(s.oh);
                let cols = (oy1 - oy0) * s.ow;
                im2col_rows(x_n, s, oy0, oy1, &mut col[..ckk * cols], cols);
                fill_bias(y_n, oy0, oy1);
                let (a, b) = ((ckk, 1), (cols, 1));
                gemm_serial_strided(s.c_out, ckk, cols, weight, a, &col, b, &mut y_n[oy0 * s.ow..], ohw, beta);
            }
        } else {
            fill_bias(y_n, 0, s.oh);
            let mut col = crate::pool::scratch(ckk * ohw);
            im2col(x_n, s, &mut col);
            gemm(s.c_out, ckk, ohw, weight, (ckk, 1), &col, (ohw, 1), y_n, beta);
        }
    });
    y
}

/// The im2col backward, for every convolution: (dx if `want_dx`, dweight if `want_dweight`). Must equal
/// [`conv2d_backward_naive`] up to rounding. Per group of [`images_per_group`] images (one image unless
/// they are small), in parallel: col = [im2col(x_n) | …] [ckk, cols]; dy_g = [dy_n | …] [c_out, cols];
/// dweight_g = dy_g · colᵀ; dcol = weightᵀ · dy_g and col2im(dcol) → each dx_n. The per-group dweight_g are
/// then summed in group order. Nothing here depends on the number of threads, so neither does the result.
pub fn conv2d_backward_im2col(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    s: &ConvShape,
    want_dx: bool,
    want_dweight: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (ckk, ohw, image, wsize) = (s.ckk(), s.ohw(), s.c_in * s.h * s.w, s.c_out * s.ckk());
    let group = images_per_group(s);
    let groups = s.n.div_ceil(group);
    let mut dx = want_dx.then(|| crate::pool::take_filled(s.n * image, 0.0));
    let mut partial = crate::pool::scratch(if want_dweight { groups * wsize } else { 0 });
    let dx_chunks: Vec<Option<&mut [f32]>> = match dx.as_mut() {
        Some(dx) => dx.chunks_mut(group * image).map(Some).collect(),
        None => (0..groups).map(|_| None).collect(),
    };
    let mut partial_chunks: Vec<Option<&mut [f32]>> = partial.chunks_mut(wsize.max(1)).map(Some).collect();
    partial_chunks.resize_with(groups, || None);
    dx_chunks.into_par_iter().zip(partial_chunks).enumerate().for_each(|(gi, (dx_g, dw_g))| {
        let n0 = gi * group;
        let images = group.min(s.n - n0);
        let cols = images * ohw;
        // dy_g [c_out, cols]: one image's dy is already in this layout; several are gathered side by side.
        let mut gathered = crate::pool::scratch(if images == 1 { 0 } else { s.c_out * cols });
        for j in (0..images).filter(|_| images > 1) {
            for co in 0..s.c_out {
                let src = &dy[((n0 + j) * s.c_out + co) * ohw..][..ohw];
                gathered[co * cols + j * ohw..][..ohw].copy_from_slice(src);
            }
        }
        let dy_g: &[f32] = if images == 1 { &dy[n0 * s.c_out * ohw..][..s.c_out * ohw] } else { &gathered };
        // col [ckk, cols] (a 1×1 unpadded conv of one image reads x_n itself).
        let pointwise_single = s.is_pointwise() && images == 1;
        let mut col = crate::pool::scratch(if pointwise_single { 0 } else { ckk * cols });
        if !pointwise_single {
            for j in 0..images {
                im2col_rows(&x[(n0 + j) * image..][..image], s, 0, s.oh, &mut col[j * ohw..], cols);
            }
        }
        let col_ref: &[f32] = if pointwise_single { &x[n0 * image..][..image] } else { &col };
        if let Some(dw_g) = dw_g {
            // dweight_g [c_out, ckk] = dy_g [c_out, cols] · colᵀ [cols, ckk]
            gemm_serial(s.c_out, cols, ckk, dy_g, (cols, 1), col_ref, (1, cols), dw_g, 0.0);
        }
        if let Some(dx_g) = dx_g {
            // dcol [ckk, cols] = weightᵀ [ckk, c_out] · dy_g [c_out, cols], then back to pixels.
            if pointwise_single {
                gemm_serial(ckk, s.c_out, cols, weight, (1, ckk), dy_g, (cols, 1), dx_g, 0.0);
            } else {
                let mut dcol = crate::pool::scratch(ckk * cols);
                gemm_serial(ckk, s.c_out, cols, weight, (1, ckk), dy_g, (cols, 1), &mut dcol, 0.0);
                for (j, dx_n) in dx_g.chunks_mut(image).enumerate() {
                    col2im_rows(&dcol[j * ohw..], s, 0, s.oh, dx_n, cols);
                }
            }
        }
    });
    if !want_dweight {
        return (dx, None);
    }
    (dx, Some(sum_partials(&partial, groups, wsize)))
}
