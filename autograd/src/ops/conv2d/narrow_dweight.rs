//! The weight gradient of "same" convolutions with few output channels (fewer than
//! `DIRECT_GRADIENT_MIN_CHANNELS`; the U-Net's last layer has one), positions in the vector lanes.
//!
//! `direct_dweight.rs` puts output channels in the lanes, which one channel fills to 1/8 or 1/16; im2col
//! (what these shapes took before) writes a 9× copy of x and reads it back for a product with one row:
//! on the U-Net's last layer, x [32, 32, 28, 28] → 1, that copy is 29 MB. Here, in the flat padded layout
//! of `direct.rs` (Legend there), with dy laid out the same way, zeros in its junk columns and after its
//! last row (so they add nothing):
//! ```text
//! dweight[co, ci, t] = Σ_n Σ_q dyflat_n[co, q] · xpad_n[ci, q + tap_t]
//! ```
//! One (co, ci) pair's k·k taps are one register tile (up to 9 taps at a time, the rest in further
//! rounds): per vector of positions q, one load of dy, one load of x per tap and k·k fused multiply-adds,
//! each tap's lanes summed once at the end. The chain of every sum runs over the images, then the
//! positions, in order, and the work is split over input channels only, so no result depends on the
//! number of threads.
//!
//! Must equal `conv2d_backward_naive`'s dweight up to rounding.

use rayon::prelude::*;

use super::direct::{is_same_conv, Flat};
use super::shape::ConvShape;
use crate::cpu::Simd;
use crate::vector::{self, F32Vector};

/// Taps per round of [`narrow_taps`]: a 3×3 kernel's 9 accumulators, one dy and one x vector fit the 16
/// registers of AVX2.
const TAPS: usize = 9;

/// dweight [c_out, c_in, k, k] of a "same" convolution. Must equal `conv2d_backward_naive`'s up to rounding.
pub fn narrow_dweight(level: Simd, x: &[f32], dy: &[f32], s: &ConvShape) -> Vec<f32> {
    assert!(is_same_conv(s), "narrow_dweight: not a same convolution: {s:?}");
    crate::cpu::check_supported(level);
    let flat = Flat::new(s, level.lanes());
    let (hw, kk) = (s.h * s.w, s.kh * s.kw);
    // dyflat [n, c_out, qr]: dy's rows wp apart, zeros in the junk columns and after the last row.
    let mut dyflat = crate::pool::scratch_filled(s.n * s.c_out * flat.qr, 0.0);
    dyflat.par_chunks_mut(flat.qr).zip(dy.par_chunks(hw)).for_each(|(out, plane)| {
        for (row, src) in out.chunks_mut(flat.wp).zip(plane.chunks_exact(s.w)) {
            row[..s.w].copy_from_slice(src);
        }
    });
    // Rounds of at most TAPS taps; the last round repeats its last tap, whose extra sums are not kept.
    let taps = flat.taps();
    let rounds: Vec<[usize; TAPS]> =
        taps.chunks(TAPS).map(|c| std::array::from_fn(|t| c[t.min(c.len() - 1)])).collect();
    // Per input channel, in parallel: sums [c_out, kk].
    let per_ci: Vec<Vec<f32>> = (0..s.c_in)
        .into_par_iter()
        .map(|ci| {
            let mut xpad = crate::pool::scratch(s.n * flat.plane); // [n, plane]: channel ci of every image
            for (n, plane) in xpad.chunks_exact_mut(flat.plane).enumerate() {
                flat.pad(&x[(n * s.c_in + ci) * hw..][..hw], 1, plane);
            }
            let mut sums = vec![0.0; s.c_out * kk];
            for (co, sums_co) in sums.chunks_exact_mut(kk).enumerate() {
                for (round, out) in rounds.iter().zip(sums_co.chunks_mut(TAPS)) {
                    let job = Narrow { dyflat: &dyflat, xpad: &xpad, flat: &flat, c_out: s.c_out, co, taps: round };
                    let all = narrow_taps(level, job);
                    out.copy_from_slice(&all[..out.len()]);
                }
            }
            sums
        })
        .collect();
    // [c_in, c_out, kk] → dweight [c_out, c_in, kk]
    let mut dweight = vec![0.0; s.c_out * s.c_in * kk];
    for (ci, sums) in per_ci.iter().enumerate() {
        for (co, sums_co) in sums.chunks_exact(kk).enumerate() {
            dweight[(co * s.c_in + ci) * kk..][..kk].copy_from_slice(sums_co);
        }
    }
    dweight
}

/// One output channel and one input channel over every image: what [`narrow_taps`] reads.
struct Narrow<'a> {
    /// dy in the flat layout, [n, c_out, qr].
    dyflat: &'a [f32],
    /// Input channel ci of every image, [n, plane].
    xpad: &'a [f32],
    flat: &'a Flat,
    c_out: usize,
    co: usize,
    taps: &'a [usize; TAPS],
}

/// [Σ_n Σ_q dyflat[n, co, q] · xpad[n, q + tap] for each tap].
fn narrow_taps(level: Simd, job: Narrow) -> [f32; TAPS] {
    let Narrow { dyflat, xpad, flat, c_out, co, taps } = job;
    let n = xpad.len() / flat.plane;
    let farthest = taps.iter().copied().max().unwrap_or(0);
    assert!(co < c_out && dyflat.len() >= n * c_out * flat.qr && flat.plane >= flat.qr + farthest);
    assert!(flat.qr.is_multiple_of(level.lanes()));
    let job = Narrow { dyflat, xpad, flat, c_out, co, taps };
    // SAFETY: the level is supported (`narrow_dweight` checked), and the asserts cover every access.
    unsafe {
        match level {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => narrow_avx512(job),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => narrow_avx2(job),
            #[cfg(target_arch = "aarch64")]
            _ => narrow_tiles::<vector::Neon>(job),
            #[cfg(not(target_arch = "aarch64"))]
            _ => narrow_tiles::<vector::Portable>(job),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn narrow_avx512(job: Narrow) -> [f32; TAPS] {
    narrow_tiles::<vector::Avx512>(job)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn narrow_avx2(job: Narrow) -> [f32; TAPS] {
    narrow_tiles::<vector::Avx2>(job)
}

/// The tile loop: acc[t] += dy[q..q + lanes] · x[q + tap_t..] over every image and vector of positions,
/// then each acc[t]'s lanes summed.
///
/// # Safety
/// V's instruction set is available, and [`narrow_taps`]'s asserts hold.
#[inline(always)]
unsafe fn narrow_tiles<V: F32Vector>(Narrow { dyflat, xpad, flat, c_out, co, taps }: Narrow) -> [f32; TAPS] {
    let mut acc = [V::zero(); TAPS];
    for (n, x_n) in xpad.chunks_exact(flat.plane).enumerate() {
        let (d_n, x_n) = (dyflat.as_ptr().add((n * c_out + co) * flat.qr), x_n.as_ptr());
        for q in (0..flat.qr).step_by(V::LANES) {
            let d = V::load(d_n.add(q));
            for (acc_t, &tap) in acc.iter_mut().zip(taps) {
                *acc_t = d.mul_add(V::load(x_n.add(q + tap)), *acc_t);
            }
        }
    }
    acc.map(|lanes| unsafe { lanes.sum() })
}
