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
//! These two functions are that recipe, written out as the paper states it, line for line. The rest of the
//! crate generalizes them: [`crate::process::objective`] the loss (x_0 and v targets, min-SNR weighting),
//! [`crate::sampling::sampler`] the sampling (DDIM, DPM-Solver++, fewer steps, clipping), where DDPM's step
//! is written with x̂_0 in place of ε̂ (the same line of algebra: x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t). Tests
//! hold the loss equal to the general one bit for bit, and the sampler equal to the general DDPM to
//! rounding, for the same random draws.

use autograd::{ParamStore, Tape, Tensor, Var};
use rand::rngs::StdRng;
use rand::RngExt;

use crate::model::denoiser::Denoiser;
use crate::process::schedule::NoiseSchedule;

/// Algorithm 1, one step's loss on a batch x_0 [B, …]: t and ε drawn from `rng`, in that order (then
/// whatever the model draws in training mode: dropout).
pub fn eps_loss(
    tape: &mut Tape,
    model: &impl Denoiser,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    x_0: &Tensor,
    rng: &mut StdRng,
) -> Var {
    // t ~ Uniform({0, …, T−1}), one per image; ε ~ N(0, I)
    let t: Vec<usize> = (0..x_0.shape()[0]).map(|_| rng.random_range(0..schedule.steps())).collect();
    let eps = Tensor::randn(x_0.shape(), rng);
    // x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
    let x_t = tape.constant(schedule.q_sample(x_0, &t, &eps));
    // ‖ε − ε_θ(x_t, t)‖²
    let eps_pred = model.predict_train(tape, params, &x_t, &t, rng);
    let eps = tape.constant(eps);
    tape.mse_loss(&eps_pred, &eps)
}

/// Algorithm 2: ancestral sampling of `shape` = [B, …] from pure noise through all T steps; nothing is
/// recorded. Draws x_{T−1}, then z at every t > 0, from `rng`.
pub fn sample(
    model: &impl Denoiser,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    shape: &[usize],
    rng: &mut StdRng,
) -> Tensor {
    let mut tape = Tape::inference();
    // x_{T−1} ~ N(0, I)
    let mut x = Tensor::randn(shape, rng);
    for t in (0..schedule.steps()).rev() {
        let (beta, alpha, alpha_bar) = (schedule.beta[t], schedule.alpha[t], schedule.alpha_bar[t]);
        let alpha_bar_prev = if t == 0 { 1.0 } else { schedule.alpha_bar[t - 1] };
        // ε̂ = ε_θ(x_t, t)
        let x_t = tape.constant(x.clone());
        let eps_pred = model.predict(&mut tape, params, &x_t, &vec![t; shape[0]]).value().clone();
        tape.clear();
        // z ~ N(0, I) for t > 0, z = 0 at t = 0;  σ_t² = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)
        let z = (t > 0).then(|| Tensor::randn(shape, rng));
        let sigma = (beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)).sqrt() as f32;
        // x_{t−1} = (1/√α_t) · (x_t − (β_t / √(1 − ᾱ_t)) · ε̂) + σ_t z
        let (scale, eps_coef) = ((1.0 / alpha.sqrt()) as f32, (beta / (1.0 - alpha_bar).sqrt()) as f32);
        let data = (0..x.numel())
            .map(|i| {
                let noise = z.as_ref().map_or(0.0, |z| sigma * z.data()[i]);
                scale * (x.data()[i] - eps_coef * eps_pred.data()[i]) + noise
            })
            .collect();
        x = Tensor::from_vec(shape, data);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mlp::MlpDenoiser;
    use crate::process::objective::{training_loss, Prediction, TimeSampling, Weighting};
    use rand::SeedableRng;

    /// Algorithm 1 is the general loss with ε as the target and uniform weighting, bit for bit, gradients
    /// included, for the same draws.
    #[test]
    fn the_papers_algorithm_1_is_the_general_loss_for_epsilon() {
        let mut params = ParamStore::new();
        let model = MlpDenoiser::new(&mut params, 2, 16, 2, &mut StdRng::seed_from_u64(1));
        let schedule = NoiseSchedule::linear_scaled(100);
        let x_0 = Tensor::randn_seeded(&[8, 2], 2);
        let run = |general: bool| {
            let (mut tape, rng) = (Tape::new(), &mut StdRng::seed_from_u64(3));
            let loss = if general {
                training_loss(
                    &mut tape,
                    &model,
                    &params,
                    &schedule,
                    Prediction::Epsilon,
                    Weighting::Uniform,
                    TimeSampling::Uniform,
                    &x_0,
                    rng,
                )
            } else {
                eps_loss(&mut tape, &model, &params, &schedule, &x_0, rng)
            };
            let grads = tape.backward(&loss);
            let first = grads.param(autograd::ParamId(0)).unwrap().data().to_vec();
            (loss.value().item().to_bits(), first)
        };
        assert_eq!(run(false), run(true));
    }
}
