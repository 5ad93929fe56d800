//! The weight gradient of a 1×1 convolution on a small map (`pointwise.rs`'s forward: the U-Net's 1×1
//! convolutions at 7×7), as dot products along the pixels:
//! ```text
//! dweight[co, ci] = Σ_n Σ_p dy[n, co, p] · x[n, ci, p]
//! ```
//! In NCHW both factors already run along the pixels, so no transpose is needed, only the pixels of several
//! images side by side (as `pointwise.rs` lays them out): per group of G images, xg [c_in, len] and dyg
//! [c_out, len] with xg[ci, j·hw + p] = x[n0 + j, ci, p] (and dyg alike), zeros after the G·hw real pixels up
//! to len, a whole number of vectors. A register tile of R output channels × C input channels then keeps R·C
//! vector accumulators, each a dot product along the row: per vector of pixels R + C loads and R·C fused
//! multiply-adds, and at the end each accumulator summed across its lanes. The groups' partial dweights are
//! added in group order.
//!
//! Why not `strided_cm::dweight`, which the 1×1 convolutions took before: it transposes x and dy to
//! pixel-major, then broadcasts x with the output channels in the lanes, and each of its tiles walks the
//! pixels 1 KB apart (a row of xᵀ at 256 channels), beyond L1 for a group's 392 pixels; by `perf` its sums
//! ran at about 57 GFLOP/s a core and the transposes took an eighth of the time (the two measured against
//! each other: `path::POINTWISE_DWEIGHT_MAX_OUT`). Each result is the same sum whatever the threads: the
//! grouping depends on the shape alone (`parallel::images_per_call` for two threads), each tile's sum runs
//! over the group's pixels in order (lane by lane, then across the lanes), then the groups in order. Must
//! equal `conv2d_backward_naive`'s dweight up to rounding.

use rayon::prelude::*;

use super::parallel::{images_per_call, sum_partials};
use super::pointwise::side_by_side;
use super::shape::ConvShape;
use crate::cpu::Simd;
use crate::vector::{self, F32Vector};

/// Images per group: at most enough for about 256 pixels side by side (5 images of 7×7; 1 of 28×28), in a
/// number of groups two threads share equally (`images_per_call`: at batch 32 and 7×7, 8 groups of 4). From
/// the shape alone, so that the partial sums, added in group order, do not depend on the threads. Measured
/// on the AMD EPYC (Zen 3) against about 512 pixels (8 groups of 8) and 128 (16 groups of 2), alternated call
/// by call: 256 → 128 at 7×7 the same with 512, 22% slower with 128; 128 → 128 5% slower with 512, 27% with
/// 128. Holding a block of 16 tiles' rows of x in L1 (the loop over output channels inside it) instead of
/// one tile's changed nothing measurable, so the loops stay simple.
fn group(s: &ConvShape) -> usize {
    images_per_call(s.n, 256usize.div_ceil(s.ohw().max(1)), 2)
}

/// dweight [c_out, c_in, 1, 1] of a 1×1 convolution (stride 1, no padding), from x [n, c_in, hw] and dy [n,
/// c_out, hw]; see the module doc.
pub fn dweight(level: Simd, x: &[f32], dy: &[f32], s: &ConvShape) -> Vec<f32> {
    crate::cpu::check_supported(level);
    assert!(s.is_pointwise(), "pointwise_dweight: not a 1×1 convolution: {s:?}");
    let hw = s.ohw();
    assert!(x.len() == s.n * s.c_in * hw && dy.len() == s.n * s.c_out * hw, "pointwise_dweight: {s:?}");
    let images = group(s);
    let groups = s.n.div_ceil(images);
    let len = (images * hw).next_multiple_of(level.lanes());
    let wlen = s.c_out * s.c_in;
    let mut partial = crate::pool::scratch(groups * wlen);
    partial.par_chunks_mut(wlen).enumerate().for_each(|(g, dw)| {
        let (n0, count) = (g * images, images.min(s.n - g * images));
        let xg = side_by_side(x, s.c_in, hw, (n0, count), len);
        let dyg = side_by_side(dy, s.c_out, hw, (n0, count), len);
        let job = Dots { xg: &xg, dyg: &dyg, len, c_in: s.c_in, c_out: s.c_out, dw };
        // SAFETY: the level is supported (checked above); `dots` checks the sizes it relies on.
        unsafe {
            match level {
                #[cfg(target_arch = "x86_64")]
                Simd::Avx512 => dots_avx512::<4, 6>(job),
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2 => dots_avx2::<3, 4>(job),
                #[cfg(target_arch = "aarch64")]
                _ => dots::<vector::Neon, 4, 6>(job),
                #[cfg(not(target_arch = "aarch64"))]
                _ => dots::<vector::Portable, 3, 4>(job),
            }
        }
    });
    sum_partials(&partial, groups, wlen)
}

/// What [`dots`] reads and writes: xg [c_in, len] and dyg [c_out, len] (a group's pixels side by side, len a
/// whole number of vectors, zeros past the real pixels), dw [c_out, c_in].
struct Dots<'a> {
    xg: &'a [f32],
    dyg: &'a [f32],
    len: usize,
    c_in: usize,
    c_out: usize,
    dw: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dots_avx512<const R: usize, const C: usize>(job: Dots) {
    dots::<vector::Avx512, R, C>(job)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2<const R: usize, const C: usize>(job: Dots) {
    dots::<vector::Avx2, R, C>(job)
}

/// For each block of C input channels (the outer loop: their C rows of xg stay in L1 while every block of R
/// output channels meets them) and each block of R output channels: acc[r][c] = Σ over the row's vectors of
/// dyg[co0 + r, ·] · xg[ci0 + c, ·], then dw[co0 + r, ci0 + c] = the sum of acc[r][c]'s lanes. A last block
/// with fewer rows repeats its last real row and does not store the copies. The tiles: 3 × 4 on AVX2 (12
/// accumulators and 4 loaded vectors of its 16 registers) and x86-64's baseline, 4 × 6 with AVX-512's and
/// NEON's 32.
///
/// # Safety
/// V's instruction set is available.
#[inline(always)]
unsafe fn dots<V: F32Vector, const R: usize, const C: usize>(job: Dots) {
    let Dots { xg, dyg, len, c_in, c_out, dw } = job;
    let lanes = V::LANES;
    assert!(len.is_multiple_of(lanes) && xg.len() >= c_in * len && dyg.len() >= c_out * len);
    assert!(dw.len() >= c_out * c_in);
    for ci0 in (0..c_in).step_by(C) {
        let cn = C.min(c_in - ci0);
        let xs: [*const f32; C] = std::array::from_fn(|c| xg.as_ptr().add((ci0 + c.min(cn - 1)) * len));
        for co0 in (0..c_out).step_by(R) {
            let rn = R.min(c_out - co0);
            let dys: [*const f32; R] = std::array::from_fn(|r| dyg.as_ptr().add((co0 + r.min(rn - 1)) * len));
            let mut acc = [[V::zero(); C]; R];
            for p in (0..len).step_by(lanes) {
                let d: [V; R] = std::array::from_fn(|r| unsafe { V::load(dys[r].add(p)) });
                for c in 0..C {
                    let xv = V::load(xs[c].add(p));
                    for r in 0..R {
                        acc[r][c] = d[r].mul_add(xv, acc[r][c]);
                    }
                }
            }
            // (From a copy: indexing the accumulators in the loop below kept them in memory, see direct.rs.)
            let finished = acc;
            for (r, row) in finished.iter().enumerate().take(rn) {
                for (c, vector) in row.iter().enumerate().take(cn) {
                    dw[(co0 + r) * c_in + ci0 + c] = vector.sum();
                }
            }
        }
    }
}
