//! The networks that denoise: what a denoiser is, how a timestep becomes a vector, and the two models.
//!
//! - [`denoiser`]: the [`denoiser::Denoiser`] trait every loss, sampler and the training loop takes.
//! - [`embedding`]: sinusoidal timestep embeddings.
//! - [`mlp`]: the first denoiser, for 2-D points.
//! - [`unet`]: the U-Net for images, its config, presets (diffusers' `UNet2DModel` among them) and limits.
//! - [`guidance`]: class conditioning and classifier-free guidance as wrappers of the U-Net.

pub mod denoiser;
pub mod embedding;
pub mod guidance;
pub mod mlp;
pub mod unet;
