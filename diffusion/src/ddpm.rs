//! DDPM in its simplest form, Ho et al. 2020, "Denoising Diffusion Probabilistic Models": the network
//! predicts the noise ε, trained with the plain MSE, sampled ancestrally through every timestep.
//!
//! Training (Algorithm 1, the simplified ε-prediction loss of eq. 14):
//! ```text
//! x_0 ~ data,  t ~ U{0 … T−1},  ε ~ N(0, I),  x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
//! loss = ‖ε − ε_θ(x_t, t)‖²   (mean over elements)
//! ```
//! Sampling (Algorithm 2): start from x_{T−1} ~ N(0, I), then for t = T−1 … 0
//! ```text
//! x_{t−1} = (1/√α_t) · (x_t − (β_t / √(1 − ᾱ_t)) · ε_θ(x_t, t)) + σ_t z,   z ~ N(0, I), z = 0 at t = 0
//! σ_t² = β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)       (the posterior variance, eq. 7; "fixed small")
//! ```
//! These two functions are that recipe; [`crate::objective`] generalizes the loss (x_0 and v targets,
//! min-SNR weighting) and [`crate::sampler`] the sampling (DDIM, DPM-Solver++, fewer steps, clipping).
//! Algorithm 2's update is the sampler's DDPM step written with ε̂ in place of x̂_0 (the two are the same
//! line of algebra: x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t).

use autograd::{ParamStore, Tape, Tensor, Var};
use rand::rngs::StdRng;

use crate::objective::{training_loss, Prediction, Weighting};
use crate::sampler::{Method, SamplerConfig, Spacing};
use crate::schedule::NoiseSchedule;

/// A network that looks at x_t at timesteps t (one per batch row) and predicts ε, x_0 or v, whichever it
/// was trained for ([`crate::objective::Prediction`]); the functions in this module use ε.
pub trait Denoiser: Sync {
    fn predict(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize]) -> Var;

    /// The prediction in training mode: `rng` drives whatever is random in training only (dropout).
    fn predict_train(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize], rng: &mut StdRng) -> Var {
        let _ = rng;
        self.predict(tape, params, x_t, t)
    }
}

/// The ε-prediction loss on one batch x_0 [B, …] (Algorithm 1); draws t and ε from `rng`.
pub fn eps_loss(
    tape: &mut Tape,
    model: &impl Denoiser,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    x_0: &Tensor,
    rng: &mut StdRng,
) -> Var {
    training_loss(tape, model, params, schedule, Prediction::Epsilon, Weighting::Uniform, x_0, rng)
}

/// DDPM ancestral sampling of `shape` = [B, …] from pure noise through all T steps (Algorithm 2);
/// nothing is recorded.
pub fn sample(
    model: &impl Denoiser,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    shape: &[usize],
    rng: &mut StdRng,
) -> Tensor {
    let config =
        SamplerConfig { method: Method::Ddpm, steps: schedule.steps(), spacing: Spacing::Linspace, clip_x0: None };
    crate::sampler::sample(model, params, schedule, Prediction::Epsilon, &config, shape, rng)
}
