//! Elementwise functions of one tensor: `neg`, `exp`, `log`, `sqrt`, `pow`, `tanh`, `sigmoid`, `relu`,
//! `silu`, `gelu`.
//!
//! Each op is two lines: the function y = f(x) and its derivative f′ written in terms of x and y (whichever
//! is cheaper: eˣ is its own derivative, tanh′ = 1 − y²). They share one op struct and one backward,
//! because by the chain rule every elementwise function has the same backward: dx = dout ⊙ f′(x).

mod kernels;
#[cfg(test)]
mod tests;

pub use kernels::{erf, silu_backward, silu_backward_at, silu_forward, silu_forward_at, unary_backward, unary_forward};

use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

/// The backward shared by every elementwise function: dx = dout ⊙ f′(x, y).
struct UnaryOp<D> {
    name: &'static str,
    x: Tensor,
    y: Tensor,
    derivative: D,
}

impl<D: Fn(f32, f32) -> f32 + Send + Sync> Op for UnaryOp<D> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn backward(&self, dout: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: y = f(x) elementwise (each op below writes f and f′ side by side);  dx = dout ⊙ f′(x, y)
        let dx = unary_backward(dout.data(), self.x.data(), self.y.data(), &self.derivative);
        vec![Some(Tensor::from_vec(dout.shape(), dx))]
    }
}

/// SiLU's backward on the SIMD kernel.
struct SiluOp {
    x: Tensor,
}
impl Op for SiluOp {
    fn name(&self) -> &'static str {
        "silu"
    }
    fn backward(&self, dout: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: y = x·σ(x);  dx = dout ⊙ σ(x)·(1 + x·(1 − σ(x)))
        vec![Some(Tensor::from_vec(dout.shape(), silu_backward(dout.data(), self.x.data())))]
    }
}

/// σ(x) = 1 / (1 + e⁻ˣ)
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Φ(x), the standard normal CDF: ½(1 + erf(x/√2)).
fn normal_cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// φ(x), the standard normal density: e^(−x²/2) / √(2π).
fn normal_pdf(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    INV_SQRT_2PI * (-0.5 * x * x).exp()
}

impl Tape {
    /// Records y = f(x) elementwise with derivative f′(x, y).
    fn unary(
        &mut self,
        name: &'static str,
        x: &Var,
        f: impl Fn(f32) -> f32,
        derivative: impl Fn(f32, f32) -> f32 + Send + Sync + 'static,
    ) -> Var {
        let y = Tensor::from_vec(x.shape(), unary_forward(x.value().data(), f));
        let op = UnaryOp { name, x: x.value().clone(), y: y.clone(), derivative };
        self.record(op, &[x], y)
    }

    /// Negation.
    /// ```text
    /// # Shapes    x → y, same shape (for every op in this file)
    /// # Forward   y = −x
    /// # Backward  dx = −dout
    /// # Saved     x, y (for every op in this file)
    /// # Reference torch.neg
    /// ```
    pub fn neg(&mut self, x: &Var) -> Var {
        self.unary("neg", x, |x| -x, |_, _| -1.0)
    }

    /// Exponential.
    /// ```text
    /// # Forward   y = eˣ
    /// # Backward  dx = dout ⊙ y
    /// # Reference torch.exp
    /// ```
    pub fn exp(&mut self, x: &Var) -> Var {
        self.unary("exp", x, f32::exp, |_, y| y)
    }

    /// Natural logarithm.
    /// ```text
    /// # Forward   y = ln x
    /// # Backward  dx = dout / x
    /// # Reference torch.log
    /// ```
    pub fn log(&mut self, x: &Var) -> Var {
        self.unary("log", x, f32::ln, |x, _| 1.0 / x)
    }

    /// Square root.
    /// ```text
    /// # Forward   y = √x
    /// # Backward  dx = dout / (2y)
    /// # Reference torch.sqrt
    /// ```
    pub fn sqrt(&mut self, x: &Var) -> Var {
        self.unary("sqrt", x, f32::sqrt, |_, y| 0.5 / y)
    }

    /// Power with a constant exponent.
    /// ```text
    /// # Forward   y = xᵖ
    /// # Backward  dx = dout ⊙ p·xᵖ⁻¹
    /// # Reference torch.pow(x, p)
    /// ```
    pub fn pow(&mut self, x: &Var, p: f32) -> Var {
        self.unary("pow", x, move |x| x.powf(p), move |x, _| p * x.powf(p - 1.0))
    }

    /// Hyperbolic tangent.
    /// ```text
    /// # Forward   y = tanh x
    /// # Backward  dx = dout ⊙ (1 − y²)
    /// # Reference torch.tanh
    /// ```
    pub fn tanh(&mut self, x: &Var) -> Var {
        self.unary("tanh", x, f32::tanh, |_, y| 1.0 - y * y)
    }

    /// Logistic sigmoid.
    /// ```text
    /// # Forward   y = σ(x) = 1 / (1 + e⁻ˣ)
    /// # Backward  dx = dout ⊙ y(1 − y)
    /// # Reference torch.sigmoid
    /// ```
    pub fn sigmoid(&mut self, x: &Var) -> Var {
        self.unary("sigmoid", x, sigmoid, |_, y| y * (1.0 - y))
    }

    /// Rectified linear unit.
    /// ```text
    /// # Forward   y = max(x, 0)
    /// # Backward  dx = dout ⊙ [x > 0]      (0 at x = 0, as PyTorch)
    /// # Reference torch.relu
    /// ```
    pub fn relu(&mut self, x: &Var) -> Var {
        self.unary("relu", x, |x| x.max(0.0), |x, _| if x > 0.0 { 1.0 } else { 0.0 })
    }

    /// Sigmoid-weighted linear unit (swish), the U-Net's activation.
    /// ```text
    /// # Forward   y = x·σ(x)
    /// # Backward  dx = dout ⊙ σ(x)·(1 + x·(1 − σ(x)))
    /// # Reference torch.nn.functional.silu; Elfwing et al. 2017, Ramachandran et al. 2017
    /// ```
    ///
    /// Runs on its own SIMD kernel ([`silu_forward`], [`silu_backward`]); the tests check it against the
    /// generic elementwise path with the two formulas above.
    pub fn silu(&mut self, x: &Var) -> Var {
        let y = Tensor::from_vec(x.shape(), silu_forward(x.value().data()));
        self.record(SiluOp { x: x.value().clone() }, &[x], y)
    }

    /// Gaussian error linear unit, exact (erf) form.
    /// ```text
    /// # Forward   y = x·Φ(x),  Φ(x) = ½(1 + erf(x/√2))
    /// # Backward  dx = dout ⊙ (Φ(x) + x·φ(x)),  φ(x) = e^(−x²/2)/√(2π)
    /// # Reference torch.nn.functional.gelu (approximate='none'); Hendrycks & Gimpel 2016
    /// ```
    pub fn gelu(&mut self, x: &Var) -> Var {
        self.unary("gelu", x, |x| x * normal_cdf(x), |x, _| normal_cdf(x) + x * normal_pdf(x))
    }
}
