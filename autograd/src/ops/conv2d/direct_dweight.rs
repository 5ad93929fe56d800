//! The weight gradient of the direct path (`direct.rs`): dweight[co, ci, ky, kx] = Σ_q xpad[ci, q + ky·wp + kx]
//! · dyᵀ[q, co], where dyᵀ is dy in the flat layout, transposed to position-major, with zeros in the junk
//! columns (so they add nothing). The sum runs over q, so here the register tile is R rows (ci, ky, kx) ×
//! vectors of output channels: each step broadcasts R inputs and loads dyᵀ[q]'s channel vectors once. (A
//! first version kept positions in the lanes and summed across lanes at the end of each tile: the lane
//! sums and the unaligned loads held it to 165 GFLOP/s against this one's 245 on [32, 32, 28, 28].)
//!
//! Legend as in `direct.rs`. Must equal `conv2d_backward_naive` up to rounding.

use rayon::prelude::*;

use super::direct::Flat;
use super::parallel::sum_partials;
use super::shape::ConvShape;
use super::transpose::{transpose_into, ToChannelMinor};
use crate::cpu::Simd;
use crate::vector::{self, F32Vector};

/// Output channels per weight-gradient tile at each SIMD level: the channel axis of dyᵀ is padded to a
/// multiple of this.
pub fn dweight_channels(level: Simd) -> usize {
    match level {
        Simd::Avx512 => 32,
        Simd::Avx2 => 16,
        Simd::Baseline => 8,
    }
}

/// dyᵀ [qr, cp] for one image: dy_n [c_out, h, w] transposed into the flat layout, position-major,
/// dyᵀ[oy·wp + ox, co] = dy_n[co, oy, ox], zeros in the junk columns, after the last row and in channels
/// c_out..cp (cp = c_out rounded up to [`dweight_channels`]): `transpose_into`'s layout with no border and
/// rows of wp, transposed in registers. (It used to gather 8 channels of a pixel one float at a time: the
/// backward of [32, 64, 14, 14] → 64 stride 2 went 1.83 → 1.78 ms with this, three alternated rounds.)
pub fn transpose_dy(level: Simd, dy_n: &[f32], c_out: usize, cp: usize, flat: &Flat, dyt: &mut [f32]) {
    let dst = &mut dyt[..flat.qr * cp];
    transpose_into(level, ToChannelMinor { src: dy_n, c: c_out, h: flat.h, w: flat.w, off: 0, cols: flat.wp, cp, dst });
}

/// The weight gradient over a group of images: what [`dweight_images`] reads and writes.
pub struct DweightImages<'a> {
    pub dyt: &'a [f32],
    pub cp: usize,
    pub xpad: &'a [f32],
    pub images: usize,
    pub flat: &'a Flat,
    pub c_in: usize,
    pub dweight_t: &'a mut [f32],
}

/// dweightᵀ [c_in·k·k, cp] = Σ_n Σ_q xpad[n, ci, q + tap] · dyᵀ[n, q, co] over `images` images, with
/// dyᵀ [images, qr, cp] from [`transpose_dy`] and xpad [images, c_in, plane].
///
/// This is the forward's loop turned around: the sum runs over positions q, so the register tile holds
/// R rows r = (ci, tap) × the cp channels of one position, as vectors; each step broadcasts R inputs and
/// loads the channel vectors of dyᵀ[q] once. Nothing is summed across lanes.
pub fn dweight_images(level: Simd, job: DweightImages) {
    let DweightImages { dyt, cp, xpad, images, flat, c_in, dweight_t } = job;
    crate::cpu::check_supported(level);
    let taps = flat.taps();
    let farthest = taps.iter().copied().max().unwrap_or(0);
    assert!(cp.is_multiple_of(dweight_channels(level)) && flat.plane >= flat.qr + farthest);
    assert!(dyt.len() >= images * flat.qr * cp && xpad.len() >= images * c_in * flat.plane);
    assert!(dweight_t.len() >= c_in * taps.len() * cp);
    let args = DweightImages { dyt, cp, xpad, images, flat, c_in, dweight_t };
    // SAFETY: the level is supported (checked above), and the asserts cover every access of the tiles.
    unsafe {
        match level {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => dweight_avx512(args, &taps),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => dweight_avx2(args, &taps),
            #[cfg(target_arch = "aarch64")]
            _ => dweight_tiles::<vector::Neon, 12, 2>(args, &taps),
            #[cfg(not(target_arch = "aarch64"))]
            _ => dweight_tiles::<vector::Portable, 6, 2>(args, &taps),
        }
    }
}

/// R = 12 rows × 2 vectors of 16 channels: 24 accumulators, 2 channel vectors and a broadcast in 32
/// registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dweight_avx512(args: DweightImages, taps: &[usize]) {
    dweight_tiles::<vector::Avx512, 12, 2>(args, taps)
}

/// R = 6 rows × 2 vectors of 8 channels: 12 accumulators, 2 channel vectors and a broadcast in 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dweight_avx2(args: DweightImages, taps: &[usize]) {
    dweight_tiles::<vector::Avx2, 6, 2>(args, taps)
}

/// The weight-gradient tile loop: for R rows r = (ci, tap) × NV vectors of channels, acc [R][NV] gathers
/// Σ over images and positions q of xpad[n, ci, q + tap] (broadcast) · dyᵀ[n, q, channels]; then it is
/// stored to dweightᵀ. Rows past c_in·k·k are computed on a repeated last row and not stored.
///
/// # Safety
/// V's instruction set is available, and [`dweight_images`]'s asserts hold.
#[inline(always)]
unsafe fn dweight_tiles<V: F32Vector, const R: usize, const NV: usize>(
    DweightImages { dyt, cp, xpad, images, flat, c_in, dweight_t }: DweightImages,
    taps: &[usize],
) {
    let kk = taps.len();
    let ckk = c_in * kk;
    let (dy_image, x_image) = (flat.qr * cp, c_in * flat.plane);
    for rb in 0..ckk.div_ceil(R) {
        let x_rows: [*const f32; R] = std::array::from_fn(|r| {
            let r = (rb * R + r).min(ckk - 1);
            unsafe { xpad.as_ptr().add((r / kk) * flat.plane + taps[r % kk]) }
        });
        for c0 in (0..cp).step_by(NV * V::LANES) {
            let mut acc = [[V::zero(); NV]; R];
            for n in 0..images {
                let d_n = dyt.as_ptr().add(n * dy_image + c0);
                for q in 0..flat.qr {
                    let d: [V; NV] = std::array::from_fn(|v| unsafe { V::load(d_n.add(q * cp + v * V::LANES)) });
                    for (row, acc_r) in x_rows.iter().zip(acc.iter_mut()) {
                        let x = V::splat(*row.add(n * x_image + q));
                        for v in 0..NV {
                            acc_r[v] = x.mul_add(d[v], acc_r[v]);
                        }
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(ckk - rb * R) {
                let out = dweight_t.as_mut_ptr().add((rb * R + r) * cp + c0);
                for (v, lanes) in acc_r.iter().enumerate() {
                    lanes.store(out.add(v * V::LANES));
                }
            }
        }
    }
}

/// Images per weight-gradient task on the direct path: enough that one tile's sums over positions run
/// ~512 positions before its lanes are added up (the lane sums cost as much as 10 vectors of work each).
/// Depends on the shape only.
fn direct_dweight_group(s: &ConvShape) -> usize {
    512usize.div_ceil(Flat::new(s, 1).qr).clamp(1, s.n.max(1))
}

/// dweight of a "same" or strided convolution on the direct kernels: per group of [`direct_dweight_group`] images, in
/// parallel, dweight_g[co, ci, tap] = Σ_{n in g} Σ_q xpad_n[ci, q + tap] · dyᵀ_n[q, co], where dyᵀ_n is dy_n
/// transposed into the flat layout with zeros in the junk columns (so they add nothing); then Σ_g in group
/// order. Must equal `conv2d_backward_naive`'s dweight up to rounding.
pub fn direct_dweight(level: Simd, x: &[f32], dy: &[f32], s: &ConvShape) -> Vec<f32> {
    let (image, out_image, wsize) = (s.c_in * s.h * s.w, s.c_out * s.ohw(), s.c_out * s.ckk());
    let flat = Flat::new(s, 1); // the weight gradient's loop takes one position at a time
    let group = direct_dweight_group(s);
    let groups = s.n.div_ceil(group);
    let mut partial = crate::pool::scratch(groups * wsize); // [groups, c_out, ckk]
    let cp = s.c_out.next_multiple_of(dweight_channels(level));
    partial.par_chunks_mut(wsize).enumerate().for_each(|(g, dw_g)| {
        let (n0, images) = (g * group, group.min(s.n - g * group));
        let mut dyt = crate::pool::scratch(images * flat.qr * cp); // [images, qr, cp]
        for (j, dyt_n) in dyt.chunks_exact_mut(flat.qr * cp).enumerate() {
            transpose_dy(level, &dy[(n0 + j) * out_image..][..out_image], s.c_out, cp, &flat, dyt_n);
        }
        let mut xpad = crate::pool::scratch(images * s.c_in * flat.plane); // [images, c_in, plane]
        flat.pad(&x[n0 * image..][..images * image], images * s.c_in, &mut xpad);
        let mut dw_t = crate::pool::scratch(s.ckk() * cp); // [ckk, cp]
        let (dyt, xpad, flat, dweight_t) = (&dyt, &xpad, &flat, &mut dw_t);
        dweight_images(level, DweightImages { dyt, cp, xpad, images, flat, c_in: s.c_in, dweight_t });
        for (co, out) in dw_g.chunks_exact_mut(s.ckk()).enumerate() {
            out.iter_mut().zip(dw_t.chunks_exact(cp)).for_each(|(o, row)| *o = row[co]);
        }
    });
    sum_partials(&partial, groups, wsize)
}
