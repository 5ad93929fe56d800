//! Drawing samples from a trained denoiser.
//!
//! - [`sampler`]: DDPM, DDIM, DPM-Solver++ (2M, 3M, SDE), Euler, Euler ancestral, Heun (with EDM's churn)
//!   and UniPC over any timestep spacing (Karras σ among them), one step at a time ([`sampler::Stepper`])
//!   or to the end; [`solvers`] their update rules in σ coordinates.
//! - [`control`]: what the steps make possible beyond drawing: img2img (SDEdit), inpainting (RePaint),
//!   interpolation between noises.

pub mod control;
pub mod sampler;
pub mod solvers;
