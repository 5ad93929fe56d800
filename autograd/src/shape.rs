//! Shape arithmetic shared by the ops: broadcasting (NumPy/PyTorch rules), strides, and the two kernels every
//! broadcasting op needs, `expand` (copy a tensor out to a broadcast shape) and `sum_to` (the adjoint of
//! `expand`: add a broadcast gradient back down to the input's shape).
//!
//! Broadcasting rule: align shapes at the right; two sizes are compatible when equal or when one is 1; the
//! result takes the larger. A missing leading dimension counts as 1.

use rayon::prelude::*;

/// The broadcast shape of `a` and `b`, or `None` if they are incompatible.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Row-major strides of a contiguous tensor of this shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Strides that read a tensor of shape `shape` as if it had the (broadcast) shape `out`: stride 0 along
/// every dimension that is broadcast (missing or of size 1 where `out` is larger).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = contiguous_strides(shape);
    let pad = out.len() - shape.len();
    (0..out.len()).map(|i| if i < pad || shape[i - pad] != out[i] { 0 } else { own[i - pad] }).collect()
}

/// Calls `f(offsets)` once per row of `out` (every index of all but the last dimension), in row-major
/// order, with each operand's offset of that row's first element. `strides[k]` are operand k's strides
/// over `out` (from [`broadcast_strides`]). The last dimension is left to the caller's inner loop, which is
/// where the vectorizable work is.
pub fn for_each_row<const K: usize>(out: &[usize], strides: [&[usize]; K], mut f: impl FnMut([usize; K])) {
    if out.contains(&0) {
        return;
    }
    let outer = out.len().saturating_sub(1);
    let rows: usize = out[..outer].iter().product();
    let mut index = vec![0usize; outer];
    let mut offsets = [0usize; K];
    for _ in 0..rows {
        f(offsets);
        // Odometer increment of the outer index, keeping every operand's offset in step.
        for d in (0..outer).rev() {
            index[d] += 1;
            for k in 0..K {
                offsets[k] += strides[k][d];
            }
            if index[d] < out[d] {
                break;
            }
            for k in 0..K {
                offsets[k] -= strides[k][d] * out[d];
            }
            index[d] = 0;
        }
    }
}

/// Copies `x` (shape `shape`) out to the broadcast shape `out`.
pub fn expand(x: &[f32], shape: &[usize], out: &[usize]) -> Vec<f32> {
    let numel: usize = out.iter().product();
    let mut y = crate::pool::take(numel);
    let sx = broadcast_strides(shape, out);
    let inner = out.last().copied().unwrap_or(1);
    let step = sx.last().copied().unwrap_or(0);
    for_each_row(out, [&sx], |[ox]| {
        if step == 0 {
            y.extend(std::iter::repeat_n(x[ox], inner));
        } else {
            y.extend_from_slice(&x[ox..ox + inner]);
        }
    });
    if out.is_empty() {
        y.push(x[0]);
    }
    y
}

/// Sums `g` (shape `from`) down to `shape`, which must broadcast to `from`: the adjoint of [`expand`].
/// Every broadcasting op's backward ends here ("reduce the gradient to the input's shape").
pub fn sum_to(g: &[f32], from: &[usize], shape: &[usize]) -> Vec<f32> {
    if from == shape {
        return crate::pool::collect(g.len(), g.iter().copied());
    }
    // Summed over trailing axes only (the time embedding's [B, C, 1, 1] from [B, C, H, W]): each output is
    // the sum of one contiguous block, vectorized (`cpu::sum`, its order fixed by the block's length) and
    // the blocks in parallel. The row loop below added each row in one serial chain, on one thread.
    let kept = shape.iter().zip(from).take_while(|(a, b)| a == b).count();
    let trailing_ones = shape.len() == from.len() && shape[kept..].iter().all(|&d| d == 1);
    if trailing_ones && !g.is_empty() {
        let block: usize = from[kept..].iter().product();
        let mut out = crate::pool::take_dirty(g.len() / block);
        out.par_iter_mut().zip(g.par_chunks(block)).with_min_len(64).for_each(|(o, b)| *o = crate::cpu::sum(b));
        return out;
    }
    let mut out = crate::pool::take_filled(shape.iter().product(), 0.0);
    let so = broadcast_strides(shape, from);
    let sg = contiguous_strides(from);
    let inner = from.last().copied().unwrap_or(1);
    let step = so.last().copied().unwrap_or(0);
    for_each_row(from, [&so, &sg], |[oo, og]| {
        let row = &g[og..og + inner];
        if step == 0 {
            out[oo] += row.iter().sum::<f32>();
        } else {
            for (o, v) in out[oo..oo + inner].iter_mut().zip(row) {
                *o += v;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy_rules() {
        assert_eq!(broadcast_shape(&[3, 1, 5], &[4, 1]), Some(vec![3, 4, 5]));
        assert_eq!(broadcast_shape(&[], &[2, 3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shape(&[2, 3], &[3, 2]), None);
    }

    #[test]
    fn expand_then_sum_to_counts_copies() {
        // x [3,1] expanded to [2,3,4]: every value is copied 2·4 = 8 times, so sum_to of the expansion is 8·x.
        let x = [1.0, 2.0, 3.0];
        let y = expand(&x, &[3, 1], &[2, 3, 4]);
        assert_eq!(y.len(), 24);
        assert_eq!(&y[4..8], &[2.0; 4]);
        assert_eq!(sum_to(&y, &[2, 3, 4], &[3, 1]), vec![8.0, 16.0, 24.0]);
        assert_eq!(sum_to(&y, &[2, 3, 4], &[]), vec![48.0]); // 8·(1 + 2 + 3)
        assert_eq!(sum_to(&y, &[2, 3, 4], &[4]), vec![12.0; 4]);
    }
}
