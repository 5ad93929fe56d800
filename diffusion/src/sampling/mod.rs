//! Drawing samples from a trained denoiser.
//!
//! - [`sampler`]: DDPM, DDIM and DPM-Solver++(2M) over any timestep spacing, one step at a time
//!   ([`sampler::Stepper`]) or to the end.
//! - [`control`]: what the steps make possible beyond drawing: img2img (SDEdit), inpainting (RePaint),
//!   interpolation between noises.

pub mod control;
pub mod sampler;
