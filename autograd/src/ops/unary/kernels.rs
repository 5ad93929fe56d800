//! Kernels of the elementwise functions: a map forward, and dx = dout ⊙ f′(x, y) backward.
//! Both are single flat loops over contiguous buffers, which the compiler vectorizes where f is simple.

/// y[i] = f(x[i]).
pub fn unary_forward(x: &[f32], f: impl Fn(f32) -> f32) -> Vec<f32> {
    x.iter().map(|&v| f(v)).collect()
}

/// dx[i] = dout[i] · f′(x[i], y[i]); differentiates `y[i] = f(x[i])`.
pub fn unary_backward(dout: &[f32], x: &[f32], y: &[f32], derivative: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    dout.iter().zip(x).zip(y).map(|((&g, &x), &y)| g * derivative(x, y)).collect()
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
