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

use rayon::prelude::*;

use super::shape::{ConvShape, SameConv};
use super::transpose::{transpose_from, transpose_into, FromChannelMinor, ToChannelMinor};
use super::winograd::{output_transform, spread, transform_inputs_cm};
use crate::cpu::Simd;
use crate::pool::Scratch;
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
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    ((2 * th + 2, 2 * tw + 2), (2 * th, 2 * tw))
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

/// The channel-minor Winograd convolution of a group of images: what [`conv_images`] reads and writes.
pub struct ConvImages<'a> {
    pub xt: &'a [f32],
    pub images: usize,
    pub h: usize,
    pub w: usize,
    pub cpi: usize,
    pub packed: &'a [f32],
    pub cpo: usize,
    pub bias: &'a [f32],
    pub yt: &'a mut [f32],
    pub scratch: &'a mut [f32],
}

/// yᵀ [images, 2·th, 2·tw, cpo] = bias + the 3×3 "same" convolution of xᵀ [images, 2·th + 2, 2·tw + 2, cpi]
/// (channel-minor, zero border) with `packed` (from [`pack_weight`]); `bias` [cpo] (padded with zeros).
pub fn conv_images(level: Simd, job: ConvImages) {
    let ConvImages { xt, images, h, w, cpi, packed, cpo, bias, yt, scratch } = job;
    crate::cpu::check_supported(level);
    let ((xr, xc), (yr, yc)) = layouts(h, w);
    let (_, nv, lanes) = tile(level);
    assert!(cpo.is_multiple_of(nv * lanes) && cpi.is_multiple_of(lanes) && bias.len() >= cpo);
    assert!(xt.len() >= images * xr * xc * cpi && yt.len() >= images * yr * yc * cpo);
    assert!(packed.len() >= 16 * spread(cpi * cpo) && scratch.len() >= scratch_len(level, images, h, w, cpo, cpi));
    let args = ConvImages { xt, images, h, w, cpi, packed, cpo, bias, yt, scratch };
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn conv_avx512(args: ConvImages) {
    conv_tiles::<vector::Avx512, 6, 4>(args)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn conv_avx2(args: ConvImages) {
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
    ConvImages { xt, images, h, w, cpi, packed, cpo, bias, yt, scratch }: ConvImages,
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

/// The channel-minor Winograd convolution, for 3×3 "same" convolutions on small maps: in parallel over
/// groups of [`images_per_call`] images. Must equal `conv2d_forward_naive` up to rounding. `level`: the SIMD
/// level (the op passes `cpu::simd()`; tests run every level).
pub fn conv2d_forward_winograd_cm(
    level: Simd,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
) -> Vec<f32> {
    assert!(
        s.kh == 3 && s.kw == 3 && s.stride == 1 && s.padding == 1,
        "conv2d_forward_winograd_cm: not a 3×3 same convolution: {s:?}"
    );
    let packed = Scratch::from(pack(level, weight, s, false));
    conv(level, SameConv { input: x, ch_in: s.c_in, packed: &packed, ch_out: s.c_out, bias, shape: s })
}

/// The weight packed for [`conv`] at this level, its channels padded to this level's vectors; with
/// `rotate`, for the input gradient (whose "output" channels are c_in and input channels c_out).
pub fn pack(level: Simd, weight: &[f32], s: &ConvShape, rotate: bool) -> Vec<f32> {
    let (ch_out, ch_in) = if rotate { (s.c_in, s.c_out) } else { (s.c_out, s.c_in) };
    let (cpo, cpi) = padding(level, ch_out, ch_in);
    pack_weight(weight, s.c_out, s.c_in, cpo, cpi, rotate)
}

/// The channel-minor Winograd convolution of `job` (its weight from [`pack`]): per group of images, x
/// transposed in, the tiles ([`conv_images`]), y transposed out.
pub fn conv(level: Simd, job: SameConv) -> Vec<f32> {
    let SameConv { input, ch_in, packed, ch_out, bias, shape: s } = job;
    let (cpo, cpi) = padding(level, ch_out, ch_in);
    let (h, w, hw) = (s.h, s.w, s.h * s.w);
    let ((xr, xc), (yr, yc)) = layouts(h, w);
    let (x_image, y_image) = (xr * xc * cpi, yr * yc * cpo);
    let per_call = images_per_call(h, w).min(s.n.max(1));
    let mut bias_padded = vec![0.0; cpo];
    if let Some(b) = bias {
        bias_padded[..ch_out].copy_from_slice(&b[..ch_out]);
    }
    let mut out = crate::pool::take_dirty(s.n * ch_out * hw);
    out.par_chunks_mut(per_call * ch_out * hw).enumerate().for_each(|(g, out_g)| {
        let images = out_g.len() / (ch_out * hw);
        let mut xt = crate::pool::scratch(images * x_image);
        for (j, dst) in xt.chunks_exact_mut(x_image).enumerate() {
            let src = &input[(g * per_call + j) * ch_in * hw..][..ch_in * hw];
            transpose_into(level, ToChannelMinor { src, c: ch_in, h, w, off: 1, cols: xc, cp: cpi, dst });
        }
        let mut yt = crate::pool::scratch(images * y_image);
        let mut scratch = crate::pool::scratch(scratch_len(level, images, h, w, cpo, cpi));
        let bias = &bias_padded;
        conv_images(
            level,
            ConvImages { xt: &xt, images, h, w, cpi, packed, cpo, bias, yt: &mut yt, scratch: &mut scratch },
        );
        for (src, dst) in yt.chunks_exact(y_image).zip(out_g.chunks_exact_mut(ch_out * hw)) {
            transpose_from(level, FromChannelMinor { src, c: ch_out, h, w, cols: yc, cp: cpo, dst });
        }
    });
    out
}
