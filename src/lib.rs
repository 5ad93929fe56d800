//! The root package: it owns the numbered examples (`examples/`) and the benchmarks (`benches/`), and
//! re-exports the two crates they use.
//!
//! - [`autograd`]: tensors, the tape, ops with hand-written gradients, optimizers.
//! - [`diffusion`]: noise schedules, denoisers, samplers, datasets, images.

pub use autograd;
pub use diffusion;
