//! Easy consistency tuning (Geng et al. 2024, "Consistency Models Made Easy"): a consistency model (Song et
//! al. 2023) tuned from a trained diffusion model, on this project's timesteps.
//!
//! In σ coordinates (x̃ = z_t/α_t, σ_t = √((1 − ᾱ_t)/ᾱ_t)) the diffusion model's x̂ is a denoiser D(x̃, σ),
//! which EDM's preconditioning (σ_d = 0.5) writes as D = c_skip^E x̃ + c_out^E F. The consistency function
//! keeps that F and takes Song et al.'s coefficients, which respect the boundary at σ_min = σ_0:
//! ```text
//! c_skip^E = σ_d²/(σ² + σ_d²)             c_out^E = σ σ_d/√(σ² + σ_d²)
//! c_skip   = σ_d²/((σ − σ_min)² + σ_d²)   c_out   = (σ − σ_min) σ_d/√(σ² + σ_d²)
//! f(x̃, σ)  = c_skip x̃ + c_out F = (c_skip − r c_skip^E) x̃ + r D,    r = c_out/c_out^E = 1 − σ_min/σ
//! ```
//! so f(x̃, σ_min) = x̃ exactly (c_skip = 1, c_out = 0), and f ≈ D where σ ≫ σ_min: tuning starts from the
//! diffusion model. f is affine in the network's output, so it is a tape expression like any loss.
//!
//! ECT's loss: x ~ data, t drawn, r = t − Δ, with the same ε for both points (z_t and z_r on one noising path),
//! ```text
//! loss = w · d(f_θ(z_t, t), sg f_θ(z_r, r)),   d(a, b) = √(‖a − b‖² + c²) − c  (pseudo-Huber, c = 0.00054 √dim),
//! w = 1/(σ_t − σ_r);  r < 0 means the clean image: f there is x itself
//! ```
//! Δ starts at a quarter of T (close to plain denoising) and halves in stages until it is 1 step.
//! Sampling (Song et al., Algorithm 1): x = f(z, T − 1) from pure noise; each further step noises x to a
//! chosen timestep and applies f again.

use autograd::{ParamStore, Tape, Tensor, Var};
use rand::rngs::StdRng;
use rand::RngExt;

use std::collections::BTreeMap;

use rand::SeedableRng;

use crate::model::denoiser::Denoiser;
use crate::model::unet::UNet;
use crate::process::objective::{row_mean_squares, weighted_mean, Prediction};
use crate::process::schedule::NoiseSchedule;
use crate::sampling::sampler::nearest_timestep;
use crate::training::checkpoint::Trained;
use crate::training::train::{Objective, TrainConfig, Trainable};

/// σ_d, the data's standard deviation in EDM's preconditioning.
pub const SIGMA_DATA: f64 = 0.5;

/// σ_t = √((1 − ᾱ_t)/ᾱ_t).
fn sigma(schedule: &NoiseSchedule, t: usize) -> f64 {
    ((1.0 - schedule.alpha_bar[t]) / schedule.alpha_bar[t]).sqrt()
}

/// (c_skip, c_out) of the consistency function at σ (boundary σ_min).
pub fn boundary_coefficients(sigma: f64, sigma_min: f64) -> (f64, f64) {
    let d2 = SIGMA_DATA * SIGMA_DATA;
    (d2 / ((sigma - sigma_min).powi(2) + d2), (sigma - sigma_min) * SIGMA_DATA / (sigma * sigma + d2).sqrt())
}

/// f = k_z · z_t + k_o · output, the consistency function at timestep t as coefficients of z_t and of the
/// network's `prediction` output.
pub fn coefficients(schedule: &NoiseSchedule, prediction: Prediction, t: usize) -> (f32, f32) {
    let (s, s_min, ab) = (sigma(schedule, t), sigma(schedule, 0), schedule.alpha_bar[t]);
    let d2 = SIGMA_DATA * SIGMA_DATA;
    let (c_skip, _) = boundary_coefficients(s, s_min);
    let r = 1.0 - s_min / s;
    let a = c_skip - r * d2 / (s * s + d2);
    // D = d_z · z_t + d_o · output: the prediction's x̂ is affine in the output.
    let d_z = prediction.to_x0_eps(0.0, 1.0, ab).0 as f64 - prediction.to_x0_eps(0.0, 0.0, ab).0 as f64;
    let d_o = prediction.to_x0_eps(1.0, 0.0, ab).0 as f64;
    ((a / ab.sqrt() + r * d_z) as f32, (r * d_o) as f32)
}

/// The consistency function of `model` at (z, t), on `tape` (per row b at t[b]); `rng` for training.
#[allow(clippy::too_many_arguments)]
pub fn consistency(
    tape: &mut Tape,
    model: &dyn Denoiser,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    prediction: Prediction,
    z: &Tensor,
    t: &[usize],
    rng: Option<&mut StdRng>,
) -> Var {
    let row = z.numel() / t.len();
    let (mut k_z, mut k_o) = (Vec::with_capacity(z.numel()), Vec::with_capacity(z.numel()));
    for (b, &tb) in t.iter().enumerate() {
        let (cz, co) = coefficients(schedule, prediction, tb);
        k_z.extend(z.data()[b * row..(b + 1) * row].iter().map(|v| cz * v));
        k_o.extend(std::iter::repeat_n(co, row));
    }
    let input = tape.constant(prediction.network_input(schedule, z, t));
    let output = match rng {
        Some(rng) => model.predict_train(tape, params, &input, t, rng),
        None => model.predict(tape, params, &input, t),
    };
    let (k_z, k_o) = (tape.constant(Tensor::from_vec(z.shape(), k_z)), tape.constant(Tensor::from_vec(z.shape(), k_o)));
    let scaled = tape.mul(&output, &k_o);
    tape.add(&scaled, &k_z)
}

/// The [`Objective`] of easy consistency tuning over `steps` training steps, Δ halving `stages` times.
pub struct Ect {
    pub prediction: Prediction,
    pub steps: usize,
    pub stages: usize,
}

impl Ect {
    /// Δ at training step `step`: T/4, halved at each of `stages` equal stages, at least 1.
    pub fn delta(&self, timesteps: usize, step: usize) -> usize {
        let stage = (step * (self.stages + 1) / self.steps.max(1)).min(self.stages);
        ((timesteps / 4) >> stage).max(1)
    }
}

impl Objective for Ect {
    fn loss(
        &self,
        tape: &mut Tape,
        model: &dyn Denoiser,
        params: &ParamStore,
        schedule: &NoiseSchedule,
        _config: &TrainConfig,
        step: usize,
        x_0: &Tensor,
        rng: &mut StdRng,
    ) -> Var {
        let (batch, total) = (x_0.shape()[0], schedule.steps());
        let row = x_0.numel() / batch;
        let delta = self.delta(total, step);
        let t: Vec<usize> = (0..batch).map(|_| rng.random_range(1..total)).collect();
        let r: Vec<Option<usize>> = t.iter().map(|&tb| tb.checked_sub(delta)).collect();
        let eps = Tensor::randn(x_0.shape(), rng);
        let z_t = schedule.q_sample(x_0, &t, &eps);
        // The target: f at r without gradient (the clean image where r falls below 0).
        let r_or_0: Vec<usize> = r.iter().map(|r| r.unwrap_or(0)).collect();
        let z_r = schedule.q_sample(x_0, &r_or_0, &eps);
        let mut inference = Tape::inference();
        let at_r = consistency(&mut inference, model, params, schedule, self.prediction, &z_r, &r_or_0, None);
        let mut target = at_r.value().data().to_vec();
        for (b, rb) in r.iter().enumerate() {
            if rb.is_none() {
                target[b * row..(b + 1) * row].copy_from_slice(&x_0.data()[b * row..(b + 1) * row]);
            }
        }
        let weights: Vec<f32> = t
            .iter()
            .zip(&r)
            .map(|(&tb, rb)| (1.0 / (sigma(schedule, tb) - rb.map_or(0.0, |r| sigma(schedule, r)))) as f32)
            .collect();
        let f_t = consistency(tape, model, params, schedule, self.prediction, &z_t, &t, Some(rng));
        let target = tape.constant(Tensor::from_vec(x_0.shape(), target));
        pseudo_huber(tape, &f_t, &target, &weights)
    }
}

/// The mean over the batch of `weights[b]` · (√(‖a_b − b_b‖² + c²) − c), c = 0.00054 √(row size).
pub fn pseudo_huber(tape: &mut Tape, a: &Var, b: &Var, weights: &[f32]) -> Var {
    let batch = weights.len();
    let row = a.value().numel() / batch;
    let c = 0.00054 * (row as f32).sqrt();
    let mean = row_mean_squares(tape, a, b, batch);
    let sum = tape.mul_scalar(&mean, row as f32);
    let shifted = tape.add_scalar(&sum, c * c);
    let root = tape.sqrt(&shifted);
    let d = tape.add_scalar(&root, -c);
    weighted_mean(tape, &d, weights)
}

/// The timesteps of Song et al.'s multistep sampler in `steps` evaluations: T − 1, then (for 2) the
/// timestep of σ = 0.821 (their CIFAR-10 choice), then evenly in between.
pub fn sampler_timesteps(schedule: &NoiseSchedule, steps: usize) -> Vec<usize> {
    let (top, mid) = (schedule.steps() - 1, nearest_timestep(schedule, 0.821));
    (0..steps).map(|i| if i == 0 { top } else { mid + (top - mid) * (steps - 1 - i) / steps.max(2) }).collect()
}

/// Song et al.'s multistep consistency sampling: x = f(z, t_0) from pure noise z; for each next t, noise
/// x to t and apply f again.
pub fn sample(
    model: &dyn Denoiser,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    prediction: Prediction,
    timesteps: &[usize],
    shape: &[usize],
    rng: &mut StdRng,
) -> Tensor {
    let batch = shape[0];
    let mut z = Tensor::randn(shape, rng);
    let mut x = z.clone();
    for (i, &t) in timesteps.iter().enumerate() {
        if i > 0 {
            z = schedule.q_sample(&x, &vec![t; batch], &Tensor::randn(shape, rng));
        }
        let mut tape = Tape::inference();
        let f = consistency(&mut tape, model, params, schedule, prediction, &z, &vec![t; batch], None);
        x = Tensor::from_vec(shape, f.value().data().iter().map(|v| v.clamp(-1.0, 1.0)).collect());
    }
    x
}

/// `count` images from a trained consistency model in `steps` evaluations, `batch` at a time (each batch goes
/// on drawing from `rng`), as one tensor [count, C, H, W].
pub fn sample_trained(model: &Trained, steps: usize, count: usize, batch: usize, rng: &mut StdRng) -> Tensor {
    let c = &model.model.config;
    let item = [c.image_channels, c.image_size, c.image_size];
    let ts = sampler_timesteps(&model.schedule, steps);
    let mut images = Vec::with_capacity(count * item.iter().product::<usize>());
    for start in (0..count).step_by(batch.max(1)) {
        let shape = [batch.min(count - start), item[0], item[1], item[2]];
        let x = sample(&model.model, &model.params, &model.schedule, model.prediction, &ts, &shape, rng);
        images.extend_from_slice(x.data());
    }
    Tensor::from_vec(&[count, item[0], item[1], item[2]], images)
}

/// A U-Net read as a consistency model: trained by the ordinary loop (it is the U-Net to the loss), with
/// grids drawn by [`sample`] in `grid_steps` evaluations. Unconditional.
pub struct ConsistencyUNet<'a> {
    pub unet: &'a UNet,
    pub prediction: Prediction,
    pub grid_steps: usize,
}

impl Denoiser for ConsistencyUNet<'_> {
    fn predict(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize]) -> Var {
        self.unet.predict(tape, params, x_t, t)
    }

    fn predict_train(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize], rng: &mut StdRng) -> Var {
        self.unet.predict_train(tape, params, x_t, t, rng)
    }
}

impl Trainable for ConsistencyUNet<'_> {
    fn num_classes(&self) -> usize {
        0
    }

    fn labelled<'a>(&'a self, _labels: &'a [usize], _dropout: f32) -> Box<dyn Denoiser + 'a> {
        unreachable!("consistency tuning here is unconditional (num_classes is 0)")
    }

    fn record(&self) -> BTreeMap<String, String> {
        self.unet.record()
    }

    fn check_memory(&self, batch: usize, training: bool) -> std::result::Result<(), String> {
        self.unet.check_memory(batch, training)
    }

    fn grid(&self, params: &ParamStore, schedule: &NoiseSchedule, config: &TrainConfig) -> Option<(Tensor, usize)> {
        let c = &self.unet.config;
        let shape = [config.grid_images, c.image_channels, c.image_size, c.image_size];
        let rng = &mut StdRng::seed_from_u64(0x6e1d);
        let ts = sampler_timesteps(schedule, self.grid_steps);
        let images = sample(self, params, schedule, self.prediction, &ts, &shape, rng);
        Some((images, (config.grid_images as f64).sqrt().ceil() as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boundary_condition_holds_at_sigma_min() {
        let (c_skip, c_out) = boundary_coefficients(0.01, 0.01);
        assert_eq!((c_skip, c_out), (1.0, 0.0));
        // And f(z, 0) = z/α_0 whatever the network says, for every prediction type.
        let schedule = NoiseSchedule::linear_scaled(1000);
        for prediction in [Prediction::Epsilon, Prediction::Sample, Prediction::Velocity] {
            let (k_z, k_o) = coefficients(&schedule, prediction, 0);
            assert!(
                (k_z as f64 - 1.0 / schedule.alpha_bar[0].sqrt()).abs() < 1e-6 && k_o.abs() < 1e-7,
                "{prediction:?}"
            );
        }
    }

    #[test]
    fn far_from_the_boundary_f_is_the_diffusion_models_estimate() {
        // At σ ≫ σ_min, f ≈ D: for ε-prediction D = (z − σ_vp ε̂)/α.
        let schedule = NoiseSchedule::linear_scaled(1000);
        let t = 500;
        let ab = schedule.alpha_bar[t];
        let (k_z, k_o) = coefficients(&schedule, Prediction::Epsilon, t);
        assert!((k_z as f64 - 1.0 / ab.sqrt()).abs() < 2e-2 / ab.sqrt(), "{k_z}");
        assert!((k_o as f64 + ((1.0 - ab) / ab).sqrt()).abs() < 2e-2 * ((1.0 - ab) / ab).sqrt(), "{k_o}");
    }

    #[test]
    fn delta_halves_in_stages_down_to_one_step() {
        let ect = Ect { prediction: Prediction::Epsilon, steps: 900, stages: 8 };
        assert_eq!(ect.delta(1000, 0), 250);
        assert_eq!(ect.delta(1000, 100), 125);
        assert_eq!(ect.delta(1000, 899), 1);
    }
}
