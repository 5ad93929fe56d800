//! Strided convolutions (the U-Net's stride-2 downsampling) on the direct kernel of `direct.rs`, by
//! phase planes. No im2col matrix is built.
//!
//! Legend as in `direct.rs`, plus `s` the stride, `m` = (k − 1)/s (how many rows and columns past its own
//! position a tap reads in a phase plane), `(a, b)` a phase (a row and a column remainder mod s).
//!
//! # The idea: a stride-s convolution reads s² phase planes at fixed shifts
//! ```text
//! y[co, oy, ox] = bias[co] + Σ_{ci} Σ_{ky,kx} weight[co, ci, ky, kx] · xpad[ci, s·oy + ky, s·ox + kx]
//! ```
//! Split each padded channel into s² phase planes P_ab[i, j] = xpad[s·i + a, s·j + b], each row wp = ow + m
//! long. Then xpad[s·oy + ky, s·ox + kx] = P_{ky mod s, kx mod s}[oy + ky/s, ox + kx/s]: with output
//! positions numbered q = oy·wp + ox, tap (ky, kx) reads position q + (ky/s)·wp + kx/s of one phase plane,
//! the same for every q. That is the "same" convolution's long row (`direct.rs`) with planes side by side:
//! the offset of a tap also picks its plane (`Flat::taps`), so the forward and the weight gradient are
//! `direct.rs`'s and `direct_dweight.rs`'s kernels unchanged, on this layout (`Flat` with a stride). The
//! split copies each input pixel once; im2col copied each 9 times, one strided element at a time, which
//! took half of this convolution's time.
//!
//! # The input gradient
//! Each pixel of xpad is read by the taps of its own phase only:
//! ```text
//! dxpad[ci, s·i + a, s·j + b] = Σ_{co} Σ_{ky ≡ a, kx ≡ b (mod s)} weight[co, ci, ky, kx] · dy[co, i − ky/s, j − kx/s]
//! ```
//! (dy is zero outside its rows and columns). Put dy in a flat layout of rows wp long with m zero rows
//! above and m zero columns to the left: then dy[co, i − ky/s, j − kx/s] = dyflat[co, q + (m − ky/s)·wp +
//! m − kx/s] for q = i·wp + j (a column past dy's right edge runs into the next row's zero columns). So
//! phase (a, b) of dx is `direct_image` with that phase's taps and weights, into a phase plane, whose
//! pixels then go to their places in dx. A 3×3 stride-2 convolution's 9 taps split 4/2/2/1 over the four
//! phases: no product is wasted, only the junk positions past the image's edge.
//!
//! Every result must equal `conv2d_forward_naive` / `conv2d_backward_naive` up to rounding.

use super::direct::{direct_image, forward_tile, is_strided_conv, tile_positions, DirectImage, Flat};
use super::direct_dweight::direct_dweight;
use super::parallel::per_image;
use super::shape::ConvShape;
use crate::cpu::Simd;

/// The gradients of a strided convolution: (dx if `want_dx`, dweight if `want_dweight`); dweight is
/// `strided_cm::dweight` onto small maps (those its forward takes) and `direct_dweight` on the phase-plane
/// layout otherwise. Must equal `conv2d_backward_naive` up to rounding.
/// `level`: the SIMD level (the op passes `cpu::simd()`; tests run every level).
pub fn conv2d_backward_strided(
    level: Simd,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    s: &ConvShape,
    want_dx: bool,
    want_dweight: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    assert!(is_strided_conv(s), "conv2d_backward_strided: not a strided convolution: {s:?}");
    let dweight = |level| match super::strided_cm::is_strided_cm_conv(s) {
        true => super::strided_cm::dweight(level, x, dy, s),
        false => direct_dweight(level, x, dy, s),
    };
    (want_dx.then(|| strided_dx(level, weight, dy, s)), want_dweight.then(|| dweight(level)))
}

/// One phase (a, b) of the input gradient: where its taps read dyflat, and the weight packed for them.
struct Phase {
    a: usize,
    b: usize,
    taps: Vec<usize>,
    /// [c_in/C (rounded up), c_out, taps, C]: weight[co, ci, ky, kx] for ci = block·C + lane, zeros past c_in.
    packed: Vec<f32>,
}

/// The phases of dx, each with its taps (m − ky/s)·wp + m − kx/s for ky ≡ a, kx ≡ b (mod s), and its
/// weight packed with tiles of `c` input channels. A phase with no taps (a kernel smaller than the
/// stride) reads nothing: its pixels' gradient is zero.
fn phases(weight: &[f32], s: &ConvShape, wp: usize, c: usize) -> Vec<Phase> {
    let (st, k) = (s.stride, s.kh);
    let m = (k - 1) / st;
    let mut out = Vec::with_capacity(st * st);
    for a in 0..st {
        for b in 0..st {
            let kernel: Vec<(usize, usize)> =
                (a..k).step_by(st).flat_map(|ky| (b..k).step_by(st).map(move |kx| (ky, kx))).collect();
            let taps = kernel.iter().map(|&(ky, kx)| (m - ky / st) * wp + m - kx / st).collect();
            let mut packed = Vec::with_capacity(s.c_in.div_ceil(c) * c * s.c_out * kernel.len());
            for block in 0..s.c_in.div_ceil(c) {
                for co in 0..s.c_out {
                    for &(ky, kx) in &kernel {
                        packed.extend((block * c..block * c + c).map(|ci| match ci < s.c_in {
                            true => weight[((co * s.c_in + ci) * k + ky) * k + kx],
                            false => 0.0,
                        }));
                    }
                }
            }
            out.push(Phase { a, b, taps, packed });
        }
    }
    out
}

/// dx of a strided convolution (module doc): per image (and, with fewer images than threads, per block
/// of input channels), dy in the flat layout, then for each phase `direct_image` into a phase plane and
/// its pixels to their places in dx. Pixels no output reads keep a zero gradient.
pub fn strided_dx(level: Simd, weight: &[f32], dy: &[f32], s: &ConvShape) -> Vec<f32> {
    assert!(is_strided_conv(s), "strided_dx: not a strided convolution: {s:?}");
    let forward = Flat::new(s, 1); // the forward's phase planes: where dx's pixels sit in them
    let (st, m, wp) = (s.stride, (s.kh - 1) / s.stride, forward.wp);
    let c = forward_tile(level).0;
    // dy's flat layout, read by the phases of dx: rows of wp, m zero rows and columns before dy's own
    // (`Flat::pad` of a stride-1 layout with a border m on a row m longer than dy's puts exactly that there).
    // The output positions are a phase plane's oh + m rows, every column a real one.
    let rows = s.oh + m;
    let q = rows * wp;
    let tile = tile_positions(level, q);
    let qr = q.next_multiple_of(tile);
    let plane = (qr + m * (wp + 1)).max((s.oh + m) * wp).next_multiple_of(16);
    let flat = Flat {
        h: rows,
        w: wp,
        in_h: s.oh,
        in_w: s.ow,
        pad: m,
        k: m + 1, // the layout's reach: m rows and columns, as a (m + 1)-wide kernel's
        stride: 1,
        wp,
        tile,
        qr,
        phase: plane,
        plane,
        out_row: wp,
        out_channel: q,
    };
    let phases = phases(weight, s, wp, c);
    let (hw, ohw) = (s.h * s.w, s.ohw());
    per_image(s.n, s.c_in, hw, c, |n, ci0, dx_part| {
        let count = dx_part.len() / hw;
        let mut dyflat = crate::pool::scratch(s.c_out * flat.plane); // [c_out, plane]
        flat.pad(&dy[n * s.c_out * ohw..][..s.c_out * ohw], s.c_out, &mut dyflat);
        let mut out = crate::pool::scratch(count * q); // one phase plane of dx [count, rows, wp]
        dx_part.fill(0.0);
        for phase in phases.iter().filter(|p| !p.taps.is_empty()) {
            let packed = &phase.packed[ci0 / c * c * s.c_out * phase.taps.len()..];
            direct_image(
                level,
                DirectImage {
                    xpad: &dyflat,
                    flat: &flat,
                    taps: &phase.taps,
                    c_in: s.c_out,
                    packed,
                    c_out: count,
                    bias: None,
                    y: &mut out,
                },
            );
            // Plane pixel (i, j) is dx pixel (s·i + a − pad, s·j + b − pad), where that is inside the image.
            let (j0, j1) = forward.phase_columns(phase.b);
            for (dx_ci, out_ci) in dx_part.chunks_exact_mut(hw).zip(out.chunks_exact(q)) {
                for (i, row) in out_ci.chunks_exact(wp).enumerate() {
                    let Some(iy) = (st * i + phase.a).checked_sub(s.padding).filter(|&iy| iy < s.h) else { continue };
                    let first = iy * s.w + st * j0 + phase.b - s.padding;
                    let targets = dx_ci[first..].iter_mut().step_by(st);
                    targets.zip(&row[j0..j1]).for_each(|(d, &v)| *d = v);
                }
            }
        }
    })
}
