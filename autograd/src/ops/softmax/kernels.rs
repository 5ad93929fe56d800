//! Softmax kernels. Legend: x viewed as [outer, size, inner]; a "line" is the `size` elements along the
//! softmax axis for one (outer, inner) pair, `inner` apart in memory.

/// Plain reference: for each line, strided reads: max, then exponentials, then normalize.
pub fn softmax_forward_naive(x: &[f32], (outer, size, inner): (usize, usize, usize)) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for o in 0..outer {
        for i in 0..inner {
            let idx = |j: usize| o * size * inner + j * inner + i;
            let max = (0..size).map(|j| x[idx(j)]).fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0;
            for j in 0..size {
                y[idx(j)] = (x[idx(j)] - max).exp();
                total += y[idx(j)];
            }
            for j in 0..size {
                y[idx(j)] /= total;
            }
        }
    }
    y
}

/// Must equal [`softmax_forward_naive`]. Why it is faster: when the axis is the last one (inner = 1, the
/// common case: attention rows, class logits) each line is a contiguous slice, walked with slice iterators
/// and no index arithmetic; other axes fall back to the strided reference.
pub fn softmax_forward(x: &[f32], dims: (usize, usize, usize)) -> Vec<f32> {
    let (_, size, inner) = dims;
    if inner != 1 || size == 0 {
        return softmax_forward_naive(x, dims);
    }
    let mut y = vec![0.0; x.len()];
    for (xr, yr) in x.chunks(size).zip(y.chunks_mut(size)) {
        let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0;
        for (yv, xv) in yr.iter_mut().zip(xr) {
            *yv = (xv - max).exp();
            total += *yv;
        }
        let inv = 1.0 / total;
        yr.iter_mut().for_each(|v| *v *= inv);
    }
    y
}

/// y = x − max − ln Σ e^(x − max) along each line.
pub fn log_softmax_forward(x: &[f32], (outer, size, inner): (usize, usize, usize)) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for o in 0..outer {
        for i in 0..inner {
            let idx = |j: usize| o * size * inner + j * inner + i;
            let max = (0..size).map(|j| x[idx(j)]).fold(f32::NEG_INFINITY, f32::max);
            let lse = max + (0..size).map(|j| (x[idx(j)] - max).exp()).sum::<f32>().ln();
            for j in 0..size {
                y[idx(j)] = x[idx(j)] - lse;
            }
        }
    }
    y
}
