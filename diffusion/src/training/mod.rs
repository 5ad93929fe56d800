//! Training a denoiser, and the files a run leaves.
//!
//! - [`train`]: the loop (AdamW, warmup and cosine decay, clipping, EMA, loss log, grids, divergence
//!   diagnosis) for any [`train::Trainable`] denoiser (the U-Net, the 2-D MLP), its config and its limits.
//! - [`checkpoint`]: safetensors weights and training checkpoints, crash-safe and checksummed, and
//!   [`checkpoint::Trained`], a trained model loaded to sample from.
//! - [`flags`]: the main job's command-line flags.
//! - [`run`]: a whole run as example 03 drives it: new or resumed, checked, trained in sittings.

pub mod checkpoint;
pub mod flags;
pub mod run;
pub mod train;
