//! # autograd: tensors and reverse-mode automatic differentiation, every gradient by hand
//!
//! A guided tour, in the order to read the code:
//!
//! 1. [`Tensor`] (`tensor.rs`): an f32 array with a shape, contiguous and row-major.
//! 2. [`Tape`] (`tape/`): records each op applied to values that need gradients, as a flat list; its
//!    [`Tape::backward`] walks that list once in reverse.
//! 3. An op (`ops/<op>/mod.rs`): a method on `Tape` that computes the forward, plus a struct implementing
//!    [`Op`] that holds what the backward needs and computes it. Start with `ops/arith` (add, mul) and
//!    `ops/unary` (exp, silu), then `ops/matmul`.
//! 4. [`gradcheck`] (`gradcheck.rs`): how every backward is proven against finite differences.
//! 5. [`optim`]: SGD, Adam and AdamW turn gradients into parameter updates; [`init`] starts parameters where
//!    PyTorch would; [`nn`] packages parameters and ops into layers.
//! 6. Speed: [`cpu`] (SIMD level chosen at run time, threads), [`vector`] (the hand-written SIMD behind the
//!    register-tiled convolution in `ops/conv2d/direct.rs`), [`pool`] (recycled buffers).
//!
//! ```
//! use autograd::{ParamStore, Tape, Tensor};
//! let mut params = ParamStore::new();
//! let w = params.add("w", Tensor::from_vec(&[2], vec![1.0, -2.0]));
//! let mut tape = Tape::new();
//! let x = tape.constant(Tensor::from_vec(&[2], vec![3.0, 4.0]));
//! let wv = tape.param(&params, w);
//! let y = tape.mul(&x, &wv);
//! let loss = tape.sum(&y, &[0], false); // L = Σ x·w
//! let grads = tape.backward(&loss);
//! assert_eq!(grads.param(w).unwrap().data(), &[3.0, 4.0]); // ∂L/∂w = x
//! ```

pub mod cpu;
pub mod gradcheck;
pub mod init;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod params;
pub mod pool;
pub mod shape;
pub mod tape;
pub mod tensor;
pub mod vector;

pub use gradcheck::{gradcheck, gradcheck_with, GradcheckConfig};
pub use params::{ParamId, ParamStore};
pub use tape::{Gradients, NodeId, NonFinite, Op, RecordedOp, Tape, Var};
pub use tensor::Tensor;
