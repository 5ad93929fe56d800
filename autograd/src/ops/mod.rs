//! Every op, one folder each (a family of ops that share one kernel shares a folder): `mod.rs` holds the
//! public forward as a method on [`crate::Tape`] and the op struct with its backward, `kernels.rs` the plain
//! slice functions, `tests.rs` the gradient checks and fast == naive tests.

pub mod arith;
pub mod attention;
pub mod broadcast_to;
pub mod concat;
pub mod conv2d;
pub mod cross_entropy;
pub mod dropout;
pub mod group_norm;
pub mod linear;
pub mod matmul;
pub mod mse_loss;
pub mod narrow;
pub mod permute;
pub mod reduce;
pub mod reshape;
pub mod softmax;
pub mod unary;
pub mod upsample_nearest2d;

#[cfg(test)]
mod torch_reference;
