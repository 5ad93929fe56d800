//! The definition, as loops: the reference every fast path is tested against (`tests.rs`). Slow (seven
//! nested loops, no reuse of anything), and obviously right.

use super::shape::ConvShape;

/// y[n, co, oy, ox] = bias[co] + Σ_{ci, ky, kx} weight[co, ci, ky, kx] · x[n, ci, oy·s − p + ky, ox·s − p + kx]
/// (terms outside the image are zero padding).
pub fn conv2d_forward_naive(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: &ConvShape) -> Vec<f32> {
    let mut y = vec![0.0; s.n * s.c_out * s.ohw()];
    for n in 0..s.n {
        for co in 0..s.c_out {
            for oy in 0..s.oh {
                for ox in 0..s.ow {
                    let mut acc = bias.map_or(0.0, |b| b[co]);
                    for ci in 0..s.c_in {
                        for ky in 0..s.kh {
                            let Some(iy) = s.input_index(oy, ky, s.h) else { continue };
                            for kx in 0..s.kw {
                                let Some(ix) = s.input_index(ox, kx, s.w) else { continue };
                                acc += weight[((co * s.c_in + ci) * s.kh + ky) * s.kw + kx]
                                    * x[((n * s.c_in + ci) * s.h + iy) * s.w + ix];
                            }
                        }
                    }
                    y[((n * s.c_out + co) * s.oh + oy) * s.ow + ox] = acc;
                }
            }
        }
    }
    y
}

/// Differentiates the forward line `acc += weight[co, ci, ky, kx] · x[n, ci, iy, ix]` term by term:
/// dx[n, ci, iy, ix] += weight[..] · dy[n, co, oy, ox];  dweight[co, ci, ky, kx] += x[..] · dy[..];
/// dbias[co] += dy[n, co, oy, ox]. Returns (dx, dweight, dbias).
pub fn conv2d_backward_naive(x: &[f32], weight: &[f32], dy: &[f32], s: &ConvShape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0; x.len()];
    let mut dweight = vec![0.0; weight.len()];
    let mut dbias = vec![0.0; s.c_out];
    for n in 0..s.n {
        for co in 0..s.c_out {
            for oy in 0..s.oh {
                for ox in 0..s.ow {
                    let g = dy[((n * s.c_out + co) * s.oh + oy) * s.ow + ox];
                    dbias[co] += g;
                    for ci in 0..s.c_in {
                        for ky in 0..s.kh {
                            let Some(iy) = s.input_index(oy, ky, s.h) else { continue };
                            for kx in 0..s.kw {
                                let Some(ix) = s.input_index(ox, kx, s.w) else { continue };
                                let wi = ((co * s.c_in + ci) * s.kh + ky) * s.kw + kx;
                                let xi = ((n * s.c_in + ci) * s.h + iy) * s.w + ix;
                                dx[xi] += weight[wi] * g;
                                dweight[wi] += x[xi] * g;
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dweight, dbias)
}
