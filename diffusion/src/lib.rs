//! # diffusion: denoising diffusion models on the autograd engine
//!
//! The folders are the stages a reader meets, in this order; each imports only from the ones before it
//! (`tests/no_import_cycles.rs` holds every module to that):
//!
//! 1. [`model`]: what a denoiser is ([`model::denoiser::Denoiser`]), how a timestep becomes a vector
//!    ([`model::embedding`]), the MLP for 2-D points ([`model::mlp`]), the U-Net ([`model::unet`]), class
//!    conditioning and guidance ([`model::guidance`]).
//! 2. [`process`]: the noise schedule and q(x_t | x_0) ([`process::schedule`]), DDPM's two algorithms
//!    written out ([`process::ddpm`]), and the general loss with ε, x₀ and v targets ([`process::objective`]).
//! 3. [`sampling`]: DDPM, DDIM and DPM-Solver++ ([`sampling::sampler`]); img2img, inpainting and
//!    interpolation ([`sampling::control`]).
//! 4. [`training`]: the training loop ([`training::train`]) and the files it writes ([`training::checkpoint`]),
//!    diffusers' pipeline folders among them ([`training::checkpoint::diffusers`]).
//! 5. [`data`]: MNIST-style IDX files, CIFAR-10, 2-D toy sets, and the order a run visits them in.
//! 6. [`eval`]: a digit classifier trained with the engine, and the Fréchet distance of its features.
//! 7. [`distill`]: a trained model distilled into one of few steps (progressive distillation).
//!
//! Around them: [`error`] is the error type of every file and command-line boundary, [`metadata`] reads the
//! string metadata of the files, [`cli`] reads the examples' flags, [`plot`] writes PNGs.

pub mod cli;
pub mod data;
pub mod distill;
pub mod error;
pub mod eval;
pub mod metadata;
pub mod model;
pub mod plot;
pub mod process;
pub mod sampling;
pub mod training;

pub use autograd;
pub use error::{Error, Result};
