//! Winograd F(4×4, 3×3): the transforms of tiles of 4×4 outputs, for `winograd_cm.rs` on the maps where
//! they need fewer multiplications than F(2×2, 3×3) (Lavin & Gray 2016, "Fast Algorithms for Convolutional
//! Neural Networks", §4.2).
//!
//! Legend as in `winograd.rs`, plus: a tile is now a 4×4 block of outputs, computed from the 6×6 inputs
//! around it; `ξ` = 0..36 numbers its 6×6 transformed values (ξ = 6u + v).
//!
//! # Four outputs from six multiplications
//! Four outputs of a 3-tap correlation, y_k = d_k g₀ + d_{k+1} g₁ + d_{k+2} g₂ (k = 0..4), take twelve
//! multiplications; six suffice, y = Aᵀ[(G g) ⊙ (Bᵀ d)], with the interpolation points 0, ±1, ±2, ∞:
//! ```text
//! Bᵀ = ⎡4  0 −5  0  1  0⎤     G = ⎡ 1/4     0     0  ⎤     Aᵀ = ⎡1  1  1  1  1  0⎤
//!      ⎢0 −4 −4  1  1  0⎥         ⎢−1/6  −1/6  −1/6  ⎥          ⎢0  1 −1  2 −2  0⎥
//!      ⎢0  4 −4 −1  1  0⎥         ⎢−1/6   1/6  −1/6  ⎥          ⎢0  1  1  4  4  0⎥
//!      ⎢0 −2 −1  2  1  0⎥         ⎢1/24  1/12   1/6  ⎥          ⎣0  1 −1  8 −8  1⎦
//!      ⎢0  2 −1 −2  1  0⎥         ⎢1/24 −1/12   1/6  ⎥
//!      ⎣0  4  0 −5  0  1⎦         ⎣  0     0     1   ⎦
//! ```
//! Nested in two dimensions, Y = Aᵀ [U ⊙ V] A with U = G g Gᵀ and V = Bᵀ d B: 36 multiplications for 16
//! outputs where the definition takes 144, and F(2×2, 3×3) 64 (four of its tiles). The products over
//! channels are the same as F(2×2)'s, 36 of them instead of 16 (`winograd_cm.rs`).
//!
//! # What it costs
//! Larger tiles round a map up further: 7×7 takes 2×2 tiles (8×8 outputs, 144 multiplications per pair of
//! channels against F(2×2)'s 16 tiles × 16 = 256), 14×14 4×4 tiles (576 against 784). The transforms'
//! coefficients (up to 5 in Bᵀ, 8 in Aᵀ) make the rounding error larger than F(2×2)'s: for the sums of
//! a few hundred products the U-Net makes it is still a few ulps of their size (checked against
//! `conv2d_forward_naive` with the bound every path meets).

use crate::vector::F32Vector;

/// Outputs per tile side, and transformed values per tile.
pub const M: usize = 4;
pub const POINTS: usize = 36;

// The vector code below uses plain loops, no closures: a closure does not inherit its caller's
// `target_feature`, so the vector methods called inside one are not inlined (`perf` showed them as calls,
// and the F(4×4) forward ran at half the speed of F(2×2)'s).

/// G v for one column (or row) of 3×3 kernels, one kernel per lane (multiplications by the reciprocals).
#[inline(always)]
unsafe fn kernel_1d<V: F32Vector>(g: [V; 3]) -> [V; 6] {
    let (sixth, minus_sixth) = (V::splat(1.0 / 6.0), V::splat(-1.0 / 6.0));
    let (sum, alternating) = (g[0].add(g[1]).add(g[2]), g[0].sub(g[1]).add(g[2]));
    let outer = g[0].mul_add(V::splat(1.0 / 24.0), g[2].mul_add(sixth, V::zero()));
    let middle = g[1].mul_add(V::splat(1.0 / 12.0), V::zero());
    let zero = V::zero();
    [
        g[0].mul_add(V::splat(0.25), zero),
        sum.mul_add(minus_sixth, zero),
        alternating.mul_add(minus_sixth, zero),
        outer.add(middle),
        outer.sub(middle),
        g[2],
    ]
}

/// U = G g Gᵀ of LANES 3×3 kernels at once: g[3·ky + kx] holds tap (ky, kx) of each lane's kernel; U_ξ
/// (row-major [6 × 6]) likewise.
#[inline(always)]
pub(super) unsafe fn transform_kernels<V: F32Vector>(g: [V; 9]) -> [V; POINTS] {
    let mut columns = [[V::zero(); 6]; 3]; // (G g)ᵀ: G down each column of g
    for (kx, column) in columns.iter_mut().enumerate() {
        *column = kernel_1d([g[kx], g[3 + kx], g[6 + kx]]);
    }
    let mut u = [V::zero(); POINTS];
    for r in 0..6 {
        let row = kernel_1d([columns[0][r], columns[1][r], columns[2][r]]);
        u[6 * r..6 * r + 6].copy_from_slice(&row);
    }
    u
}

/// Bᵀ d for one column (or row) of a 6×6 block, in 12 adds and multiply-adds.
#[inline(always)]
unsafe fn input_1d<V: F32Vector>(d: [V; 6]) -> [V; 6] {
    let (four, minus_four, minus_five, two, minus_two) =
        (V::splat(4.0), V::splat(-4.0), V::splat(-5.0), V::splat(2.0), V::splat(-2.0));
    let minus_four_d2 = d[2].mul_add(minus_four, d[4]); // d₄ − 4d₂
    let minus_four_d1 = d[1].mul_add(minus_four, d[3]); // d₃ − 4d₁
    let (even, odd) = (d[4].sub(d[2]), d[3].sub(d[1])); // d₄ − d₂, d₃ − d₁
    [
        d[0].mul_add(four, d[2].mul_add(minus_five, d[4])),
        minus_four_d2.add(minus_four_d1),
        minus_four_d2.sub(minus_four_d1),
        odd.mul_add(two, even),
        odd.mul_add(minus_two, even),
        d[1].mul_add(four, d[3].mul_add(minus_five, d[5])),
    ]
}

/// Aᵀ m for one column (or row) of a 6×6 block.
#[inline(always)]
unsafe fn output_1d<V: F32Vector>(m: [V; 6]) -> [V; M] {
    let (sum12, diff12, sum34, diff34) = (m[1].add(m[2]), m[1].sub(m[2]), m[3].add(m[4]), m[3].sub(m[4]));
    [
        m[0].add(sum12).add(sum34),
        diff34.mul_add(V::splat(2.0), diff12),
        sum34.mul_add(V::splat(4.0), sum12),
        diff34.mul_add(V::splat(8.0), diff12).add(m[5]),
    ]
}

/// V_ξ[t, ·] for `count` tiles from t0, as `winograd::transform_inputs_cm` but for 6×6 inputs: tile t (of
/// image t / per_image, tile row i and column j of `tw`) reads xᵀ rows 4i.., columns 4j.. of its image
/// (xᵀ [images, xr, xc, cpi], zero border included) and writes vbuf[ξ·stride + t·cpi ..].
///
/// # Safety
/// V's instruction set is available; xᵀ holds every row read, and vbuf 36 planes `stride` apart of at least
/// (t0 + count)·cpi floats.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // u, a: a column across rows (a transpose)
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
    for t in t0..t0 + count {
        let (n, tile) = (t / per_image, t % per_image);
        let (i, j) = (tile / tw, tile % tw);
        let x0 = xt.as_ptr().add(((n * xr + M * i) * xc + M * j) * cpi);
        for k in (0..cpi).step_by(V::LANES) {
            // Bᵀ down each column, then along each row of the result.
            let mut columns = [[V::zero(); 6]; 6];
            for (col, column) in columns.iter_mut().enumerate() {
                let mut d = [V::zero(); 6];
                for (r, d_r) in d.iter_mut().enumerate() {
                    *d_r = V::load(x0.add((r * xc + col) * cpi + k));
                }
                *column = input_1d(d);
            }
            for u in 0..6 {
                let mut d = [V::zero(); 6];
                for (col, d_col) in d.iter_mut().enumerate() {
                    *d_col = columns[col][u];
                }
                for (v, value) in input_1d(d).into_iter().enumerate() {
                    value.store(vbuf.add((6 * u + v) * stride + t * cpi + k));
                }
            }
        }
    }
}

/// yᵀ[a, b] = (Aᵀ M A)[a, b] + bias for one tile and vector of output channels: M_ξ at m[ξ·stride], the
/// 4×4 outputs at y[(a·row + b)·pixel].
///
/// # Safety
/// V's instruction set is available, and every address read or written holds LANES floats.
#[allow(clippy::needless_range_loop)] // a: a column across rows (a transpose)
#[inline(always)]
pub(super) unsafe fn output_transform<V: F32Vector>(
    m: *const f32,
    stride: usize,
    bias: V,
    y: *mut f32,
    (row, pixel): (usize, usize),
) {
    let mut columns = [[V::zero(); M]; 6]; // Aᵀ down each column of M
    for (c, column) in columns.iter_mut().enumerate() {
        let mut values = [V::zero(); 6];
        for (r, value) in values.iter_mut().enumerate() {
            *value = V::load(m.add((6 * r + c) * stride));
        }
        *column = output_1d(values);
    }
    for a in 0..M {
        let mut values = [V::zero(); 6];
        for (c, value) in values.iter_mut().enumerate() {
            *value = columns[c][a];
        }
        for (b, out) in output_1d(values).into_iter().enumerate() {
            out.add(bias).store(y.add((a * row + b) * pixel));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::Portable;

    /// The 1-D transforms against the definition: four outputs of a 3-tap correlation of six inputs.
    #[test]
    fn four_outputs_of_a_correlation_from_six_products() {
        let d = [0.7f32, -1.3, 2.1, 0.4, -0.9, 1.6];
        let g = [0.5f32, -1.1, 0.8];
        // SAFETY: the portable vector needs no instruction set.
        let u = unsafe { kernel_1d(g.map(|x| Portable::splat(x))).map(|u| u.sum() / Portable::LANES as f32) };
        // SAFETY: as above.
        let y = unsafe {
            let v = input_1d(d.map(|x| Portable::splat(x)));
            let m: [Portable; 6] = std::array::from_fn(|i| v[i].mul_add(Portable::splat(u[i]), Portable::zero()));
            output_1d(m).map(|y| y.sum() / Portable::LANES as f32)
        };
        for (k, y) in y.into_iter().enumerate() {
            let want: f32 = (0..3).map(|j| d[k + j] * g[j]).sum();
            assert!((y - want).abs() < 1e-5, "y[{k}] = {y}, the definition gives {want}");
        }
    }
}
