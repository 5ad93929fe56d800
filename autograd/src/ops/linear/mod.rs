//! `linear`: the fully connected layer's op, y = x·Wᵀ + b, with PyTorch's weight layout [out, in].

#[cfg(test)]
mod tests;

use crate::ops::matmul::gemm;
use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    /// Affine map over the last axis.
    /// ```text
    /// # Shapes    x [..., in], weight [out, in], bias [out] → y [..., out];  M = product of x's leading sizes
    /// # Forward   y = x · weightᵀ + bias
    /// # Backward  dx      = dy · weight            [M, out]·[out, in]
    ///             dweight = dyᵀ · x                [out, M]·[M, in]
    ///             dbias   = Σ_rows dy
    /// # Saved     x, weight
    /// # Reference torch.nn.functional.linear
    /// ```
    #[track_caller]
    pub fn linear(&mut self, x: &Var, weight: &Var, bias: Option<&Var>) -> Var {
        let (sx, sw) = (x.shape(), weight.shape());
        if sw.len() != 2 || sx.is_empty() || sx[sx.len() - 1] != sw[1] {
            panic!("linear: weight {sw:?} expects x [..., {}], got x {sx:?}", sw.get(1).copied().unwrap_or(0));
        }
        let (n_in, n_out) = (sw[1], sw[0]);
        if let Some(b) = bias {
            if b.shape() != [n_out] {
                panic!("linear: bias {:?} must be [{n_out}] for weight {sw:?}", b.shape());
            }
        }
        let rows = x.value().numel() / n_in;
        let mut y = crate::pool::take_filled(rows * n_out, 0.0);
        if let Some(b) = bias {
            for row in y.chunks_mut(n_out) {
                row.copy_from_slice(b.value().data());
            }
        }
        // y [M, out] (+)= x [M, in] · weightᵀ, weight [out, in] read transposed as [in, out] by strides (1, in).
        let beta = if bias.is_some() { 1.0 } else { 0.0 };
        gemm(rows, n_in, n_out, x.value().data(), (n_in, 1), weight.value().data(), (1, n_in), &mut y, beta);
        let mut shape = sx.to_vec();
        *shape.last_mut().unwrap() = n_out;
        let op = LinearOp { x: x.value().clone(), weight: weight.value().clone() };
        let out = Tensor::from_vec(&shape, y);
        match bias {
            Some(b) => self.record(op, &[x, weight, b], out),
            None => self.record(op, &[x, weight], out),
        }
    }
}

struct LinearOp {
    x: Tensor,
    weight: Tensor,
}
impl Op for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn backward(&self, dy: &Tensor, wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: y = x · weightᵀ + bias
        let (n_out, n_in) = (self.weight.shape()[0], self.weight.shape()[1]);
        let rows = self.x.numel() / n_in;
        let dx = wants[0].then(|| {
            let mut dx = crate::pool::take_filled(rows * n_in, 0.0);
            gemm(rows, n_out, n_in, dy.data(), (n_out, 1), self.weight.data(), (n_in, 1), &mut dx, 0.0);
            Tensor::from_vec(self.x.shape(), dx)
        });
        let dweight = wants[1].then(|| {
            // dyᵀ: dy [M, out] read as [out, M] by strides (1, out).
            let mut dw = crate::pool::take_filled(n_out * n_in, 0.0);
            gemm(n_out, rows, n_in, dy.data(), (1, n_out), self.x.data(), (n_in, 1), &mut dw, 0.0);
            Tensor::from_vec(self.weight.shape(), dw)
        });
        let mut grads = vec![dx, dweight];
        if wants.len() == 3 {
            grads.push(wants[2].then(|| {
                let mut db = vec![0.0; n_out];
                for row in dy.data().chunks(n_out) {
                    db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
                }
                Tensor::from_vec(&[n_out], db)
            }));
        }
        grads
    }
}
