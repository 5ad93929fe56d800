//! `conv2d`: 2-D convolution (cross-correlation, as every framework computes it), NCHW, any kernel size,
//! stride and zero padding. The U-Net spends most of its time here.
//!
//! The files, in reading order:
//! - `shape.rs`: the sizes of one convolution, checked at the op's entry.
//! - `naive.rs`: the definition as loops, the reference every other path is tested against.
//! - `path.rs`: which path computes which shape, and why, in one screen (`enum Path`).
//! - `im2col.rs`: im2col + matrix product, for 1×1 and unpadded convolutions.
//! - `direct.rs`: the register-tiled direct kernel of "same" convolutions; `direct_dweight.rs` its
//!   weight gradient (`narrow_dweight.rs` for few output channels); `strided.rs` the same kernels on strided convolutions, by phase planes;
//!   `strided_cm.rs` the forward of strided convolutions onto small maps, channels in the lanes;
//!   `pointwise.rs` the direct kernel on 1×1 convolutions of small maps, several images side by side.
//! - `winograd.rs`: Winograd F(2×2, 3×3) for 3×3 "same" convolutions on large maps; `winograd_cm.rs` the
//!   same with channels in the vector lanes, for small maps; `winograd_dweight.rs` the weight gradient in
//!   the Winograd domain; `transpose.rs` the channel-minor transposes the last two need.
//! - `parallel.rs`: how the paths split work over threads so that no result depends on their number.

mod direct;
mod direct_dweight;
mod im2col;
mod naive;
mod narrow_dweight;
mod parallel;
mod path;
mod pointwise;
mod pointwise_dweight;
mod shape;
mod strided;
mod strided_cm;
#[cfg(test)]
mod tests;
pub(crate) mod transpose; // also `attention/short.rs`'s
mod winograd;
mod winograd_cm;
mod winograd_dweight;

use crate::tape::{Op, Tape, Var};
use crate::tensor::Tensor;
pub use direct::conv2d_forward_direct;
pub use im2col::{conv2d_backward_im2col, conv2d_forward_im2col};
pub use naive::{conv2d_backward_naive, conv2d_forward_naive};
pub use path::{
    conv2d_backward, conv2d_backward_direct, conv2d_forward, conv2d_forward_packed, forward_path, pack_forward_weight,
    Packing, Path,
};
pub use shape::ConvShape;
pub use strided::conv2d_backward_strided;
pub use winograd::conv2d_forward_winograd;
pub use winograd_cm::conv2d_forward_winograd_cm;

impl Tape {
    /// 2-D convolution with zero padding.
    /// ```text
    /// # Shapes    x [N, C_in, H, W], weight [C_out, C_in, KH, KW], bias [C_out] → y [N, C_out, OH, OW]
    ///             OH = (H + 2·padding − KH)/stride + 1, likewise OW
    /// # Forward   y[n,o,i,j] = bias[o] + Σ_{c,u,v} weight[o,c,u,v] · x[n, c, i·stride − padding + u, j·stride − padding + v]
    /// # Backward  dx[n,c,p,q]    = Σ_{o,u,v} weight[o,c,u,v] · dy[n,o,i,j]   over the (i,j,u,v) that read x[n,c,p,q]
    ///             dweight[o,c,u,v] = Σ_{n,i,j} x[n, c, i·stride − padding + u, j·stride − padding + v] · dy[n,o,i,j]
    ///             dbias[o]       = Σ_{n,i,j} dy[n,o,i,j]
    /// # Saved     x, weight
    /// # Reference torch.nn.functional.conv2d; im2col: Chellapilla, Puri & Simard 2006; Winograd: Lavin & Gray 2016
    /// ```
    #[track_caller]
    pub fn conv2d(&mut self, x: &Var, weight: &Var, bias: Option<&Var>, stride: usize, padding: usize) -> Var {
        let s = match ConvShape::new(x.shape(), weight.shape(), stride, padding) {
            Ok(s) => s,
            Err(problem) => panic!("conv2d: {problem}"),
        };
        if let Some(b) = bias {
            if b.shape() != [s.c_out] {
                panic!("conv2d: bias {:?} must be [{}] for weight {:?}", b.shape(), s.c_out, weight.shape());
            }
        }
        let (xv, wv, bv) = (x.value().data(), weight.value().data(), bias.map(|b| b.value().data()));
        let y = if self.is_recording() {
            conv2d_forward(xv, wv, bv, &s)
        } else {
            // Not training: the weight will likely be run again unchanged (a sampler calls the network 50
            // times), so its rearranged copy is kept with it (the same bits as rearranging it every time).
            let level = crate::cpu::simd();
            let key = ("conv2d_forward_packed", [forward_path(&s).code(), level as usize, s.h, s.w]);
            let packed = weight.value().derived(key, || pack_forward_weight(level, wv, &s).unwrap_or_default());
            conv2d_forward_packed(level, xv, wv, Some(&packed[..]).filter(|p| !p.is_empty()), bv, &s)
        };
        let y = Tensor::from_vec(&[s.n, s.c_out, s.oh, s.ow], y);
        let op = Conv2dOp { x: x.value().clone(), weight: weight.value().clone(), shape: s };
        match bias {
            Some(b) => self.record(op, &[x, weight, b], y),
            None => self.record(op, &[x, weight], y),
        }
    }
}

struct Conv2dOp {
    x: Tensor,
    weight: Tensor,
    shape: ConvShape,
}
impl Op for Conv2dOp {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn attributes(&self) -> String {
        format!("stride {}, padding {}", self.shape.stride, self.shape.padding)
    }
    fn backward(&self, dy: &Tensor, wants: &[bool]) -> Vec<Option<Tensor>> {
        // forward: y[n,o,i,j] = bias[o] + Σ_{c,u,v} weight[o,c,u,v] · x[n, c, i·s − p + u, j·s − p + v]
        let (dx, dweight, dbias) =
            conv2d_backward(self.x.data(), self.weight.data(), dy.data(), &self.shape, wants[0], wants[1]);
        let mut grads = vec![
            dx.map(|d| Tensor::from_vec(self.x.shape(), d)),
            dweight.map(|d| Tensor::from_vec(self.weight.shape(), d)),
        ];
        if wants.len() == 3 {
            grads.push(wants[2].then(|| Tensor::from_vec(&[self.shape.c_out], dbias)));
        }
        grads
    }
}
