//! Which path computes which convolution, and why. The choice depends on the shape alone, never on the
//! number of threads, so no result does either.
//!
//! | shape | forward and input gradient | weight gradient |
//! |---|---|---|
//! | 3×3 "same" (stride 1, padding 1), ≥ 8 channels in and out, map ≥ 24×24 | Winograd F(2×2, 3×3), `winograd.rs` | Winograd, `winograd_dweight.rs` |
//! | the same on a smaller map (the U-Net's 14×14 and 7×7) | Winograd, channel-minor, `winograd_cm.rs` | Winograd, `winograd_dweight.rs` |
//! | other "same" convolutions (5×5, or fewer than 8 channels) | direct, `direct.rs` | direct, `direct_dweight.rs`; under 8 output channels, positions in the lanes, `narrow_dweight.rs` (under 8 input channels, im2col) |
//! | strided, kernel bigger than 1×1, onto a map of at most 200 pixels (the U-Net's stride-2 3×3 downsampling to 14×14 and 7×7) | forward: channel-minor products per tap, `strided_cm.rs`; input gradient: direct on phase planes, `strided.rs` | channel-minor sums over pixels per tap, `strided_cm.rs` |
//! | strided onto larger maps | direct on phase planes, `strided.rs` | direct, `direct_dweight.rs` |
//! | 1×1, stride 1, unpadded, on a map of at most 100 pixels (the U-Net's 7×7) | the direct kernel with one tap, several images side by side, `pointwise.rs` | dot products along the pixels of several images side by side, `pointwise_dweight.rs` (up to [`POINTWISE_DWEIGHT_MAX_OUT`] output channels; im2col above) |
//! | the same on maps up to [`POINTWISE_BACKWARD_MAX_PIXELS`] (the U-Net's 14×14 and 28×28) | forward: im2col + matrix product, `im2col.rs`; input gradient: `pointwise.rs` | as on the smaller maps |
//! | everything else (other 1×1, unpadded) | im2col + matrix product, `im2col.rs` | im2col |
//!
//! Why: Winograd does 2.25× fewer multiplications than the definition, but its transforms cost about what
//! 1–2 input channels of products do, so few channels do not pay; on maps under 24×24 one channel has too
//! few tiles to fill the vector lanes, so the channels go in the lanes instead. The direct kernel reads a
//! zero-bordered copy of the image as one long row, which "same" convolutions allow, and strided ones once
//! the image is split into phase planes (every stride-th row and column), one per tap's remainder; onto
//! small maps that split and the planes' junk row and column cost more than the products save, so those
//! forwards keep the output channels in the lanes instead, one product per tap. A 1×1
//! convolution is a matrix product already; on small maps, whose 49 positions leave the matrix product's
//! panels short, the direct kernel runs it on several images' positions in one row. Everything else is a
//! matrix product after im2col. The gradients of "same" and strided convolutions with fewer than
//! [`DIRECT_GRADIENT_MIN_CHANNELS`] channels (a first or last layer) take im2col too. `naive.rs` is the
//! definition every path is tested against.

use rayon::prelude::*;

use super::shape::{ConvShape, SameConv};
use super::{
    direct, direct_dweight, im2col, narrow_dweight, pointwise, pointwise_dweight, strided, strided_cm, winograd,
    winograd_cm, winograd_dweight,
};
use crate::cpu;
use crate::pool::Scratch;

/// Which kernel computes a convolution's forward (and, for "same" convolutions, its input gradient), chosen
/// by [`forward_path`] from the shape alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// A kernel that reads the weight rearranged for it ([`pack_forward_weight`]).
    Packed(Packing),
    /// Every other convolution (1×1, unpadded): im2col + matrix product, on the weight as it is.
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
    /// or fewer than 8 channels, as the U-Net's first and last layers), and strided ones on phase planes
    /// (`strided.rs`).
    Direct,
    /// The direct kernel with one tap, several small images side by side (`pointwise.rs`): 1×1
    /// convolutions, stride 1, no padding.
    Pointwise,
    /// Channel-minor products, one per tap (`strided_cm.rs`): the forward of strided convolutions onto
    /// small maps (their input gradient stays on `strided.rs`).
    StridedChannelMinor,
}

impl Path {
    /// A small number per path, for keys of cached weight layouts.
    pub fn code(self) -> usize {
        match self {
            Path::Packed(Packing::Winograd) => 0,
            Path::Packed(Packing::WinogradChannelMinor) => 1,
            Path::Packed(Packing::Direct) => 2,
            Path::Im2col => 3,
            Path::Packed(Packing::Pointwise) => 4,
            Path::Packed(Packing::StridedChannelMinor) => 5,
        }
    }
}

/// The path [`conv2d_forward`] takes for a shape.
pub fn forward_path(s: &ConvShape) -> Path {
    match (winograd::is_winograd_conv(s), winograd::flat_layout(s), direct::is_same_conv(s)) {
        (true, true, _) => Path::Packed(Packing::Winograd),
        (true, false, _) => Path::Packed(Packing::WinogradChannelMinor),
        (false, _, true) => Path::Packed(Packing::Direct),
        _ if strided_cm::is_strided_cm_conv(s) => Path::Packed(Packing::StridedChannelMinor),
        _ if direct::is_strided_conv(s) => Path::Packed(Packing::Direct),
        _ if pointwise::is_pointwise_conv(s) && s.ohw() <= pointwise::MAX_PIXELS => Path::Packed(Packing::Pointwise),
        _ => Path::Im2col,
    }
}

/// y = conv2d(x, weight) + bias, on the shape's [`forward_path`]. Must equal `conv2d_forward_naive` up to
/// rounding.
pub fn conv2d_forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    let level = cpu::simd();
    let packed = pack_forward_weight(level, weight, s).map(Scratch::from);
    conv2d_forward_packed(level, x, weight, packed.as_deref(), bias, s)
}

/// The weight rearranged as [`conv2d_forward`]'s path for this shape reads it at this SIMD level (`None`:
/// im2col reads the weight as it is). It depends on the weight, the path and the level only, so a caller
/// that runs the same weight many times (a sampler) can keep it ([`conv2d_forward_packed`]).
pub fn pack_forward_weight(level: cpu::Simd, weight: &[f32], s: &ConvShape) -> Option<Vec<f32>> {
    match forward_path(s) {
        Path::Packed(packing) => Some(pack(level, packing, weight, s, false)),
        Path::Im2col => None,
    }
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
        (Path::Packed(packing), Some(packed)) => {
            run(level, packing, SameConv { input: x, ch_in: s.c_in, packed, ch_out: s.c_out, bias, shape: s })
        }
        _ => im2col::conv2d_forward_im2col(x, weight, bias, s),
    }
}

/// The weight rearranged for `packing`; with `rotate`, for the input gradient's convolution (kernel turned
/// 180°, channel axes swapped).
fn pack(level: cpu::Simd, packing: Packing, weight: &[f32], s: &ConvShape, rotate: bool) -> Vec<f32> {
    match packing {
        Packing::Winograd => winograd::pack(level, weight, s, rotate),
        Packing::WinogradChannelMinor => winograd_cm::pack(level, weight, s, rotate),
        Packing::Direct | Packing::Pointwise => direct::pack(level, weight, s, rotate),
        Packing::StridedChannelMinor => {
            assert!(!rotate, "strided_cm computes the forward only");
            strided_cm::pack(level, weight, s)
        }
    }
}

/// A "same" convolution on `packing`'s kernel, its weight from [`pack`].
fn run(level: cpu::Simd, packing: Packing, job: SameConv) -> Vec<f32> {
    match packing {
        Packing::Winograd => winograd::conv(level, job),
        Packing::WinogradChannelMinor => winograd_cm::conv(level, job),
        Packing::Direct => direct::conv(level, job),
        Packing::Pointwise => pointwise::conv(level, job),
        Packing::StridedChannelMinor => strided_cm::conv(level, job),
    }
}

/// The gradients of a "same" convolution with fewer input or output channels than this leave the direct
/// kernels: dx's direct tile spans 8 of its channels (the input's), and dweight's 32 output channels and 12
/// rows of c_in·k·k, so a first layer (3 channels in) or a last one (1 out) would waste most of each tile.
/// Measured for x [16, 3, 32, 32] → 64: dx direct 0.83 ms, im2col 0.63 ms; dweight 0.73 against 0.58 ms.
/// With few input channels both gradients take im2col; with few output channels only, dweight takes
/// `narrow_dweight.rs` (positions in the lanes) and dx stays direct.
pub const DIRECT_GRADIENT_MIN_CHANNELS: usize = 8;

/// The largest map (h·w) whose 1×1 convolutions take `pointwise.rs` (dx) and `pointwise_dweight.rs` for their
/// gradients: the U-Net's 28×28, where the forward stays on im2col above `pointwise::MAX_PIXELS` (there the
/// two measured the same). On the AMD EPYC (Zen 3), both gradients, 300 calls of each path alternated call
/// by call in one process, medians: [32, 96, 28, 28] → 32 4.71–5.30 ms on im2col → 3.66–4.18; [32, 192,
/// 14, 14] → 64 2.99–3.38 → 2.52–2.95; [32, 64, 28, 28] → 128 8.50 → 7.55; [8, 64, 28, 28] → 64 0.94 →
/// 0.88; [16, 256, 14, 14] → 256 6.18 → 6.08; [32, 32, 14, 14] → 64 0.49 → 0.48; and [32, 128, 16, 16] →
/// 128 5.02 → 5.10, the one not faster.
pub const POINTWISE_BACKWARD_MAX_PIXELS: usize = 784;

/// The 1×1 convolutions on maps up to [`POINTWISE_BACKWARD_MAX_PIXELS`] with at most this many output
/// channels take `pointwise_dweight.rs` for their weight gradient, the others im2col's matrix product. On the AMD EPYC (Zen 3), the weight
/// gradient alone, 400 calls of each path alternated call by call in one process (medians): 256 → 128 at
/// 7×7, batch 32, 1.27–1.69 ms on `strided_cm::dweight` (which these took before) → 1.14–1.39; 128 → 128
/// 0.80 → 0.68; 64 → 128 0.38 → 0.39; but 128 → 384 1.77 ms on im2col → 2.02.
pub const POINTWISE_DWEIGHT_MAX_OUT: usize = 256;

/// The gradients of y = conv2d(x, weight) + bias: (dx if `want_dx`, dweight if `want_dweight`, dbias). Must
/// equal `conv2d_backward_naive` up to rounding. "Same" convolutions take [`conv2d_backward_direct`] and
/// strided ones `strided::conv2d_backward_strided`, unless their channels are few
/// ([`DIRECT_GRADIENT_MIN_CHANNELS`]); 1×1 ones on maps up to [`POINTWISE_BACKWARD_MAX_PIXELS`] take
/// `pointwise.rs` for dx and `pointwise_dweight.rs` for dweight; the rest takes im2col.
pub fn conv2d_backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    s: &ConvShape,
    want_dx: bool,
    want_dweight: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>, Vec<f32>) {
    let strided = direct::is_strided_conv(s);
    let direct_dx = (direct::is_same_conv(s) || strided) && s.c_in >= DIRECT_GRADIENT_MIN_CHANNELS;
    let direct_dweight = direct_dx && s.c_out >= DIRECT_GRADIENT_MIN_CHANNELS;
    let narrow_dweight = want_dweight && direct_dx && !strided && !direct_dweight;
    let (mut dx, mut dweight) = (None, None);
    if (want_dx && direct_dx) || (want_dweight && direct_dweight) {
        let backward = if strided { strided::conv2d_backward_strided } else { conv2d_backward_direct };
        (dx, dweight) = backward(cpu::simd(), x, weight, dy, s, want_dx && direct_dx, want_dweight && direct_dweight);
    }
    // A 1×1 convolution on a map of at most POINTWISE_BACKWARD_MAX_PIXELS: dx_n = weightᵀ · dy_n, the
    // pointwise forward's kernel on the transposed weight.
    let pointwise_backward = pointwise::is_pointwise_conv(s) && s.ohw() <= POINTWISE_BACKWARD_MAX_PIXELS;
    let pointwise_dx = want_dx && pointwise_backward;
    if pointwise_dx {
        let level = cpu::simd();
        let transposed = Scratch::from(pack(level, Packing::Pointwise, weight, s, true));
        let job = SameConv { input: dy, ch_in: s.c_out, packed: &transposed, ch_out: s.c_in, bias: None, shape: s };
        dx = Some(run(level, Packing::Pointwise, job));
    }
    // Its weight gradient: dot products along the pixels (`pointwise_dweight.rs`), for at most
    // POINTWISE_DWEIGHT_MAX_OUT output channels.
    let pointwise_dweight = want_dweight && pointwise_backward && s.c_out <= POINTWISE_DWEIGHT_MAX_OUT;
    if pointwise_dweight {
        dweight = Some(pointwise_dweight::dweight(cpu::simd(), x, dy, s));
    }
    // A "same" convolution with few output channels (a last layer): positions in the lanes.
    if narrow_dweight {
        dweight = Some(narrow_dweight::narrow_dweight(cpu::simd(), x, dy, s));
    }
    let im2col_dweight = want_dweight && !direct_dweight && !pointwise_dweight && !narrow_dweight;
    let im2col_dx = want_dx && !direct_dx && !pointwise_dx;
    if im2col_dx || im2col_dweight {
        let (dx_i, dweight_i) = im2col::conv2d_backward_im2col(x, weight, dy, s, im2col_dx, im2col_dweight);
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

/// The backward of a "same" convolution: (dx if `want_dx`, dweight if `want_dweight`).
/// - dx: the forward's own path run on dy, with the kernel turned 180° and its channel axes swapped
///   (dx[ci, p] = Σ_co Σ_{ky,kx} weight[co, ci, k−1−ky, k−1−kx] · dypad[co, p + ky·wp + kx]).
/// - dweight: in the Winograd domain for 3×3 ones with 8 or more channels (`winograd_dweight.rs`), on the
///   direct kernels otherwise (`direct_dweight.rs`).
///
/// Must equal `conv2d_backward_naive` up to rounding. `level`: the SIMD level (the op passes
/// `cpu::simd()`; tests run every level).
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
    let dx = want_dx.then(|| {
        let Path::Packed(packing) = forward_path(s) else { unreachable!("a same convolution packs its weight") };
        let rotated = Scratch::from(pack(level, packing, weight, s, true));
        run(
            level,
            packing,
            SameConv { input: dy, ch_in: s.c_out, packed: &rotated, ch_out: s.c_in, bias: None, shape: s },
        )
    });
    let dweight = want_dweight.then(|| match winograd::is_winograd_conv(s) {
        true => winograd_dweight::winograd_dweight(level, x, dy, s),
        false => direct_dweight::direct_dweight(level, x, dy, s),
    });
    (dx, dweight)
}
