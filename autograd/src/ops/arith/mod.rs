//! Elementwise arithmetic with NumPy/PyTorch broadcasting: `add`, `sub`, `mul`, `div`, and the scalar forms
//! `add_scalar`, `mul_scalar`.
//!
//! The four binary ops share one broadcasting kernel (`kernels.rs`); each has its own backward here. Every
//! backward ends in `sum_to`: where an input was broadcast (a bias [C] added to [N, C]), its value was used
//! once per copy, so its gradient is the sum of the output gradient over the copies.

mod kernels;
#[cfg(test)]
mod tests;

pub use kernels::{add_same, add_same_at, binary_forward, binary_forward_naive, mul_same, mul_same_at};

use crate::shape::{broadcast_shape, sum_to};
use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

/// The broadcast output shape of a binary op, or a panic naming the op and both shapes.
#[track_caller]
fn output_shape(op: &str, a: &Var, b: &Var) -> Vec<usize> {
    // A `match`, not `unwrap_or_else`: a closure would not pass `#[track_caller]` on.
    match broadcast_shape(a.shape(), b.shape()) {
        Some(shape) => shape,
        None => panic!("{op}: shapes a {:?} and b {:?} do not broadcast", a.shape(), b.shape()),
    }
}

/// Applies `f` elementwise with broadcasting; the shared forward of the four binary ops.
fn forward(a: &Tensor, b: &Tensor, out_shape: &[usize], f: impl Fn(f32, f32) -> f32 + Sync) -> Tensor {
    Tensor::from_vec(out_shape, binary_forward(a.data(), a.shape(), b.data(), b.shape(), out_shape, f))
}

/// The gradient that passes through unchanged (add's, sub's first input): dout itself when the shapes
/// agree (a shared, uncopied tensor), else summed down to the input's shape.
fn pass_through(dout: &Tensor, shape: &[usize]) -> Tensor {
    if dout.shape() == shape {
        return dout.clone();
    }
    Tensor::from_vec(shape, sum_to(dout.data(), dout.shape(), shape))
}

/// `sum_to` on tensors: the gradient of a broadcast input.
fn reduce_to(g: Vec<f32>, from: &[usize], shape: &[usize]) -> Tensor {
    if from == shape {
        return Tensor::from_vec(shape, g);
    }
    Tensor::from_vec(shape, sum_to(&g, from, shape))
}

/// dout ⊙ f(x) for x broadcast to dout's shape: the product every mul/div backward needs.
fn times(dout: &Tensor, x: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    binary_forward(dout.data(), dout.shape(), x.data(), x.shape(), dout.shape(), f)
}

impl Tape {
    /// Elementwise sum with broadcasting.
    /// ```text
    /// # Shapes    a, b broadcast to out
    /// # Forward   out = a + b
    /// # Backward  da = sum_to(dout, a.shape)
    ///             db = sum_to(dout, b.shape)
    /// # Saved     the input shapes
    /// # Reference torch.add
    /// ```
    #[track_caller]
    pub fn add(&mut self, a: &Var, b: &Var) -> Var {
        let shape = output_shape("add", a, b);
        let out = if a.shape() == b.shape() {
            Tensor::from_vec(&shape, add_same(a.value().data(), b.value().data()))
        } else {
            forward(a.value(), b.value(), &shape, |x, y| x + y)
        };
        let op = AddOp { a_shape: a.shape().to_vec(), b_shape: b.shape().to_vec() };
        self.record(op, &[a, b], out)
    }
}

struct AddOp {
    a_shape: Vec<usize>,
    b_shape: Vec<usize>,
}
impl Op for AddOp {
    fn name(&self) -> &'static str {
        "add"
    }
    // forward: out = a + b
    // ∂out/∂a = ∂out/∂b = 1, so da = dout and db = dout, each summed over the axes it was broadcast along
    fn backward(&self, dout: &Tensor, wants: &[bool]) -> Vec<Option<Tensor>> {
        vec![wants[0].then(|| pass_through(dout, &self.a_shape)), wants[1].then(|| pass_through(dout, &self.b_shape))]
    }
}

impl Tape {
    /// Elementwise difference with broadcasting.
    /// ```text
    /// # Shapes    a, b broadcast to out
    /// # Forward   out = a − b
    /// # Backward  da = sum_to(dout, a.shape)
    ///             db = −sum_to(dout, b.shape)
    /// # Saved     the input shapes
    /// # Reference torch.sub
    /// ```
    #[track_caller]
    pub fn sub(&mut self, a: &Var, b: &Var) -> Var {
        let shape = output_shape("sub", a, b);
        let out = forward(a.value(), b.value(), &shape, |x, y| x - y);
        let op = SubOp { a_shape: a.shape().to_vec(), b_shape: b.shape().to_vec() };
        self.record(op, &[a, b], out)
    }
}

struct SubOp {
    a_shape: Vec<usize>,
    b_shape: Vec<usize>,
}
impl Op for SubOp {
    fn name(&self) -> &'static str {
        "sub"
    }
    // forward: out = a − b
    // ∂out/∂a = 1, ∂out/∂b = −1: da = sum_to(dout), db = −sum_to(dout)
    fn backward(&self, dout: &Tensor, wants: &[bool]) -> Vec<Option<Tensor>> {
        let da = wants[0].then(|| pass_through(dout, &self.a_shape));
        let db = wants[1].then(|| {
            let neg = crate::pool::collect(dout.numel(), dout.data().iter().map(|g| -g));
            reduce_to(neg, dout.shape(), &self.b_shape)
        });
        vec![da, db]
    }
}

impl Tape {
    /// Elementwise product with broadcasting.
    /// ```text
    /// # Shapes    a, b broadcast to out
    /// # Forward   out = a ⊙ b
    /// # Backward  da = sum_to(dout ⊙ b, a.shape)
    ///             db = sum_to(dout ⊙ a, b.shape)
    /// # Saved     a, b
    /// # Reference torch.mul
    /// ```
    #[track_caller]
    pub fn mul(&mut self, a: &Var, b: &Var) -> Var {
        let shape = output_shape("mul", a, b);
        let out = if a.shape() == b.shape() {
            Tensor::from_vec(&shape, mul_same(a.value().data(), b.value().data()))
        } else {
            forward(a.value(), b.value(), &shape, |x, y| x * y)
        };
        let op = MulOp { a: a.value().clone(), b: b.value().clone() };
        self.record(op, &[a, b], out)
    }
}

struct MulOp {
    a: Tensor,
    b: Tensor,
}
impl Op for MulOp {
    fn name(&self) -> &'static str {
        "mul"
    }
    // forward: out = a ⊙ b
    // ∂out/∂a = b, ∂out/∂b = a: da = sum_to(dout ⊙ b), db = sum_to(dout ⊙ a)
    fn backward(&self, dout: &Tensor, wants: &[bool]) -> Vec<Option<Tensor>> {
        let grad = |other: &Tensor, own: &[usize]| {
            if other.shape() == dout.shape() && own == dout.shape() {
                Tensor::from_vec(own, mul_same(dout.data(), other.data()))
            } else {
                reduce_to(times(dout, other, |g, x| g * x), dout.shape(), own)
            }
        };
        let da = wants[0].then(|| grad(&self.b, self.a.shape()));
        let db = wants[1].then(|| grad(&self.a, self.b.shape()));
        vec![da, db]
    }
}

impl Tape {
    /// Elementwise quotient with broadcasting.
    /// ```text
    /// # Shapes    a, b broadcast to out
    /// # Forward   out = a / b
    /// # Backward  da = sum_to(dout / b, a.shape)
    ///             db = sum_to(−dout ⊙ a / b², b.shape) = sum_to(−dout ⊙ out / b, b.shape)
    /// # Saved     b, out
    /// # Reference torch.div
    /// ```
    #[track_caller]
    pub fn div(&mut self, a: &Var, b: &Var) -> Var {
        let shape = output_shape("div", a, b);
        let out = forward(a.value(), b.value(), &shape, |x, y| x / y);
        let op = DivOp { a_shape: a.shape().to_vec(), b: b.value().clone(), out: out.clone() };
        self.record(op, &[a, b], out)
    }
}

struct DivOp {
    a_shape: Vec<usize>,
    b: Tensor,
    out: Tensor,
}
impl Op for DivOp {
    fn name(&self) -> &'static str {
        "div"
    }
    // forward: out = a / b
    // ∂out/∂a = 1/b, ∂out/∂b = −a/b² = −out/b: da = sum_to(dout / b), db = sum_to(−dout ⊙ out / b)
    fn backward(&self, dout: &Tensor, wants: &[bool]) -> Vec<Option<Tensor>> {
        let da = wants[0].then(|| reduce_to(times(dout, &self.b, |g, b| g / b), dout.shape(), &self.a_shape));
        let db = wants[1].then(|| {
            // −dout ⊙ out / b, with out already of dout's shape.
            let g_out =
                crate::pool::collect(dout.numel(), dout.data().iter().zip(self.out.data()).map(|(g, o)| -g * o));
            let g_out = Tensor::from_vec(dout.shape(), g_out);
            reduce_to(times(&g_out, &self.b, |g, b| g / b), dout.shape(), self.b.shape())
        });
        vec![da, db]
    }
}

impl Tape {
    /// Adds a constant to every element.
    /// ```text
    /// # Shapes    x → out, same shape
    /// # Forward   out = x + c
    /// # Backward  dx = dout
    /// # Saved     nothing
    /// # Reference torch.add(x, c)
    /// ```
    pub fn add_scalar(&mut self, x: &Var, c: f32) -> Var {
        let out = Tensor::from_vec(
            x.shape(),
            crate::pool::collect(x.value().numel(), x.value().data().iter().map(|v| v + c)),
        );
        self.record(AddScalarOp, &[x], out)
    }
}

struct AddScalarOp;
impl Op for AddScalarOp {
    fn name(&self) -> &'static str {
        "add_scalar"
    }
    // forward: out = x + c
    // ∂out/∂x = 1: dx = dout
    fn backward(&self, dout: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
        vec![Some(dout.clone())]
    }
}

impl Tape {
    /// Multiplies every element by a constant.
    /// ```text
    /// # Shapes    x → out, same shape
    /// # Forward   out = c · x
    /// # Backward  dx = c · dout
    /// # Saved     c
    /// # Reference torch.mul(x, c)
    /// ```
    pub fn mul_scalar(&mut self, x: &Var, c: f32) -> Var {
        let out = Tensor::from_vec(
            x.shape(),
            crate::pool::collect(x.value().numel(), x.value().data().iter().map(|v| v * c)),
        );
        self.record(MulScalarOp { c }, &[x], out)
    }
}

struct MulScalarOp {
    c: f32,
}
impl Op for MulScalarOp {
    fn name(&self) -> &'static str {
        "mul_scalar"
    }
    // forward: out = c · x
    // ∂out/∂x = c: dx = c · dout
    fn backward(&self, dout: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
        let dx = crate::pool::collect(dout.numel(), dout.data().iter().map(|g| g * self.c));
        vec![Some(Tensor::from_vec(dout.shape(), dx))]
    }
}
