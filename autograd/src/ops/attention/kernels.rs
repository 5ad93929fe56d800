//! Attention kernels. Legend: `batch` = product of the leading axes (batch × heads); per batch entry
//! q [sq, d], k [sk, d], v [sk, dv], o [sq, dv]; `scale` = 1/√d; `lse` [sq] = log Σ_j exp(s_ij), the
//! log-sum-exp of each row of scores.
//!
//! The naive kernels build the whole score matrix s = q·kᵀ·scale [sq, sk] and the probabilities p = softmax(s).
//! The fast kernels are flash attention (Dao et al. 2022, "FlashAttention", Algorithms 1 and 2, here on a
//! CPU): scores are made one tile of [TILE_Q, TILE_K] at a time and folded into the output with an online
//! softmax, so no [sq, sk] matrix is ever stored. Backward keeps only lse (O(sq) per row) and recomputes each
//! tile's probabilities p = exp(s − lse).

use rayon::prelude::*;

use super::shape::{AttentionShape, Saved};
use super::short;
use crate::cpu::{self, exp_fast, Simd};
use crate::ops::matmul::gemm_serial;

/// Query rows per tile.
pub const TILE_Q: usize = 128;
/// Key columns per tile.
pub const TILE_K: usize = 256;

/// Floats of one tile of scores: [TILE_Q, TILE_K], or less for short sequences (at most TILE_Q × TILE_K,
/// not the whole tile, whose zeroing cost more than a small tile's products).
fn tile_len(s: &AttentionShape) -> usize {
    TILE_Q.min(s.sq) * TILE_K.min(s.sk)
}

// ---------------------------------------------------------------------------------------------------------
// Naive reference: materialize s and p.
// ---------------------------------------------------------------------------------------------------------

/// p [sq, sk] = softmax(q·kᵀ·scale) for one batch entry.
fn probabilities_naive(q: &[f32], k: &[f32], s: &AttentionShape) -> Vec<f32> {
    let mut p = vec![0.0f32; s.sq * s.sk];
    for i in 0..s.sq {
        let row = &mut p[i * s.sk..(i + 1) * s.sk];
        for (j, out) in row.iter_mut().enumerate() {
            *out = (0..s.d).map(|c| q[i * s.d + c] * k[j * s.d + c]).sum::<f32>() * s.scale();
        }
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|v| *v = (*v - max).exp());
        let total: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= total);
    }
    p
}

/// o = softmax(q·kᵀ·scale)·v for every batch entry.
pub fn attention_forward_naive(q: &[f32], k: &[f32], v: &[f32], s: &AttentionShape) -> Vec<f32> {
    let mut o = vec![0.0; s.batch * s.sq * s.dv];
    for b in 0..s.batch {
        let (qb, kb, vb) = (&q[b * s.sq * s.d..], &k[b * s.sk * s.d..], &v[b * s.sk * s.dv..]);
        let p = probabilities_naive(qb, kb, s);
        for i in 0..s.sq {
            for c in 0..s.dv {
                o[(b * s.sq + i) * s.dv + c] = (0..s.sk).map(|j| p[i * s.sk + j] * vb[j * s.dv + c]).sum();
            }
        }
    }
    o
}

/// Differentiates o = p·v, p = softmax(s), s = q·kᵀ·scale (recomputing p):
/// ```text
/// dv = pᵀ·do     dp = do·vᵀ     ds = p ⊙ (dp − rowsum(dp ⊙ p))     dq = ds·k·scale     dk = dsᵀ·q·scale
/// ```
/// Returns (dq, dk, dv).
pub fn attention_backward_naive(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
    s: &AttentionShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    for b in 0..s.batch {
        let (qo, ko, vo, oo) = (b * s.sq * s.d, b * s.sk * s.d, b * s.sk * s.dv, b * s.sq * s.dv);
        let p = probabilities_naive(&q[qo..], &k[ko..], s);
        let mut dp = vec![0.0f32; s.sq * s.sk];
        for i in 0..s.sq {
            for j in 0..s.sk {
                dp[i * s.sk + j] = (0..s.dv).map(|c| dout[oo + i * s.dv + c] * v[vo + j * s.dv + c]).sum();
                for c in 0..s.dv {
                    dv[vo + j * s.dv + c] += p[i * s.sk + j] * dout[oo + i * s.dv + c];
                }
            }
        }
        for i in 0..s.sq {
            let row_dot: f32 = (0..s.sk).map(|j| dp[i * s.sk + j] * p[i * s.sk + j]).sum();
            for j in 0..s.sk {
                let ds = p[i * s.sk + j] * (dp[i * s.sk + j] - row_dot) * s.scale();
                for c in 0..s.d {
                    dq[qo + i * s.d + c] += ds * k[ko + j * s.d + c];
                    dk[ko + j * s.d + c] += ds * q[qo + i * s.d + c];
                }
            }
        }
    }
    (dq, dk, dv)
}

// ---------------------------------------------------------------------------------------------------------
// Fast: flash attention, one rayon task per batch entry, matrix products on tiles.
// ---------------------------------------------------------------------------------------------------------

/// row_j ← e^(row_j − max) in place; returns Σ_j of the new values. One pass, 16 partial sums (one
/// AVX-512 register) and then the tail: a U-Net attention row is 49 scores (7×7 positions), for which an
/// exp pass followed by `cpu::sum` measured about 12% slower on the whole forward.
#[inline(always)]
fn exp_and_sum(row: &mut [f32], max: f32) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *v = exp_fast(*v - max);
            *a += *v;
        }
    }
    let mut tail = 0.0;
    for v in chunks.into_remainder() {
        *v = exp_fast(*v - max);
        tail += *v;
    }
    cpu::pairwise_sum(acc) + tail
}

/// Folds one tile of scores into the running softmax of each row (Dao et al. 2022, Algorithm 1, lines 9–10):
/// ```text
/// m' = max(m, max_j s_ij),  c = e^(m − m'),  s_ij ← e^(s_ij − m'),  l ← c·l + Σ_j s_ij,  m ← m'
/// ```
/// `scores` [rows, cols] becomes the unnormalized probabilities; `corr` receives c for rescaling o.
#[inline(always)]
fn online_softmax_tile(scores: &mut [f32], cols: usize, m: &mut [f32], l: &mut [f32], corr: &mut [f32]) {
    for (((row, m), l), c) in scores.chunks_mut(cols).zip(m.iter_mut()).zip(l.iter_mut()).zip(corr.iter_mut()) {
        let new_max = cpu::max(row, *m);
        *c = exp_fast(*m - new_max);
        *l = *l * *c + exp_and_sum(row, new_max);
        *m = new_max;
    }
}
crate::multiversion!(fn online_softmax_tile_at(level: Simd, scores: &mut [f32], cols: usize, m: &mut [f32], l: &mut [f32], corr: &mut [f32]) => online_softmax_tile);

/// p_ij = e^(s_ij − lse_i) in place: a tile of probabilities recomputed from the saved log-sum-exp.
#[inline(always)]
fn probabilities_tile(scores: &mut [f32], cols: usize, lse: &[f32]) {
    for (row, &lse) in scores.chunks_mut(cols).zip(lse) {
        row.iter_mut().for_each(|v| *v = exp_fast(*v - lse));
    }
}
crate::multiversion!(fn probabilities_tile_at(level: Simd, scores: &mut [f32], cols: usize, lse: &[f32]) => probabilities_tile);

/// ds_ij = p_ij·(dp_ij − D_i)·scale in place in `dp`, where D_i = rowsum(do ⊙ o) = rowsum(dp ⊙ p) over the
/// full row (FlashAttention-2's identity, which needs no full row of p).
#[inline(always)]
fn score_grad_tile(dp: &mut [f32], p: &[f32], cols: usize, d_row: &[f32], scale: f32) {
    for ((dp, p), &d) in dp.chunks_mut(cols).zip(p.chunks(cols)).zip(d_row) {
        dp.iter_mut().zip(p).for_each(|(g, &p)| *g = p * (*g - d) * scale);
    }
}
crate::multiversion!(fn score_grad_tile_at(level: Simd, dp: &mut [f32], p: &[f32], cols: usize, d_row: &[f32], scale: f32) => score_grad_tile);

/// Must equal [`attention_forward_naive`] up to rounding. Returns (o [batch, sq, dv], what the backward needs).
pub fn attention_forward(q: &[f32], k: &[f32], v: &[f32], s: &AttentionShape) -> (Vec<f32>, Saved) {
    attention_forward_at(cpu::simd(), q, k, v, s)
}

/// [`attention_forward`] at an explicit SIMD level.
pub fn attention_forward_at(level: Simd, q: &[f32], k: &[f32], v: &[f32], s: &AttentionShape) -> (Vec<f32>, Saved) {
    if short::is_short(s) {
        return short::forward(level, q, k, v, s);
    }
    let mut o = crate::pool::take_filled(s.batch * s.sq * s.dv, 0.0);
    let mut lse = vec![0.0f32; s.batch * s.sq];
    let scale = s.scale();
    o.par_chunks_mut(s.sq * s.dv).zip(lse.par_chunks_mut(s.sq)).enumerate().for_each(|(b, (o, lse))| {
        let (qb, kb, vb) = (
            &q[b * s.sq * s.d..][..s.sq * s.d],
            &k[b * s.sk * s.d..][..s.sk * s.d],
            &v[b * s.sk * s.dv..][..s.sk * s.dv],
        );
        let mut scores = vec![0.0f32; tile_len(s)]; // [rows, cols] of one tile
        let (mut m, mut l, mut corr) = (vec![0.0f32; TILE_Q], vec![0.0f32; TILE_Q], vec![0.0f32; TILE_Q]);
        for i0 in (0..s.sq).step_by(TILE_Q) {
            let rows = TILE_Q.min(s.sq - i0);
            let o_tile = &mut o[i0 * s.dv..(i0 + rows) * s.dv]; // [rows, dv], starts at 0
            m[..rows].fill(f32::NEG_INFINITY);
            l[..rows].fill(0.0);
            for j0 in (0..s.sk).step_by(TILE_K) {
                let cols = TILE_K.min(s.sk - j0);
                let st = &mut scores[..rows * cols];
                // s = q_tile [rows, d] · k_tileᵀ [d, cols] (k read transposed), times scale
                gemm_serial(rows, s.d, cols, &qb[i0 * s.d..], (s.d, 1), &kb[j0 * s.d..], (1, s.d), st, 0.0);
                st.iter_mut().for_each(|x| *x *= scale);
                online_softmax_tile_at(level, st, cols, &mut m[..rows], &mut l[..rows], &mut corr[..rows]);
                // o = c ⊙ o + p · v_tile
                for (row, &c) in o_tile.chunks_mut(s.dv).zip(&corr[..rows]) {
                    row.iter_mut().for_each(|x| *x *= c);
                }
                gemm_serial(rows, cols, s.dv, st, (cols, 1), &vb[j0 * s.dv..], (s.dv, 1), o_tile, 1.0);
            }
            for (r, row) in o_tile.chunks_mut(s.dv).enumerate() {
                let inv = 1.0 / l[r];
                row.iter_mut().for_each(|x| *x *= inv);
                lse[i0 + r] = m[r] + l[r].ln();
            }
        }
    });
    (o, Saved { lse, probabilities: None })
}

/// Must equal [`attention_backward_naive`] up to rounding. Dao et al. 2022, Algorithm 2 (with
/// FlashAttention-2's D = rowsum(do ⊙ o)); one rayon task per batch entry, which owns its dq, dk, dv, so the
/// order of every sum is fixed and the result does not depend on the number of threads.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    saved: &Saved,
    dout: &[f32],
    s: &AttentionShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    attention_backward_at(cpu::simd(), q, k, v, o, saved, dout, s)
}

/// [`attention_backward`] at an explicit SIMD level.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_at(
    level: Simd,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &[f32],
    saved: &Saved,
    dout: &[f32],
    s: &AttentionShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    if short::is_short(s) {
        return short::backward(level, q, k, v, o, saved, dout, s);
    }
    let mut dq = crate::pool::take_filled(q.len(), 0.0);
    let mut dk = crate::pool::take_filled(k.len(), 0.0);
    let mut dv = crate::pool::take_filled(v.len(), 0.0);
    let scale = s.scale();
    let per_entry =
        dq.par_chunks_mut(s.sq * s.d).zip(dk.par_chunks_mut(s.sk * s.d)).zip(dv.par_chunks_mut(s.sk * s.dv));
    per_entry.enumerate().for_each(|(b, ((dq, dk), dv))| {
        let qb = &q[b * s.sq * s.d..][..s.sq * s.d];
        let kb = &k[b * s.sk * s.d..][..s.sk * s.d];
        let vb = &v[b * s.sk * s.dv..][..s.sk * s.dv];
        let (ob, dob) = (&o[b * s.sq * s.dv..][..s.sq * s.dv], &dout[b * s.sq * s.dv..][..s.sq * s.dv]);
        let lse_b = &saved.lse[b * s.sq..][..s.sq];
        // D_i = Σ_c do_ic · o_ic
        let d_row: Vec<f32> = dob.chunks(s.dv).zip(ob.chunks(s.dv)).map(|(g, o)| cpu::dot(g, o)).collect();
        let (mut p, mut dp) = (vec![0.0f32; tile_len(s)], vec![0.0f32; tile_len(s)]);
        for i0 in (0..s.sq).step_by(TILE_Q) {
            let rows = TILE_Q.min(s.sq - i0);
            for j0 in (0..s.sk).step_by(TILE_K) {
                let cols = TILE_K.min(s.sk - j0);
                let (pt, dpt) = (&mut p[..rows * cols], &mut dp[..rows * cols]);
                // p = exp(q_i·k_jᵀ·scale − lse)
                gemm_serial(rows, s.d, cols, &qb[i0 * s.d..], (s.d, 1), &kb[j0 * s.d..], (1, s.d), pt, 0.0);
                pt.iter_mut().for_each(|x| *x *= scale);
                probabilities_tile_at(level, pt, cols, &lse_b[i0..i0 + rows]);
                // dv_j += pᵀ [cols, rows] · do_i [rows, dv]
                gemm_serial(
                    cols,
                    rows,
                    s.dv,
                    pt,
                    (1, cols),
                    &dob[i0 * s.dv..],
                    (s.dv, 1),
                    &mut dv[j0 * s.dv..(j0 + cols) * s.dv],
                    1.0,
                );
                // dp = do_i [rows, dv] · v_jᵀ [dv, cols]
                gemm_serial(rows, s.dv, cols, &dob[i0 * s.dv..], (s.dv, 1), &vb[j0 * s.dv..], (1, s.dv), dpt, 0.0);
                // ds = p ⊙ (dp − D)·scale
                score_grad_tile_at(level, dpt, pt, cols, &d_row[i0..i0 + rows], scale);
                // dq_i += ds [rows, cols] · k_j [cols, d];  dk_j += dsᵀ [cols, rows] · q_i [rows, d]
                gemm_serial(
                    rows,
                    cols,
                    s.d,
                    dpt,
                    (cols, 1),
                    &kb[j0 * s.d..],
                    (s.d, 1),
                    &mut dq[i0 * s.d..(i0 + rows) * s.d],
                    1.0,
                );
                gemm_serial(
                    cols,
                    rows,
                    s.d,
                    dpt,
                    (1, cols),
                    &qb[i0 * s.d..],
                    (s.d, 1),
                    &mut dk[j0 * s.d..(j0 + cols) * s.d],
                    1.0,
                );
            }
        }
    });
    (dq, dk, dv)
}
