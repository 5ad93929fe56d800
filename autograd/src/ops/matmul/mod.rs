//! `matmul`: (batched) matrix product, through matrixmultiply's strided `sgemm`, so that every transpose
//! the backward needs is a change of strides, never a copy.

mod kernels;
#[cfg(test)]
mod tests;

pub use kernels::{bmm, gemm, gemm_serial, gemm_serial_strided, matmul_naive, GemmFn};

use crate::shape::{broadcast_shape, sum_to};
use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;

impl Tape {
    /// Matrix product over the last two axes; leading (batch) axes broadcast.
    /// ```text
    /// # Shapes    a [..., m, k] · b [..., k, n] → out [batch, m, n],  batch = broadcast(a batch, b batch)
    /// # Forward   out[β] = a[β] · b[β]
    /// # Backward  da[β] = dout[β] · b[β]ᵀ   then summed over the batch axes a was broadcast along
    ///             db[β] = a[β]ᵀ · dout[β]   likewise
    /// # Saved     a, b
    /// # Reference torch.matmul (for inputs of rank ≥ 2)
    /// ```
    #[track_caller]
    pub fn matmul(&mut self, a: &Var, b: &Var) -> Var {
        let (sa, sb) = (a.shape(), b.shape());
        if sa.len() < 2 || sb.len() < 2 {
            panic!("matmul: a {sa:?} and b {sb:?} must both have at least 2 dimensions");
        }
        let (m, k, k2, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 2], sb[sb.len() - 1]);
        if k != k2 {
            panic!("matmul: a {sa:?} has {k} columns but b {sb:?} has {k2} rows");
        }
        let (ba, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
        let Some(batch) = broadcast_shape(ba, bb) else {
            panic!("matmul: batch shapes of a {sa:?} and b {sb:?} do not broadcast");
        };
        let out = bmm(&batch, m, k, n, a.value().data(), ba, false, b.value().data(), bb, false);
        let mut shape = batch;
        shape.extend([m, n]);
        let op = MatmulOp { a: a.value().clone(), b: b.value().clone() };
        self.record(op, &[a, b], Tensor::from_vec(&shape, out))
    }
}

struct MatmulOp {
    a: Tensor,
    b: Tensor,
}
impl Op for MatmulOp {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn backward(&self, dout: &Tensor, wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: out[β] = a[β] · b[β]
        let (sa, sb, so) = (self.a.shape(), self.b.shape(), dout.shape());
        let (m, k, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
        let (ba, bb, batch) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2], &so[..so.len() - 2]);
        let da = wants[0].then(|| {
            // dout [batch, m, n] · bᵀ [.., n, k]: b read transposed through its strides.
            let full = bmm(batch, m, n, k, dout.data(), batch, false, self.b.data(), bb, true);
            Tensor::from_vec(sa, sum_to_batch(full, batch, ba, m * k))
        });
        let db = wants[1].then(|| {
            if bb.is_empty() {
                // b was shared by every batch entry: db = Σ_β a[β]ᵀ·dout[β] = a_flatᵀ · dout_flat, one gemm
                // with the batch folded into the inner dimension.
                let rows: usize = batch.iter().product::<usize>() * m;
                let a_full = expand_batch(&self.a, batch, m * k);
                let mut db = crate::pool::take_filled(k * n, 0.0);
                gemm(k, rows, n, &a_full, (1, k), dout.data(), (n, 1), &mut db, 0.0);
                Tensor::from_vec(sb, db)
            } else {
                // aᵀ [.., k, m] · dout [batch, m, n].
                let full = bmm(batch, k, m, n, self.a.data(), ba, true, dout.data(), batch, false);
                Tensor::from_vec(sb, sum_to_batch(full, batch, bb, k * n))
            }
        });
        vec![da, db]
    }
}

/// Sums per-batch matrices [batch, mat] down to an input's batch shape [own, mat].
fn sum_to_batch(full: Vec<f32>, batch: &[usize], own: &[usize], mat: usize) -> Vec<f32> {
    if batch == own {
        return full;
    }
    let mut from = batch.to_vec();
    from.push(mat);
    let mut to = own.to_vec();
    to.push(mat);
    sum_to(&full, &from, &to)
}

/// a's data with its batch axes broadcast to `batch` (a copy only when a was broadcast).
fn expand_batch<'a>(a: &'a Tensor, batch: &[usize], mat: usize) -> std::borrow::Cow<'a, [f32]> {
    let numel: usize = batch.iter().product::<usize>() * mat;
    if a.numel() == numel {
        return std::borrow::Cow::Borrowed(a.data());
    }
    let mut from = a.shape()[..a.shape().len() - 2].to_vec();
    from.push(mat);
    let mut to = batch.to_vec();
    to.push(mat);
    std::borrow::Cow::Owned(crate::shape::expand(a.data(), &from, &to))
}
