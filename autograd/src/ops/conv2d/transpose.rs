//! Channel-minor layouts: an image [c, h, w] transposed to [pixel, channel] and back, in registers
//! (LANES × LANES blocks), for the paths that keep channels in the vector lanes (`winograd_cm.rs`,
//! `winograd_dweight.rs`, `strided_cm.rs`, and dy's flat layout in `direct_dweight.rs`); attention's
//! `short.rs` and `permute`'s swap of the last two axes transpose their matrices with it too (rows as
//! channels, one row of pixels).

use crate::cpu::Simd;
use crate::vector::{self, F32Vector};

/// src [c, h, w] into dst [rows, cols, cp], channel-minor, with `off` zero pixels above and left of the image.
pub struct ToChannelMinor<'a> {
    pub src: &'a [f32],
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub off: usize,
    pub cols: usize,
    pub cp: usize,
    pub dst: &'a mut [f32],
}

/// dst [rows, cols, cp] ← src [c, h, w], channel-minor: dst[(y + off)·cols + x + off, ch] = src[ch, y, x],
/// zeros everywhere else (the border, past the image, channels c..cp). Blocks of LANES channels × LANES
/// pixels are transposed in registers ([`transpose_square`]); the channels and pixels left over one by one.
pub fn transpose_into(level: Simd, job: ToChannelMinor) {
    let ToChannelMinor { src, c, h, w, off, cols, cp, dst } = job;
    crate::cpu::check_supported(level);
    let line = cols * cp; // one row of pixels
    assert!(src.len() >= c * h * w && c <= cp && w + off <= cols && dst.len() >= (h + off) * line);
    // The zeros: rows above and below, pixels left and right, channels past c.
    dst[..off * line].fill(0.0);
    dst[(h + off) * line..].fill(0.0);
    for row in dst[off * line..(h + off) * line].chunks_exact_mut(line) {
        row[..off * cp].fill(0.0);
        row[(off + w) * cp..].fill(0.0);
        if c < cp {
            row[off * cp..(off + w) * cp].chunks_exact_mut(cp).for_each(|px| px[c..].fill(0.0));
        }
    }
    let args = ToChannelMinor { src, c, h, w, off, cols, cp, dst };
    // SAFETY: the level is supported (checked above), and the assert covers every access.
    unsafe {
        match level {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => transpose_avx512(args),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => transpose_avx2(args),
            #[cfg(target_arch = "aarch64")]
            _ => transpose_blocks::<vector::Neon>(args),
            #[cfg(not(target_arch = "aarch64"))]
            _ => transpose_blocks::<vector::Portable>(args),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn transpose_avx512(args: ToChannelMinor) {
    transpose_blocks::<vector::Avx512>(args)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_avx2(args: ToChannelMinor) {
    transpose_blocks::<vector::Avx2>(args)
}

/// rows[..LANES] (row k = lanes of one vector) becomes its transpose: after log₂ LANES rounds of
/// interleaving row i with row i + LANES/2, row k holds lane k of every original row. (With 2×2:
/// zip([a₀ a₁], [b₀ b₁]) = [a₀ b₀], [a₁ b₁].)
#[inline(always)]
pub(super) unsafe fn transpose_square<V: F32Vector>(rows: &mut [V; 16]) {
    let n = V::LANES;
    for _round in 0..n.trailing_zeros() {
        let mut next = *rows;
        for i in 0..n / 2 {
            let (lo, hi) = rows[i].zip(rows[i + n / 2]);
            next[2 * i] = lo;
            next[2 * i + 1] = hi;
        }
        *rows = next;
    }
}

/// # Safety
/// V's instruction set is available, and [`transpose_into`]'s assert holds.
#[inline(always)]
unsafe fn transpose_blocks<V: F32Vector>(ToChannelMinor { src, c, h, w, off, cols, cp, dst }: ToChannelMinor) {
    let (n, hw) = (V::LANES, h * w);
    // Blocks of n consecutive pixels of the plane (rows run on into the next, so 7×7 and 14×14 maps are
    // blocked too): every whole block, then one that ends at the plane's end, overlapping the one before
    // (it rewrites a few pixels with the same values); planes smaller than a vector go one pixel at a time.
    let (full_c, full_p) = (c - c % n, if hw >= n { hw } else { 0 });
    let starts = (0..full_p.saturating_sub(n - 1)).step_by(n).chain((full_p % n != 0).then(|| full_p - n));
    let out = dst.as_mut_ptr();
    let at = |p: usize| ((p / w + off) * cols + p % w + off) * cp; // pixel p of the plane in dst
                                                                   // Channel blocks outermost: the block's n input planes are then read front to back, n sequential streams
                                                                   // that the hardware prefetcher follows (row by row across all channels instead, the whole weight
                                                                   // gradient of [32, 96, 28, 28] → 32 on one thread took 11.3–12.0 ms instead of 10.2–11.0).
    for c0 in (0..full_c).step_by(n) {
        for p0 in starts.clone() {
            let mut rows = [V::zero(); 16];
            for (k, r) in rows.iter_mut().enumerate().take(n) {
                *r = V::load(src.as_ptr().add((c0 + k) * hw + p0));
            }
            transpose_square(&mut rows);
            for (i, r) in rows.iter().enumerate().take(n) {
                r.store(out.add(at(p0 + i) + c0));
            }
        }
        for p in full_p..hw {
            for ch in c0..c0 + n {
                dst[at(p) + ch] = src[ch * hw + p];
            }
        }
    }
    for ch in full_c..c {
        for p in 0..hw {
            dst[at(p) + ch] = src[ch * hw + p];
        }
    }
}

/// The first c channels of src [rows, cols, cp] (channel-minor) back into dst [c, h, w].
pub struct FromChannelMinor<'a> {
    pub src: &'a [f32],
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub cols: usize,
    pub cp: usize,
    pub dst: &'a mut [f32],
}

/// dst [c, h, w] ← the first c channels of src [rows, cols, cp] (channel-minor, pixel (y, x) at
/// y·cols + x): the inverse of `transpose_into` with off = 0. Blocks of LANES pixels × LANES channels are
/// transposed in registers, the channels and pixels left over one by one.
pub fn transpose_from(level: Simd, job: FromChannelMinor) {
    let FromChannelMinor { src, c, h, w, cols, cp, dst } = job;
    crate::cpu::check_supported(level);
    assert!(c <= cp && w <= cols && src.len() >= ((h.max(1) - 1) * cols + w) * cp && dst.len() >= c * h * w);
    let args = FromChannelMinor { src, c, h, w, cols, cp, dst };
    // SAFETY: the level is supported (checked above), and the assert covers every access.
    unsafe {
        match level {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => from_avx512(args),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => from_avx2(args),
            #[cfg(target_arch = "aarch64")]
            _ => from_blocks::<vector::Neon>(args),
            #[cfg(not(target_arch = "aarch64"))]
            _ => from_blocks::<vector::Portable>(args),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn from_avx512(args: FromChannelMinor) {
    from_blocks::<vector::Avx512>(args)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn from_avx2(args: FromChannelMinor) {
    from_blocks::<vector::Avx2>(args)
}

/// # Safety
/// V's instruction set is available, and [`transpose_from`]'s assert holds.
#[inline(always)]
unsafe fn from_blocks<V: F32Vector>(FromChannelMinor { src, c, h, w, cols, cp, dst }: FromChannelMinor) {
    let (n, hw) = (V::LANES, h * w);
    // As `transpose_into`: blocks of n consecutive pixels, the last one overlapping the one before.
    let (full_c, full_p) = (c - c % n, if hw >= n { hw } else { 0 });
    let starts = (0..full_p.saturating_sub(n - 1)).step_by(n).chain((full_p % n != 0).then(|| full_p - n));
    let at = |p: usize| ((p / w) * cols + p % w) * cp; // pixel p of the plane in src
    let out = dst.as_mut_ptr();
    for c0 in (0..full_c).step_by(n) {
        for p0 in starts.clone() {
            let mut rows = [V::zero(); 16];
            for (i, r) in rows.iter_mut().enumerate().take(n) {
                *r = V::load(src.as_ptr().add(at(p0 + i) + c0));
            }
            transpose_square(&mut rows);
            for (k, r) in rows.iter().enumerate().take(n) {
                r.store(out.add((c0 + k) * hw + p0));
            }
        }
        for p in full_p..hw {
            for ch in c0..c0 + n {
                dst[ch * hw + p] = src[at(p) + ch];
            }
        }
    }
    for ch in full_c..c {
        for p in 0..hw {
            dst[ch * hw + p] = src[at(p) + ch];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transpose_into at every SIMD level: whole register blocks and the channels and pixels left over.
    #[test]
    fn transpose_into_moves_every_value_and_zeros_the_rest() {
        for (c, h, w, off, cp) in [(17, 3, 19, 1, 32), (16, 2, 16, 0, 16), (5, 4, 3, 1, 8), (33, 1, 40, 0, 48)] {
            let src: Vec<f32> = (0..c * h * w).map(|i| i as f32 + 1.0).collect();
            let cols = w + 2 * off;
            for level in crate::cpu::available() {
                let mut dst = vec![f32::NAN; (h + 2 * off) * cols * cp];
                transpose_into(level, ToChannelMinor { src: &src, c, h, w, off, cols, cp, dst: &mut dst });
                for (i, &v) in dst.iter().enumerate() {
                    let (pixel, ch) = (i / cp, i % cp);
                    let (py, px) = (pixel / cols, pixel % cols);
                    let inside = ch < c && (off..off + h).contains(&py) && (off..off + w).contains(&px);
                    let want = if inside { src[(ch * h + py - off) * w + px - off] } else { 0.0 };
                    assert_eq!(v, want, "c {c} h {h} w {w} at {level:?}: pixel ({py}, {px}) channel {ch}");
                }
            }
        }
    }

    /// transpose_from at every SIMD level undoes a channel-minor layout, whole blocks and leftovers.
    #[test]
    fn transpose_from_reads_every_value_back() {
        for (c, h, w, cols, cp) in [(17, 3, 19, 20, 32), (16, 2, 8, 8, 16), (5, 4, 3, 4, 8), (33, 7, 7, 8, 48)] {
            let src: Vec<f32> = (0..h * cols * cp).map(|i| i as f32).collect();
            for level in crate::cpu::available() {
                let mut dst = vec![f32::NAN; c * h * w];
                transpose_from(level, FromChannelMinor { src: &src, c, h, w, cols, cp, dst: &mut dst });
                for ch in 0..c {
                    for y in 0..h {
                        for x in 0..w {
                            let want = src[(y * cols + x) * cp + ch];
                            assert_eq!(dst[(ch * h + y) * w + x], want, "c {c} at {level:?}: ({ch}, {y}, {x})");
                        }
                    }
                }
            }
        }
    }
}
