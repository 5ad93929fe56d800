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
//!
//! Tried and taken out again (1b927e6, reverted in the next commit): tiles of F(4×4, 3×3) for the
//! forward, 4 tiles × 36 products per image and channel pair on a 7×7 map instead of 16 × 16. The forwards
//! at 7×7 ran 17–18% faster ([32, 128, 7, 7] → 128 1.60 → 1.33 ms), at 14×14 6–10%, but the 36 planes of
//! its packed weights (2.25× F(2×2)'s, kept by the buffer pool in training and by the weight cache in
//! sampling) raised the peak memory of `03_train_mnist --steps 100 --sample-every 50` from 390 to 425 MB,
//! past the 400 MB the main job must stay under; and its rounding error, about 12× F(2×2)'s, compounds
//! through input gradients (the `small` U-Net's gradients 2.3e-4 from its PyTorch twin's with F(4×4) for
//! them too), so it would serve forwards only.

use rayon::prelude::*;

use super::parallel::images_per_call;
use super::shape::{ConvShape, SameConv};
use super::transpose::{transpose_from, transpose_into, FromChannelMinor, ToChannelMinor};
use super::winograd::{output_transform, spread, transform_inputs_cm};
use crate::cpu::Simd;
use crate::pool::{aligned_start, Scratch, ALIGN_SLACK};
use crate::vector::{self, F32Vector};

/// The register tile at each SIMD level: R tiles × NV vectors of output channels (R·NV accumulators, NV
/// weight vectors and a broadcast within the register file), and the lanes per vector.
///
/// AVX2 has 16 registers: 6 × 2 takes 15 of them and blocks of 16 channels, which the U-Net's 32 to 384
/// divide. The 4 × 3 tile it replaced (all 16 registers, blocks of 24: 64 channels padded to 72, 128 to
/// 144) ran these convolutions at about half the speed on an AMD EPYC (Zen 3, AVX2 only; `unet_kernels
/// --bench 'unet_kernels/(forward|backward)/(05|07|11|13|20|22|24)$'`, the builds alternated, three rounds,
/// medians): forward [32, 128, 7, 7] → 128 4.70 → 2.70 ms, [32, 128, 14, 14] → 128 14.36 → 6.70,
/// [32, 256, 7, 7] → 128 10.74 → 5.92; their backwards (input gradient here, weight gradient in
/// `winograd_dweight.rs`) 0.62–0.81 of the time.
pub fn tile(level: Simd) -> (usize, usize, usize) {
    match level {
        Simd::Avx512 => (6, 4, 16),
        Simd::Avx2 => (6, 2, 8),
        Simd::Baseline if cfg!(target_arch = "aarch64") => (6, 4, 4),
        Simd::Baseline => (4, 2, 4),
    }
}

/// (cpo, cpi): output channels rounded up to the register tile's NV vectors, input channels to whole vectors.
pub fn padding(level: Simd, c_out: usize, c_in: usize) -> (usize, usize) {
    let (_, nv, lanes) = tile(level);
    (c_out.next_multiple_of(nv * lanes), c_in.next_multiple_of(lanes))
}

/// weight [c_out, c_in, 3, 3] transformed and packed channel-minor, in blocks of `block` output channels
/// (the register tile's NV vectors): packed [16 (ξ), cpo/block, cpi, block] = U_ξ[ci, co] (planes
/// [`spread`] apart), zeros in the padding. With `rotate`, the input gradient's kernel (channels swapped,
/// turned 180°), whose "output" channels are c_in: then cpo pads c_in and cpi pads c_out.
/// [`pack_weight_naive`] is the definition (tested equal, bit for bit, at every level).
///
/// Why blocks: the products read one block of U_ξ, cpi rows of `block` floats, for every tile of the call,
/// so it must stay in L1. As rows of the whole [cpi, cpo] matrix (512 bytes apart for 128 channels, of
/// which a block reads 256) its 512 lines fell in half of L1's 64 sets, 16 to a 12-way set: they evicted
/// each other, and the products waited on L2 for their weight loads (`perf annotate`).
///
/// Why vectors: U is computed for a vector of output channels at a time ([`pack_rows`]): each kernel's 9
/// taps are one or a few loads, turned into vectors of taps by a transpose in registers, and each of the 16
/// values of U is one store. One kernel at a time, its 16 values were 16 scattered stores, and the pack took
/// 11% of the 7×7 forwards ([32, 128, 7, 7] → 128 and [32, 256, 7, 7] → 128, `perf record` of
/// `unet_kernels`). The weight transposed first, in one pass, cost more than that saved: the pass ran on one
/// thread, and the rotated weight's 9 taps are fewer than a vector's lanes (one float at a time).
pub fn pack_weight(
    level: Simd,
    weight: &[f32],
    c_out: usize,
    c_in: usize,
    (cpo, cpi, block): (usize, usize, usize),
    rotate: bool,
) -> Vec<f32> {
    crate::cpu::check_supported(level);
    let lanes = tile(level).2;
    assert!(
        cpo.is_multiple_of(block) && block.is_multiple_of(lanes) && block > 0,
        "winograd_cm::pack_weight: {cpo} channels in blocks of {block}, vectors of {lanes}"
    );
    let (outs, ins) = if rotate { (c_in, c_out) } else { (c_out, c_in) };
    assert!(weight.len() >= c_out * c_in * 9 && outs <= cpo && ins <= cpi, "winograd_cm::pack_weight: sizes");
    let plane_len = spread(cpi * cpo);
    let mut packed = crate::pool::take_dirty(16 * plane_len); // every float written below
    for plane in packed.chunks_exact_mut(plane_len) {
        plane[cpi * cpo..].fill(0.0);
    }
    // In parallel over runs of ROWS rows (input channels i) of one block: each task holds its run in all 16
    // planes U_ξ and fills them row by row, front to back (the 16 rows being written stay in L1; filling a
    // column at a time instead, every store missed it: 0.76 ms for 128 × 128 channels on one thread).
    const ROWS: usize = 8;
    let runs = cpi.div_ceil(ROWS); // per block
    let mut tasks: Vec<Vec<&mut [f32]>> = (0..cpo / block * runs).map(|_| Vec::with_capacity(16)).collect();
    for plane in packed.chunks_exact_mut(plane_len) {
        let blocks = plane[..cpi * cpo].chunks_exact_mut(cpi * block);
        let chunks = blocks.flat_map(|b| b.chunks_mut(ROWS * block));
        for (task, rows) in tasks.iter_mut().zip(chunks) {
            task.push(rows);
        }
    }
    tasks.into_par_iter().enumerate().for_each(|(task, mut planes)| {
        let (o0, i0) = (task / runs * block, task % runs * ROWS);
        let rows = planes[0].len() / block;
        pack_rows(level, PackRows { weight, c_in, outs, ins, cpo, o0, i0, rows, block, rotate }, &mut planes);
    });
    packed
}

/// One task of [`pack_weight`]: rows i0.. (`rows` of them) of the block of output channels o0.. (of `outs`
/// and `ins` real channels, the weight's c_out and c_in or, rotated, c_in and c_out).
struct PackRows<'a> {
    weight: &'a [f32],
    c_in: usize,
    outs: usize,
    ins: usize,
    cpo: usize,
    o0: usize,
    i0: usize,
    rows: usize,
    block: usize,
    rotate: bool,
}

/// U for one task of [`pack_weight`], a vector of output channels at a time ([`transform_kernels`]).
fn pack_rows(level: Simd, job: PackRows, planes: &mut [&mut [f32]]) {
    let lanes = tile(level).2;
    assert!(job.block.is_multiple_of(lanes) && job.o0 + job.block <= job.cpo && planes.len() == 16);
    assert!(planes.iter().all(|plane| plane.len() >= job.rows * job.block));
    assert!(job.weight.len() >= job.outs * job.ins * 9);
    // SAFETY: the level is supported (checked by `pack_weight`), and the asserts cover every access but the
    // weight's, which `pack_rows_with` bounds itself.
    unsafe {
        match level {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => pack_rows_avx512(job, planes),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => pack_rows_avx2(job, planes),
            #[cfg(target_arch = "aarch64")]
            _ => pack_rows_with::<vector::Neon>(job, planes),
            #[cfg(not(target_arch = "aarch64"))]
            _ => pack_rows_with::<vector::Portable>(job, planes),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn pack_rows_avx512(job: PackRows, planes: &mut [&mut [f32]]) {
    pack_rows_with::<vector::Avx512>(job, planes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_rows_avx2(job: PackRows, planes: &mut [&mut [f32]]) {
    pack_rows_with::<vector::Avx2>(job, planes)
}

/// The taps of a vector of kernels in registers: lane l of vector k is tap k of the kernel from input
/// channel i to output channel o + l, then U. Each kernel's 9 taps are contiguous in the weight, so
/// LANES of them are one load per kernel, and a LANES × LANES transpose in registers
/// (`transpose::transpose_square`) turns the kernels' rows into the taps' vectors.
///
/// # Safety
/// V's instruction set is available, and [`pack_rows`]'s asserts hold.
#[inline(always)]
unsafe fn pack_rows_with<V: F32Vector>(job: PackRows, planes: &mut [&mut [f32]]) {
    let PackRows { weight, c_in, outs, ins, o0, i0, rows, block, rotate, .. } = job;
    let n = V::LANES;
    for r in 0..rows {
        let i = i0 + r;
        for oc0 in (0..block).step_by(n) {
            let o = o0 + oc0;
            if i >= ins || o >= outs {
                // Channels padding ins to cpi, or a vector wholly past the real output channels.
                for plane in planes.iter_mut() {
                    V::zero().store(plane.as_mut_ptr().add(r * block + oc0));
                }
                continue;
            }
            let mut taps = [V::zero(); 9];
            for t0 in (0..9).step_by(n) {
                let mut lines = [V::zero(); 16];
                for (l, line) in lines.iter_mut().enumerate().take(n.min(outs - o)) {
                    let start = match rotate {
                        false => ((o + l) * c_in + i) * 9 + t0,
                        true => (i * c_in + o + l) * 9 + t0,
                    };
                    *line = match start + n <= weight.len() {
                        true => V::load(weight.as_ptr().add(start)),
                        // The last kernels: a load past the weight's end goes through a copy.
                        false => {
                            let mut copy = [0.0f32; 16];
                            copy[..weight.len() - start].copy_from_slice(&weight[start..]);
                            V::load(copy.as_ptr())
                        }
                    };
                }
                super::transpose::transpose_square(&mut lines);
                for (k, tap) in taps.iter_mut().enumerate().skip(t0).take(n) {
                    *tap = lines[k - t0];
                }
            }
            let mut g = [[V::zero(); 3]; 3];
            for (ky, row) in g.iter_mut().enumerate() {
                for (kx, g_k) in row.iter_mut().enumerate() {
                    *g_k = taps[if rotate { 8 - 3 * ky - kx } else { 3 * ky + kx }];
                }
            }
            for (plane, u_xi) in planes.iter_mut().zip(transform_kernels(g)) {
                u_xi.store(plane.as_mut_ptr().add(r * block + oc0));
            }
        }
    }
}

/// `winograd::transform_kernel` (U = G g Gᵀ) on a vector of kernels, its sums in the same order, so that
/// each lane equals it bit for bit; U[u][v] at 4u + v.
///
/// # Safety
/// V's instruction set is available.
#[inline(always)]
unsafe fn transform_kernels<V: F32Vector>(g: [[V; 3]; 3]) -> [V; 16] {
    let mut columns = [[V::zero(); 4]; 3]; // (G g)ᵀ
    for (k, column) in columns.iter_mut().enumerate() {
        *column = times_g(g[0][k], g[1][k], g[2][k]);
    }
    let mut u = [V::zero(); 16];
    for (row, out) in u.chunks_exact_mut(4).enumerate() {
        out.copy_from_slice(&times_g(columns[0][row], columns[1][row], columns[2][row]));
    }
    u
}

/// G (v0, v1, v2) = (v0, ½(v0 + v1 + v2), ½(v0 − v1 + v2), v2) per lane (halving is exact, so the fused
/// multiply-add by ½ plus 0 rounds only the sums).
///
/// # Safety
/// V's instruction set is available.
#[inline(always)]
unsafe fn times_g<V: F32Vector>(v0: V, v1: V, v2: V) -> [V; 4] {
    let (half, zero) = (V::splat(0.5), V::zero());
    [v0, v0.add(v1).add(v2).mul_add(half, zero), v0.sub(v1).add(v2).mul_add(half, zero), v2]
}

/// [`pack_weight`] by its definition, one kernel at a time: packed[ξ, o / block, i, o % block] = U_ξ of
/// the kernel from input channel i to output channel o (`winograd::transform_kernel`), zeros elsewhere.
#[cfg(test)]
pub fn pack_weight_naive(
    weight: &[f32],
    c_out: usize,
    c_in: usize,
    (cpo, cpi, block): (usize, usize, usize),
    rotate: bool,
) -> Vec<f32> {
    let (outs, ins) = if rotate { (c_in, c_out) } else { (c_out, c_in) };
    let plane_len = spread(cpi * cpo);
    let mut packed = vec![0.0; 16 * plane_len];
    for o in 0..outs {
        for i in 0..ins {
            let kernel = match rotate {
                false => &weight[(o * c_in + i) * 9..][..9],
                true => &weight[(i * c_in + o) * 9..][..9],
            };
            let u = super::winograd::transform_kernel(std::array::from_fn(|ky| {
                std::array::from_fn(|kx| if rotate { kernel[8 - ky * 3 - kx] } else { kernel[ky * 3 + kx] })
            }));
            for (xi, u_xi) in u.as_flattened().iter().enumerate() {
                packed[xi * plane_len + (o / block) * cpi * block + i * block + o % block] = *u_xi;
            }
        }
    }
    packed
}

/// The layouts of `images` images: (xᵀ rows, columns) as `transpose_into` fills them with off = 1, and
/// (yᵀ rows, columns) = (2·th, 2·tw), the outputs of whole tiles.
pub fn layouts(h: usize, w: usize) -> ((usize, usize), (usize, usize)) {
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    ((2 * th + 2, 2 * tw + 2), (2 * th, 2 * tw))
}

/// Images per call of [`conv_images`] at most: enough for about 128 tiles (8 images at 7×7, 3 at 14×14),
/// the calls shared equally by the threads (`parallel::images_per_call`). Each call's xᵀ, yᵀ, V and M are
/// one buffer per thread ([`with_work`]). With them from the buffer pool, which keeps a buffer of every
/// size it has lent (a size per channel count, forward and input gradient), calls of 128 tiles raised the
/// main job's peak memory to 414 MB, past the 400 MB it must stay under (`03_train_mnist --steps 100
/// --sample-every 50`: 397.4 MB against 389.5 with 64), so calls were held at 64 tiles. With the
/// per-thread buffer that command peaks at 385.6 / 385.3 MB (390.3 at 64 tiles from the pool), and the
/// convolutions at 7×7 and 14×14 run 1–15% faster (`unet_kernels --bench
/// 'unet_kernels/(forward|backward)/(05|07|11|13|20|24)$'`, builds alternated, three rounds, medians:
/// forward [32, 128, 7, 7] → 128 1.494 → 1.336 ms, [32, 32, 14, 14] → 64 655 → 559 µs).
pub fn most_images_per_call(h: usize, w: usize) -> usize {
    128usize.div_ceil(h.div_ceil(2) * w.div_ceil(2))
}

thread_local! {
    /// Each thread's working memory for [`conv`]'s calls: xᵀ, yᵀ and the V and M of [`conv_images`], one
    /// buffer that grows to the largest call the thread has made (about 4.3 MB for [32, 256, 7, 7] → 128,
    /// computed from the layouts), and so holds one size where the pool held one per shape. Nothing inside
    /// a call runs in parallel, so a thread never needs two at once.
    static WORK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` on `len` floats of this thread's working memory (with whatever they held before), starting on a cache
/// line as the pool's scratch does (`pool::Scratch`, which says why).
fn with_work<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    WORK.with(|work| {
        let mut work = work.borrow_mut();
        if work.len() < len + ALIGN_SLACK {
            work.resize(len + ALIGN_SLACK, 0.0);
        }
        let start = aligned_start(&work);
        f(&mut work[start..][..len])
    })
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
    conv_tiles::<vector::Avx2, 6, 2>(args)
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
    // 2. The products: per ξ, a block of U_ξ (output channels co0.., input channels ci0.. of at most
    //    KC) stays in L1 while it meets every tile. With more than KC input channels (256 at the U-Net's
    //    deepest level: a 64 KB block) the sums pass through M between blocks, which keeps their order.
    const KC: usize = 128;
    for xi in 0..16 {
        let u_xi = packed.as_ptr().add(xi * spread(cpi * cpo));
        let (v_xi, m_xi) = (vbuf.add(xi * v_plane) as *const f32, mbuf.add(xi * m_plane));
        for co0 in (0..cpo).step_by(NV * lanes) {
            for ci0 in (0..cpi).step_by(KC) {
                let ci1 = (ci0 + KC).min(cpi);
                for t0 in (0..padded).step_by(R) {
                    let m_at = |r: usize, v: usize| m_xi.add((t0 + r) * cpo + co0 + v * lanes);
                    let mut acc = match ci0 {
                        0 => [[V::zero(); NV]; R],
                        _ => std::array::from_fn(|r| std::array::from_fn(|v| unsafe { V::load(m_at(r, v)) })),
                    };
                    let v_rows: [*const f32; R] = std::array::from_fn(|r| v_xi.add((t0 + r) * cpi));
                    let mut u = u_xi.add(co0 * cpi + ci0 * NV * lanes); // block co0 / (NV·lanes): [cpi, NV·lanes]
                    for ci in ci0..ci1 {
                        let weights: [V; NV] = std::array::from_fn(|v| unsafe { V::load(u.add(v * lanes)) });
                        for (r, acc_r) in acc.iter_mut().enumerate() {
                            let x = V::splat(*v_rows[r].add(ci));
                            for v in 0..NV {
                                acc_r[v] = x.mul_add(weights[v], acc_r[v]);
                            }
                        }
                        u = u.add(NV * lanes);
                    }
                    let finished = acc;
                    for (r, vectors) in finished.iter().enumerate() {
                        for (v, vector) in vectors.iter().enumerate() {
                            vector.store(m_at(r, v));
                        }
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
/// groups of at most [`most_images_per_call`] images. Must equal `conv2d_forward_naive` up to rounding. `level`: the SIMD
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
    let (_, nv, lanes) = tile(level);
    pack_weight(level, weight, s.c_out, s.c_in, (cpo, cpi, nv * lanes), rotate)
}

/// The channel-minor Winograd convolution of `job` (its weight from [`pack`]): per group of images, x
/// transposed in, the tiles ([`conv_images`]), y transposed out.
pub fn conv(level: Simd, job: SameConv) -> Vec<f32> {
    let SameConv { input, ch_in, packed, ch_out, bias, shape: s } = job;
    let (cpo, cpi) = padding(level, ch_out, ch_in);
    let (h, w, hw) = (s.h, s.w, s.h * s.w);
    let ((xr, xc), (yr, yc)) = layouts(h, w);
    let (x_image, y_image) = (xr * xc * cpi, yr * yc * cpo);
    let per_call = images_per_call(s.n, most_images_per_call(h, w), rayon::current_num_threads());
    let mut bias_padded = vec![0.0; cpo];
    if let Some(b) = bias {
        bias_padded[..ch_out].copy_from_slice(&b[..ch_out]);
    }
    let mut out = crate::pool::take_dirty(s.n * ch_out * hw);
    out.par_chunks_mut(per_call * ch_out * hw).enumerate().for_each(|(g, out_g)| {
        let images = out_g.len() / (ch_out * hw);
        let (xt_len, yt_len) = (images * x_image, images * y_image);
        with_work(xt_len + yt_len + scratch_len(level, images, h, w, cpo, cpi), |work| {
            let (xt, rest) = work.split_at_mut(xt_len);
            let (yt, scratch) = rest.split_at_mut(yt_len);
            for (j, dst) in xt.chunks_exact_mut(x_image).enumerate() {
                let src = &input[(g * per_call + j) * ch_in * hw..][..ch_in * hw];
                transpose_into(level, ToChannelMinor { src, c: ch_in, h, w, off: 1, cols: xc, cp: cpi, dst });
            }
            let bias = &bias_padded;
            conv_images(level, ConvImages { xt, images, h, w, cpi, packed, cpo, bias, yt, scratch });
            for (src, dst) in yt.chunks_exact(y_image).zip(out_g.chunks_exact_mut(ch_out * hw)) {
                transpose_from(level, FromChannelMinor { src, c: ch_out, h, w, cols: yc, cp: cpo, dst });
            }
        });
    });
    out
}
