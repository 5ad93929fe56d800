//! Broadcasting elementwise kernel shared by add, sub, mul and div.
//!
//! Legend: `a`, `b` the operands with their own shapes; `out` their broadcast shape; a "row" is one index of
//! every dimension but the last.

use crate::shape::{broadcast_strides, contiguous_strides, for_each_row};

/// The plain reference: for every output index, find each operand's element through its broadcast strides.
pub fn binary_forward_naive(
    a: &[f32], // [a_shape]
    a_shape: &[usize],
    b: &[f32], // [b_shape]
    b_shape: &[usize],
    out_shape: &[usize], // broadcast(a_shape, b_shape)
    f: impl Fn(f32, f32) -> f32,
) -> Vec<f32> {
    let sa = broadcast_strides(a_shape, out_shape);
    let sb = broadcast_strides(b_shape, out_shape);
    let so = contiguous_strides(out_shape);
    let numel: usize = out_shape.iter().product();
    (0..numel)
        .map(|flat| {
            let (mut ia, mut ib) = (0, 0);
            for d in 0..out_shape.len() {
                let i = flat / so[d] % out_shape[d];
                ia += i * sa[d];
                ib += i * sb[d];
            }
            f(a[ia], b[ib])
        })
        .collect()
}

/// Broadcasts of at least this many outputs run in parallel over the first axis ([`binary_forward`]).
const PARALLEL_BROADCAST: usize = 1 << 15;

/// Must equal [`binary_forward_naive`]. Why it is faster: no per-element index arithmetic. The index is
/// advanced once per row, and the inner loop over the last dimension is one of four straight loops
/// (each operand either walks with stride 1 or repeats one value), which the compiler vectorizes. Large
/// broadcasts (the U-Net's time embedding [B, C, 1, 1] added to [B, C, H, W]) take their slabs along the
/// first axis in parallel, each by the same rows (on one thread, the add op's forward took 213 ms of 40
/// training steps, by the tape's `--profile`; 116–123 ms this way). Each output is the same f(a, b).
pub fn binary_forward(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out_shape: &[usize],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    let numel: usize = out_shape.iter().product();
    // Same shapes: one flat loop.
    if a_shape == b_shape {
        return crate::pool::collect(numel, a.iter().zip(b).map(|(&x, &y)| f(x, y)));
    }
    if out_shape.is_empty() {
        let mut out = crate::pool::take(1);
        out.push(f(a[0], b[0]));
        return out;
    }
    let sa = broadcast_strides(a_shape, out_shape);
    let sb = broadcast_strides(b_shape, out_shape);
    let mut out = crate::pool::take_dirty(numel);
    if out_shape.len() >= 2 && numel >= PARALLEL_BROADCAST && out_shape[0] >= 2 {
        let slab = numel / out_shape[0];
        out.par_chunks_mut(slab).enumerate().for_each(|(i, dst)| {
            let (a, b) = (&a[i * sa[0]..], &b[i * sb[0]..]);
            broadcast_rows(dst, &out_shape[1..], (a, &sa[1..]), (b, &sb[1..]), &f);
        });
    } else {
        broadcast_rows(&mut out, out_shape, (a, &sa), (b, &sb), &f);
    }
    out
}

/// dst [shape] = f(a, b), each operand with its strides over `shape` (0 where it is broadcast), row by row.
fn broadcast_rows(
    dst: &mut [f32],
    shape: &[usize],
    (a, sa): (&[f32], &[usize]),
    (b, sb): (&[f32], &[usize]),
    f: &impl Fn(f32, f32) -> f32,
) {
    let inner = *shape.last().expect("rank ≥ 1");
    let (step_a, step_b) = (sa[sa.len() - 1], sb[sb.len() - 1]);
    let mut rows = dst.chunks_exact_mut(inner.max(1));
    for_each_row(shape, [sa, sb], |[oa, ob]| {
        let out = rows.next().expect("one row of dst per row of the shape");
        match (step_a, step_b) {
            (1, 1) => out
                .iter_mut()
                .zip(a[oa..oa + inner].iter().zip(&b[ob..ob + inner]))
                .for_each(|(o, (&x, &y))| *o = f(x, y)),
            (1, _) => out.iter_mut().zip(&a[oa..oa + inner]).for_each(|(o, &x)| *o = f(x, b[ob])),
            (_, 1) => out.iter_mut().zip(&b[ob..ob + inner]).for_each(|(o, &y)| *o = f(a[oa], y)),
            _ => out.fill(f(a[oa], b[ob])),
        }
    });
}

// ---------------------------------------------------------------------------------------------------------
// Same-shape add and mul, the U-Net's most frequent elementwise ops (residual sums, time-embedding adds,
// gates), on the SIMD path: multiversioned bodies over fixed chunks, chunks split across threads.
// ---------------------------------------------------------------------------------------------------------

use rayon::prelude::*;

use crate::cpu::{self, Simd};

const CHUNK: usize = 1 << 15;

#[inline(always)]
fn add_body(a: &[f32], b: &[f32], out: &mut [f32]) {
    out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (x, y))| *o = x + y);
}
crate::multiversion!(fn add_chunk(level: Simd, a: &[f32], b: &[f32], out: &mut [f32]) => add_body);

#[inline(always)]
fn mul_body(a: &[f32], b: &[f32], out: &mut [f32]) {
    out.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (x, y))| *o = x * y);
}
crate::multiversion!(fn mul_chunk(level: Simd, a: &[f32], b: &[f32], out: &mut [f32]) => mul_body);

/// a + b for equal shapes. Must equal `binary_forward(.., |x, y| x + y)` exactly.
pub fn add_same_at(level: Simd, a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = crate::pool::take_dirty(a.len());
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| add_chunk(level, a, b, o));
    out
}

/// a ⊙ b for equal shapes. Must equal `binary_forward(.., |x, y| x * y)` exactly.
pub fn mul_same_at(level: Simd, a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = crate::pool::take_dirty(a.len());
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| mul_chunk(level, a, b, o));
    out
}

pub fn add_same(a: &[f32], b: &[f32]) -> Vec<f32> {
    add_same_at(cpu::simd(), a, b)
}

pub fn mul_same(a: &[f32], b: &[f32]) -> Vec<f32> {
    mul_same_at(cpu::simd(), a, b)
}
