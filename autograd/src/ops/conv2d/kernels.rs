//! 2-D convolution kernels, NCHW.
//!
//! Legend: `n` batch, `c_in`/`c_out` channels, `h`×`w` input size, `kh`×`kw` kernel, `stride`, `padding`,
//! `oh`×`ow` output size, `ckk` = c_in·kh·kw (one output pixel's receptive field), `ohw` = oh·ow.
//!
//! Three fast paths, chosen by shape only ([`conv2d_forward`], [`conv2d_backward`]):
//! - 3×3 "same" convolutions (padding 1, stride 1) with 8 or more channels in and out, nearly all of a
//!   U-Net: Winograd F(2×2, 3×3), `winograd.rs` (maps of 24×24 and more, and every weight gradient) and
//!   `winograd_cm.rs` (the forward and input gradient of smaller maps).
//! - Other "same" convolutions (odd square kernels, or few channels): the direct kernels of `direct.rs`
//!   (the gradients of layers with fewer than 8 channels take im2col).
//! - Every other one (1×1, strided, unpadded): im2col + matrix product (Chellapilla et al. 2006): copy every
//!   receptive field of one image into a column of `col` [ckk, ohw]; then the convolution of that image is one
//!   matrix product `y [c_out, ohw] = weight [c_out, ckk] · col`, which runs at matrix-product speed. Its two
//!   gradients are matrix products too: `dweight += dy · colᵀ` and `dcol = weightᵀ · dy`, which col2im adds
//!   back into dx.

use rayon::prelude::*;

use super::direct::{self, Flat};
pub use super::shape::ConvShape;
use super::{winograd, winograd_cm};
use crate::cpu;
use crate::ops::matmul::{gemm, gemm_serial, gemm_serial_strided, GemmFn};

// ---------------------------------------------------------------------------------------------------------
// Naive reference kernels: the definition, as loops.
// ---------------------------------------------------------------------------------------------------------

/// y[n, co, oy, ox] = bias[co] + Σ_{ci, ky, kx} weight[co, ci, ky, kx] · x[n, ci, oy·s − p + ky, ox·s − p + kx]
/// (terms outside the image are zero padding).
pub fn conv2d_forward_naive(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    let mut y = vec![0.0; s.n * s.c_out * s.ohw()];
    for n in 0..s.n {
        for co in 0..s.c_out {
            for oy in 0..s.oh {
                for ox in 0..s.ow {
                    let mut acc = bias.map_or(0.0, |b| b[co]);
                    for ci in 0..s.c_in {
                        for ky in 0..s.kh {
                            let Some(iy) = s.input_index(oy, ky, s.h) else { continue };
                            for kx in 0..s.kw {
                                let Some(ix) = s.input_index(ox, kx, s.w) else { continue };
                                acc += weight[((co * s.c_in + ci) * s.kh + ky) * s.kw + kx]
                                    * x[((n * s.c_in + ci) * s.h + iy) * s.w + ix];
                            }
                        }
                    }
                    y[((n * s.c_out + co) * s.oh + oy) * s.ow + ox] = acc;
                }
            }
        }
    }
    y
}

/// Differentiates the forward line `acc += weight[co, ci, ky, kx] · x[n, ci, iy, ix]` term by term:
/// dx[n, ci, iy, ix] += weight[..] · dy[n, co, oy, ox];  dweight[co, ci, ky, kx] += x[..] · dy[..];
/// dbias[co] += dy[n, co, oy, ox]. Returns (dx, dweight, dbias).
pub fn conv2d_backward_naive(x: &[f32], weight: &[f32], dy: &[f32], s: &ConvShape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0; x.len()];
    let mut dweight = vec![0.0; weight.len()];
    let mut dbias = vec![0.0; s.c_out];
    for n in 0..s.n {
        for co in 0..s.c_out {
            for oy in 0..s.oh {
                for ox in 0..s.ow {
                    let g = dy[((n * s.c_out + co) * s.oh + oy) * s.ow + ox];
                    dbias[co] += g;
                    for ci in 0..s.c_in {
                        for ky in 0..s.kh {
                            let Some(iy) = s.input_index(oy, ky, s.h) else { continue };
                            for kx in 0..s.kw {
                                let Some(ix) = s.input_index(ox, kx, s.w) else { continue };
                                let wi = ((co * s.c_in + ci) * s.kh + ky) * s.kw + kx;
                                let xi = ((n * s.c_in + ci) * s.h + iy) * s.w + ix;
                                dx[xi] += weight[wi] * g;
                                dweight[wi] += x[xi] * g;
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dweight, dbias)
}

// ---------------------------------------------------------------------------------------------------------
// Fast kernels: im2col + gemm, rayon over images.
// ---------------------------------------------------------------------------------------------------------

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

/// y = conv2d(x, weight) + bias. Must equal [`conv2d_forward_naive`] up to rounding. 3×3 "same"
/// convolutions with 8 or more channels take Winograd ([`conv2d_forward_winograd`] on maps of 24×24 and
/// more, [`conv2d_forward_winograd_cm`] below), other "same" convolutions the direct path
/// ([`conv2d_forward_direct`]), every other one im2col + matrix product ([`conv2d_forward_im2col`]). The
/// choice depends on the shape only, never on the number of threads.
pub fn conv2d_forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    let level = cpu::simd();
    let packed = pack_forward_weight(level, weight, s);
    let y = conv2d_forward_packed(level, x, weight, packed.as_deref(), bias, s);
    if let Some(packed) = packed {
        crate::pool::give(packed);
    }
    y
}

/// Which kernel computes a convolution's forward (and, for "same" convolutions, its input gradient), chosen
/// by [`forward_path`] from the shape alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// A kernel that reads the weight rearranged for it ([`pack_forward_weight`]).
    Packed(Packing),
    /// Every other convolution (1×1, strided, unpadded): im2col + matrix product, on the weight as it is.
    Im2col,
}

/// The kernels of "same" convolutions (stride 1, odd square kernel, padding (k−1)/2), each with the weight
/// layout it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// Winograd F(2×2, 3×3) with one channel's tiles in the vector lanes (`winograd.rs`): 3×3, 8 or more
    /// channels in and out, maps of 24×24 and more.
    Winograd,
    /// Winograd with the channels in the lanes (`winograd_cm.rs`): the same convolutions on smaller maps,
    /// where one channel has too few tiles to fill the lanes.
    WinogradChannelMinor,
    /// The register-tiled direct kernel (`direct.rs`): the other "same" convolutions (other kernel sizes,
    /// or fewer than 8 channels, as the U-Net's first and last layers).
    Direct,
}

impl Path {
    /// A small number per path, for keys of cached weight layouts.
    pub fn code(self) -> usize {
        match self {
            Path::Packed(Packing::Winograd) => 0,
            Path::Packed(Packing::WinogradChannelMinor) => 1,
            Path::Packed(Packing::Direct) => 2,
            Path::Im2col => 3,
        }
    }
}

/// The path [`conv2d_forward`] takes for a shape.
pub fn forward_path(s: &ConvShape) -> Path {
    match (winograd::is_winograd_conv(s), winograd::flat_layout(s), direct::is_same_conv(s)) {
        (true, true, _) => Path::Packed(Packing::Winograd),
        (true, false, _) => Path::Packed(Packing::WinogradChannelMinor),
        (false, _, true) => Path::Packed(Packing::Direct),
        _ => Path::Im2col,
    }
}

/// The weight rearranged as [`conv2d_forward`]'s path for this shape reads it at this SIMD level (`None`:
/// im2col reads the weight as it is). It depends on the weight, the path and the level only, so a caller
/// that runs the same weight many times (a sampler) can keep it ([`conv2d_forward_packed`]).
pub fn pack_forward_weight(level: cpu::Simd, weight: &[f32], s: &ConvShape) -> Option<Vec<f32>> {
    match forward_path(s) {
        Path::Packed(packing) => Some(pack_for(level, packing, weight, s, false)),
        Path::Im2col => None,
    }
}

/// The weight rearranged for `packing`; with `rotate`, for the input gradient's convolution (kernel turned
/// 180°, channel axes swapped).
fn pack_for(level: cpu::Simd, packing: Packing, weight: &[f32], s: &ConvShape, rotate: bool) -> Vec<f32> {
    let c = direct::forward_tile(level).0;
    match packing {
        Packing::Winograd => winograd::pack_weight(weight, s.c_out, s.c_in, c, rotate),
        Packing::WinogradChannelMinor => {
            // The input gradient's "output" channels are c_in, its input channels c_out.
            let (cpo, cpi) = if rotate { (s.c_in, s.c_out) } else { (s.c_out, s.c_in) };
            let (cpo, cpi) = winograd_cm::padding(level, cpo, cpi);
            winograd_cm::pack_weight(weight, s.c_out, s.c_in, cpo, cpi, rotate)
        }
        Packing::Direct => direct::pack_weight(weight, s.c_out, s.c_in, s.kh * s.kw, c, rotate),
    }
}

/// out [n, ch_out, h, w] = bias + the "same" convolution of input [n, ch_in, h, w] with `packing`'s kernel,
/// with `packed` from [`pack_for`] (for the forward, or rotated for the input gradient).
#[allow(clippy::too_many_arguments)]
fn run_packed(
    level: cpu::Simd,
    packing: Packing,
    input: &[f32],
    ch_in: usize,
    packed: &[f32],
    ch_out: usize,
    bias: Option<&[f32]>,
    s: &ConvShape,
) -> Vec<f32> {
    match packing {
        Packing::Winograd => winograd_conv(level, input, ch_in, packed, ch_out, bias, s),
        Packing::WinogradChannelMinor => winograd_cm_conv(level, input, ch_in, packed, ch_out, bias, s),
        Packing::Direct => direct_conv(level, input, ch_in, packed, ch_out, bias, s),
    }
}

/// The forward with `packing`'s kernel, whatever the shape's own path: pack, run, give the packed weight
/// back.
fn forward_on(
    level: cpu::Simd,
    packing: Packing,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
) -> Vec<f32> {
    let packed = pack_for(level, packing, weight, s, false);
    let y = run_packed(level, packing, x, s.c_in, &packed, s.c_out, bias, s);
    crate::pool::give(packed);
    y
}

/// [`conv2d_forward`] with the weight already rearranged by [`pack_forward_weight`] at the same level
/// (`packed` is ignored on the im2col path).
pub fn conv2d_forward_packed(
    level: cpu::Simd,
    x: &[f32],
    weight: &[f32],
    packed: Option<&[f32]>,
    bias: Option<&[f32]>,
    s: &ConvShape,
) -> Vec<f32> {
    match (forward_path(s), packed) {
        (Path::Packed(packing), Some(packed)) => run_packed(level, packing, x, s.c_in, packed, s.c_out, bias, s),
        _ => conv2d_forward_im2col(x, weight, bias, s),
    }
}

/// The gradients of a "same" convolution with fewer input or output channels than this take the im2col
/// path: dx's direct tile spans 8 of its channels (the input's), and dweight's 32 output channels and 12
/// rows of c_in·k·k, so a first layer (3 channels in) or a last one (1 out) would waste most of each tile.
/// Measured for x [16, 3, 32, 32] → 64: dx direct 0.83 ms, im2col 0.63 ms; dweight 0.73 against 0.58 ms.
const DIRECT_GRADIENT_MIN_CHANNELS: usize = 8;

/// The direct convolution: y_n = the valid columns of bias + direct(pad(x_n), weight), in parallel over
/// images and, when there are fewer images than threads, over blocks of output channels too (each output
/// is computed by the same operations either way). Must equal [`conv2d_forward_naive`] up to rounding.
/// `level`: the SIMD level (the op passes [`cpu::simd`]; tests run every level).
pub fn conv2d_forward_direct(
    level: cpu::Simd,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
) -> Vec<f32> {
    assert!(direct::is_same_conv(s), "conv2d_forward_direct: not a same convolution: {s:?}");
    forward_on(level, Packing::Direct, x, weight, bias, s)
}

/// out [n, c_out, h, w] = the direct "same" convolution of input [n, c_in, h, w] with `packed` (from
/// [`direct::pack_weight`], for the forward or the input gradient), plus bias.
fn direct_conv(
    level: cpu::Simd,
    input: &[f32],
    c_in: usize,
    packed: &[f32],
    c_out: usize,
    bias: Option<&[f32]>,
    s: &ConvShape,
) -> Vec<f32> {
    debug_assert!(direct::is_same_conv(s));
    let flat = direct::forward_flat(level, s);
    let (hw, c) = (s.h * s.w, direct::forward_tile(level).0);
    let block_len = c_in * s.kh * s.kw * c; // one block of c channels in `packed`
    per_image(s.n, c_out, hw, c, |n, co0, out_part| {
        let count = out_part.len() / hw;
        let mut xpad = crate::pool::take_dirty(c_in * flat.plane); // [c_in, plane]
        flat.pad(&input[n * c_in * hw..][..c_in * hw], c_in, &mut xpad);
        let bias_part = bias.map(|b| &b[co0..co0 + count]);
        direct::direct_image(level, &xpad, &flat, c_in, &packed[co0 / c * block_len..], count, bias_part, out_part);
        crate::pool::give(xpad);
    })
}

/// out [n, c_out, hw] from `image(n, co0, out_part)`, which computes channels co0.. of image n into out_part
/// [count, hw] (co0 a multiple of `c`). In parallel over images and, when there are fewer images than
/// threads, over blocks of output channels too; each output is computed by the same operations either way.
fn per_image(n: usize, c_out: usize, hw: usize, c: usize, image: impl Fn(usize, usize, &mut [f32]) + Sync) -> Vec<f32> {
    let threads = rayon::current_num_threads();
    // Output channels per task: all of them, unless that leaves threads idle.
    let blocks = c_out.div_ceil(c);
    let per_task = if n >= threads { blocks } else { blocks.div_ceil(threads.div_ceil(n)) } * c;
    let mut out = crate::pool::take_dirty(n * c_out * hw);
    out.par_chunks_mut(c_out * hw).enumerate().for_each(|(n, out_n)| {
        out_n
            .par_chunks_mut(per_task * hw)
            .enumerate()
            .for_each(|(part, out_part)| image(n, part * per_task, out_part));
    });
    out
}

/// The Winograd F(2×2, 3×3) convolution (see `winograd.rs`): y_n = bias + the 3×3 "same" convolution of
/// x_n, in parallel as [`conv2d_forward_direct`]. Must equal [`conv2d_forward_naive`] up to rounding.
/// `level`: the SIMD level (the op passes [`cpu::simd`]; tests run every level).
pub fn conv2d_forward_winograd(
    level: cpu::Simd,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
) -> Vec<f32> {
    assert!(direct::is_same_conv(s) && s.kh == 3, "conv2d_forward_winograd: not a 3×3 same convolution: {s:?}");
    forward_on(level, Packing::Winograd, x, weight, bias, s)
}

/// The channel-minor Winograd convolution (see `winograd_cm.rs`), for 3×3 "same" convolutions on small maps:
/// in parallel over groups of `winograd_cm::images_per_call` images. Must equal [`conv2d_forward_naive`]
/// up to rounding. `level`: the SIMD level (the op passes [`cpu::simd`]; tests run every level).
pub fn conv2d_forward_winograd_cm(
    level: cpu::Simd,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
) -> Vec<f32> {
    assert!(direct::is_same_conv(s) && s.kh == 3, "conv2d_forward_winograd_cm: not a 3×3 same convolution: {s:?}");
    forward_on(level, Packing::WinogradChannelMinor, x, weight, bias, s)
}

/// out [n, ch_out, h, w] = bias + the channel-minor Winograd convolution of input [n, ch_in, h, w] with
/// `packed` (from [`winograd_cm::pack_weight`] with this level's padding of ch_out and ch_in, for the
/// forward or the input gradient): per group of images, x transposed in, the tiles, y transposed out.
fn winograd_cm_conv(
    level: cpu::Simd,
    input: &[f32],
    ch_in: usize,
    packed: &[f32],
    ch_out: usize,
    bias: Option<&[f32]>,
    s: &ConvShape,
) -> Vec<f32> {
    let (cpo, cpi) = winograd_cm::padding(level, ch_out, ch_in);
    let hw = s.h * s.w;
    let ((xr, xc), (yr, yc)) = winograd_cm::layouts(s.h, s.w);
    let (x_image, y_image) = (xr * xc * cpi, yr * yc * cpo);
    let per_call = winograd_cm::images_per_call(s.h, s.w).min(s.n.max(1));
    let mut bias_padded = vec![0.0; cpo];
    if let Some(b) = bias {
        bias_padded[..ch_out].copy_from_slice(&b[..ch_out]);
    }
    let mut out = crate::pool::take_dirty(s.n * ch_out * hw);
    out.par_chunks_mut(per_call * ch_out * hw).enumerate().for_each(|(g, out_g)| {
        let images = out_g.len() / (ch_out * hw);
        let mut xt = crate::pool::take_dirty(images * x_image);
        for (j, xt_j) in xt.chunks_exact_mut(x_image).enumerate() {
            let x_n = &input[(g * per_call + j) * ch_in * hw..][..ch_in * hw];
            winograd::transpose_into(level, x_n, ch_in, s.h, s.w, 1, xc, cpi, xt_j);
        }
        let mut yt = crate::pool::take_dirty(images * y_image);
        let mut scratch = crate::pool::take_dirty(winograd_cm::scratch_len(level, images, s.h, s.w, cpo, cpi));
        winograd_cm::conv_images(level, &xt, images, s.h, s.w, cpi, packed, cpo, &bias_padded, &mut yt, &mut scratch);
        for (yt_n, out_n) in yt.chunks_exact(y_image).zip(out_g.chunks_exact_mut(ch_out * hw)) {
            winograd_cm::transpose_from(level, yt_n, ch_out, s.h, s.w, yc, cpo, out_n);
        }
        crate::pool::give(scratch);
        crate::pool::give(yt);
        crate::pool::give(xt);
    });
    out
}

/// out [n, c_out, h, w] = the Winograd 3×3 "same" convolution of input [n, c_in, h, w] with `packed` (from
/// [`winograd::pack_weight`], for the forward or the input gradient), plus bias.
fn winograd_conv(
    level: cpu::Simd,
    input: &[f32],
    c_in: usize,
    packed: &[f32],
    c_out: usize,
    bias: Option<&[f32]>,
    s: &ConvShape,
) -> Vec<f32> {
    let tiles = winograd::Tiles::for_level(level, s.h, s.w);
    let (hw, c) = (s.h * s.w, direct::forward_tile(level).0);
    per_image(s.n, c_out, hw, c, |n, co0, out_part| {
        let count = out_part.len() / hw;
        let mut phases = crate::pool::take_dirty(c_in * 4 * tiles.plane);
        tiles.split(&input[n * c_in * hw..][..c_in * hw], c_in, &mut phases);
        let mut scratch = crate::pool::take_dirty(winograd::scratch_len(&tiles, c_in, count, c));
        let bias_part = bias.map(|b| &b[co0..co0 + count]);
        let packed_part = &packed[co0 / c * 16 * winograd::spread(c_in * c)..]; // packed [blocks, 16, c_in, c]
        winograd::winograd_image(level, &phases, &tiles, c_in, packed_part, count, bias_part, out_part, &mut scratch);
        crate::pool::give(scratch);
        crate::pool::give(phases);
    })
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
            let mut col = crate::pool::take_dirty(ckk * cols);
            for j in 0..images {
                let x_n = &x[(gi * group + j) * image..][..image];
                im2col_rows(x_n, s, 0, s.oh, &mut col[j * ohw..], cols);
            }
            let mut y_cols = crate::pool::take_dirty(s.c_out * cols);
            gemm(s.c_out, ckk, cols, weight, (ckk, 1), &col, (cols, 1), &mut y_cols, 0.0);
            for (j, y_n) in y_group.chunks_mut(s.c_out * ohw).enumerate() {
                for (co, out) in y_n.chunks_mut(ohw).enumerate() {
                    let b = bias.map_or(0.0, |b| b[co]);
                    let src = &y_cols[co * cols + j * ohw..][..ohw];
                    out.iter_mut().zip(src).for_each(|(o, &v)| *o = v + b);
                }
            }
            crate::pool::give(col);
            crate::pool::give(y_cols);
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
            let mut col = crate::pool::take_dirty(ckk * rows * s.ow);
            for oy0 in (0..s.oh).step_by(rows) {
                let oy1 = (oy0 + rows).min(s.oh);
                let cols = (oy1 - oy0) * s.ow;
                im2col_rows(x_n, s, oy0, oy1, &mut col[..ckk * cols], cols);
                fill_bias(y_n, oy0, oy1);
                let (a, b) = ((ckk, 1), (cols, 1));
                gemm_serial_strided(s.c_out, ckk, cols, weight, a, &col, b, &mut y_n[oy0 * s.ow..], ohw, beta);
            }
            crate::pool::give(col);
        } else {
            fill_bias(y_n, 0, s.oh);
            let mut col = crate::pool::take_dirty(ckk * ohw);
            im2col(x_n, s, &mut col);
            gemm(s.c_out, ckk, ohw, weight, (ckk, 1), &col, (ohw, 1), y_n, beta);
            crate::pool::give(col);
        }
    });
    y
}

/// The gradients of y = conv2d(x, weight) + bias: (dx if `want_dx`, dweight if `want_dweight`, dbias). Must
/// equal [`conv2d_backward_naive`] up to rounding. For "same" convolutions both gradients take
/// [`conv2d_backward_direct`] (which runs Winograd for 3×3 ones with 8 or more channels), unless the
/// channels are few ([`DIRECT_GRADIENT_MIN_CHANNELS`]); the rest takes im2col. The choice depends on the
/// shape only, and no path's result depends on the number of threads.
pub fn conv2d_backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    s: &ConvShape,
    want_dx: bool,
    want_dweight: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>, Vec<f32>) {
    let direct_dx = direct::is_same_conv(s) && s.c_in >= DIRECT_GRADIENT_MIN_CHANNELS;
    let direct_dweight = direct_dx && s.c_out >= DIRECT_GRADIENT_MIN_CHANNELS;
    let (mut dx, mut dweight) = (None, None);
    if (want_dx && direct_dx) || (want_dweight && direct_dweight) {
        (dx, dweight) =
            conv2d_backward_direct(cpu::simd(), x, weight, dy, s, want_dx && direct_dx, want_dweight && direct_dweight);
    }
    let (im2col_dx, im2col_dweight) = (want_dx && !direct_dx, want_dweight && !direct_dweight);
    if im2col_dx || im2col_dweight {
        let (dx_i, dweight_i) = conv2d_backward_im2col(x, weight, dy, s, im2col_dx, im2col_dweight);
        dx = dx.or(dx_i);
        dweight = dweight.or(dweight_i);
    }
    (dx, dweight, conv2d_backward_bias(dy, s))
}

/// dbias[co] = Σ_n Σ_pixels dy[n, co, ·]: per co in parallel, images in order.
pub fn conv2d_backward_bias(dy: &[f32], s: &ConvShape) -> Vec<f32> {
    let ohw = s.ohw();
    (0..s.c_out)
        .into_par_iter()
        .map(|co| (0..s.n).map(|n| cpu::sum(&dy[(n * s.c_out + co) * ohw..][..ohw])).sum())
        .collect()
}

/// Σ over groups, in group order, of partial [groups, len]; parallel over disjoint chunks of the result.
fn sum_partials(partial: Vec<f32>, groups: usize, len: usize) -> Vec<f32> {
    let mut total = crate::pool::take_dirty(len);
    total.par_chunks_mut(4096).enumerate().for_each(|(i, out)| {
        out.copy_from_slice(&partial[i * 4096..][..out.len()]);
        for g in 1..groups {
            let src = &partial[g * len + i * 4096..][..out.len()];
            out.iter_mut().zip(src).for_each(|(o, v)| *o += v);
        }
    });
    crate::pool::give(partial);
    total
}

/// Images per weight-gradient task on the direct path: enough that one tile's sums over positions run
/// ~512 positions before its lanes are added up (the lane sums cost as much as 10 vectors of work each).
/// Depends on the shape only.
fn direct_dweight_group(s: &ConvShape) -> usize {
    512usize.div_ceil(Flat::new(s, 1).qr).clamp(1, s.n.max(1))
}

/// The backward of a "same" convolution: (dx if `want_dx`, dweight if `want_dweight`). 3×3 ones with 8 or
/// more channels run Winograd: dx as the forward's Winograd loop on dy with the kernel turned 180° and its
/// channel axes swapped, dweight in the Winograd domain (`winograd_dweight`). The rest, the direct
/// kernels of `direct.rs`:
/// - dx = direct(dy, weight turned 180° with its channel axes swapped): the forward's loop.
/// - dweight: per group of [`direct_dweight_group`] images, in parallel, dweight_g[co, ci, tap] =
///   Σ_{n in g} Σ_q xpad_n[ci, q + tap] · dyᵀ_n[q, co], where dyᵀ_n is dy_n transposed into the flat layout
///   with zeros in the junk columns (so they add nothing); then Σ_g in group order.
///
/// Must equal [`conv2d_backward_naive`] up to rounding. `level`: the SIMD level (the op passes
/// [`cpu::simd`]; tests run every level).
pub fn conv2d_backward_direct(
    level: cpu::Simd,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    s: &ConvShape,
    want_dx: bool,
    want_dweight: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    assert!(direct::is_same_conv(s), "conv2d_backward_direct: not a same convolution: {s:?}");
    let (image, out_image, wsize) = (s.c_in * s.h * s.w, s.c_out * s.ohw(), s.c_out * s.ckk());
    let dx = want_dx.then(|| {
        // The forward's path (a "same" convolution: Winograd or direct), with the rotated kernel.
        let Path::Packed(packing) = forward_path(s) else { unreachable!("a same convolution packs its weight") };
        let rotated = pack_for(level, packing, weight, s, true);
        let dx = run_packed(level, packing, dy, s.c_out, &rotated, s.c_in, None, s);
        crate::pool::give(rotated);
        dx
    });
    let dweight = want_dweight.then(|| {
        if winograd::is_winograd_conv(s) {
            return winograd_dweight(level, x, dy, s);
        }
        let flat = Flat::new(s, 1); // the weight gradient's loop takes one position at a time
        let group = direct_dweight_group(s);
        let groups = s.n.div_ceil(group);
        let mut partial = crate::pool::take_dirty(groups * wsize); // [groups, c_out, ckk]
        let cp = s.c_out.next_multiple_of(direct::dweight_channels(level));
        partial.par_chunks_mut(wsize).enumerate().for_each(|(g, dw_g)| {
            let (n0, images) = (g * group, group.min(s.n - g * group));
            let mut dyt = crate::pool::take_dirty(images * flat.qr * cp); // [images, qr, cp]
            for (j, dyt_n) in dyt.chunks_exact_mut(flat.qr * cp).enumerate() {
                direct::transpose_dy(&dy[(n0 + j) * out_image..][..out_image], s.c_out, cp, &flat, dyt_n);
            }
            let mut xpad = crate::pool::take_dirty(images * s.c_in * flat.plane); // [images, c_in, plane]
            flat.pad(&x[n0 * image..][..images * image], images * s.c_in, &mut xpad);
            let mut dw_t = crate::pool::take_dirty(s.ckk() * cp); // [ckk, cp]
            direct::dweight_images(level, &dyt, cp, &xpad, images, &flat, s.c_in, &mut dw_t);
            for (co, out) in dw_g.chunks_exact_mut(s.ckk()).enumerate() {
                out.iter_mut().zip(dw_t.chunks_exact(cp)).for_each(|(o, row)| *o = row[co]);
            }
            crate::pool::give(dw_t);
            crate::pool::give(xpad);
            crate::pool::give(dyt);
        });
        sum_partials(partial, groups, wsize)
    });
    (dx, dweight)
}

/// Groups of images for the Winograd weight gradient: each group sums its images' transformed gradients in
/// image order into its own partial sum (16·c_out·c_in floats, 1 MB at 128 → 128), and the partials are
/// then added in group order. Up to 8 groups, fewer where that leaves less than 256 tiles per group: on a
/// 7×7 map, 8 partials cost about as much to clear and add up as the products themselves. Depends on the
/// shape only, never on the number of threads.
fn winograd_dweight_groups(s: &ConvShape) -> usize {
    (s.n * s.h.div_ceil(2) * s.w.div_ceil(2) / 256).clamp(1, 8).min(s.n)
}

/// The Winograd weight gradient of a 3×3 "same" convolution (see "The weight gradient" in `winograd.rs`):
/// per group of images, in parallel, du_g[ξ, co, ci] = Σ_{n in g} Σ_tiles W_ξ[tile, co] · V_ξ[tile, ci];
/// du = Σ_g du_g in group order; dweight = Gᵀ du G.
fn winograd_dweight(level: cpu::Simd, x: &[f32], dy: &[f32], s: &ConvShape) -> Vec<f32> {
    let (cpo, cpi) = winograd::dweight_padding(level, s.c_out, s.c_in);
    let ((xr, xc), (yr, yc)) = winograd::dweight_layouts(s.h, s.w);
    let (image, out_image, du_len) = (s.c_in * s.h * s.w, s.c_out * s.h * s.w, 16 * cpo * cpi);
    let group = s.n.div_ceil(winograd_dweight_groups(s));
    let groups = s.n.div_ceil(group);
    let mut partial = crate::pool::take_dirty(groups * du_len); // [groups, 16, cpo, cpi]
    let per_call = winograd::dweight_images_per_call(s.h, s.w).min(group);
    partial.par_chunks_mut(du_len).enumerate().for_each(|(g, du)| {
        du.fill(0.0);
        let mut xt = crate::pool::take_dirty(per_call * xr * xc * cpi); // [per_call, xr, xc, cpi]
        let mut dyt = crate::pool::take_dirty(per_call * yr * yc * cpo); // [per_call, yr, yc, cpo]
        let scratch_len = winograd::dweight_scratch_len(per_call, s.h, s.w, cpo, cpi);
        let mut scratch = crate::pool::take_dirty(scratch_len);
        let end = ((g + 1) * group).min(s.n);
        for n0 in (g * group..end).step_by(per_call) {
            let images = per_call.min(end - n0);
            for j in 0..images {
                let (x_n, dy_n) = (&x[(n0 + j) * image..][..image], &dy[(n0 + j) * out_image..][..out_image]);
                let xt_j = &mut xt[j * xr * xc * cpi..][..xr * xc * cpi];
                winograd::transpose_into(level, x_n, s.c_in, s.h, s.w, 1, xc, cpi, xt_j);
                let dyt_j = &mut dyt[j * yr * yc * cpo..][..yr * yc * cpo];
                winograd::transpose_into(level, dy_n, s.c_out, s.h, s.w, 0, yc, cpo, dyt_j);
            }
            winograd::dweight_images(level, &xt, &dyt, images, s.h, s.w, cpo, cpi, &mut scratch, du);
        }
        crate::pool::give(scratch);
        crate::pool::give(dyt);
        crate::pool::give(xt);
    });
    let du = sum_partials(partial, groups, du_len);
    let mut dweight = crate::pool::take_dirty(s.c_out * s.ckk());
    winograd::dweight_from_transformed(&du, s.c_out, s.c_in, cpo, cpi, &mut dweight);
    crate::pool::give(du);
    dweight
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
    let mut partial = crate::pool::take_dirty(if want_dweight { groups * wsize } else { 0 });
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
        let mut gathered = crate::pool::take_dirty(if images == 1 { 0 } else { s.c_out * cols });
        for j in (0..images).filter(|_| images > 1) {
            for co in 0..s.c_out {
                let src = &dy[((n0 + j) * s.c_out + co) * ohw..][..ohw];
                gathered[co * cols + j * ohw..][..ohw].copy_from_slice(src);
            }
        }
        let dy_g: &[f32] = if images == 1 { &dy[n0 * s.c_out * ohw..][..s.c_out * ohw] } else { &gathered };
        // col [ckk, cols] (a 1×1 unpadded conv of one image reads x_n itself).
        let pointwise_single = s.is_pointwise() && images == 1;
        let mut col = crate::pool::take_dirty(if pointwise_single { 0 } else { ckk * cols });
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
                let mut dcol = crate::pool::take_dirty(ckk * cols);
                gemm_serial(ckk, s.c_out, cols, weight, (1, ckk), dy_g, (cols, 1), &mut dcol, 0.0);
                for (j, dx_n) in dx_g.chunks_mut(image).enumerate() {
                    col2im_rows(&dcol[j * ohw..], s, 0, s.oh, dx_n, cols);
                }
                crate::pool::give(dcol);
            }
        }
        crate::pool::give(col);
        crate::pool::give(gathered);
    });
    if !want_dweight {
        crate::pool::give(partial);
        return (dx, None);
    }
    (dx, Some(sum_partials(partial, groups, wsize)))
}
