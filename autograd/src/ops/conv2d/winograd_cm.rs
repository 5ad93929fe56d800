//! Winograd F(2×2, 3×3) with the channels in the vector lanes, for the forward and input gradient of 3×3
//! convolutions on small maps (the U-Net's 7×7 level), where `winograd.rs`'s layout wastes too much.
//!
//! Legend as in `winograd.rs`, plus: `cpi`, `cpo` the input and output channel counts padded to whole
//! vectors (the padding holds zeros), `xᵀ`, `yᵀ` an image laid out channel-minor [pixel, channel], `T` the
//! tiles of the images of one call, `R` × `NV` the register tile (tiles × vectors of output channels).
//!
//! The math is `winograd.rs`'s; only the layout differs. There, a vector holds consecutive tiles of one
//! channel, which needs the junk column of tiles and, on a 7×7 map (4×4 = 16 tiles, 20 with the junk
//! column), rounds 20 up to 32: half the products are thrown away. Here, as in that file's weight
//! gradient, x is first transposed to [pixel, channel] (`transpose_into`), the input transform runs on
//! vectors of input channels, and only real tiles are listed, those of several images one after another.
//! The products then keep output channels in the lanes:
//! ```text
//! M_ξ[tile, co] = Σ_ci V_ξ[tile, ci] · U_ξ[ci, co]     register tile: R tiles (V broadcast) × NV vectors of co
//! ```
//! the output transform runs on vectors of output channels, writing yᵀ [pixel, channel], and a last
//! transpose ([`transpose_from`]) puts y back in [channel, pixel] order.
//!
//! On a 7×7 map this is 16 tiles × 16 products per image and channel pair, against the direct kernel's
//! 64 positions × 9: 2.25× fewer, paid for with the two transposes. Must equal `conv2d_forward_naive` up to
//! rounding (tested with the other Winograd paths).

use super::winograd::{output_transform, spread, transform_inputs_cm, transpose_square};
use crate::cpu::Simd;
use crate::vector::{self, F32Vector};

/// The register tile at each SIMD level: R tiles × NV vectors of output channels (R·NV accumulators, NV
/// weight vectors and a broadcast within the register file), and the lanes per vector.
pub fn tile(level: Simd) -> (usize, usize, usize) {
    match level {
        Simd::Avx512 => (6, 4, 16),
        Simd::Avx2 => (4, 3, 8),
        Simd::Baseline if cfg!(target_arch = "aarch64") => (6, 4, 4),
        Simd::Baseline => (4, 2, 4),
    }
}

/// (cpo, cpi): output channels rounded up to the register tile's NV vectors, input channels to whole vectors.
pub fn padding(level: Simd, c_out: usize, c_in: usize) -> (usize, usize) {
    let (_, nv, lanes) = tile(level);
    (c_out.next_multiple_of(nv * lanes), c_in.next_multiple_of(lanes))
}

/// weight [c_out, c_in, 3, 3] transformed and packed channel-minor: packed [16 (ξ), cpi, cpo] = U_ξ[ci, co]
/// (planes [`spread`] apart), zeros in the padding. With `rotate`, the input gradient's kernel (channels swapped, turned 180°), whose
/// "output" channels are c_in: then cpo pads c_in and cpi pads c_out.
pub fn pack_weight(weight: &[f32], c_out: usize, c_in: usize, cpo: usize, cpi: usize, rotate: bool) -> Vec<f32> {
    use rayon::prelude::*;
    let (outs, ins) = if rotate { (c_in, c_out) } else { (c_out, c_in) };
    let mut packed = crate::pool::take_filled(16 * spread(cpi * cpo), 0.0);
    // In parallel over blocks of ROWS rows (input channels i): each task holds its rows of all 16 planes U_ξ
    // and fills them row by row, front to back (the 16 rows being written stay in L1; filling a column at a
    // time instead, every store missed it: 0.76 ms for 128 × 128 channels on one thread).
    const ROWS: usize = 8;
    let mut tasks: Vec<Vec<&mut [f32]>> = (0..cpi.div_ceil(ROWS)).map(|_| Vec::with_capacity(16)).collect();
    for plane in packed.chunks_exact_mut(spread(cpi * cpo)) {
        for (task, rows) in tasks.iter_mut().zip(plane.chunks_mut(ROWS * cpo)) {
            task.push(rows);
        }
    }
    tasks.into_par_iter().enumerate().for_each(|(block, mut planes)| {
        for i in (block * ROWS..(block + 1) * ROWS).take_while(|&i| i < ins) {
            let at = (i - block * ROWS) * cpo;
            for o in 0..outs {
                // The kernel of output channel o and input channel i (for the input gradient: weight's
                // output channel i and input channel o, turned 180°).
                let g = match rotate {
                    false => &weight[(o * c_in + i) * 9..][..9],
                    true => &weight[(i * c_in + o) * 9..][..9],
                };
                let u = super::winograd::transform_kernel(std::array::from_fn(|ky| {
                    std::array::from_fn(|kx| if rotate { g[8 - ky * 3 - kx] } else { g[ky * 3 + kx] })
                }));
                for (xi, plane) in planes.iter_mut().enumerate() {
                    plane[at + o] = u[xi / 4][xi % 4];
                }
            }
        }
    });
    packed
}

/// The layouts of `images` images: (xᵀ rows, columns) as `transpose_into` fills them with off = 1, and
/// (yᵀ rows, columns) = (2·th, 2·tw), the outputs of whole tiles.
pub fn layouts(h: usize, w: usize) -> ((usize, usize), (usize, usize)) {
    super::winograd::dweight_layouts(h, w)
}

/// Images per call of [`conv_images`]: enough for about 64 tiles.
pub fn images_per_call(h: usize, w: usize) -> usize {
    64usize.div_ceil(h.div_ceil(2) * w.div_ceil(2))
}

/// Scratch floats for [`conv_images`] on `images` images: V [16, T, cpi] and M [16, T, cpo] for all T of
/// their tiles, T rounded up to whole register tiles.
pub fn scratch_len(level: Simd, images: usize, h: usize, w: usize, cpo: usize, cpi: usize) -> usize {
    let padded = padded_tiles(level, images, h, w);
    16 * (spread(padded * cpi) + spread(padded * cpo))
}

fn padded_tiles(level: Simd, images: usize, h: usize, w: usize) -> usize {
    (images * h.div_ceil(2) * w.div_ceil(2)).next_multiple_of(tile(level).0)
}

/// yᵀ [images, 2·th, 2·tw, cpo] = bias + the 3×3 "same" convolution of xᵀ [images, 2·th + 2, 2·tw + 2, cpi]
/// (channel-minor, zero border) with `packed` (from [`pack_weight`]); `bias` [cpo] (padded with zeros).
#[allow(clippy::too_many_arguments)]
pub fn conv_images(
    level: Simd,
    xt: &[f32],
    images: usize,
    h: usize,
    w: usize,
    cpi: usize,
    packed: &[f32],
    cpo: usize,
    bias: &[f32],
    yt: &mut [f32],
    scratch: &mut [f32],
) {
    crate::cpu::check_supported(level);
    let ((xr, xc), (yr, yc)) = layouts(h, w);
    let (_, nv, lanes) = tile(level);
    assert!(cpo.is_multiple_of(nv * lanes) && cpi.is_multiple_of(lanes) && bias.len() >= cpo);
    assert!(xt.len() >= images * xr * xc * cpi && yt.len() >= images * yr * yc * cpo);
    assert!(packed.len() >= 16 * spread(cpi * cpo) && scratch.len() >= scratch_len(level, images, h, w, cpo, cpi));
    let args = (xt, images, h, w, cpi, packed, cpo, bias, yt, scratch);
    // SAFETY: the level is supported (checked above), and the asserts cover every access.
    unsafe {
        match level {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => conv_avx512(args),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => conv_avx2(args),
            #[cfg(target_arch = "aarch64")]
            _ => conv_tiles::<vector::Neon, 6, 4>(args),
            #[cfg(not(target_arch = "aarch64"))]
            _ => conv_tiles::<vector::Portable, 4, 2>(args),
        }
    }
}

type ConvArgs<'a> = (&'a [f32], usize, usize, usize, usize, &'a [f32], usize, &'a [f32], &'a mut [f32], &'a mut [f32]);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn conv_avx512(args: ConvArgs) {
    conv_tiles::<vector::Avx512, 6, 4>(args)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn conv_avx2(args: ConvArgs) {
    conv_tiles::<vector::Avx2, 4, 3>(args)
}

/// 1. V_ξ[t, ci] for every tile of the images (zeros in the rows that round T up to whole tiles);
/// 2. for each ξ, block of NV vectors of output channels and block of R tiles: acc [R][NV] =
///    Σ_ci V_ξ[t, ci] (broadcast) · U_ξ[ci, co..] (loaded), into M_ξ[t, co];
/// 3. per tile and vector of output channels, Y = Aᵀ M A + bias into yᵀ.
///
/// # Safety
/// V's instruction set is available, and [`conv_images`]'s asserts hold.
#[inline(always)]
unsafe fn conv_tiles<V: F32Vector, const R: usize, const NV: usize>(
    (xt, images, h, w, cpi, packed, cpo, bias, yt, scratch): ConvArgs,
) {
    let lanes = V::LANES;
    let ((xr, xc), (yr, yc)) = layouts(h, w);
    let tw = w.div_ceil(2);
    let per_image = h.div_ceil(2) * tw;
    let tiles = images * per_image;
    let padded = tiles.next_multiple_of(R);
    let (v_plane, m_plane) = (spread(padded * cpi), spread(padded * cpo)); // V [16, padded, cpi], M [.., cpo]
    let (vbuf, mbuf) = scratch.split_at_mut(16 * v_plane);
    let (vbuf, mbuf) = (vbuf.as_mut_ptr(), mbuf.as_mut_ptr());
    // 1. The input transform, and zeros in the padding rows.
    transform_inputs_cm::<V>(xt, (xr, xc), cpi, (per_image, tw), 0, tiles, vbuf, v_plane);
    for xi in 0..16 {
        std::slice::from_raw_parts_mut(vbuf.add(xi * v_plane + tiles * cpi), (padded - tiles) * cpi).fill(0.0);
    }
    // 2. The products: per ξ, U_ξ's block of output channels stays in L1 while it meets every tile.
    for xi in 0..16 {
        let u_xi = packed.as_ptr().add(xi * spread(cpi * cpo));
        let (v_xi, m_xi) = (vbuf.add(xi * v_plane) as *const f32, mbuf.add(xi * m_plane));
        for co0 in (0..cpo).step_by(NV * lanes) {
            for t0 in (0..padded).step_by(R) {
                let mut acc = [[V::zero(); NV]; R];
                let v_rows: [*const f32; R] = std::array::from_fn(|r| v_xi.add((t0 + r) * cpi));
                let mut u = u_xi.add(co0);
                for ci in 0..cpi {
                    let weights: [V; NV] = std::array::from_fn(|v| unsafe { V::load(u.add(v * lanes)) });
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let x = V::splat(*v_rows[r].add(ci));
                        for v in 0..NV {
                            acc_r[v] = x.mul_add(weights[v], acc_r[v]);
                        }
                    }
                    u = u.add(cpo);
                }
                let finished = acc;
                for (r, vectors) in finished.iter().enumerate() {
                    for (v, vector) in vectors.iter().enumerate() {
                        vector.store(m_xi.add((t0 + r) * cpo + co0 + v * lanes));
                    }
                }
            }
        }
    }
    // 3. The output transform: tile (i, j) of image n writes yᵀ_n pixels (2i + a, 2j + b).
    for t in 0..tiles {
        let (n, tile) = (t / per_image, t % per_image);
        let (i, j) = (tile / tw, tile % tw);
        let y0 = yt.as_mut_ptr().add(((n * yr + 2 * i) * yc + 2 * j) * cpo);
        for k in (0..cpo).step_by(lanes) {
            let m = mbuf.add(t * cpo + k) as *const f32;
            let out = output_transform(std::array::from_fn(|xi| unsafe { V::load(m.add(xi * m_plane)) }));
            let b = V::load(bias.as_ptr().add(k));
            for (a, row) in out.iter().enumerate() {
                for (bb, value) in row.iter().enumerate() {
                    value.add(b).store(y0.add((a * yc + bb) * cpo + k));
                }
            }
        }
    }
}

/// dst [c, h, w] ← the first c channels of src [rows, cols, cp] (channel-minor, pixel (y, x) at
/// y·cols + x): the inverse of `transpose_into` with off = 0. Blocks of LANES pixels × LANES channels are
/// transposed in registers, the channels and pixels left over one by one.
#[allow(clippy::too_many_arguments)]
pub fn transpose_from(level: Simd, src: &[f32], c: usize, h: usize, w: usize, cols: usize, cp: usize, dst: &mut [f32]) {
    crate::cpu::check_supported(level);
    assert!(c <= cp && w <= cols && src.len() >= ((h.max(1) - 1) * cols + w) * cp && dst.len() >= c * h * w);
    let args = (src, c, h, w, cols, cp, dst);
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

type FromArgs<'a> = (&'a [f32], usize, usize, usize, usize, usize, &'a mut [f32]);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn from_avx512(args: FromArgs) {
    from_blocks::<vector::Avx512>(args)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn from_avx2(args: FromArgs) {
    from_blocks::<vector::Avx2>(args)
}

/// # Safety
/// V's instruction set is available, and [`transpose_from`]'s assert holds.
#[inline(always)]
unsafe fn from_blocks<V: F32Vector>((src, c, h, w, cols, cp, dst): FromArgs) {
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

    /// transpose_from at every SIMD level undoes a channel-minor layout, whole blocks and leftovers.
    #[test]
    fn transpose_from_reads_every_value_back() {
        for (c, h, w, cols, cp) in [(17, 3, 19, 20, 32), (16, 2, 8, 8, 16), (5, 4, 3, 4, 8), (33, 7, 7, 8, 48)] {
            let src: Vec<f32> = (0..h * cols * cp).map(|i| i as f32).collect();
            for level in crate::cpu::available() {
                let mut dst = vec![f32::NAN; c * h * w];
                transpose_from(level, &src, c, h, w, cols, cp, &mut dst);
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
