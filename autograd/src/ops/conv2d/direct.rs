//! Direct convolution for "same" convolutions (stride 1, odd square kernel k, padding (k − 1)/2): the 3×3
//! convolutions that make up most of a U-Net. No im2col matrix is built.
//!
//! Legend as in `shape.rs`, plus: `wp` = w + 2·padding (a padded row), `q` a position in the *flat padded*
//! output, `qr` the number of such positions computed (rounded up to whole tiles), `plane` the length of one
//! padded channel in memory, `kk` = k·k taps, `C` output channels and `L` = NV vectors of positions per
//! register tile, `cp` output channels rounded up to the weight gradient's tile.
//!
//! # The idea: a padded image is one long row
//! Copy each channel of an image into a zero-bordered plane whose rows are `wp` long. Number the output pixels
//! the same way, q = oy·wp + ox, and let ox run over the whole padded row (its last 2·padding columns are junk
//! that is computed and thrown away). Then tap (ky, kx) of output q reads input q + ky·wp + kx for *every*
//! q: the whole convolution of one channel is nine shifted copies of one contiguous array,
//! ```text
//! yflat[co, q] = bias[co] + Σ_{ci} Σ_{ky,kx} weight[co, ci, ky, kx] · xpad[ci, q + ky·wp + kx]
//! ```
//! so the inner loop is a plain vector load at a fixed offset and C·L fused multiply-adds into a register tile
//! of C output channels × L consecutive q, with no boundary test (the zero border is the padding). Each input
//! vector loaded feeds C channels and each weight feeds L positions, which is what keeps it compute-bound.
//! The finished tile goes straight to y [c_out, h, w]: each vector by one store where it lies in one row's
//! valid columns, else by partial stores of its runs of valid columns ([`Place`]); junk positions are never
//! written. What it costs: the junk columns (2·padding of every wp: 7% at 28×28, 22% at 7×7; more where
//! [`forward_flat`] widens the rows), the rounding of qr up to whole tiles, and the copy into the padded
//! layout, all far less than writing and re-reading the 9× larger im2col matrix, which for few channels
//! (32 in, 32 out) took as long as the product itself.
//! Measured on x [32, 32, 28, 28] → 32 (the U-Net's first level): forward 1.6 ms direct, 3.4 ms im2col.
//!
//! # Backward
//! - Input: for stride 1 and "same" padding, dx is the same convolution of dy with the kernel rotated by
//!   180° and its channel axes swapped: dx[ci, p] = Σ_co Σ_{ky,kx} weight[co, ci, k−1−ky, k−1−kx] ·
//!   dypad[co, p + ky·wp + kx]. So [`direct_image`] computes it too.
//! - Weight: dweight[co, ci, ky, kx] = Σ_q xpad[ci, q + ky·wp + kx] · dyᵀ[q, co], where dyᵀ is dy in the flat
//!   layout, transposed to position-major, with zeros in the junk columns (so they add nothing). The sum runs
//!   over q, so here the register tile is R rows (ci, ky, kx) × vectors of output channels: each step
//!   broadcasts R inputs and loads dyᵀ[q]'s channel vectors once. (A first version kept positions in the
//!   lanes and summed across lanes at the end of each tile: the lane sums and the unaligned loads held it to
//!   165 GFLOP/s against this one's 245 on [32, 32, 28, 28].)
//!
//! Every result must equal `conv2d_forward_naive` / `conv2d_backward_naive` up to rounding.

use super::parallel::per_image;
use super::shape::{ConvShape, SameConv};
use crate::cpu::Simd;
use crate::pool::Scratch;
use crate::vector::{self, F32Vector};

/// True for the convolutions this file handles: stride 1, an odd square kernel, padding (k − 1)/2, bigger than
/// 1×1 (a 1×1 convolution is a matrix product already).
pub fn is_same_conv(s: &ConvShape) -> bool {
    s.stride == 1 && s.kh == s.kw && s.kh % 2 == 1 && s.kh > 1 && 2 * s.padding + 1 == s.kh
}

/// True for the strided convolutions this file's kernel runs on phase planes (`strided.rs`): stride 2 or
/// more, a square kernel bigger than 1×1, any padding.
pub fn is_strided_conv(s: &ConvShape) -> bool {
    s.stride > 1 && s.kh == s.kw && s.kh > 1
}

/// The flat padded layout of one image for [`direct_image`] (the module doc's `wp`, `qr`, `plane`). For a
/// strided convolution (`strided.rs`) each channel is `stride²` phase planes of `phase` floats; for a
/// "same" one there is one phase and `phase` = `plane`.
#[derive(Clone, Copy, Debug)]
pub struct Flat {
    /// The output's rows and columns (a "same" convolution's are the input's).
    pub h: usize,
    pub w: usize,
    /// The input's rows and columns.
    pub in_h: usize,
    pub in_w: usize,
    pub pad: usize,
    pub k: usize,
    pub stride: usize,
    /// Length of a row of the flat layout: w + (k−1)/stride (w + 2·pad for a "same" convolution).
    pub wp: usize,
    /// Positions per tile: qr is a multiple of it.
    pub tile: usize,
    pub qr: usize,
    /// One phase plane; `plane` = stride²·`phase`.
    pub phase: usize,
    pub plane: usize,
    /// Where the output goes in y: the offset from one output row to the next (w, unless the rows are
    /// several images side by side, `pointwise.rs`) and from one channel to the next (h·w).
    pub out_row: usize,
    pub out_channel: usize,
}

impl Flat {
    /// The layout with qr = h·wp (output rows × flat row) rounded up to a multiple of `tile` positions.
    pub fn new(s: &ConvShape, tile: usize) -> Flat {
        Flat::with_row(s, tile, s.ow + (s.kh - 1) / s.stride)
    }

    /// [`Flat::new`] with rows `wp` long, at least w + (k−1)/stride: the columns past that are zeros in the
    /// input and junk in the output, as the padding columns are ([`forward_flat`] widens the rows of some).
    pub fn with_row(s: &ConvShape, tile: usize, wp: usize) -> Flat {
        assert!(s.kh == s.kw, "the flat layout needs a square kernel: {s:?}");
        let reach = (s.kh - 1) / s.stride; // how far past its own position a tap reads, in a phase plane
        assert!(wp >= s.ow + reach, "a flat row of {wp} is too short for {s:?}");
        let hp = s.oh + reach;
        let qr = (s.oh * wp).next_multiple_of(tile);
        // The last tile reads up to qr − 1 + reach·(wp + 1); a phase plane must hold that, and be at least
        // the padded image's phase. A multiple of 16 keeps every plane 64-byte aligned relative to the first.
        let phase = (qr + reach * (wp + 1)).max(hp * wp).next_multiple_of(16);
        Flat {
            h: s.oh,
            w: s.ow,
            in_h: s.h,
            in_w: s.w,
            pad: s.padding,
            k: s.kh,
            stride: s.stride,
            wp,
            tile,
            qr,
            phase,
            plane: s.stride * s.stride * phase,
            out_row: s.ow,
            out_channel: s.oh * s.ow,
        }
    }

    /// Tap t = ky·k + kx reads input q + ky·wp + kx; with a stride, q + (ky/s)·wp + kx/s in phase plane
    /// (ky mod s, kx mod s).
    pub(super) fn taps(&self) -> Vec<usize> {
        let s = self.stride;
        let at = |ky: usize, kx: usize| ((ky % s) * s + kx % s) * self.phase + (ky / s) * self.wp + kx / s;
        (0..self.k * self.k).map(|t| at(t / self.k, t % self.k)).collect()
    }

    /// xpad [c, plane] ← x [c, in_h, in_w] with a zero border of `pad` and zeros after; with a stride,
    /// phase plane (a, b) holds xpad[s·i + a, s·j + b] at i·wp + j.
    pub fn pad(&self, x: &[f32], c: usize, xpad: &mut [f32]) {
        for (src, dst) in x.chunks_exact(self.in_h * self.in_w).zip(xpad.chunks_exact_mut(self.plane)).take(c) {
            if self.stride == 1 {
                self.pad_plane(src, dst);
            } else {
                self.pad_phases(src, dst);
            }
        }
    }

    /// One channel, stride 1: each row copied to its place in the zero-bordered plane.
    fn pad_plane(&self, src: &[f32], dst: &mut [f32]) {
        let mut next = 0; // dst[..next] is written
        for (y, row) in src.chunks_exact(self.in_w).enumerate() {
            let at = (y + self.pad) * self.wp + self.pad;
            dst[next..at].fill(0.0);
            dst[at..at + self.in_w].copy_from_slice(row);
            next = at + self.in_w;
        }
        dst[next..].fill(0.0);
    }

    /// Column j of a phase plane of column phase b holds input column s·j + b − pad, which is inside the
    /// image for j in j0..j1 (returned).
    pub(super) fn phase_columns(&self, b: usize) -> (usize, usize) {
        let s = self.stride;
        let j0 = self.pad.saturating_sub(b).div_ceil(s).min(self.wp);
        (j0, (self.in_w + self.pad).saturating_sub(b).div_ceil(s).clamp(j0, self.wp))
    }

    /// One channel, stride s: every input pixel goes to the one phase plane that holds it.
    fn pad_phases(&self, src: &[f32], dst: &mut [f32]) {
        let s = self.stride;
        let rows = self.h + (self.k - 1) / s; // the rows of a phase plane the taps read
        let input_row = |i: usize, a: usize| {
            let iy = (s * i + a).checked_sub(self.pad).filter(|&iy| iy < self.in_h)?;
            Some(&src[iy * self.in_w..][..self.in_w])
        };
        for plane in dst.chunks_exact_mut(self.phase) {
            plane[rows * self.wp..].fill(0.0);
        }
        if s == 2 {
            // The U-Net's stride: each input row split once into its two column phases.
            let columns = self.split_columns_of();
            let (top, bottom) = dst.split_at_mut(2 * self.phase);
            for (a, planes) in [top, bottom].into_iter().enumerate() {
                let (even, odd) = planes.split_at_mut(self.phase);
                let (even, odd) = (&mut even[..rows * self.wp], &mut odd[..rows * self.wp]);
                let rows = even.chunks_exact_mut(self.wp).zip(odd.chunks_exact_mut(self.wp));
                for (i, (even, odd)) in rows.enumerate() {
                    match input_row(i, a) {
                        Some(row) => split_columns(row, self.pad, columns, even, odd),
                        None => (even.fill(0.0), odd.fill(0.0)).1,
                    }
                }
            }
            return;
        }
        for (phase, plane) in dst.chunks_exact_mut(self.phase).enumerate() {
            let (a, b) = (phase / s, phase % s);
            let (j0, j1) = self.phase_columns(b);
            for (i, out) in plane[..rows * self.wp].chunks_exact_mut(self.wp).enumerate() {
                let Some(row) = input_row(i, a) else {
                    out.fill(0.0);
                    continue;
                };
                out[..j0].fill(0.0);
                out[j1..].fill(0.0);
                let taken = row[s * j0 + b - self.pad..].iter().step_by(s);
                out[j0..j1].iter_mut().zip(taken).for_each(|(o, &v)| *o = v);
            }
        }
    }

    /// Stride 2: the columns j0..j1 each of the even and odd column phases holds (`phase_columns`), and
    /// p0..p1, those both hold.
    fn split_columns_of(&self) -> SplitColumns {
        let ((e0, e1), (o0, o1)) = (self.phase_columns(0), self.phase_columns(1));
        let p0 = e0.max(o0);
        SplitColumns { even: (e0, e1), odd: (o0, o1), pairs: (p0, e1.min(o1).max(p0)) }
    }
}

/// Which columns of a stride-2 layout's two column phases come from the image ([`Flat::split_columns_of`]).
#[derive(Clone, Copy)]
struct SplitColumns {
    even: (usize, usize),
    odd: (usize, usize),
    pairs: (usize, usize),
}

/// Stride 2: one input row into its even and odd columns of the padded layout, even[j] = row[2j − pad]
/// and odd[j] = row[2j + 1 − pad] where those are inside the row, zeros elsewhere. The columns both phases
/// hold are read as pairs, which the compiler turns into vector loads and shuffles.
fn split_columns(row: &[f32], pad: usize, columns: SplitColumns, even: &mut [f32], odd: &mut [f32]) {
    let SplitColumns { even: (e0, e1), odd: (o0, o1), pairs: (p0, p1) } = columns;
    let pairs = row[2 * p0 - pad..][..2 * (p1 - p0)].chunks_exact(2);
    for ((e, o), pair) in even[p0..p1].iter_mut().zip(&mut odd[p0..p1]).zip(pairs) {
        (*e, *o) = (pair[0], pair[1]);
    }
    for (out, (j0, j1), b) in [(even, (e0, e1), 0), (odd, (o0, o1), 1)] {
        out[..j0].fill(0.0);
        out[j1..].fill(0.0);
        for j in (j0..p0.min(j1)).chain(p1.max(j0)..j1) {
            out[j] = row[2 * j + b - pad];
        }
    }
}

/// weight [c_out, c_in, k, k] packed for [`direct_image`] with tiles of `c` output channels:
/// packed [c_out/c (rounded up), c_in, k·k, c], zeros for the channels past c_out. With `rotate`, packs the
/// weight of the input-gradient convolution instead: channels swapped and the kernel turned by 180°,
/// w'[ci, co, ky, kx] = weight[co, ci, k−1−ky, k−1−kx] (then c_in and c_out trade places).
pub fn pack_weight(weight: &[f32], c_out: usize, c_in: usize, kk: usize, c: usize, rotate: bool) -> Vec<f32> {
    let (rows, cols) = if rotate { (c_in, c_out) } else { (c_out, c_in) };
    let mut packed = crate::pool::take_dirty(rows.div_ceil(c) * c * cols * kk);
    // Block by block: row r (of `live` in the block) of the packed block holds weight[r, col, t] at
    // (col·kk + t)·c + r − block·c, or with `rotate` weight[col, r, kk − 1 − t]. Each loop reads the weight
    // in order where it can: a row of [c_in, kk] at a time, or with `rotate` the c rows side by side.
    for (block, out) in packed.chunks_exact_mut(cols * kk * c).enumerate() {
        let (r0, live) = (block * c, c.min(rows - block * c));
        if rotate {
            for (col_tap, d) in out.chunks_exact_mut(c).enumerate() {
                let (col, t) = (col_tap / kk, col_tap % kk);
                let first = (col * c_in + r0) * kk + (kk - 1 - t);
                d[..live].iter_mut().enumerate().for_each(|(i, v)| *v = weight[first + i * kk]);
                d[live..].fill(0.0);
            }
        } else {
            for i in 0..c {
                let row = (i < live).then(|| &weight[(r0 + i) * c_in * kk..][..c_in * kk]);
                for (j, d) in out.chunks_exact_mut(c).enumerate() {
                    d[i] = row.map_or(0.0, |row| row[j]);
                }
            }
        }
    }
    packed
}

/// Output channels C per forward tile and lanes per vector at each SIMD level. A tile is C channels × NV
/// vectors of positions, NV = 2 or 3 ([`vectors_per_tile`]): C·NV accumulator registers plus NV for the
/// input and a broadcast weight fit the register file (32 × 16 lanes for AVX-512, 16 × 8 for AVX2, 32 × 4
/// for NEON). On AVX2, 6 × 2 (15 registers) replaced 4 × 2 or 4 × 3 (the latter all 16): on an AMD EPYC
/// (Zen 3), `unet_kernels`, the builds alternated, three rounds, medians, forward [32, 32, 28, 28] → 32
/// 5.59 → 3.99 ms, [32, 64, 28, 28] → 64 15.68 → 10.99, [32, 256, 7, 7] → 128 1×1 1.79 → 1.24 (the Winograd
/// kernel of `winograd.rs` and the pointwise one share this tile).
pub fn forward_tile(level: Simd) -> (usize, usize) {
    match level {
        Simd::Avx512 => (8, 16),
        Simd::Avx2 => (6, 8),
        Simd::Baseline if cfg!(target_arch = "aarch64") => (8, 4),
        Simd::Baseline => (4, 4),
    }
}

/// Positions per tile of [`direct_image`] for `q` output positions at this level: 3 vectors, or 2 where
/// that rounds q up less (a 7×7 image is 63 positions: 64 in tiles of 32, but 96 in tiles of 48), or 2
/// always on AVX2 ([`vectors_per_tile`]).
pub fn tile_positions(level: Simd, q: usize) -> usize {
    vectors_per_tile(level, q) * forward_tile(level).1
}

/// NV for `q` positions (or Winograd tiles) at this level: 3, or 2 where that rounds q up less; always 2 on
/// AVX2, whose tile of C = 6 channels has room for no more.
pub fn vectors_per_tile(level: Simd, q: usize) -> usize {
    let lanes = forward_tile(level).1;
    match level {
        Simd::Avx2 => 2,
        _ if q.next_multiple_of(2 * lanes) < q.next_multiple_of(3 * lanes) => 2,
        _ => 3,
    }
}

/// The flat layout for [`direct_image`] at this level, in tiles of [`tile_positions`]. A "same"
/// convolution's rows are widened to a multiple of the vector lanes where that adds at most 1/8 of a row
/// (28×28: 30 → 32 on AVX2, 7% more products): then no vector of outputs runs across a row's end, and each
/// stores its valid lanes with at most one partial store instead of two runs ([`store_at`]). On the first
/// convolution, [32,1,28,28]→32, whose one input channel leaves the tiles mostly storing, `perf annotate`
/// put 55% of the kernel's samples in the stores and 30% in the products; its forward went 0.539 → 0.471
/// ms and the last one's input gradient (the same shape) 1.010 → 0.896 ms, while the last one's forward,
/// 32 channels → 1, read 1.058 → 1.066 (`unet_kernels`, AMD EPYC Zen 3, the builds alternated, five rounds,
/// medians).
pub fn forward_flat(level: Simd, s: &ConvShape) -> Flat {
    let narrow = Flat::new(s, 1);
    let lanes = forward_tile(level).1;
    let wide = narrow.wp.next_multiple_of(lanes);
    let wp = if is_same_conv(s) && (wide - narrow.wp) * 8 <= narrow.wp { wide } else { narrow.wp };
    Flat::with_row(s, tile_positions(level, Flat::with_row(s, 1, wp).qr), wp)
}

/// One image's direct convolution: what [`direct_image`] reads and writes.
pub struct DirectImage<'a> {
    pub xpad: &'a [f32],
    pub flat: &'a Flat,
    /// Where each tap reads, relative to an output position: `flat.taps()`, or one phase's taps for a
    /// strided convolution's input gradient (`strided.rs`).
    pub taps: &'a [usize],
    pub c_in: usize,
    pub packed: &'a [f32],
    pub c_out: usize,
    pub bias: Option<&'a [f32]>,
    pub y: &'a mut [f32],
}

/// y [c_out, h, w] = bias + the direct convolution of xpad [c_in, plane] with `packed` (from
/// [`pack_weight`] with this level's C), for a layout from [`forward_flat`]. The same loop computes the
/// forward (weight packed as is) and the input gradient (weight rotated, dy as xpad).
pub fn direct_image(level: Simd, job: DirectImage) {
    let DirectImage { xpad, flat, taps, c_in, packed, c_out, bias, y } = job;
    crate::cpu::check_supported(level);
    let (c, lanes) = forward_tile(level);
    let nv = flat.tile / lanes;
    // Everything the tiles read and write, checked once here: inputs up to the last tile's last tap, every
    // channel block of the packed weight, bias for every channel, a full qr per output row.
    // AVX2 has one kernel, of 2 vectors (`vectors_per_tile`).
    assert!(
        (nv == 2 || (nv == 3 && level != Simd::Avx2)) && flat.tile == nv * lanes && flat.qr.is_multiple_of(flat.tile)
    );
    let farthest = taps.iter().copied().max().unwrap_or(0);
    assert!(flat.plane >= flat.qr + farthest && xpad.len() >= c_in * flat.plane);
    assert!(flat.out_row >= flat.w && flat.h >= 1);
    let y_end = c_out.checked_sub(1).map_or(0, |last| last * flat.out_channel + (flat.h - 1) * flat.out_row + flat.w);
    assert!(packed.len() >= c_out.div_ceil(c) * c * c_in * taps.len() && y.len() >= y_end);
    assert!(bias.is_none_or(|b| b.len() >= c_out));
    let args = DirectImage { xpad, flat, taps, c_in, packed, c_out, bias, y };
    // SAFETY: the level is supported (checked above), and the asserts cover every access of the tiles; each
    // fixed count T is the taps' length.
    unsafe {
        match taps.len() {
            1 => direct_at::<1>(level, nv, args),
            2 => direct_at::<2>(level, nv, args),
            4 => direct_at::<4>(level, nv, args),
            9 => direct_at::<9>(level, nv, args),
            _ => direct_at::<0>(level, nv, args),
        }
    }
}

/// [`direct_tiles`] at this level and NV, for T taps (0: any number).
///
/// # Safety
/// As [`direct_tiles`].
unsafe fn direct_at<const T: usize>(level: Simd, nv: usize, args: DirectImage) {
    match (level, nv) {
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx512, 2) => direct_avx512::<2, T>(args),
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx512, _) => direct_avx512::<3, T>(args),
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx2, _) => direct_avx2::<T>(args),
        #[cfg(target_arch = "aarch64")]
        (_, 2) => direct_tiles::<vector::Neon, 8, 2, T>(args),
        #[cfg(target_arch = "aarch64")]
        _ => direct_tiles::<vector::Neon, 8, 3, T>(args),
        #[cfg(not(target_arch = "aarch64"))]
        (_, 2) => direct_tiles::<vector::Portable, 4, 2, T>(args),
        #[cfg(not(target_arch = "aarch64"))]
        _ => direct_tiles::<vector::Portable, 4, 3, T>(args),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn direct_avx512<const NV: usize, const T: usize>(args: DirectImage) {
    direct_tiles::<vector::Avx512, 8, NV, T>(args)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn direct_avx2<const T: usize>(args: DirectImage) {
    direct_tiles::<vector::Avx2, 6, 2, T>(args)
}

/// The tile loop: for each L = NV·lanes positions q0.., for each block of C output channels, the register
/// tile acc [C][NV vectors] starts at the bias and takes, for every (ci, tap), NV vector loads of
/// xpad[ci, q0 + tap ..] and C·NV fused multiply-adds with the broadcast weights.
///
/// # Safety
/// V's instruction set is available, and [`direct_image`]'s asserts hold.
#[inline(always)]
unsafe fn direct_tiles<V: F32Vector, const C: usize, const NV: usize, const T: usize>(
    DirectImage { xpad, flat, taps, c_in, packed, c_out, bias, y }: DirectImage,
) {
    // The taps as an array of their fixed count, if they have one (see below).
    let fixed: Option<[usize; T]> = (T > 0).then(|| taps.try_into().expect("T is the taps' count"));
    let l = NV * V::LANES;
    let block = c_in * taps.len() * C; // one block of C channels in `packed`
    let rows = flat.rows();
    for q0 in (0..flat.qr).step_by(l) {
        // Where each vector's lanes go in y (the same for every channel).
        let places: [Place; NV] = std::array::from_fn(|v| Place::of(rows, q0 + v * V::LANES, V::LANES));
        for cb in 0..c_out.div_ceil(C) {
            let mut acc = [[V::zero(); NV]; C];
            if let Some(b) = bias {
                for (c, row) in acc.iter_mut().enumerate() {
                    *row = [V::splat(b.get(cb * C + c).copied().unwrap_or(0.0)); NV];
                }
            }
            // The loop over taps with their count fixed where a convolution has few (one for a 1×1, one to
            // four for a stride-2 phase, nine for a 3×3), each count its own function (`direct_at`): a loop
            // over a slice, one pass long for a 1×1 convolution, held the products to about half the rate.
            // [32,128,7,7]→384 forward took 2.02 ms that way against 1.53 with one loop over the channels
            // (AMD EPYC Zen 3, `unet_kernels`, the builds alternated, three rounds, medians); a stand-alone
            // copy of the tile on one thread ran 73 GFLOP/s without the inner loop and 39–47 with it (90 is
            // the FMA peak). With every count in one function the one-tap loop reloaded its two input
            // pointers from the stack at each step, and the 1×1 forwards read 8–16% slower.
            let mut w = packed.as_ptr().add(cb * block); // [c_in, taps, C]
            let x0 = xpad.as_ptr().add(q0);
            match fixed {
                Some(taps) => Channels { x0, plane: flat.plane, c_in, w }.run(&mut acc, taps),
                None => {
                    for ci in 0..c_in {
                        let x_ci = x0.add(ci * flat.plane);
                        for &tap in taps {
                            fma_tap(&mut acc, x_ci.add(tap), w);
                            w = w.add(C);
                        }
                    }
                }
            }
            // Straight into y: a whole vector where it lies in one row's valid columns, else its runs of
            // valid columns by partial stores (the junk columns and the positions past the last row are
            // never written).
            // (From a copy: indexing the accumulators themselves in this loop made the compiler keep them in
            // memory through the whole tile loop above, 2.5× slower.)
            let finished = acc;
            for (c, vectors) in finished.iter().enumerate().take(c_out - cb * C) {
                let y_c = y.as_mut_ptr().add((cb * C + c) * flat.out_channel);
                for (&vector, &place) in vectors.iter().zip(&places) {
                    store_at(vector, y_c, place, rows);
                }
            }
        }
    }
}

/// A tile's inputs for [`Channels::run`]: channel ci's plane starts at x0 + ci·plane; the packed weights
/// [c_in, taps, C] at w.
#[derive(Clone, Copy)]
struct Channels {
    x0: *const f32,
    plane: usize,
    c_in: usize,
    w: *const f32,
}

impl Channels {
    /// acc += every (channel, tap) step of the tile, channels in order, the T taps of each in order.
    ///
    /// # Safety
    /// As [`fma_tap`], for every step.
    #[inline(always)]
    unsafe fn run<V: F32Vector, const C: usize, const NV: usize, const T: usize>(
        self,
        acc: &mut [[V; NV]; C],
        taps: [usize; T],
    ) {
        let (mut x_ci, mut w) = (self.x0, self.w);
        for _ in 0..self.c_in {
            for tap in taps {
                fma_tap(acc, x_ci.add(tap), w);
                w = w.add(C);
            }
            x_ci = x_ci.add(self.plane);
        }
    }
}

/// One (channel, tap) step of a tile (and one step of the Winograd products, `winograd.rs`, and weight
/// gradient, `winograd_dweight.rs`): NV vector loads of x at `x`, and acc[c][v] += w[c] · x[v] for the C broadcast
/// weights at `w`.
///
/// # Safety
/// V's instruction set is available; x[..NV·lanes] and w[..C] are readable.
#[inline(always)]
pub(super) unsafe fn fma_tap<V: F32Vector, const C: usize, const NV: usize>(
    acc: &mut [[V; NV]; C],
    x: *const f32,
    w: *const f32,
) {
    let x: [V; NV] = std::array::from_fn(|v| unsafe { V::load(x.add(v * V::LANES)) });
    for (c, acc_c) in acc.iter_mut().enumerate() {
        let w_c = V::splat(*w.add(c));
        for v in 0..NV {
            acc_c[v] = w_c.mul_add(x[v], acc_c[v]);
        }
    }
}

/// How the rows of a flat layout go to y: flat position q is (row q / wp, column q % wp); columns from w on
/// and rows from `rows` on are junk; a real one goes to y[row·out_row + column]. A [`Flat`]'s are
/// [`Flat::rows`]; the Winograd kernel's outputs (`winograd.rs`) have their own.
#[derive(Clone, Copy)]
pub(super) struct Rows {
    pub wp: usize,
    pub w: usize,
    pub rows: usize,
    pub out_row: usize,
}

impl Flat {
    pub(super) fn rows(&self) -> Rows {
        Rows { wp: self.wp, w: self.w, rows: self.h, out_row: self.out_row }
    }
}

/// Where one vector of flat positions q..q + lanes goes in y, the same for every channel: all of it into
/// one row's valid columns at y[at..] (most vectors: one plain store), runs of it across a row's end from
/// (row, col) on, or nothing (past the last row); [`store_at`] writes it. The tiles used to build a list of
/// every vector's runs instead, 392 bytes each, moved by `memcpy`: on the first convolution, [32, 1, 28,
/// 28] → 32, whose tiles do little else (one input channel), `perf record` on its `unet_kernels` forward
/// put 15% of the samples in `memmove`; without it, that forward went 0.668 → 0.545 ms (the builds
/// alternated, three rounds, medians).
#[derive(Clone, Copy)]
pub(super) enum Place {
    Whole(usize),
    Split { row: usize, col: usize },
    Nothing,
}

impl Place {
    pub(super) fn of(rows: Rows, q: usize, lanes: usize) -> Place {
        let (row, col) = (q / rows.wp, q % rows.wp);
        if row >= rows.rows {
            Place::Nothing
        } else if col + lanes <= rows.w {
            Place::Whole(row * rows.out_row + col)
        } else {
            Place::Split { row, col }
        }
    }
}

/// Writes the lanes of `v` that are real output pixels to their places in y_c ([`Place`]): a whole vector by
/// one store; a split one run by run, each ending at a row's last valid column, the junk columns after it
/// skipped, nothing past the last row.
///
/// # Safety
/// V's instruction set is available, `place` is `Place::of(rows, q, V::LANES)` for some q, and
/// y_c[..(rows.rows − 1)·out_row + w] is writable.
#[inline(always)]
pub(super) unsafe fn store_at<V: F32Vector>(v: V, y_c: *mut f32, place: Place, rows: Rows) {
    let (mut row, mut col) = match place {
        Place::Whole(at) => return v.store(y_c.add(at)),
        Place::Nothing => return,
        Place::Split { row, col } => (row, col),
    };
    let mut lane = 0;
    while lane < V::LANES && row < rows.rows {
        if col < rows.w {
            let len = (rows.w - col).min(V::LANES - lane);
            v.store_lanes(y_c.wrapping_add(row * rows.out_row + col).wrapping_sub(lane), lane, lane + len);
            (lane, col) = (lane + len, col + len);
        } else {
            (lane, row, col) = (lane + rows.wp - col, row + 1, 0);
        }
    }
}

/// The direct convolution: y_n = the valid columns of bias + direct(pad(x_n), weight), in parallel over
/// images and, when there are fewer images than threads, over blocks of output channels too (each output
/// is computed by the same operations either way). Must equal `conv2d_forward_naive` up to rounding.
/// `level`: the SIMD level (the op passes `cpu::simd()`; tests run every level).
pub fn conv2d_forward_direct(level: Simd, x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    assert!(is_same_conv(s) || is_strided_conv(s), "conv2d_forward_direct: not a same or strided convolution: {s:?}");
    let packed = Scratch::from(pack(level, weight, s, false));
    conv(level, SameConv { input: x, ch_in: s.c_in, packed: &packed, ch_out: s.c_out, bias, shape: s })
}

/// The weight packed for [`conv`] at this level; with `rotate`, for the input gradient.
pub fn pack(level: Simd, weight: &[f32], s: &ConvShape, rotate: bool) -> Vec<f32> {
    pack_weight(weight, s.c_out, s.c_in, s.kh * s.kw, forward_tile(level).0, rotate)
}

/// The direct "same" convolution of `job` (its weight from [`pack`]), per image: pad, then [`direct_image`].
pub fn conv(level: Simd, job: SameConv) -> Vec<f32> {
    let SameConv { input, ch_in, packed, ch_out, bias, shape: s } = job;
    debug_assert!(is_same_conv(s) || is_strided_conv(s));
    let flat = forward_flat(level, s);
    let taps = flat.taps();
    let (in_hw, hw, c) = (s.h * s.w, s.ohw(), forward_tile(level).0);
    let block_len = ch_in * s.kh * s.kw * c; // one block of c channels in `packed`
    per_image(s.n, ch_out, hw, c, |n, co0, out_part| {
        let count = out_part.len() / hw;
        let mut xpad = crate::pool::scratch(ch_in * flat.plane); // [ch_in, plane]
        flat.pad(&input[n * ch_in * in_hw..][..ch_in * in_hw], ch_in, &mut xpad);
        let bias = bias.map(|b| &b[co0..co0 + count]);
        let packed = &packed[co0 / c * block_len..];
        direct_image(
            level,
            DirectImage { xpad: &xpad, flat: &flat, taps: &taps, c_in: ch_in, packed, c_out: count, bias, y: out_part },
        );
    })
}
