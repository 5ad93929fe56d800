//! Kernels of the elementwise functions: a map forward, and dx = dout ⊙ f′(x, y) backward.
//! Both are single flat loops over contiguous buffers, which the compiler vectorizes where f is simple.

/// y[i] = f(x[i]).
pub fn unary_forward(x: &[f32], f: impl Fn(f32) -> f32) -> Vec<f32> {
    crate::pool::collect(x.len(), x.iter().map(|&v| f(v)))
}

/// dx[i] = dout[i] · f′(x[i], y[i]); differentiates `y[i] = f(x[i])`.
pub fn unary_backward(dout: &[f32], x: &[f32], y: &[f32], derivative: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    crate::pool::collect(dout.len(), dout.iter().zip(x).zip(y).map(|((&g, &x), &y)| g * derivative(x, y)))
}

/// The error function, to about 1e-7 absolute (f32 precision).
///
/// Rust's standard library has no `erf`. This is Abramowitz & Stegun 7.1.26 (maximum error 1.5e-7):
/// ```text
/// erf(x) = 1 − (a₁t + a₂t² + a₃t³ + a₄t⁴ + a₅t⁵)·e^(−x²),  t = 1/(1 + p·x),  x ≥ 0;  erf(−x) = −erf(x)
/// ```
pub fn erf(x: f32) -> f32 {
    const P: f64 = 0.327_591_1;
    const A: [f64; 5] = [0.254_829_592, -0.284_496_736, 1.421_413_741, -1.453_152_027, 1.061_405_429];
    let ax = (x as f64).abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * (-ax * ax).exp();
    (if x < 0.0 { -y } else { y }) as f32
}

// ---------------------------------------------------------------------------------------------------------
// SiLU, the U-Net's activation, gets a SIMD kernel of its own: the generic map above calls libm's expf,
// which does not vectorize; these use cpu::exp_fast (relative error < 5e-7) inside multiversioned bodies,
// and split large tensors across threads in fixed chunks.
// ---------------------------------------------------------------------------------------------------------

use rayon::prelude::*;

use crate::cpu::{self, exp_fast, Simd};

/// Elements per rayon task for elementwise kernels (large enough to amortize a task, small enough to
/// balance two to a few dozen threads).
const CHUNK: usize = 1 << 15;

#[inline(always)]
fn silu_forward_body(x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y = x / (1.0 + exp_fast(-x)));
}
crate::multiversion!(fn silu_forward_chunk(level: Simd, x: &[f32], y: &mut [f32]) => silu_forward_body);

/// dx = dout · σ(x)·(1 + x·(1 − σ(x))); differentiates `y = x·σ(x)`.
#[inline(always)]
fn silu_backward_body(dout: &[f32], x: &[f32], dx: &mut [f32]) {
    dx.iter_mut().zip(x.iter().zip(dout)).for_each(|(d, (&x, &g))| {
        let s = 1.0 / (1.0 + exp_fast(-x));
        *d = g * s * (1.0 + x * (1.0 - s));
    });
}
crate::multiversion!(fn silu_backward_chunk(level: Simd, dout: &[f32], x: &[f32], dx: &mut [f32]) => silu_backward_body);

/// y = x·σ(x). Must equal `unary_forward(x, silu)` to 1e-6 relative.
pub fn silu_forward_at(level: Simd, x: &[f32]) -> Vec<f32> {
    let mut y = crate::pool::take_dirty(x.len());
    y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| silu_forward_chunk(level, x, y));
    y
}

/// The gradient of SiLU. Must equal `unary_backward` with silu's derivative to 1e-6 relative.
pub fn silu_backward_at(level: Simd, dout: &[f32], x: &[f32]) -> Vec<f32> {
    let mut dx = crate::pool::take_dirty(x.len());
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(dout.par_chunks(CHUNK)))
        .for_each(|(dx, (x, g))| silu_backward_chunk(level, g, x, dx));
    dx
}

pub fn silu_forward(x: &[f32]) -> Vec<f32> {
    silu_forward_at(cpu::simd(), x)
}

pub fn silu_backward(dout: &[f32], x: &[f32]) -> Vec<f32> {
    silu_backward_at(cpu::simd(), dout, x)
}
