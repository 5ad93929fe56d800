//! Winograd F(2×2, 3×3): the 3×3 "same" convolutions (stride 1, padding 1) of the U-Net with 2.25× fewer
//! multiplications than the definition (Lavin & Gray 2016, "Fast Algorithms for
//! Convolutional Neural Networks", after Winograd 1980's minimal filtering).
//!
//! Legend as in `direct.rs`, plus: a *tile* is a 2×2 block of outputs, tile (i, j) covering output rows
//! 2i, 2i + 1 and columns 2j, 2j + 1; `th`×`tw` tiles cover an h×w image; `ξ` = 0..16 numbers the 4×4
//! transformed values of a tile (ξ = 4u + v).
//!
//! # Two outputs from four multiplications
//! Two outputs of a 3-tap correlation, y₀ = d₀g₀ + d₁g₁ + d₂g₂ and y₁ = d₁g₀ + d₂g₁ + d₃g₂, take six
//! multiplications. Four suffice:
//! ```text
//! m₀ = (d₀ − d₂)·g₀      m₁ = (d₁ + d₂)·(g₀ + g₁ + g₂)/2      m₂ = (d₂ − d₁)·(g₀ − g₁ + g₂)/2      m₃ = (d₁ − d₃)·g₂
//! y₀ = m₀ + m₁ + m₂      y₁ = m₁ − m₂ − m₃
//! ```
//! (expand: the g₁ terms of m₁ and m₂ add to d₁g₁ + d₂g₁ … and so on). As matrices, y = Aᵀ[(G g) ⊙ (Bᵀ d)];
//! nesting the same in two dimensions gives a tile, 2×2 outputs from the 4×4 inputs around them, as
//! ```text
//! Y = Aᵀ [ U ⊙ V ] A,      U = G g Gᵀ  (per 3×3 kernel),      V = Bᵀ d B  (per 4×4 input block)
//! Bᵀ = ⎡1  0 −1  0⎤      G = ⎡1   0   0⎤      Aᵀ = ⎡1  1  1  0⎤
//!      ⎢0  1  1  0⎥          ⎢½   ½   ½⎥           ⎣0  1 −1 −1⎦
//!      ⎢0 −1  1  0⎥          ⎢½  −½   ½⎥
//!      ⎣0  1  0 −1⎦          ⎣0   0   1⎦
//! ```
//! 16 multiplications for 4 outputs where the definition takes 36. Over channels, the ⊙ becomes a sum: for
//! each of the 16 values ξ,
//! ```text
//! M_ξ[co, tile] = Σ_ci U_ξ[co, ci] · V_ξ[ci, tile]        then per tile  Y = Aᵀ M A + bias
//! ```
//! sixteen independent matrix products, and those run on the direct kernel's register tile: C output
//! channels × NV vectors of tiles, with U broadcast and V loaded. The transforms are adds only: V once per
//! (image, ci, tile) and shared by all output channels, Y once per (co, tile).
//!
//! # Layout: the tiles of an image as one long row
//! Pad the image by one zero pixel (xpad) and split it by row and column parity into four *phases*,
//! phase (a, b)[r, c] = xpad[2r + a, 2c + b], each with rows `row` = tw + 1 long. Tile (i, j) reads the
//! 4×4 block xpad[2i.., 2j..], and its input (rr, cc) is phase (rr mod 2, cc mod 2) at t + (rr/2)·row + cc/2,
//! where t = i·row + j. Every tile's 16 inputs are thus fixed offsets from t, like the taps of the direct
//! kernel, and a vector of consecutive tiles is 16 plain loads. Column j = tw is junk: computed, never
//! stored. At the end, interleaving (zip) Y[a][0] with Y[a][1] puts output row 2i + a's columns 2j and
//! 2j + 1 side by side, and masked stores of the valid runs write them into y, as in the direct kernel.
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
//!
//! # What it costs, and where it pays
//! Per output and input channel, 16/4 = 4 multiply-adds against the direct kernel's 9; the junk column and
//! the rounding of the tile count to whole register tiles take part of it back: 28×28 computes 224 tiles
//! for 196 (×4 outputs: 896 for 784 pixels; the direct kernel computes 840), 14×14 64 tiles for 256 outputs
//! (direct: 224 for 196), 7×7 32 tiles for 49 pixels (direct: 64). So maps under [`FLAT_MIN_SIZE`] take
//! the channel-minor layout of `winograd_cm.rs` for their forward and input gradient, which lists real
//! tiles only. The transforms cost about what 1–2 input channels of products do, so few channels do not pay
//! ([`is_winograd_conv`]). The result differs from the definition's by rounding only: a few ulps more than
//! the direct kernel's (the transforms add up to 9 terms before and after the products), checked against
//! `conv2d_forward_naive` with the same bound as every other path.

use super::direct::{fma_tap, forward_tile, is_same_conv, store_at, vectors_per_tile, Place, Rows};
use super::parallel::per_image;
use super::shape::{ConvShape, SameConv};
use crate::cpu::Simd;
use crate::pool::Scratch;
use crate::vector::{self, F32Vector};

/// True for the convolutions computed with Winograd's transforms: 3×3 "same", at least
/// [`WINOGRAD_MIN_CHANNELS`] channels in and out. Their forward and input gradient take this file's layout
/// on maps of at least [`FLAT_MIN_SIZE`] on both sides and `winograd_cm.rs`'s below; their weight gradient
/// is this file's (channel-minor already) at every size.
pub fn is_winograd_conv(s: &ConvShape) -> bool {
    is_same_conv(s) && s.kh == 3 && s.c_in.min(s.c_out) >= WINOGRAD_MIN_CHANNELS
}

/// True where the forward and input gradient take this file's layout (tiles of one channel in the lanes).
pub fn flat_layout(s: &ConvShape) -> bool {
    s.h.min(s.w) >= FLAT_MIN_SIZE
}

/// Smaller maps take the channel-minor layout of `winograd_cm.rs`: the junk column and the rounding of the
/// tile count cost too much there (7×7: 32 tiles computed for 16, 14×14: 64 for 49). Measured, batch 32,
/// 2 threads, this layout against the channel-minor one: [32, 64, 28, 28] → 64 4.2 against 4.3 ms,
/// [32, 96, 28, 28] → 32 3.9 against 6.4 ms; [32, 128, 14, 14] → 128 4.5 against 4.3 ms, [32, 32, 14, 14] → 64
/// 0.72 against 0.63 ms, [32, 128, 7, 7] → 128 2.2 against 1.6 ms.
pub const FLAT_MIN_SIZE: usize = 24;

/// Fewer channels keep the direct kernel: the input transform costs about what 1–2 channels of products
/// do, and a tile of C output channels would be mostly empty.
pub const WINOGRAD_MIN_CHANNELS: usize = 8;

/// The tile layout of one image (the module doc's `th`, `tw`, `row`), with the tile count `qr` rounded up
/// to whole register tiles of `tile` tiles, and `plane`, the length of one phase in memory.
#[derive(Clone, Copy, Debug)]
pub struct Tiles {
    pub h: usize,
    pub w: usize,
    pub th: usize,
    /// tw + 1
    pub row: usize,
    pub tile: usize,
    pub qr: usize,
    pub plane: usize,
}

impl Tiles {
    pub fn new(h: usize, w: usize, tile: usize) -> Tiles {
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let row = tw + 1;
        let qr = (th * row).next_multiple_of(tile);
        // The last register tile reads up to qr − 1 + row + 1; the phases hold th + 1 rows. A multiple of
        // 16 keeps every phase 64-byte aligned relative to the first.
        let plane = (qr + row + 1).max((th + 1) * row).next_multiple_of(16);
        Tiles { h, w, th, row, tile, qr, plane }
    }

    /// The layout at this SIMD level: register tiles of 2 or 3 vectors of tiles, whichever rounds less (always
    /// 2 on AVX2: `direct::vectors_per_tile`).
    pub fn for_level(level: Simd, h: usize, w: usize) -> Tiles {
        let q = h.div_ceil(2) * (w.div_ceil(2) + 1);
        Tiles::new(h, w, vectors_per_tile(level, q) * forward_tile(level).1)
    }

    /// phases [c, 4, plane] ← x [c, h, w]: phase 2a + b holds xpad[2r + a, 2col + b] at r·row + col, where
    /// xpad is x with a zero border; zeros everywhere else.
    pub fn split(&self, x: &[f32], c: usize, phases: &mut [f32]) {
        let (h, w, row, plane) = (self.h, self.w, self.row, self.plane);
        for (src, dst) in x.chunks_exact(h * w).zip(phases.chunks_exact_mut(4 * plane)).take(c) {
            let (top, bottom) = dst.split_at_mut(2 * plane); // phases (0, ·) and (1, ·)
            let mut rows_a = [top.chunks_exact_mut(plane), bottom.chunks_exact_mut(plane)];
            let mut phase: [[&mut [f32]; 2]; 2] =
                std::array::from_fn(|a| std::array::from_fn(|_| rows_a[a].next().unwrap()));
            for r in 0..=self.th {
                for (a, [even, odd]) in phase.iter_mut().enumerate() {
                    // xpad row 2r + a is x row 2r + a − 1.
                    let (even, odd) = (&mut even[r * row..][..row], &mut odd[r * row..][..row]);
                    let Some(y) = (2 * r + a).checked_sub(1).filter(|&y| y < h) else {
                        even.fill(0.0);
                        odd.fill(0.0);
                        continue;
                    };
                    // xpad column 2col + b is x column 2col + b − 1: x columns 0, 2, 4, … go to phase
                    // (a, 1) from column 0 on, x columns 1, 3, … to phase (a, 0) from column 1 on.
                    let src = &src[y * w..][..w];
                    even.fill(0.0);
                    odd.fill(0.0);
                    for (k, pair) in src.chunks_exact(2).enumerate() {
                        odd[k] = pair[0];
                        even[k + 1] = pair[1];
                    }
                    if w % 2 == 1 {
                        odd[w / 2] = src[w - 1];
                    }
                }
            }
            for p in phase.iter_mut().flatten() {
                p[(self.th + 1) * row..].fill(0.0);
            }
        }
    }
}

/// U = G g Gᵀ of one 3×3 kernel g.
#[inline(always)]
pub fn transform_kernel(g: [[f32; 3]; 3]) -> [[f32; 4]; 4] {
    let gv = |v: [f32; 3]| [v[0], 0.5 * (v[0] + v[1] + v[2]), 0.5 * (v[0] - v[1] + v[2]), v[2]];
    let columns: [[f32; 4]; 3] = std::array::from_fn(|k| gv([g[0][k], g[1][k], g[2][k]])); // (G g)ᵀ
    std::array::from_fn(|u| gv([columns[0][u], columns[1][u], columns[2][u]]))
}

/// weight [c_out, c_in, 3, 3] transformed and packed for [`winograd_image`] with tiles of `c` output
/// channels: packed [c_out/c blocks (rounded up), 16 (ξ), c_in, c] = U_ξ (the ξ planes [`spread`] apart),
/// zeros for the channels past c_out.
/// With `rotate`, the input gradient's kernel instead (see `direct::pack_weight`).
pub fn pack_weight(weight: &[f32], c_out: usize, c_in: usize, c: usize, rotate: bool) -> Vec<f32> {
    use rayon::prelude::*;
    let (rows, cols) = if rotate { (c_in, c_out) } else { (c_out, c_in) };
    let mut packed = crate::pool::take_dirty(16 * rows.div_ceil(c) * spread(c * cols));
    packed.par_chunks_mut(16 * spread(c * cols)).enumerate().for_each(|(block, out)| {
        for i in 0..c {
            let r = block * c + i;
            for col in 0..cols {
                let g = std::array::from_fn(|ky| {
                    std::array::from_fn(|kx| match (r < rows, rotate) {
                        (false, _) => 0.0,
                        (true, false) => weight[(r * c_in + col) * 9 + ky * 3 + kx],
                        (true, true) => weight[(col * c_in + r) * 9 + (2 - ky) * 3 + (2 - kx)],
                    })
                });
                let u = transform_kernel(g);
                for xi in 0..16 {
                    out[xi * spread(c * cols) + col * c + i] = u[xi / 4][xi % 4];
                }
            }
        }
    });
    packed
}

/// Bᵀ x for one column (or row) of a 4×4 block.
#[inline(always)]
unsafe fn input_1d<V: F32Vector>(x: [V; 4]) -> [V; 4] {
    [x[0].sub(x[2]), x[1].add(x[2]), x[2].sub(x[1]), x[1].sub(x[3])]
}

/// V = Bᵀ d B, d and V row-major [4 × 4].
#[inline(always)]
pub(super) unsafe fn input_transform<V: F32Vector>(d: [V; 16]) -> [V; 16] {
    let columns: [[V; 4]; 4] = std::array::from_fn(|c| unsafe { input_1d([d[c], d[4 + c], d[8 + c], d[12 + c]]) });
    let rows: [[V; 4]; 4] =
        std::array::from_fn(|u| unsafe { input_1d([columns[0][u], columns[1][u], columns[2][u], columns[3][u]]) });
    std::array::from_fn(|xi| rows[xi / 4][xi % 4])
}

/// Aᵀ x for one column (or row) of a 4×4 block.
#[inline(always)]
unsafe fn output_1d<V: F32Vector>(x: [V; 4]) -> [V; 2] {
    [x[0].add(x[1]).add(x[2]), x[1].sub(x[2]).sub(x[3])]
}

/// Y = Aᵀ M A, M row-major [4 × 4], Y [2][2].
#[inline(always)]
pub(super) unsafe fn output_transform<V: F32Vector>(m: [V; 16]) -> [[V; 2]; 2] {
    let columns: [[V; 2]; 4] = std::array::from_fn(|c| unsafe { output_1d([m[c], m[4 + c], m[8 + c], m[12 + c]]) });
    std::array::from_fn(|a| unsafe { output_1d([columns[0][a], columns[1][a], columns[2][a], columns[3][a]]) })
}

/// Scratch floats [`winograd_image`] needs: V [16, c_in, L] and M [c_out/c, 16, c, L] for one register
/// tile of L tiles, with `c` output channels per tile (this level's C).
pub fn scratch_len(tiles: &Tiles, c_in: usize, c_out: usize, c: usize) -> usize {
    16 * xi_stride(tiles.tile, c_in) + c_out.div_ceil(c) * 16 * c * tiles.tile
}

/// Floats from V_ξ to V_ξ₊₁ in the scratch: c_in·L, spread ([`spread`]).
fn xi_stride(l: usize, c_in: usize) -> usize {
    spread(c_in * l)
}

/// The distance between consecutive planes of the 16 ξ in a buffer whose planes hold `floats` floats: one
/// cache line more. A transform reads or writes the same place in all 16 planes at once, and when the plane
/// size is a multiple of 4 KB (c_in·L = 64 × 32 floats is 8 KB) those 16 lines all fall in one 12-way L1 set
/// and evict each other: packing the channel-minor weights of 128 → 128 channels took 1.0 ms instead of
/// 0.2–0.24 ms on one thread, and the forward of [32, 64, 28, 28] → 64 (one thread) 13.5 → 11.0 ms.
pub(super) fn spread(floats: usize) -> usize {
    floats + 16
}

/// One image's Winograd convolution: what [`winograd_image`] reads and writes.
pub struct WinogradImage<'a> {
    pub phases: &'a [f32],
    pub tiles: &'a Tiles,
    pub c_in: usize,
    pub packed: &'a [f32],
    pub c_out: usize,
    pub bias: Option<&'a [f32]>,
    pub y: &'a mut [f32],
    pub scratch: &'a mut [f32],
}

/// y [c_out, h, w] = bias + the 3×3 "same" convolution of one image, from its phases [c_in, 4, plane]
/// (from [`Tiles::split`]) and `packed` (from [`pack_weight`] with this level's C), for a layout from
/// [`Tiles::for_level`]. `scratch`: [`scratch_len`] floats. The same loop computes the input gradient (the
/// weight packed rotated, dy's phases as input, no bias).
pub fn winograd_image(level: Simd, job: WinogradImage) {
    let WinogradImage { phases, tiles, c_in, packed, c_out, bias, y, scratch } = job;
    crate::cpu::check_supported(level);
    let (c, lanes) = forward_tile(level);
    let nv = tiles.tile / lanes;
    // Everything the tiles read and write, checked once here.
    // AVX2 has one kernel, of 2 vectors (`direct::vectors_per_tile`).
    assert!(
        (nv == 2 || (nv == 3 && level != Simd::Avx2))
            && tiles.tile == nv * lanes
            && tiles.qr.is_multiple_of(tiles.tile)
    );
    assert!(tiles.plane > tiles.qr + tiles.row && phases.len() >= c_in * 4 * tiles.plane);
    assert!(packed.len() >= 16 * c_out.div_ceil(c) * spread(c * c_in) && y.len() >= c_out * tiles.h * tiles.w);
    assert!(bias.is_none_or(|b| b.len() >= c_out) && scratch.len() >= scratch_len(tiles, c_in, c_out, c));
    let args = WinogradImage { phases, tiles, c_in, packed, c_out, bias, y, scratch };
    // SAFETY: the level is supported (checked above), and the asserts cover every access of the tiles.
    unsafe {
        match (level, nv) {
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512, 2) => winograd_avx512::<2>(args),
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512, _) => winograd_avx512::<3>(args),
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx2, _) => winograd_avx2(args),
            #[cfg(target_arch = "aarch64")]
            (_, 2) => winograd_tiles::<vector::Neon, 8, 2>(args),
            #[cfg(target_arch = "aarch64")]
            _ => winograd_tiles::<vector::Neon, 8, 3>(args),
            #[cfg(not(target_arch = "aarch64"))]
            (_, 2) => winograd_tiles::<vector::Portable, 4, 2>(args),
            #[cfg(not(target_arch = "aarch64"))]
            _ => winograd_tiles::<vector::Portable, 4, 3>(args),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn winograd_avx512<const NV: usize>(args: WinogradImage) {
    winograd_tiles::<vector::Avx512, 8, NV>(args)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn winograd_avx2(args: WinogradImage) {
    winograd_tiles::<vector::Avx2, 6, 2>(args)
}

/// The tile loop: for each L = NV·lanes tiles t0..,
/// 1. V_ξ[ci, t0..] = (Bᵀ d B)_ξ for every input channel, into `scratch` [16, c_in, L];
/// 2. for each ξ, then each block of C output channels: M_ξ = Σ_ci U_ξ[co, ci] · V_ξ[ci, ·] in a register
///    tile acc [C][NV vectors], stored to `scratch`'s M [c_out/C, 16, C, L];
/// 3. Y = Aᵀ M A + bias per channel and vector, zipped into output rows and stored by runs.
///
/// # Safety
/// V's instruction set is available, and [`winograd_image`]'s asserts hold.
#[inline(always)]
unsafe fn winograd_tiles<V: F32Vector, const C: usize, const NV: usize>(
    WinogradImage { phases, tiles, c_in, packed, c_out, bias, y, scratch }: WinogradImage,
) {
    let (lanes, l) = (V::LANES, NV * V::LANES);
    let (h, w, row, plane) = (tiles.h, tiles.w, tiles.row, tiles.plane);
    let blocks = c_out.div_ceil(C);
    // Input (rr, cc) of tile t: phase (rr mod 2, cc mod 2) at t + (rr/2)·row + cc/2.
    let offsets: [usize; 16] =
        std::array::from_fn(|k| ((k / 4 % 2) * 2 + k % 4 % 2) * plane + (k / 8) * row + (k % 4) / 2);
    let (vbuf, stride) = (scratch.as_mut_ptr(), xi_stride(l, c_in));
    let mbuf = vbuf.add(16 * stride);
    // Output rows of parity a: flat rows 2·row long, w real, 2w apart in y (see the zip below).
    let rows: [Rows; 2] = std::array::from_fn(|a| Rows { wp: 2 * row, w, rows: (h - a).div_ceil(2), out_row: 2 * w });
    for t0 in (0..tiles.qr).step_by(l) {
        // 1. The input transform of these L tiles, every input channel.
        for ci in 0..c_in {
            let p = phases.as_ptr().add(ci * 4 * plane + t0);
            for v in 0..NV {
                let d: [V; 16] = std::array::from_fn(|k| unsafe { V::load(p.add(offsets[k] + v * lanes)) });
                for (xi, value) in input_transform(d).into_iter().enumerate() {
                    value.store(vbuf.add(xi * stride + ci * l + v * lanes));
                }
            }
        }
        // Where the zipped outputs go: vector v, row parity a, first or second half of the zip. Zipped lane k
        // of half s holds output column 2j + b of row 2i + a for tile t = i·row + j, at flat position
        // 2t + b = i·(2·row) + 2j + b: rows 2·row long, w of them real, then 2w apart in y.
        let places: [[[Place; 2]; 2]; NV] = std::array::from_fn(|v| {
            std::array::from_fn(|a| {
                std::array::from_fn(|s| Place::of(rows[a], 2 * (t0 + v * lanes) + s * lanes, lanes))
            })
        });
        // 2. Sixteen products, ξ by ξ so that V_ξ stays in L1 while every block of output channels reads it;
        // each register tile of M_ξ goes to mbuf [blocks, 16, C, L].
        for xi in 0..16 {
            for cb in 0..blocks {
                let mut acc = [[V::zero(); NV]; C];
                let mut u = packed.as_ptr().add((cb * 16 + xi) * spread(c_in * C)); // [c_in, C]
                let mut vb = vbuf.add(xi * stride) as *const f32; // [c_in, L]
                for _ in 0..c_in {
                    fma_tap(&mut acc, vb, u); // acc[c][v] += u[c] · V_ξ[ci, v·lanes ..]
                    (u, vb) = (u.add(C), vb.add(l));
                }
                let finished = acc;
                let out = mbuf.add((cb * 16 + xi) * C * l);
                for (c, vectors) in finished.iter().enumerate() {
                    for (v, vector) in vectors.iter().enumerate() {
                        vector.store(out.add(c * l + v * lanes));
                    }
                }
            }
        }
        // 3. The output transform, into y.
        for co in 0..c_out {
            let (cb, c) = (co / C, co % C);
            let b = V::splat(bias.map_or(0.0, |b| b[co]));
            let y_c = y.as_mut_ptr().add(co * h * w);
            for (v, places_v) in places.iter().enumerate() {
                let m = mbuf.add(cb * 16 * C * l + c * l + v * lanes) as *const f32;
                let out = output_transform(std::array::from_fn(|xi| unsafe { V::load(m.add(xi * C * l)) }));
                for (a, out_a) in out.iter().enumerate() {
                    let (lo, hi) = out_a[0].add(b).zip(out_a[1].add(b));
                    for (s, half) in [lo, hi].into_iter().enumerate() {
                        store_at(half, y_c.wrapping_add(a * w), places_v[a][s], rows[a]);
                    }
                }
            }
        }
    }
}

/// V [16, ·, cpi] (planes `stride` floats apart, rows 0..count) = Bᵀ d B for tiles t0..t0 + count of images
/// laid out channel-minor,
/// xᵀ [images, xr, xc, cpi] (from [`transpose_into`] with off = 1): input (rr, cc) of tile (i, j) of image n
/// (t = n·per_image + i·tw + j) is xᵀ_n pixel (2i + rr, 2j + cc). Vectors over input channels.
///
/// # Safety
/// V's instruction set is available; xᵀ holds every image the tiles name; vbuf holds 16·stride floats.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn transform_inputs_cm<V: F32Vector>(
    xt: &[f32],
    (xr, xc): (usize, usize),
    cpi: usize,
    (per_image, tw): (usize, usize),
    t0: usize,
    count: usize,
    vbuf: *mut f32,
    stride: usize,
) {
    for t in 0..count {
        let (n, tile) = ((t0 + t) / per_image, (t0 + t) % per_image);
        let (i, j) = (tile / tw, tile % tw);
        let x0 = xt.as_ptr().add(((n * xr + 2 * i) * xc + 2 * j) * cpi);
        for k in (0..cpi).step_by(V::LANES) {
            let d: [V; 16] = std::array::from_fn(|e| unsafe { V::load(x0.add(((e / 4) * xc + e % 4) * cpi + k)) });
            for (xi, value) in input_transform(d).into_iter().enumerate() {
                value.store(vbuf.add(xi * stride + t * cpi + k));
            }
        }
    }
}

/// The Winograd F(2×2, 3×3) convolution (see the module doc): y_n = bias + the 3×3 "same" convolution of
/// x_n, in parallel as `conv2d_forward_direct`. Must equal `conv2d_forward_naive` up to rounding.
/// `level`: the SIMD level (the op passes `cpu::simd()`; tests run every level).
pub fn conv2d_forward_winograd(
    level: Simd,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    s: &ConvShape,
) -> Vec<f32> {
    assert!(is_same_conv(s) && s.kh == 3, "conv2d_forward_winograd: not a 3×3 same convolution: {s:?}");
    let packed = Scratch::from(pack(level, weight, s, false));
    conv(level, SameConv { input: x, ch_in: s.c_in, packed: &packed, ch_out: s.c_out, bias, shape: s })
}

/// The weight packed for [`conv`] at this level; with `rotate`, for the input gradient.
pub fn pack(level: Simd, weight: &[f32], s: &ConvShape, rotate: bool) -> Vec<f32> {
    pack_weight(weight, s.c_out, s.c_in, forward_tile(level).0, rotate)
}

/// The Winograd "same" convolution of `job` (its weight from [`pack`]), per image: split into phases, then
/// [`winograd_image`].
pub fn conv(level: Simd, job: SameConv) -> Vec<f32> {
    let SameConv { input, ch_in, packed, ch_out, bias, shape: s } = job;
    let tiles = Tiles::for_level(level, s.h, s.w);
    let (hw, c) = (s.h * s.w, forward_tile(level).0);
    per_image(s.n, ch_out, hw, c, |n, co0, out_part| {
        let count = out_part.len() / hw;
        let mut phases = crate::pool::scratch(ch_in * 4 * tiles.plane);
        tiles.split(&input[n * ch_in * hw..][..ch_in * hw], ch_in, &mut phases);
        let mut scratch = crate::pool::scratch(scratch_len(&tiles, ch_in, count, c));
        let bias = bias.map(|b| &b[co0..co0 + count]);
        let packed = &packed[co0 / c * 16 * spread(ch_in * c)..]; // packed [blocks, 16, ch_in, c]
        let scratch = &mut scratch;
        let image = WinogradImage {
            phases: &phases,
            tiles: &tiles,
            c_in: ch_in,
            packed,
            c_out: count,
            bias,
            y: out_part,
            scratch,
        };
        winograd_image(level, image);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tile by hand: Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A equals the 2×2 correlation of the 4×4 block d with g.
    #[test]
    fn one_tile_equals_the_correlation() {
        let d: [f32; 16] = std::array::from_fn(|i| ((i * 7 % 11) as f32 - 5.0) * 0.25);
        let g: [[f32; 3]; 3] = std::array::from_fn(|ky| std::array::from_fn(|kx| (ky * 3 + kx) as f32 * 0.5 - 2.0));
        let u = transform_kernel(g);
        let splat = |x: f32| unsafe { vector::Portable::splat(x) };
        let v = unsafe { input_transform(std::array::from_fn(|i| splat(d[i]))) };
        let m = std::array::from_fn(|xi| unsafe { splat(u[xi / 4][xi % 4]).mul_add(v[xi], F32Vector::zero()) });
        let y = unsafe { output_transform(m) };
        for a in 0..2 {
            for b in 0..2 {
                let mut want = 0.0;
                for ky in 0..3 {
                    for kx in 0..3 {
                        want += g[ky][kx] * d[(a + ky) * 4 + b + kx];
                    }
                }
                let mut got = [0.0f32; 4];
                unsafe { y[a][b].store(got.as_mut_ptr()) };
                assert!((got[0] - want).abs() < 1e-5, "Y[{a}][{b}] = {} want {want}", got[0]);
            }
        }
    }

    /// The phases hold the padded image: phase (a, b)[r, c] = xpad[2r + a, 2c + b].
    #[test]
    fn split_puts_each_padded_pixel_in_its_phase() {
        let (h, w) = (5, 3);
        let tiles = Tiles::new(h, w, 4);
        let x: Vec<f32> = (1..=(h * w) as i32).map(|v| v as f32).collect();
        let mut phases = vec![f32::NAN; 4 * tiles.plane];
        tiles.split(&x, 1, &mut phases);
        for p in 0..4 {
            for r in 0..=tiles.th {
                for c in 0..tiles.row {
                    let (py, px) = (2 * r + p / 2, 2 * c + p % 2); // in xpad
                    let want =
                        if (1..=h).contains(&py) && (1..=w).contains(&px) { x[(py - 1) * w + px - 1] } else { 0.0 };
                    assert_eq!(phases[p * tiles.plane + r * tiles.row + c], want, "phase {p} [{r}, {c}]");
                }
            }
        }
        assert!(phases.iter().all(|v| v.is_finite()), "every float of the phases is written");
    }
}
