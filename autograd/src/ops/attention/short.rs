//! Attention over short sequences (at most [`SHORT`] queries and keys: the U-Net's 7×7 level, 49 positions),
//! where a whole batch entry's scores fit in L1 and flash attention's tiles are mostly empty. Per batch
//! entry, the same maths as `kernels.rs` (legend there), on the whole [sq, sk] score matrix at once:
//! ```text
//! forward    s = (q·scale)·kᵀ,  m_i = max_j s_ij,  p_ij = e^(s_ij − m_i)/l_i,  l_i = Σ_j e^(s_ij − m_i),
//!            lse_i = m_i + ln l_i,  o = p·v
//! backward   dv = pᵀ·do,  dp = do·vᵀ,  ds = p ⊙ (dp − D)·scale,  D_i = Σ_c do_ic·o_ic,  dq = ds·k,
//!            dk = dsᵀ·q,  with p as the forward saved it
//! ```
//! The forward saves p (`Saved::probabilities`): at these lengths it is smaller than q, k and v together,
//! and recomputing it, as flash attention does, cost the backward a product and an exponential per score
//! (0.97 → 0.63 ms on [32, 4, 49, 32], medians of three rounds). The scores are kept transposed,
//! sᵀ [sk, sq] with a query per column, so that each softmax runs down a column with the queries in the
//! vector lanes: a row of 49 scores would need a horizontal maximum and sum per row, which measured 40% of
//! the forward. Every product is [`product`]: a register tile of R rows × one vector of columns, the rows'
//! values broadcast and the columns loaded, k fused multiply-adds deep. matrixmultiply's general products, which the
//! flash kernel calls, pack both operands into panels at every call; for a 49 × 32 by 32 × 49 product that
//! packing and the edges of its 8 × 8 tiles cost more than the products (the U-Net's forward, 39 MFLOP,
//! took 0.80 ms that way: about 49 GFLOP/s). Here the right-hand operands are read as they are where their rows are whole vectors, and
//! otherwise copied into such rows ([`Padded`]: transposed where the product needs the other side, zeros
//! past the real columns), so the tile loads need no masks; the left-hand side is read through strides
//! ([`Left`]), so pᵀ and dsᵀ need no copy; only the stores of a row's last vector are partial.

use std::borrow::Cow;

use rayon::prelude::*;

use super::shape::{AttentionShape, Saved};
use crate::cpu::{self, exp_fast, Simd};
use crate::ops::conv2d::transpose::{transpose_into, ToChannelMinor};
use crate::vector::{self, F32Vector};

/// The longest sequence (queries and keys) this file takes.
pub const SHORT: usize = 64;

/// True for the shapes this file computes.
pub fn is_short(s: &AttentionShape) -> bool {
    s.sq <= SHORT && s.sk <= SHORT && s.sq >= 1 && s.sk >= 1
}

/// A matrix [rows, cols] stored with rows `ld` apart, `ld` a whole number of vectors, zeros (or, in a
/// borrowed source, nothing) past cols: what [`product`] reads as its right-hand side.
struct Padded<'a> {
    data: Cow<'a, [f32]>,
    ld: usize,
}

impl<'a> Padded<'a> {
    /// `src` [rows, cols] (rows `cols` apart): itself if its rows are whole vectors, else a padded copy.
    fn of(src: &'a [f32], rows: usize, cols: usize, lanes: usize) -> Padded<'a> {
        if cols.is_multiple_of(lanes) {
            return Padded { data: Cow::Borrowed(&src[..rows * cols]), ld: cols };
        }
        let ld = cols.next_multiple_of(lanes);
        let mut data = vec![0.0; rows * ld];
        for (dst, row) in data.chunks_exact_mut(ld).zip(src.chunks_exact(cols)) {
            dst[..cols].copy_from_slice(row);
        }
        Padded { data: Cow::Owned(data), ld }
    }

    /// The transpose [cols, rows] of `src` [rows, cols] times `factor`, padded: `conv2d`'s channel-minor
    /// transpose (in registers; its rows as channels, one row of `cols` pixels), then the factor. (One float
    /// at a time, the transpose was 16% of the forward of [32, 4, 49, 32], `perf`.)
    fn transposed(level: Simd, src: &[f32], rows: usize, cols: usize, factor: f32) -> Padded<'static> {
        let ld = rows.next_multiple_of(level.lanes());
        let mut data = vec![0.0; cols * ld];
        let job =
            ToChannelMinor { src: &src[..rows * cols], c: rows, h: 1, w: cols, off: 0, cols, cp: ld, dst: &mut data };
        transpose_into(level, job);
        if factor != 1.0 {
            data.iter_mut().for_each(|v| *v *= factor);
        }
        Padded { data: Cow::Owned(data), ld }
    }
}

/// The left-hand side of a [`product`]: element (i, p) at `data[i·row + p·col]` (a transpose is the same
/// data with the strides swapped).
#[derive(Clone, Copy)]
struct Left<'a> {
    data: &'a [f32],
    row: usize,
    col: usize,
}

/// c [m, n] = a [m, k] · b [k, n]; b a [`Padded`] of ≥ k rows and ≥ n columns, c rows `ldc` apart. Each
/// output is one sum over k in order, whatever m and n.
fn product(level: Simd, (m, k, n): (usize, usize, usize), a: Left, b: &Padded, c: &mut [f32], ldc: usize) {
    if m == 0 || n == 0 {
        return;
    }
    crate::cpu::check_supported(level);
    assert!(b.ld.is_multiple_of(level.lanes()) && b.ld >= n && b.data.len() >= k * b.ld, "product: b too small");
    assert!(k == 0 || a.data.len() > (m - 1) * a.row + (k - 1) * a.col, "product: a too small");
    assert!(c.len() >= (m - 1) * ldc + n && ldc >= n, "product: c too small");
    let args = Product { m, k, n, a, b: &b.data, ldb: b.ld, c, ldc };
    // SAFETY: the level is supported (checked above), and the asserts cover every access of the tiles.
    unsafe {
        match level {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => product_avx512(args),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => product_avx2(args),
            #[cfg(target_arch = "aarch64")]
            _ => product_rows::<vector::Neon, 8>(args),
            #[cfg(not(target_arch = "aarch64"))]
            _ => product_rows::<vector::Portable, 4>(args),
        }
    }
}

struct Product<'a> {
    m: usize,
    k: usize,
    n: usize,
    a: Left<'a>,
    b: &'a [f32],
    ldb: usize,
    c: &'a mut [f32],
    ldc: usize,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn product_avx512(args: Product) {
    product_rows::<vector::Avx512, 8>(args)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn product_avx2(args: Product) {
    product_rows::<vector::Avx2, 8>(args)
}

/// The tile loop: blocks of R rows (the last block's missing rows repeat its last real row and are not
/// stored), and for each vector of columns, acc [R] = Σ_p a[row, p] (broadcast) · b[p, cols] (loaded).
///
/// # Safety
/// V's instruction set is available, and [`product`]'s asserts hold.
#[inline(always)]
unsafe fn product_rows<V: F32Vector, const R: usize>(Product { m, k, n, a, b, ldb, c, ldc }: Product) {
    let lanes = V::LANES;
    for i0 in (0..m).step_by(R) {
        let rows = R.min(m - i0);
        let a_rows: [*const f32; R] =
            std::array::from_fn(|r| a.data.as_ptr().wrapping_add((i0 + r.min(rows - 1)) * a.row));
        for j0 in (0..n).step_by(lanes) {
            let mut acc = [V::zero(); R];
            let mut b_p = b.as_ptr().add(j0);
            for p in 0..k {
                let bv = V::load(b_p);
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    *acc_r = V::splat(*a_rows[r].add(p * a.col)).mul_add(bv, *acc_r);
                }
                b_p = b_p.add(ldb);
            }
            // (From a copy: indexing the accumulators in the loop below kept them in memory, see direct.rs.)
            let finished = acc;
            let width = lanes.min(n - j0);
            for (r, vector) in finished.iter().enumerate().take(rows) {
                let out = c.as_mut_ptr().add((i0 + r) * ldc + j0);
                match width == lanes {
                    true => vector.store(out),
                    false => vector.store_lanes(out, 0, width),
                }
            }
        }
    }
}

/// sᵀ [sk, ld] = k·(q·scale)ᵀ for one entry into `st`: the scores, transposed (a query per column, ld = sq
/// rounded up to whole vectors), so that the softmax over keys runs down the columns with the queries in
/// the lanes.
fn scores_t(level: Simd, q: &[f32], k: &[f32], s: &AttentionShape, st: &mut [f32], ld: usize) {
    let qt = Padded::transposed(level, q, s.sq, s.d, s.scale()); // [d, sq], times scale
    debug_assert_eq!(qt.ld, ld);
    product(level, (s.sk, s.d, s.sq), Left { data: k, row: s.d, col: 1 }, &qt, st, ld);
}

/// The softmax of each of the first `cols` columns of sᵀ [rows, ld] in place (zeros in the rest): max m_i
/// down the column, p = e^(s − m), l_i = Σ p; then p / l, and lse_i = m_i + ln l_i.
///
/// The exponentials run in one pass over the whole matrix, padding columns included (set to zero first,
/// so they stay finite, and to zero again at the end), not row by row: over a row of 49 columns, a loop
/// vectorized 8 at a time leaves a tail of up to 17 scalar exponentials (the softmax was a quarter of the
/// forward of [32, 4, 49, 32] by `perf`). Each value is still e^(s − m_i), so the result is the same.
#[inline(always)]
fn softmax_columns(st: &mut [f32], ld: usize, cols: usize, lse: &mut [f32]) {
    let mut max = vec![f32::NEG_INFINITY; cols];
    for row in st.chunks_exact(ld) {
        max.iter_mut().zip(&row[..cols]).for_each(|(m, &x)| *m = m.max(x));
    }
    for row in st.chunks_exact_mut(ld) {
        row[..cols].iter_mut().zip(&max).for_each(|(x, &m)| *x -= m);
        row[cols..].fill(0.0);
    }
    st.iter_mut().for_each(|x| *x = exp_fast(*x));
    let mut sum = vec![0.0f32; cols];
    for row in st.chunks_exact(ld) {
        sum.iter_mut().zip(&row[..cols]).for_each(|(l, &x)| *l += x);
    }
    let inv: Vec<f32> = sum.iter().map(|l| 1.0 / l).collect();
    for row in st.chunks_exact_mut(ld) {
        row[..cols].iter_mut().zip(&inv).for_each(|(x, i)| *x *= i);
        row[cols..].fill(0.0);
    }
    for ((lse, m), l) in lse.iter_mut().zip(&max).zip(&sum) {
        *lse = m + l.ln();
    }
}
crate::multiversion!(fn softmax_columns_at(level: Simd, st: &mut [f32], ld: usize, cols: usize, lse: &mut [f32]) => softmax_columns);

/// ld of an entry's pᵀ [sk, ld]: sq rounded up to whole vectors.
fn probabilities_ld(level: Simd, s: &AttentionShape) -> usize {
    s.sq.next_multiple_of(level.lanes())
}

/// The forward over every batch entry in parallel: (o [batch, sq, dv], lse and pᵀ [batch, sk, ld], which
/// the backward reads). Must equal `attention_forward_naive` up to rounding.
pub fn forward(level: Simd, q: &[f32], k: &[f32], v: &[f32], s: &AttentionShape) -> (Vec<f32>, Saved) {
    assert!(is_short(s), "attention short::forward: {s:?} is not short");
    let ld = probabilities_ld(level, s);
    let mut o = crate::pool::take_dirty(s.batch * s.sq * s.dv);
    let mut lse = vec![0.0f32; s.batch * s.sq];
    let mut probabilities = crate::pool::take_dirty(s.batch * s.sk * ld); // every value written below
    let per_entry =
        o.par_chunks_mut(s.sq * s.dv).zip(lse.par_chunks_mut(s.sq)).zip(probabilities.par_chunks_mut(s.sk * ld));
    per_entry.enumerate().for_each(|(b, ((o, lse), pt))| {
        let (qb, kb) = (&q[b * s.sq * s.d..][..s.sq * s.d], &k[b * s.sk * s.d..][..s.sk * s.d]);
        let vb = &v[b * s.sk * s.dv..][..s.sk * s.dv];
        scores_t(level, qb, kb, s, pt, ld);
        softmax_columns_at(level, pt, ld, s.sq, lse);
        // o = p [sq, sk] · v [sk, dv], p read as pᵀ with its strides swapped
        let p = Left { data: pt, row: 1, col: ld };
        product(level, (s.sq, s.sk, s.dv), p, &Padded::of(vb, s.sk, s.dv, level.lanes()), o, s.dv);
    });
    (o, Saved { lse, probabilities: Some((probabilities, ld)) })
}

/// The backward over every batch entry in parallel, from the forward's pᵀ: (dq, dk, dv). Must equal
/// `attention_backward_naive` up to rounding; each entry's gradients are its own task's, so no sum depends
/// on the number of threads.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    level: Simd,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    saved: &Saved,
    dout: &[f32],
    s: &AttentionShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert!(is_short(s), "attention short::backward: {s:?} is not short");
    let Some((probabilities, ld)) = &saved.probabilities else {
        panic!("attention short::backward: {s:?} needs the probabilities its forward saves");
    };
    let (lanes, ld) = (level.lanes(), *ld);
    assert!(ld >= s.sq && probabilities.len() >= s.batch * s.sk * ld, "attention short::backward: saved pᵀ too small");
    let mut dq = crate::pool::take_dirty(q.len());
    let mut dk = crate::pool::take_dirty(k.len());
    let mut dv = crate::pool::take_dirty(v.len());
    let per_entry =
        dq.par_chunks_mut(s.sq * s.d).zip(dk.par_chunks_mut(s.sk * s.d)).zip(dv.par_chunks_mut(s.sk * s.dv));
    per_entry.enumerate().for_each(|(b, ((dq, dk), dv))| {
        let qb = &q[b * s.sq * s.d..][..s.sq * s.d];
        let kb = &k[b * s.sk * s.d..][..s.sk * s.d];
        let vb = &v[b * s.sk * s.dv..][..s.sk * s.dv];
        let (ob, dob) = (&o[b * s.sq * s.dv..][..s.sq * s.dv], &dout[b * s.sq * s.dv..][..s.sq * s.dv]);
        let pt = &probabilities[b * s.sk * ld..][..s.sk * ld];
        // dv = pᵀ [sk, sq] · do [sq, dv]
        let p_left = Left { data: pt, row: ld, col: 1 };
        product(level, (s.sk, s.sq, s.dv), p_left, &Padded::of(dob, s.sq, s.dv, lanes), dv, s.dv);
        // dpᵀ = v [sk, dv] · doᵀ [dv, sq], then dsᵀ = pᵀ ⊙ (dpᵀ − D)·scale in place (D_i per column)
        let mut dst = vec![0.0f32; s.sk * ld];
        let dot = Padded::transposed(level, dob, s.sq, s.dv, 1.0);
        product(level, (s.sk, s.dv, s.sq), Left { data: vb, row: s.dv, col: 1 }, &dot, &mut dst, ld);
        let d: Vec<f32> = (0..s.sq).map(|i| cpu::dot(&dob[i * s.dv..][..s.dv], &ob[i * s.dv..][..s.dv])).collect();
        let scale = s.scale();
        for (ds_row, p_row) in dst.chunks_exact_mut(ld).zip(pt.chunks_exact(ld)) {
            for ((g, &p), &d) in ds_row[..s.sq].iter_mut().zip(&p_row[..s.sq]).zip(&d) {
                *g = p * (*g - d) * scale;
            }
        }
        // dq = ds [sq, sk] · k [sk, d] (ds read as dsᵀ, strides swapped);  dk = dsᵀ [sk, sq] · q [sq, d]
        let ds_left = Left { data: &dst, row: 1, col: ld };
        product(level, (s.sq, s.sk, s.d), ds_left, &Padded::of(kb, s.sk, s.d, lanes), dq, s.d);
        let dst_left = Left { data: &dst, row: ld, col: 1 };
        product(level, (s.sk, s.sq, s.d), dst_left, &Padded::of(qb, s.sq, s.d, lanes), dk, s.d);
    });
    (dq, dk, dv)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product against its definition at every level, on sizes that leave partial row blocks and
    /// partial vectors, and the same through the transposes (cᵀ = bᵀ·aᵀ, with bᵀ as b's data, strides
    /// swapped), which is how the backward reads pᵀ and dsᵀ.
    #[test]
    fn product_equals_its_definition_at_every_simd_level() {
        for (m, k, n) in [(1, 1, 1), (9, 3, 17), (49, 32, 49), (17, 49, 33), (8, 5, 16)] {
            let a = crate::tensor::Tensor::randn_seeded(&[m * k], (m * k) as u64);
            let b = crate::tensor::Tensor::randn_seeded(&[k * n], (k * n + 1) as u64);
            for level in cpu::available() {
                let mut c = vec![f32::NAN; m * n + 1];
                let left = Left { data: a.data(), row: k, col: 1 };
                product(level, (m, k, n), left, &Padded::of(b.data(), k, n, level.lanes()), &mut c, n);
                let mut ct = vec![f32::NAN; n * m + 1];
                let bt = Left { data: b.data(), row: 1, col: n };
                product(level, (n, k, m), bt, &Padded::transposed(level, a.data(), m, k, 1.0), &mut ct, m);
                for i in 0..m {
                    for j in 0..n {
                        let want: f32 = (0..k).map(|p| a.data()[i * k + p] * b.data()[p * n + j]).sum();
                        let close = |got: f32| (got - want).abs() <= 1e-4 * (1.0 + want.abs());
                        assert!(close(c[i * n + j]), "{m}×{k}×{n} {level:?} [{i},{j}]: {}", c[i * n + j]);
                        assert!(close(ct[j * m + i]), "{m}×{k}×{n} {level:?} ᵀ [{j},{i}]: {}", ct[j * m + i]);
                    }
                }
                assert!(c[m * n].is_nan() && ct[n * m].is_nan(), "{m}×{k}×{n} {level:?}: wrote past c");
            }
        }
    }
}
