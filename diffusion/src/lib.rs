//! # diffusion: denoising diffusion models on the autograd engine
//!
//! Reading order:
//! 1. [`schedule`]: the noise schedule β_t and the forward process q(x_t | x_0).
//! 2. [`embedding`]: how a timestep becomes a vector a network can use.
//! 3. [`ddpm`]: the ε-prediction loss and the ancestral sampler (Ho et al. 2020).
//! 4. [`mlp`]: the first denoiser, for 2-D points ([`toy2d`] has the data and a quality number).
//!
//! Around them: [`plot`] writes PNGs, [`cli`] reads the examples' flags, [`error`] is the error type of
//! every file and command-line boundary.

pub mod checkpoint;
pub mod cifar;
pub mod classifier;
pub mod cli;
pub mod control;
pub mod ddpm;
pub mod embedding;
pub mod error;
pub mod evaluate;
pub mod fid;
pub mod guidance;
pub mod idx;
pub mod mlp;
pub mod objective;
pub mod plot;
pub mod sampler;
pub mod schedule;
pub mod toy2d;
pub mod train;
pub mod unet;

pub use autograd;
pub use error::{Error, Result};
