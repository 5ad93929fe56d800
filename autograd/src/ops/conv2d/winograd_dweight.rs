//! The weight gradient of the Winograd paths, in the Winograd domain.
//!
//! # The weight gradient
//! Y = Aᵀ M A is linear in M, and M_ξ = Σ_ci U_ξ V_ξ, so going backward: ∂L/∂M = A dY Aᵀ (the output
//! transform's transpose, a 2×2 block of dy spread onto 4×4 with adds), ∂L/∂U_ξ[co, ci] = Σ_tiles
//! (A dY Aᵀ)_ξ[co, tile] · V_ξ[ci, tile], and U = G g Gᵀ gives ∂L/∂g = Gᵀ (∂L/∂U) G. The sum over tiles is
//! again 16 matrix products, now with the tiles as the summed axis; so the layouts are channel-minor: x and
//! dy are first transposed to [pixel, channel] (in registers, [`transpose_square`]), the transforms run on
//! vectors of channels, and the register tile is R output channels (W broadcast) × 2 vectors of input
//! channels (V loaded), summed over every tile of a chunk of tiles, nothing summed across lanes. No junk
//! tiles either: the chunks list only real ones, and the tiles that hang over an odd edge read zeros of dy.

use rayon::prelude::*;

use super::direct::fma_tap;
use super::parallel::sum_partials;
use super::shape::ConvShape;
use super::transpose::{transpose_into, ToChannelMinor};
use super::winograd::{spread, transform_inputs_cm};
use crate::cpu::Simd;
use crate::vector::{self, F32Vector};

/// Weight-gradient tile at each SIMD level: R output channels (broadcast) × 2 vectors of input channels.
/// The output channels are padded with zeros to whole vectors, the input channels to the tile's two
/// ([`dweight_padding`]); where R does not divide the output channels, the last rows take tiles of 4 and 2
/// ([`dweight_chunk`]). On AVX2, 6 × 2 (12 accumulators of 16 registers) replaced 4 × 2, as the forward's
/// tiles did (`direct::forward_tile`).
fn dweight_tile(level: Simd) -> (usize, usize) {
    match level {
        Simd::Avx512 => (8, 16),
        Simd::Avx2 => (6, 8),
        Simd::Baseline if cfg!(target_arch = "aarch64") => (8, 4),
        Simd::Baseline => (4, 4),
    }
}

/// (cpo, cpi): c_out rounded up to whole vectors (dy's transform runs on vectors of output channels), c_in
/// to the tile's two vectors.
pub fn dweight_padding(level: Simd, c_out: usize, c_in: usize) -> (usize, usize) {
    let lanes = dweight_tile(level).1;
    (c_out.next_multiple_of(lanes), c_in.next_multiple_of(2 * lanes))
}

/// The layouts [`dweight_images`] reads for an h×w image: (xᵀ [2·th + 2, 2·tw + 2, cpi] from
/// [`transpose_into`] with off = 1, its row length; dyᵀ [2·th, 2·tw, cpo] with off = 0, its row length).
pub fn dweight_layouts(h: usize, w: usize) -> ((usize, usize), (usize, usize)) {
    super::winograd_cm::layouts(h, w) // the forward's channel-minor layouts
}

/// Scratch floats [`dweight_images`] needs: V [16, T, cpi] and W [16, T, cpo] for a chunk of T tiles.
pub fn dweight_scratch_len(images: usize, h: usize, w: usize, cpo: usize, cpi: usize) -> usize {
    let chunk = dweight_chunk_tiles(cpo, cpi, images * h.div_ceil(2) * w.div_ceil(2));
    16 * (spread(chunk * cpi) + spread(chunk * cpo))
}

/// Images per [`dweight_images`] call: enough for about 64 tiles, so that small maps (7×7 has 16 tiles)
/// still sum over long runs of tiles between loading and storing their accumulators.
pub fn dweight_images_per_call(h: usize, w: usize) -> usize {
    64usize.div_ceil(h.div_ceil(2) * w.div_ceil(2))
}

/// The Winograd weight gradient of a group of images: what [`dweight_images`] reads and writes.
pub struct DweightImages<'a> {
    pub xt: &'a [f32],
    pub dyt: &'a [f32],
    pub images: usize,
    pub h: usize,
    pub w: usize,
    pub cpo: usize,
    pub cpi: usize,
    pub scratch: &'a mut [f32],
    pub du: &'a mut [f32],
}

/// du [16, cpo, cpi] += the transformed weight gradient of `images` images:
/// du_ξ[co, ci] += Σ_tiles W_ξ[tile, co] · V_ξ[tile, ci], with V = Bᵀ d B of the input tiles (from xᵀ
/// [images, …]) and W = A dY Aᵀ of the 2×2 blocks of dy (from dyᵀ [images, …]), in image order. See "The
/// weight gradient" in the module doc.
pub fn dweight_images(level: Simd, job: DweightImages) {
    let DweightImages { xt, dyt, images, h, w, cpo, cpi, scratch, du } = job;
    crate::cpu::check_supported(level);
    let lanes = dweight_tile(level).1;
    let ((xr, xc), (yr, yc)) = dweight_layouts(h, w);
    // Whole vectors of output channels (an even number: the tail tiles are 4 and 2 rows).
    assert!(cpo.is_multiple_of(lanes) && lanes.is_multiple_of(2) && cpi.is_multiple_of(2 * lanes));
    assert!(xt.len() >= images * xr * xc * cpi && dyt.len() >= images * yr * yc * cpo);
    assert!(du.len() >= 16 * cpo * cpi && scratch.len() >= dweight_scratch_len(images, h, w, cpo, cpi));
    let args = DweightImages { xt, dyt, images, h, w, cpo, cpi, scratch, du };
    // SAFETY: the level is supported (checked above), and the asserts cover every access.
    unsafe {
        match level {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => dweight_avx512(args),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => dweight_avx2(args),
            #[cfg(target_arch = "aarch64")]
            _ => dweight_tiles::<vector::Neon, 8>(args),
            #[cfg(not(target_arch = "aarch64"))]
            _ => dweight_tiles::<vector::Portable, 4>(args),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dweight_avx512(args: DweightImages) {
    dweight_tiles::<vector::Avx512, 8>(args)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dweight_avx2(args: DweightImages) {
    dweight_tiles::<vector::Avx2, 6>(args)
}

/// A y for one column (or row) of a 2×2 block: [y₀, y₀ + y₁, y₀ − y₁, −y₁].
#[inline(always)]
unsafe fn output_adjoint_1d<V: F32Vector>(y: [V; 2]) -> [V; 4] {
    [y[0], y[0].add(y[1]), y[0].sub(y[1]), V::zero().sub(y[1])]
}

/// W = A dY Aᵀ, dY [2][2] → W row-major [4 × 4]: the transpose of the output transform.
#[inline(always)]
unsafe fn output_adjoint<V: F32Vector>(dy: [[V; 2]; 2]) -> [V; 16] {
    let columns: [[V; 4]; 2] = std::array::from_fn(|b| unsafe { output_adjoint_1d([dy[0][b], dy[1][b]]) });
    std::array::from_fn(|xi| unsafe { output_adjoint_1d([columns[0][xi / 4], columns[1][xi / 4]])[xi % 4] })
}

/// 1. V_ξ[t, ci] and W_ξ[t, co] for every tile t = i·tw + j, vectors over channels, into scratch;
/// 2. for each ξ, block of NV = 2 vectors of input channels, block of R output channels: acc [R][2] starts
///    from du, gathers W_ξ[t, co] (broadcast) · V_ξ[t, ci..] over every tile, and goes back to du.
///
/// # Safety
/// V's instruction set is available, and [`dweight_image`]'s asserts hold.
#[inline(always)]
unsafe fn dweight_tiles<V: F32Vector, const R: usize>(
    DweightImages { xt, dyt, images, h, w, cpo, cpi, scratch, du }: DweightImages,
) {
    let lanes = V::LANES;
    let ((xr, xc), (yr, yc)) = dweight_layouts(h, w);
    let tw = w.div_ceil(2);
    let per_image = h.div_ceil(2) * tw;
    let tiles = images * per_image;
    let chunk = dweight_chunk_tiles(cpo, cpi, tiles);
    let (v_plane, w_plane) = (spread(chunk * cpi), spread(chunk * cpo));
    let (vbuf, wbuf) = scratch.split_at_mut(16 * v_plane);
    let (vbuf, wbuf) = (vbuf.as_mut_ptr(), wbuf.as_mut_ptr());
    for t0 in (0..tiles).step_by(chunk) {
        let count = chunk.min(tiles - t0);
        // The transforms of this chunk's tiles, V [16, count, cpi] and W [16, count, cpo]. Input (rr, cc) of
        // tile (i, j) of image n is xᵀ_n pixel (2i + rr, 2j + cc); dy (a, b) is dyᵀ_n pixel (2i + a, 2j + b).
        transform_inputs_cm::<V>(xt, (xr, xc), cpi, (per_image, tw), t0, count, vbuf, v_plane);
        for t in 0..count {
            let (n, tile) = ((t0 + t) / per_image, (t0 + t) % per_image);
            let (i, j) = (tile / tw, tile % tw);
            let y0 = dyt.as_ptr().add(((n * yr + 2 * i) * yc + 2 * j) * cpo);
            for k in (0..cpo).step_by(lanes) {
                let dy: [[V; 2]; 2] = std::array::from_fn(|a| {
                    std::array::from_fn(|b| unsafe { V::load(y0.add((a * yc + b) * cpo + k)) })
                });
                for (xi, value) in output_adjoint(dy).into_iter().enumerate() {
                    value.store(wbuf.add(xi * w_plane + t * cpo + k));
                }
            }
        }
        for xi in 0..16 {
            let v_xi = vbuf.add(xi * v_plane) as *const f32;
            let w_xi = wbuf.add(xi * w_plane) as *const f32;
            let du = du.as_mut_ptr().add(xi * cpo * cpi);
            dweight_chunk::<V, R>(Chunk { v: v_xi, w: w_xi, count, cpo, cpi, du });
        }
    }
}

/// Tiles per chunk of the weight gradient, for an image of `tiles` tiles: few enough that the slices the
/// products read again and again stay in L1 (one ξ's W, count·cpo floats, and one block of 2 vectors of
/// input channels of its V, count·2·lanes, at most 32 KB), and all 16 ξ of V and W (at most 1 MB) in L2
/// between the transforms writing them and the products reading them; and chunks of equal size.
fn dweight_chunk_tiles(cpo: usize, cpi: usize, tiles: usize) -> usize {
    let most = (8192 / (cpo + 32)).min(16384 / (cpi + cpo)).max(8);
    tiles.div_ceil(tiles.div_ceil(most))
}

/// One ξ of a chunk for [`dweight_chunk`]: v [count tiles, cpi], w [count tiles, cpo], du [cpo, cpi].
#[derive(Clone, Copy)]
struct Chunk {
    v: *const f32,
    w: *const f32,
    count: usize,
    cpo: usize,
    cpi: usize,
    du: *mut f32,
}

/// du [cpo, cpi] += Σ over `count` tiles of w [tile, cpo] ⊗ v [tile, cpi], register tile by register tile:
/// R output channels at a time, then the rows left (cpo mod R, even) 4 and 2 at a time.
///
/// # Safety
/// As [`dweight_tiles`]; `v`, `w` hold `count` rows.
#[inline(always)]
unsafe fn dweight_chunk<V: F32Vector, const R: usize>(chunk: Chunk) {
    let whole = chunk.cpo - chunk.cpo % R;
    for ci0 in (0..chunk.cpi).step_by(2 * V::LANES) {
        for co0 in (0..whole).step_by(R) {
            dweight_block::<V, R>(chunk, co0, ci0);
        }
        let mut co0 = whole;
        while co0 + 4 <= chunk.cpo {
            dweight_block::<V, 4>(chunk, co0, ci0);
            co0 += 4;
        }
        while co0 < chunk.cpo {
            dweight_block::<V, 2>(chunk, co0, ci0);
            co0 += 2;
        }
    }
}

/// du[co0 + c, ci0 + v·lanes ..] += Σ_tiles w[tile, co0 + c] · v[tile, ci0 + v·lanes ..] for c < R and two
/// vectors v: acc [R][2] starts from du, gathers the products over every tile in order (`direct::fma_tap`),
/// and goes back.
///
/// # Safety
/// As [`dweight_chunk`]; co0 + R ≤ cpo and ci0 + 2·lanes ≤ cpi.
#[inline(always)]
unsafe fn dweight_block<V: F32Vector, const R: usize>(chunk: Chunk, co0: usize, ci0: usize) {
    let Chunk { v, w, count, cpo, cpi, du } = chunk;
    let lanes = V::LANES;
    let out = du.add(co0 * cpi + ci0);
    let mut acc: [[V; 2]; R] =
        std::array::from_fn(|c| std::array::from_fn(|j| unsafe { V::load(out.add(c * cpi + j * lanes)) }));
    let (mut vp, mut wp) = (v.add(ci0), w.add(co0));
    for _ in 0..count {
        fma_tap(&mut acc, vp, wp);
        (vp, wp) = (vp.add(cpi), wp.add(cpo));
    }
    let finished = acc;
    for (c, vectors) in finished.iter().enumerate() {
        for (j, vector) in vectors.iter().enumerate() {
            vector.store(out.add(c * cpi + j * lanes));
        }
    }
}

/// dweight [c_out, c_in, 3, 3] = Gᵀ du G per (co, ci), from du [16, cpo, cpi] (the transposed kernel
/// transform: U = G g Gᵀ, so ∂L/∂g = Gᵀ (∂L/∂U) G).
pub fn dweight_from_transformed(du: &[f32], c_out: usize, c_in: usize, cpo: usize, cpi: usize, dweight: &mut [f32]) {
    // Gᵀ u for one column (or row) of four: [u₀ + (u₁ + u₂)/2, (u₁ − u₂)/2, (u₁ + u₂)/2 + u₃].
    let gt = |u: [f32; 4]| [u[0] + 0.5 * (u[1] + u[2]), 0.5 * (u[1] - u[2]), 0.5 * (u[1] + u[2]) + u[3]];
    for (co, dw_co) in dweight.chunks_exact_mut(c_in * 9).enumerate().take(c_out) {
        for (ci, g) in dw_co.chunks_exact_mut(9).enumerate() {
            let u = |xi: usize| du[(xi * cpo + co) * cpi + ci];
            let columns: [[f32; 3]; 4] = std::array::from_fn(|v| gt([u(v), u(4 + v), u(8 + v), u(12 + v)]));
            for ky in 0..3 {
                let row = gt([columns[0][ky], columns[1][ky], columns[2][ky], columns[3][ky]]);
                g[ky * 3..ky * 3 + 3].copy_from_slice(&row);
            }
        }
    }
}

/// Groups of images for the Winograd weight gradient: each group sums its images' transformed gradients in
/// image order into its own partial sum (16·c_out·c_in floats, 1 MB at 128 → 128), and the partials are
/// then added in group order. Up to 8 groups, fewer where that leaves less than 256 tiles per group: on a
/// 7×7 map, 8 partials cost about as much to clear and add up as the products themselves. Depends on the
/// shape only, never on the number of threads.
fn winograd_dweight_groups(s: &ConvShape) -> usize {
    (s.n * s.h.div_ceil(2) * s.w.div_ceil(2) / 256).clamp(1, 8).min(s.n)
}

/// The Winograd weight gradient of a 3×3 "same" convolution (see "The weight gradient" in `winograd.rs`):
/// per group of images, in parallel, du_g[ξ, co, ci] = Σ_{n in g} Σ_tiles W_ξ[tile, co] · V_ξ[tile, ci];
/// du = Σ_g du_g in group order; dweight = Gᵀ du G.
pub fn winograd_dweight(level: Simd, x: &[f32], dy: &[f32], s: &ConvShape) -> Vec<f32> {
    let (cpo, cpi) = dweight_padding(level, s.c_out, s.c_in);
    let ((xr, xc), (yr, yc)) = dweight_layouts(s.h, s.w);
    let (image, out_image, du_len) = (s.c_in * s.h * s.w, s.c_out * s.h * s.w, 16 * cpo * cpi);
    let group = s.n.div_ceil(winograd_dweight_groups(s));
    let groups = s.n.div_ceil(group);
    let mut partial = crate::pool::scratch(groups * du_len); // [groups, 16, cpo, cpi]
    let per_call = dweight_images_per_call(s.h, s.w).min(group);
    partial.par_chunks_mut(du_len).enumerate().for_each(|(g, du)| {
        du.fill(0.0);
        let mut xt = crate::pool::scratch(per_call * xr * xc * cpi); // [per_call, xr, xc, cpi]
        let mut dyt = crate::pool::scratch(per_call * yr * yc * cpo); // [per_call, yr, yc, cpo]
        let scratch_len = dweight_scratch_len(per_call, s.h, s.w, cpo, cpi);
        let mut scratch = crate::pool::scratch(scratch_len);
        let end = ((g + 1) * group).min(s.n);
        for n0 in (g * group..end).step_by(per_call) {
            let images = per_call.min(end - n0);
            for j in 0..images {
                let (x_n, dy_n) = (&x[(n0 + j) * image..][..image], &dy[(n0 + j) * out_image..][..out_image]);
                let (h, w) = (s.h, s.w);
                let dst = &mut xt[j * xr * xc * cpi..][..xr * xc * cpi];
                transpose_into(level, ToChannelMinor { src: x_n, c: s.c_in, h, w, off: 1, cols: xc, cp: cpi, dst });
                let dst = &mut dyt[j * yr * yc * cpo..][..yr * yc * cpo];
                transpose_into(level, ToChannelMinor { src: dy_n, c: s.c_out, h, w, off: 0, cols: yc, cp: cpo, dst });
            }
            let (xt, dyt, scratch) = (&xt, &dyt, &mut scratch);
            dweight_images(level, DweightImages { xt, dyt, images, h: s.h, w: s.w, cpo, cpi, scratch, du });
        }
    });
    let du = crate::pool::Scratch::from(sum_partials(&partial, groups, du_len));
    let mut dweight = crate::pool::take_dirty(s.c_out * s.ckk());
    dweight_from_transformed(&du, s.c_out, s.c_in, cpo, cpi, &mut dweight);
    dweight
}
