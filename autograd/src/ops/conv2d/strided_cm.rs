//! Strided convolutions onto small maps (the U-Net's stride-2 downsampling to 14×14 and 7×7) with the
//! channels in the vector lanes: the forward and the weight gradient ([`dweight`]; the input gradient stays
//! on `strided.rs`'s phase planes: as channel-minor products per phase of its pixels it measured slower,
//! [32, 64, 14, 14] → 64 backward 1.71 → 1.83 ms).
//!
//! Legend as in `winograd_cm.rs`: `cpi`, `cpo` the channel counts padded to whole vectors, `xᵀ` an image
//! laid out channel-minor [pixel, channel], `R` × `NV` the register tile (output pixels × vectors of output
//! channels), `B` = NV·lanes output channels per block; `kk` = k·k taps, `cols` = w + 2·padding.
//!
//! # Why not the phase planes
//! `strided.rs` runs `direct.rs`'s kernel with output positions in the lanes. On a 7×7 output a phase
//! plane's row is 8 long (7 columns and the junk one) and 8 rows cover the image, so 64 positions are
//! computed for 49 pixels, and the split into phase planes took a fifth of the time (`perf record`:
//! [32, 64, 14, 14] → 64, 60% the kernel, 22% `Flat::pad`, which moves one float at a time). Here the
//! lanes hold output channels, so every product is a real one, and the only copy is a transpose of x in
//! registers. Measured forward on the Intel Xeon (`unet_kernels`, the builds alternated, two rounds, ms):
//! [32, 64, 14, 14] → 64 0.77, 0.75 → 0.54, 0.55; [32, 32, 28, 28] → 32 0.73, 0.71 → 0.59, 0.59.
//!
//! # The products
//! With x channel-minor and zero-bordered, xᵀ[(y + padding)·cols + x + padding, ci] = x[ci, y, x], output
//! pixel p = (oy, ox) of image n reads, for tap (ky, kx), the row of xᵀ at pixel (s·oy + ky)·cols +
//! s·ox + kx: one fixed offset per tap from the pixel's own base. So
//! ```text
//! yᵀ[p, co] = bias[co] + Σ_{ky,kx} Σ_ci xᵀ[base(p) + ky·cols + kx, ci] · weight[co, ci, ky, kx]
//! ```
//! a matrix product per tap, whose rows (the pixels) are gathered by address: the register tile takes R
//! pixels (their xᵀ values broadcast) × NV vectors of output channels (the packed weight, loaded), as
//! `winograd_cm.rs`'s products do. Taps go in groups whose blocks of weights ([cpi, B] each, 16 KB for 64 ×
//! 64 channels) fit in L1 together ([`TAP_GROUP_BYTES`]: 2 taps at 64 × 64 channels, all nine at 32 × 32),
//! the outer loop, the partial sums kept in yᵀ between groups, so that a group's weights stay in L1 while
//! every pixel of the call meets them (all nine taps' at 64 × 64 would be 144 KB). One tap a group, as
//! before, passed the sums through yᵀ after every 32 products at 32 channels: [32, 32, 28, 28] → 32 forward
//! 622 → 562 µs with all nine in one group, [32, 64, 14, 14] → 64 520 → 492 µs with two (`unet_kernels
//! --bench 'unet_kernels/forward/(03|09)$'`, builds alternated, four rounds, medians). Each output is bias,
//! then the taps in order, each over ci in order, whatever the grouping of taps or images or the threads. A
//! last transpose puts y back in [channel, pixel] order. Must equal `conv2d_forward_naive` up to rounding.

use rayon::prelude::*;

use super::direct::is_strided_conv;
use super::parallel::{images_per_call, sum_partials};
use super::shape::{ConvShape, SameConv};
use super::transpose::{transpose_from, transpose_into, FromChannelMinor, ToChannelMinor};
use crate::cpu::Simd;
use crate::vector::{self, F32Vector};

/// The largest output map (oh·ow) the dispatch (`path.rs`) sends here: the U-Net's 14×14 and 7×7. The
/// phase planes waste their junk column and row (15 of 64 positions at 7×7) and their split costs more
/// per product on small maps; onto 28×28 the two paths measured the same ([32, 32, 56, 56] → 32: 2.49–2.52
/// ms here, 2.49–2.55 on phase planes), so larger maps stay there.
pub const MAX_PIXELS: usize = 200;

/// Bytes of packed weights the products keep in L1 at once: as many taps' blocks ([cpi, B]) as fit, at
/// least one. With few channels all nine taps fit ([32, 32, 28, 28] → 32: 4 KB a tap), and the sums stay
/// in registers from the first tap to the last instead of passing through yᵀ after each tap's 32 products.
const TAP_GROUP_BYTES: usize = 36 << 10;

/// True for the convolutions the dispatch sends here: strided (`direct::is_strided_conv`) onto at most
/// [`MAX_PIXELS`] output pixels.
pub fn is_strided_cm_conv(s: &ConvShape) -> bool {
    is_strided_conv(s) && s.ohw() <= MAX_PIXELS
}

/// The register tile for `c_out` output channels at each SIMD level: R pixels × NV vectors of output
/// channels (R·NV accumulators, NV weight vectors and a broadcast within the register file), and the
/// lanes per vector. Few output channels (the U-Net's 32) take a tile two vectors wide, which leaves 32
/// channels as they are where the four-vector tile would pad them to 64. AVX2 takes 6 × 2 always (B = 16,
/// no padding for the U-Net's 32 to 384 channels): its 4 × 3 tile, 16 registers to the last one, padded 32
/// to 48 and 64 to 72 and ran at about half the speed, for the same reason as `winograd_cm::tile`'s.
pub fn tile(level: Simd, c_out: usize) -> (usize, usize, usize) {
    match level {
        Simd::Avx512 if c_out <= 32 => (12, 2, 16),
        Simd::Avx512 => (6, 4, 16),
        Simd::Avx2 => (6, 2, 8),
        Simd::Baseline if cfg!(target_arch = "aarch64") => (6, 4, 4),
        Simd::Baseline => (4, 2, 4),
    }
}

/// (cpo, cpi): output channels rounded up to the register tile's NV vectors, input channels to whole vectors.
fn padding(level: Simd, c_out: usize, c_in: usize) -> (usize, usize) {
    let (_, nv, lanes) = tile(level, c_out);
    (c_out.next_multiple_of(nv * lanes), c_in.next_multiple_of(lanes))
}

/// weight [c_out, c_in, k, k] packed in blocks of B output channels: packed [cpo/B, kk, cpi, B] =
/// weight[co, ci, tap], zeros in the padding.
pub fn pack(level: Simd, weight: &[f32], s: &ConvShape) -> Vec<f32> {
    let (_, nv, lanes) = tile(level, s.c_out);
    let (b, kk) = (nv * lanes, s.kh * s.kw);
    let (cpo, cpi) = padding(level, s.c_out, s.c_in);
    let mut packed = crate::pool::take_dirty(cpo * kk * cpi);
    packed.par_chunks_mut(kk * cpi * b).enumerate().for_each(|(block, out)| {
        for (tap_ci, run) in out.chunks_exact_mut(b).enumerate() {
            let (tap, ci) = (tap_ci / cpi, tap_ci % cpi);
            for (j, w) in run.iter_mut().enumerate() {
                let co = block * b + j;
                *w = match co < s.c_out && ci < s.c_in {
                    true => weight[(co * s.c_in + ci) * kk + tap],
                    false => 0.0,
                };
            }
        }
    });
    packed
}

/// y [n, c_out, oh, ow] = bias + the strided convolution of `job`'s input with its weight packed by
/// [`pack`] at this level: per group of images, x transposed in, the products, y transposed out.
pub fn conv(level: Simd, job: SameConv) -> Vec<f32> {
    let SameConv { input, ch_in, packed, ch_out, bias, shape: s } = job;
    assert!(is_strided_conv(s) && ch_in == s.c_in && ch_out == s.c_out, "strided_cm::conv: {s:?}");
    crate::cpu::check_supported(level);
    let (r, nv, _) = tile(level, s.c_out);
    let (cpo, cpi) = padding(level, s.c_out, s.c_in);
    let (kk, cols, rows) = (s.kh * s.kw, s.w + 2 * s.padding, s.h + 2 * s.padding);
    assert!(packed.len() >= cpo * kk * cpi, "strided_cm::conv: the packed weight is too short for {s:?}");
    let (hw, ohw, x_image) = (s.h * s.w, s.ohw(), rows * cols * cpi);
    let mut bias_padded = vec![0.0; cpo];
    if let Some(b) = bias {
        bias_padded[..s.c_out].copy_from_slice(&b[..s.c_out]);
    }
    // At most enough images for about 256 output pixels, in calls shared equally by the threads (onto 7×7
    // on 2 threads: 8 calls of 4 images, where 7 calls of 5, 5, 5, 5, 5, 5 and 2 left one thread 17 images
    // to the other's 15: 0.62 → 0.55 ms for [32, 64, 14, 14] → 64).
    let group = images_per_call(s.n, 256 / ohw.max(1), rayon::current_num_threads());
    let mut out = crate::pool::take_dirty(s.n * s.c_out * ohw);
    out.par_chunks_mut(group * s.c_out * ohw).enumerate().for_each(|(g, out_g)| {
        let images = out_g.len() / (s.c_out * ohw);
        let mut xt = crate::pool::scratch(images * x_image);
        for (j, dst) in xt.chunks_exact_mut(x_image).enumerate() {
            let src = &input[(g * group + j) * s.c_in * hw..][..s.c_in * hw];
            let (c, h, w, off, cp) = (s.c_in, s.h, s.w, s.padding, cpi);
            transpose_into(level, ToChannelMinor { src, c, h, w, off, cols, cp, dst });
        }
        let pixels = images * ohw;
        let mut yt = crate::pool::scratch(pixels.next_multiple_of(r) * cpo);
        let job = Products { xt: &xt, images, s, cols, cpi, packed, cpo, bias: &bias_padded, yt: &mut yt };
        // SAFETY: the level is supported (checked above); `products` checks the sizes it relies on.
        unsafe {
            match (level, nv) {
                #[cfg(target_arch = "x86_64")]
                (Simd::Avx512, 2) => products_avx512::<12, 2>(job),
                #[cfg(target_arch = "x86_64")]
                (Simd::Avx512, _) => products_avx512::<6, 4>(job),
                #[cfg(target_arch = "x86_64")]
                (Simd::Avx2, _) => products_avx2::<6, 2>(job),
                #[cfg(target_arch = "aarch64")]
                _ => products::<vector::Neon, 6, 4>(job),
                #[cfg(not(target_arch = "aarch64"))]
                _ => products::<vector::Portable, 4, 2>(job),
            }
        }
        for (src, dst) in yt.chunks(ohw * cpo).zip(out_g.chunks_exact_mut(s.c_out * ohw)) {
            let (c, h, w, cp) = (s.c_out, s.oh, s.ow, cpo);
            transpose_from(level, FromChannelMinor { src, c, h, w, cols: s.ow, cp, dst });
        }
    });
    out
}

/// Images per group of [`dweight`]: at most enough for about 512 output pixels, in a number of groups that
/// two threads share equally (`images_per_call` for 2 threads: onto 7×7, 4 groups of 8 images where 11 at
/// a time made 3 groups, one thread's two to the other's one). From the shape alone, not the threads: the
/// groups' partial sums are added in group order, so the grouping must not depend on them.
fn dweight_group(s: &ConvShape) -> usize {
    images_per_call(s.n, 512usize.div_ceil(s.ohw().max(1)), 2)
}

/// dweight [c_out, c_in, k, k] of a strided convolution onto a small map, channel-minor (where
/// `direct_dweight.rs` splits x into phase planes one row at a time, 10% of [32, 64, 14, 14] → 64's
/// backward by `perf`, here x is transposed in registers; that backward 1.73 → 1.62 ms, [32, 32, 28, 28] →
/// 32's 1.78 → 1.63, three alternated rounds):
/// ```text
/// dweight[co, ci, tap] = Σ_n Σ_p xᵀ_n[base(p) + tap, ci] · dyᵀ_n[p, co]
/// ```
/// the forward's windows (`base`, `tap` as in the module doc) with the sum over output pixels p: per group
/// of [`dweight_group`] images in parallel, the register tile R input channels (broadcast, R contiguous
/// floats of one xᵀ row) × NV vectors of output channels (dyᵀ[p], loaded), summed over every pixel of the
/// group in order; then Σ over groups in group order. Must equal `conv2d_backward_naive`'s dweight up to
/// rounding.
pub fn dweight(level: Simd, x: &[f32], dy: &[f32], s: &ConvShape) -> Vec<f32> {
    crate::cpu::check_supported(level);
    // The forward's register tile, its R pixels now R input channels (x broadcast), NV vectors of output
    // channels (dyᵀ loaded), summed over pixels.
    let (r, nv, lanes) = tile(level, s.c_out);
    let cpo = s.c_out.next_multiple_of(nv * lanes);
    let cpi = s.c_in.next_multiple_of(r);
    let (kk, cols, rows) = (s.kh * s.kw, s.w + 2 * s.padding, s.h + 2 * s.padding);
    let (hw, ohw, x_image) = (s.h * s.w, s.ohw(), rows * cols * cpi);
    let group = dweight_group(s);
    let groups = s.n.div_ceil(group);
    let wlen = kk * cpi * cpo; // dwᵀ [kk, cpi, cpo] per group
    let mut partial = crate::pool::scratch(groups * wlen);
    partial.par_chunks_mut(wlen).enumerate().for_each(|(g, dwt)| {
        let (n0, images) = (g * group, group.min(s.n - g * group));
        let mut xt = crate::pool::scratch(images * x_image);
        for (j, dst) in xt.chunks_exact_mut(x_image).enumerate() {
            let src = &x[(n0 + j) * s.c_in * hw..][..s.c_in * hw];
            let (c, h, w, off, cp) = (s.c_in, s.h, s.w, s.padding, cpi);
            transpose_into(level, ToChannelMinor { src, c, h, w, off, cols, cp, dst });
        }
        let mut dyt = crate::pool::scratch(images * ohw * cpo);
        for (j, dst) in dyt.chunks_exact_mut(ohw * cpo).enumerate() {
            let src = &dy[(n0 + j) * s.c_out * ohw..][..s.c_out * ohw];
            let (c, h, w, cp) = (s.c_out, s.oh, s.ow, cpo);
            transpose_into(level, ToChannelMinor { src, c, h, w, off: 0, cols: s.ow, cp, dst });
        }
        let bases: Vec<usize> = (0..images * ohw)
            .map(|p| {
                let (n, q) = (p / ohw, p % ohw);
                n * x_image + (s.stride * (q / s.ow) * cols + s.stride * (q % s.ow)) * cpi
            })
            .collect();
        let taps: Vec<usize> = (0..kk).map(|t| ((t / s.kw) * cols + t % s.kw) * cpi).collect();
        let job = Sums { xt: &xt, bases: &bases, taps: &taps, cpi, dyt: &dyt, cpo, dwt };
        // SAFETY: the level is supported (checked above); `sums` checks the sizes it relies on.
        unsafe {
            match (level, nv) {
                #[cfg(target_arch = "x86_64")]
                (Simd::Avx512, 2) => sums_avx512::<12, 2>(job),
                #[cfg(target_arch = "x86_64")]
                (Simd::Avx512, _) => sums_avx512::<6, 4>(job),
                #[cfg(target_arch = "x86_64")]
                (Simd::Avx2, _) => sums_avx2::<6, 2>(job),
                #[cfg(target_arch = "aarch64")]
                _ => sums::<vector::Neon, 6, 4>(job),
                #[cfg(not(target_arch = "aarch64"))]
                _ => sums::<vector::Portable, 4, 2>(job),
            }
        }
    });
    let total = sum_partials(&partial, groups, wlen); // dwᵀ [kk, cpi, cpo]
    let mut dweight = crate::pool::take_dirty(s.c_out * s.c_in * kk);
    dweight.par_chunks_mut(s.c_in * kk).enumerate().for_each(|(co, out)| {
        for (ci_t, w) in out.iter_mut().enumerate() {
            let (ci, t) = (ci_t / kk, ci_t % kk);
            *w = total[(t * cpi + ci) * cpo + co];
        }
    });
    crate::pool::give(total);
    dweight
}

/// What [`sums`] reads and writes: xᵀ [images, rows, cols, cpi], each pixel's window base in it, the taps'
/// offsets, dyᵀ [pixels, cpo], and dwᵀ [kk, cpi, cpo].
struct Sums<'a> {
    xt: &'a [f32],
    bases: &'a [usize],
    taps: &'a [usize],
    cpi: usize,
    dyt: &'a [f32],
    cpo: usize,
    dwt: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn sums_avx512<const R: usize, const NV: usize>(job: Sums) {
    sums::<vector::Avx512, R, NV>(job)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sums_avx2<const R: usize, const NV: usize>(job: Sums) {
    sums::<vector::Avx2, R, NV>(job)
}

/// For each tap, block of R input channels and block of NV vectors of output channels: acc [R][NV] =
/// Σ_p xᵀ[base(p) + tap, ci0 + r] (broadcast) · dyᵀ[p, co0..] (loaded), over every pixel in order, into dwᵀ.
///
/// # Safety
/// V's instruction set is available.
#[inline(always)]
unsafe fn sums<V: F32Vector, const R: usize, const NV: usize>(job: Sums) {
    let Sums { xt, bases, taps, cpi, dyt, cpo, dwt } = job;
    let (lanes, b) = (V::LANES, NV * V::LANES);
    let pixels = bases.len();
    assert!(cpi.is_multiple_of(R) && cpo.is_multiple_of(b) && dyt.len() >= pixels * cpo);
    assert!(dwt.len() >= taps.len() * cpi * cpo);
    let reach = taps.iter().max().map_or(0, |t| t + cpi);
    assert!(bases.iter().all(|&base| base + reach <= xt.len()));
    let (xt, dyt, dwt) = (xt.as_ptr(), dyt.as_ptr(), dwt.as_mut_ptr());
    for (t, &tap) in taps.iter().enumerate() {
        for ci0 in (0..cpi).step_by(R) {
            for co0 in (0..cpo).step_by(b) {
                let mut acc = [[V::zero(); NV]; R];
                for (p, &base) in bases.iter().enumerate() {
                    let d = dyt.add(p * cpo + co0);
                    let dys: [V; NV] = std::array::from_fn(|v| unsafe { V::load(d.add(v * lanes)) });
                    let x = xt.add(base + tap + ci0);
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let xr = V::splat(*x.add(r));
                        for v in 0..NV {
                            acc_r[v] = xr.mul_add(dys[v], acc_r[v]);
                        }
                    }
                }
                for (r, vectors) in acc.iter().enumerate() {
                    for (v, vector) in vectors.iter().enumerate() {
                        vector.store(dwt.add((t * cpi + ci0 + r) * cpo + co0 + v * lanes));
                    }
                }
            }
        }
    }
}

/// What [`products`] reads and writes: xᵀ [images, rows, cols, cpi], the packed weight, the padded bias,
/// yᵀ [pixels rounded up to R, cpo].
struct Products<'a> {
    xt: &'a [f32],
    images: usize,
    s: &'a ConvShape,
    cols: usize,
    cpi: usize,
    packed: &'a [f32],
    cpo: usize,
    bias: &'a [f32],
    yt: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn products_avx512<const R: usize, const NV: usize>(job: Products) {
    products::<vector::Avx512, R, NV>(job)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn products_avx2<const R: usize, const NV: usize>(job: Products) {
    products::<vector::Avx2, R, NV>(job)
}

/// For each block of B output channels, each group of taps ([`TAP_GROUP_BYTES`]), each R output pixels:
/// acc [R][NV] starts at the bias (first group) or the sums so far (yᵀ), takes, for each tap of the group in
/// order, Σ_ci xᵀ[base + tap, ci] (broadcast) · packed[ci, B] (loaded), and goes back to yᵀ. Pixels past the last (rounding up to R) read pixel 0's window; their rows of yᵀ
/// are never read.
///
/// # Safety
/// V's instruction set is available.
#[inline(always)]
unsafe fn products<V: F32Vector, const R: usize, const NV: usize>(job: Products) {
    let Products { xt, images, s, cols, cpi, packed, cpo, bias, yt } = job;
    let (lanes, kk, ohw) = (V::LANES, s.kh * s.kw, s.ohw());
    let b = NV * lanes;
    let (pixels, x_image) = (images * ohw, (s.h + 2 * s.padding) * cols * cpi);
    assert!(cpo.is_multiple_of(b) && cpi.is_multiple_of(lanes) && bias.len() >= cpo);
    assert!(xt.len() >= images * x_image && packed.len() >= cpo * kk * cpi);
    assert!(yt.len() >= pixels.next_multiple_of(R) * cpo);
    // Every window lies inside its image's xᵀ: s·(oh − 1) + k ≤ h + 2·padding rows, likewise columns.
    assert!(s.stride * (s.oh - 1) + s.kh <= s.h + 2 * s.padding && s.stride * (s.ow - 1) + s.kw <= cols);
    let taps: Vec<usize> = (0..kk).map(|t| ((t / s.kw) * cols + t % s.kw) * cpi).collect();
    let base = |p: usize| {
        let (n, q) = (p / ohw, p % ohw);
        n * x_image + (s.stride * (q / s.ow) * cols + s.stride * (q % s.ow)) * cpi
    };
    let bases: Vec<usize> = (0..pixels.next_multiple_of(R)).map(|p| base(if p < pixels { p } else { 0 })).collect();
    let (xt, yt) = (xt.as_ptr(), yt.as_mut_ptr());
    let group = (TAP_GROUP_BYTES / (cpi * b * 4)).clamp(1, kk); // taps whose weights stay in L1 together
    for co0 in (0..cpo).step_by(b) {
        for t0 in (0..kk).step_by(group) {
            for (p0, bases) in bases.chunks_exact(R).enumerate().map(|(i, c)| (i * R, c)) {
                let at = |r: usize, v: usize| yt.add((p0 + r) * cpo + co0 + v * lanes);
                let mut acc: [[V; NV]; R] = match t0 {
                    0 => [std::array::from_fn(|v| unsafe { V::load(bias.as_ptr().add(co0 + v * lanes)) }); R],
                    _ => std::array::from_fn(|r| std::array::from_fn(|v| unsafe { V::load(at(r, v)) })),
                };
                for (t, &tap) in taps.iter().enumerate().skip(t0).take(group) {
                    let x_rows: [*const f32; R] = std::array::from_fn(|r| xt.add(bases[r] + tap));
                    let mut u = packed.as_ptr().add((co0 * kk + t * b) * cpi); // [cpi, B]
                    for ci in 0..cpi {
                        let weights: [V; NV] = std::array::from_fn(|v| unsafe { V::load(u.add(v * lanes)) });
                        for (r, acc_r) in acc.iter_mut().enumerate() {
                            let x = V::splat(*x_rows[r].add(ci));
                            for v in 0..NV {
                                acc_r[v] = x.mul_add(weights[v], acc_r[v]);
                            }
                        }
                        u = u.add(b);
                    }
                }
                let finished = acc;
                for (r, vectors) in finished.iter().enumerate() {
                    for (v, vector) in vectors.iter().enumerate() {
                        vector.store(at(r, v));
                    }
                }
            }
        }
    }
}
