//! DDPM training objective and ancestral sampler, Ho et al. 2020, "Denoising Diffusion Probabilistic Models".
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

use autograd::{ParamStore, Tape, Tensor, Var};
use rand::rngs::StdRng;
use rand::RngExt;

use crate::schedule::NoiseSchedule;

/// A network that looks at x_t at timesteps t (one per batch row) and predicts ε, x_0 or v, whichever it
/// was trained for ([`crate::objective::Prediction`]); the functions in this module use ε.
pub trait Denoiser {
    fn predict(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize]) -> Var;
}

/// The ε-prediction loss on one batch x_0 [B, …]; draws t and ε from `rng`.
pub fn eps_loss(
    tape: &mut Tape,
    model: &impl Denoiser,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    x_0: &Tensor,
    rng: &mut StdRng,
) -> Var {
    let batch = x_0.shape()[0];
    let t: Vec<usize> = (0..batch).map(|_| rng.random_range(0..schedule.steps())).collect();
    let eps = Tensor::randn(x_0.shape(), rng);
    let x_t = tape.constant(schedule.q_sample(x_0, &t, &eps));
    let eps_pred = model.predict(tape, params, &x_t, &t);
    let eps = tape.constant(eps);
    tape.mse_loss(&eps_pred, &eps)
}

/// DDPM ancestral sampling of `shape` = [B, …] from pure noise; nothing is recorded.
pub fn sample(
    model: &impl Denoiser,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    shape: &[usize],
    rng: &mut StdRng,
) -> Tensor {
    let mut tape = Tape::inference();
    let mut x_t = Tensor::randn(shape, rng);
    for t in (0..schedule.steps()).rev() {
        let ts = vec![t; shape[0]];
        let eps_pred = model.predict(&mut tape, params, &Var::constant(x_t.clone()), &ts).into_value();
        x_t = ddpm_step(schedule, t, &x_t, &eps_pred, rng);
    }
    x_t
}

/// One reverse step x_t → x_{t−1} of Algorithm 2 given ε_θ(x_t, t).
pub fn ddpm_step(schedule: &NoiseSchedule, t: usize, x_t: &Tensor, eps_pred: &Tensor, rng: &mut StdRng) -> Tensor {
    let (alpha, alpha_bar, beta) = (schedule.alpha[t], schedule.alpha_bar[t], schedule.beta[t]);
    let coef_x = (1.0 / alpha.sqrt()) as f32;
    let coef_eps = (beta / (1.0 - alpha_bar).sqrt()) as f32;
    let mut out: Vec<f32> = x_t.data().iter().zip(eps_pred.data()).map(|(x, e)| coef_x * (x - coef_eps * e)).collect();
    if t > 0 {
        let sigma = (beta * (1.0 - schedule.alpha_bar[t - 1]) / (1.0 - alpha_bar)).sqrt() as f32;
        let z = Tensor::randn(x_t.shape(), rng);
        out.iter_mut().zip(z.data()).for_each(|(o, z)| *o += sigma * z);
    }
    Tensor::from_vec(x_t.shape(), out)
}
