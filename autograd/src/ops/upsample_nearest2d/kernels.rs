//! Nearest-neighbour upsampling kernels. Legend: `planes` = N·C images of `h`×`w`, `scale` s; output
//! planes are (h·s)×(w·s).

use rayon::prelude::*;

/// Plain reference: y[p, i, j] = x[p, i/s, j/s].
pub fn upsample_forward_naive(x: &[f32], planes: usize, h: usize, w: usize, s: usize) -> Vec<f32> {
    let (oh, ow) = (h * s, w * s);
    let mut y = vec![0.0; planes * oh * ow];
    for p in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                y[(p * oh + i) * ow + j] = x[(p * h + i / s) * w + j / s];
            }
        }
    }
    y
}

/// Plain reference of the backward: dx[p, a, b] = Σ_{u,v < s} dy[p, a·s + u, b·s + v].
pub fn upsample_backward_naive(dy: &[f32], planes: usize, h: usize, w: usize, s: usize) -> Vec<f32> {
    let (oh, ow) = (h * s, w * s);
    let mut dx = vec![0.0; planes * h * w];
    for p in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                dx[(p * h + i / s) * w + j / s] += dy[(p * oh + i) * ow + j];
            }
        }
    }
    dx
}

/// Must equal [`upsample_forward_naive`]. Why it is faster: one rayon task per plane; each input row is
/// widened once (every value repeated s times) and that row copied s times.
pub fn upsample_forward(x: &[f32], planes: usize, h: usize, w: usize, s: usize) -> Vec<f32> {
    let (oh, ow) = (h * s, w * s);
    let mut y = crate::pool::take_dirty(planes * oh * ow);
    y.par_chunks_mut(oh * ow).enumerate().with_min_len(4).for_each(|(p, plane)| {
        for (i, rows) in plane.chunks_mut(s * ow).enumerate() {
            let src = &x[(p * h + i) * w..][..w];
            let (first, rest) = rows.split_at_mut(ow);
            for (out, &v) in first.chunks_mut(s).zip(src) {
                out.fill(v);
            }
            for row in rest.chunks_mut(ow) {
                row.copy_from_slice(first);
            }
        }
    });
    y
}

/// Must equal [`upsample_backward_naive`] up to rounding order: per plane, the s rows of each output block
/// are added in order, then each group of s columns.
pub fn upsample_backward(dy: &[f32], planes: usize, h: usize, w: usize, s: usize) -> Vec<f32> {
    let (oh, ow) = (h * s, w * s);
    let mut dx = crate::pool::take_dirty(planes * h * w);
    dx.par_chunks_mut(h * w).enumerate().with_min_len(4).for_each(|(p, plane)| {
        let mut row_sum = vec![0.0f32; ow];
        for (i, out) in plane.chunks_mut(w).enumerate() {
            row_sum.fill(0.0);
            for u in 0..s {
                let src = &dy[(p * oh + i * s + u) * ow..][..ow];
                row_sum.iter_mut().zip(src).for_each(|(r, v)| *r += v);
            }
            for (o, group) in out.iter_mut().zip(row_sum.chunks(s)) {
                *o = group.iter().sum();
            }
        }
    });
    dx
}
