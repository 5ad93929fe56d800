//! Samplers: turn noise into data with a trained denoiser, in T steps or far fewer.
//!
//! Each step evaluates the network at (x_t, t), converts its output to an estimate x̂_0 (optionally clipped
//! to the data range) and ε̂, and moves to an earlier timestep:
//! ```text
//! DDPM (Ho et al. 2020, Alg. 2), every t:   x_{t−1} = μ̃_t(x_t, x̂_0) + σ_t z
//!     μ̃_t = β_t √ᾱ_{t−1}/(1−ᾱ_t) · x̂_0 + (1−ᾱ_{t−1}) √α_t/(1−ᾱ_t) · x_t,   σ_t² = β̃_t = β_t (1−ᾱ_{t−1})/(1−ᾱ_t)
//! DDIM (Song et al. 2021, eq. 12), t → s on a subsequence:
//!     x_s = √ᾱ_s x̂_0 + √(1 − ᾱ_s − σ²) ε̂ + σ z,   σ = η √((1−ᾱ_s)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_s)   (η = 0: deterministic)
//! DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2), t → s, with λ = ln(√ᾱ/√(1−ᾱ)), h = λ_s − λ_t:
//!     D = x̂_0 (first step),  D = (1 + 1/2r) x̂_0 − (1/2r) x̂_0,prev  with r = h_prev/h (later steps)
//!     x_s = (σ_s/σ_t) x_t − α_s (e^(−h) − 1) D,   α = √ᾱ, σ = √(1−ᾱ);  the last step (to σ = 0) returns x̂_0
//! ```
//! Timestep spacings as in diffusers (and Lin et al. 2024, Table 2): `linspace` round(linspace(0, T−1, n)),
//! `leading` (0, T/n, 2T/n, …), `trailing` round(arange(T, 0, −T/n)) − 1, each walked from high to low.

use autograd::{ParamStore, Tape, Tensor, Var};
use rand::rngs::StdRng;

use crate::model::denoiser::Denoiser;
use crate::process::objective::Prediction;
use crate::process::schedule::NoiseSchedule;

/// How the sampling timesteps are chosen from 0 … T−1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

impl Spacing {
    pub fn from_name(name: &str) -> Option<Spacing> {
        match name {
            "linspace" => Some(Spacing::Linspace),
            "leading" => Some(Spacing::Leading),
            "trailing" => Some(Spacing::Trailing),
            _ => None,
        }
    }
}

/// The update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Ancestral sampling through every one of the T timesteps.
    Ddpm,
    /// DDIM with noise scale η (0 = deterministic, 1 ≈ DDPM on the subsequence).
    Ddim { eta: f32 },
    /// DPM-Solver++ (2M), multistep second order in x̂_0; good in 10–25 steps.
    DpmSolver2M,
}

impl Method {
    /// The family's name alone, for file names and tables: "ddpm", "ddim", "dpm-solver++".
    pub fn short_name(&self) -> &'static str {
        match self {
            Method::Ddpm => "ddpm",
            Method::Ddim { .. } => "ddim",
            Method::DpmSolver2M => "dpm-solver++",
        }
    }

    pub fn name(&self) -> String {
        match self {
            Method::Ddpm => "ddpm".into(),
            Method::Ddim { eta } => format!("ddim(eta={eta})"),
            Method::DpmSolver2M => "dpm-solver++(2m)".into(),
        }
    }
}

/// The step counts a flag may ask a sampler for before the model is known; once it is, at most its T
/// ([`crate::training::checkpoint::Trained::check_sampling`]).
pub const SAMPLER_STEPS: std::ops::RangeInclusive<usize> = 1..=100_000;

/// A sampler's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    pub method: Method,
    /// Number of network evaluations (ignored by DDPM, which takes all T).
    pub steps: usize,
    pub spacing: Spacing,
    /// Clamp x̂_0 to [−c, c] at every step (images in [−1, 1]: 1.0).
    pub clip_x0: Option<f32>,
}

/// The descending timesteps a sampler visits.
pub fn timesteps(total: usize, steps: usize, spacing: Spacing) -> Vec<usize> {
    let steps = steps.clamp(1, total);
    let mut ts: Vec<usize> = match spacing {
        Spacing::Linspace => (0..steps)
            .map(|i| {
                if steps == 1 {
                    total - 1
                } else {
                    ((total - 1) as f64 * i as f64 / (steps - 1) as f64).round() as usize
                }
            })
            .collect(),
        Spacing::Leading => (0..steps).map(|i| i * (total / steps)).collect(),
        Spacing::Trailing => {
            let ratio = total as f64 / steps as f64;
            (0..steps).map(|i| ((total as f64 - i as f64 * ratio).round() as usize).saturating_sub(1)).rev().collect()
        }
    };
    ts.sort_unstable();
    ts.dedup();
    ts.reverse();
    ts
}

/// Samples a batch of `shape` from pure noise; nothing is recorded on any tape.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    model: &impl Denoiser,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    prediction: Prediction,
    config: &SamplerConfig,
    shape: &[usize],
    rng: &mut StdRng,
) -> Tensor {
    sample_traced(model, params, schedule, prediction, config, shape, rng, |_, _| {})
}

/// [`sample`], calling `trace(t, x_t)` with the current x_t before every step (for denoising strips).
#[allow(clippy::too_many_arguments)]
pub fn sample_traced(
    model: &impl Denoiser,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    prediction: Prediction,
    config: &SamplerConfig,
    shape: &[usize],
    rng: &mut StdRng,
    trace: impl FnMut(usize, &Tensor) + Send,
) -> Tensor {
    let ts = sampler_timesteps(schedule.steps(), config);
    let noise = Tensor::randn(shape, rng);
    Stepper::new(model, params, schedule, prediction, config).run(&ts, noise, rng, trace)
}

/// The descending timesteps `config` visits on a schedule of `total` steps.
pub fn sampler_timesteps(total: usize, config: &SamplerConfig) -> Vec<usize> {
    match config.method {
        Method::Ddpm => (0..total).rev().collect(),
        Method::Ddim { .. } => timesteps(total, config.steps, config.spacing),
        // As diffusers' DPMSolverMultistepScheduler: steps + 1 points with the last (lowest) dropped, then a
        // final first-order step to σ = 0, which returns x̂_0. A second-order step down to t = 0 itself would
        // cross a huge jump in λ and extrapolate far past the data.
        Method::DpmSolver2M => {
            let mut ts = timesteps(total, config.steps + 1, config.spacing);
            ts.pop();
            ts
        }
    }
}

/// One sampler step at a time: evaluates the network at (x_t, t) and moves to the next timestep (or, after
/// the last, to the data). Keeps what a multistep method needs from the step before.
pub struct Stepper<'a, D: Denoiser> {
    model: &'a D,
    params: &'a ParamStore,
    schedule: &'a NoiseSchedule,
    prediction: Prediction,
    config: &'a SamplerConfig,
    tape: Tape,
    /// DPM-Solver++: (x̂_0, h) of the step before.
    previous: Option<(Tensor, f64)>,
}

impl<'a, D: Denoiser> Stepper<'a, D> {
    pub fn new(
        model: &'a D,
        params: &'a ParamStore,
        schedule: &'a NoiseSchedule,
        prediction: Prediction,
        config: &'a SamplerConfig,
    ) -> Self {
        Stepper { model, params, schedule, prediction, config, tape: Tape::inference(), previous: None }
    }

    /// Steps `x`, at timestep `ts[0]`, down through every timestep of `ts` (descending) to the end of
    /// sampling, calling `trace(t, x_t)` before each step.
    pub fn run(
        &mut self,
        ts: &[usize],
        mut x: Tensor,
        rng: &mut StdRng,
        mut trace: impl FnMut(usize, &Tensor) + Send,
    ) -> Tensor {
        // The other threads keep polling for work between the network's parallel loops (see
        // `with_spinning_workers`): the same result, less time lost waking them.
        autograd::cpu::with_spinning_workers(|| {
            for (i, &t) in ts.iter().enumerate() {
                trace(t, &x);
                x = self.step(t, ts.get(i + 1).copied(), &x, rng);
            }
            x
        })
    }

    /// x at timestep `t` → x at `next` (`None`: the end of sampling).
    pub fn step(&mut self, t: usize, next: Option<usize>, x: &Tensor, rng: &mut StdRng) -> Tensor {
        let batch_t = vec![t; x.shape()[0]];
        let output = self.model.predict(&mut self.tape, self.params, &Var::constant(x.clone()), &batch_t).into_value();
        let ab = self.schedule.alpha_bar[t];
        let (x0, eps) = estimates(self.prediction, &output, x, ab, self.config.clip_x0);
        match self.config.method {
            Method::Ddpm => ddpm_update(self.schedule, t, x, &x0, rng),
            Method::Ddim { eta } => {
                let ab_next = next.map_or(1.0, |s| self.schedule.alpha_bar[s]);
                ddim_update(ab, ab_next, &x0, &eps, eta, rng)
            }
            Method::DpmSolver2M => match next {
                None => x0,
                Some(s) => {
                    let (x_new, h) = dpm_solver_update(ab, self.schedule.alpha_bar[s], x, &x0, self.previous.as_ref());
                    self.previous = Some((x0, h));
                    x_new
                }
            },
        }
    }
}

/// (x̂_0, ε̂) from the network output; with clipping, x̂_0 is clamped and ε̂ recomputed from it.
fn estimates(prediction: Prediction, output: &Tensor, x_t: &Tensor, ab: f64, clip: Option<f32>) -> (Tensor, Tensor) {
    let n = x_t.numel();
    let (mut x0, mut eps) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (a, s) = (ab.sqrt() as f32, (1.0 - ab).sqrt() as f32);
    for (&o, &x) in output.data().iter().zip(x_t.data()) {
        let (mut x0_hat, mut eps_hat) = prediction.to_x0_eps(o, x, ab);
        if let Some(c) = clip {
            x0_hat = x0_hat.clamp(-c, c);
            if s > 0.0 {
                eps_hat = (x - a * x0_hat) / s;
            }
        }
        x0.push(x0_hat);
        eps.push(eps_hat);
    }
    (Tensor::from_vec(x_t.shape(), x0), Tensor::from_vec(x_t.shape(), eps))
}

fn ddpm_update(schedule: &NoiseSchedule, t: usize, x_t: &Tensor, x0: &Tensor, rng: &mut StdRng) -> Tensor {
    let (beta, alpha, ab) = (schedule.beta[t], schedule.alpha[t], schedule.alpha_bar[t]);
    let ab_prev = if t == 0 { 1.0 } else { schedule.alpha_bar[t - 1] };
    let c0 = (beta * ab_prev.sqrt() / (1.0 - ab)) as f32;
    let ct = ((1.0 - ab_prev) * alpha.sqrt() / (1.0 - ab)) as f32;
    let sigma = (beta * (1.0 - ab_prev) / (1.0 - ab)).sqrt() as f32;
    let z = (t > 0).then(|| Tensor::randn(x_t.shape(), rng));
    let data = (0..x_t.numel())
        .map(|i| c0 * x0.data()[i] + ct * x_t.data()[i] + z.as_ref().map_or(0.0, |z| sigma * z.data()[i]))
        .collect();
    Tensor::from_vec(x_t.shape(), data)
}

fn ddim_update(ab: f64, ab_next: f64, x0: &Tensor, eps: &Tensor, eta: f32, rng: &mut StdRng) -> Tensor {
    let sigma = eta as f64 * ((1.0 - ab_next) / (1.0 - ab)).sqrt() * (1.0 - ab / ab_next).max(0.0).sqrt();
    let (a, d) = (ab_next.sqrt() as f32, (1.0 - ab_next - sigma * sigma).max(0.0).sqrt() as f32);
    let z = (sigma > 0.0).then(|| Tensor::randn(x0.shape(), rng));
    let data = (0..x0.numel())
        .map(|i| a * x0.data()[i] + d * eps.data()[i] + z.as_ref().map_or(0.0, |z| sigma as f32 * z.data()[i]))
        .collect();
    Tensor::from_vec(x0.shape(), data)
}

/// One DPM-Solver++(2M) step from ᾱ_t to ᾱ_s; returns x_s and h for the next step.
fn dpm_solver_update(ab: f64, ab_s: f64, x_t: &Tensor, x0: &Tensor, previous: Option<&(Tensor, f64)>) -> (Tensor, f64) {
    let lambda = |ab: f64| 0.5 * (ab / (1.0 - ab)).ln();
    let h = lambda(ab_s) - lambda(ab);
    let (alpha_s, sigma_s, sigma_t) = (ab_s.sqrt(), (1.0 - ab_s).sqrt(), (1.0 - ab).sqrt());
    let cx = (sigma_s / sigma_t) as f32;
    let cd = (-alpha_s * ((-h).exp() - 1.0)) as f32;
    let data = match previous {
        None => (0..x_t.numel()).map(|i| cx * x_t.data()[i] + cd * x0.data()[i]).collect(),
        Some((x0_prev, h_prev)) => {
            let r = h_prev / h;
            let (c_now, c_prev) = ((1.0 + 0.5 / r) as f32, (0.5 / r) as f32);
            (0..x_t.numel())
                .map(|i| cx * x_t.data()[i] + cd * (c_now * x0.data()[i] - c_prev * x0_prev.data()[i]))
                .collect()
        }
    };
    (Tensor::from_vec(x_t.shape(), data), h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn spacings_match_diffusers() {
        assert_eq!(timesteps(1000, 10, Spacing::Linspace), vec![999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
        assert_eq!(timesteps(1000, 10, Spacing::Leading), vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
        assert_eq!(timesteps(1000, 10, Spacing::Trailing), vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
        assert_eq!(timesteps(10, 50, Spacing::Linspace).len(), 10);
    }

    /// The exact denoiser for data distributed as N(μ, s²) in every coordinate:
    /// E[x_0 | x_t] = μ + √ᾱ s² (x_t − √ᾱ μ) / (ᾱ s² + 1 − ᾱ). Returned as the chosen prediction.
    struct GaussianOracle {
        mu: f32,
        s: f32,
        schedule: NoiseSchedule,
        prediction: Prediction,
    }
    impl Denoiser for GaussianOracle {
        fn predict(&self, _tape: &mut Tape, _p: &ParamStore, x_t: &Var, t: &[usize]) -> Var {
            let ab = self.schedule.alpha_bar[t[0]];
            let (a, s2) = (ab.sqrt() as f32, self.s * self.s);
            let gain = a * s2 / (ab as f32 * s2 + 1.0 - ab as f32);
            let out = x_t
                .value()
                .data()
                .iter()
                .map(|&x| {
                    let x0 = self.mu + gain * (x - a * self.mu);
                    let eps = (x - a * x0) / (1.0 - ab as f32).sqrt();
                    self.prediction.target(x0, eps, ab)
                })
                .collect();
            Var::constant(Tensor::from_vec(x_t.shape(), out))
        }
    }

    /// The DDPM paper's Algorithm 2 as written out in `process::ddpm` is this sampler's DDPM, for the same
    /// draws: the same numbers up to f32 rounding (the two write the step with ε̂ and with x̂_0).
    #[test]
    fn the_papers_algorithm_2_is_the_general_ddpm() {
        let schedule = NoiseSchedule::linear_scaled(100);
        let oracle = GaussianOracle { mu: 0.7, s: 0.5, schedule: schedule.clone(), prediction: Prediction::Epsilon };
        let plain = crate::process::ddpm::sample(
            &oracle,
            &ParamStore::new(),
            &schedule,
            &[64, 3],
            &mut StdRng::seed_from_u64(5),
        );
        let config = SamplerConfig { method: Method::Ddpm, steps: 100, spacing: Spacing::Linspace, clip_x0: None };
        let rng = &mut StdRng::seed_from_u64(5);
        let general = sample(&oracle, &ParamStore::new(), &schedule, Prediction::Epsilon, &config, &[64, 3], rng);
        let worst = plain.data().iter().zip(general.data()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "largest difference {worst}");
        assert!(plain.data() != Tensor::randn(&[64, 3], &mut StdRng::seed_from_u64(5)).data(), "it moved");
    }

    fn moments(x: &Tensor) -> (f32, f32) {
        let n = x.numel() as f32;
        let mean = x.data().iter().sum::<f32>() / n;
        let var = x.data().iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        (mean, var.sqrt())
    }

    fn run(oracle: &GaussianOracle, method: Method, steps: usize, prediction: Prediction) -> Tensor {
        let config = SamplerConfig { method, steps, spacing: Spacing::Linspace, clip_x0: None };
        sample(
            oracle,
            &ParamStore::new(),
            &oracle.schedule,
            prediction,
            &config,
            &[4000, 1],
            &mut StdRng::seed_from_u64(3),
        )
    }

    /// DDPM through all T steps and DDIM (η = 0, the probability-flow ODE) with T steps reproduce N(μ, s²).
    #[test]
    fn full_length_samplers_draw_the_data_distribution_from_an_exact_denoiser() {
        let schedule = NoiseSchedule::linear(1000, 1e-4, 0.02);
        for prediction in [Prediction::Epsilon, Prediction::Velocity] {
            let oracle = GaussianOracle { mu: 0.7, s: 0.5, schedule: schedule.clone(), prediction };
            for method in [Method::Ddpm, Method::Ddim { eta: 0.0 }] {
                let (mean, std) = moments(&run(&oracle, method, 1000, prediction));
                let what = format!("{} {prediction:?}", method.name());
                assert!((mean - 0.7).abs() < 0.02, "{what}: mean {mean}");
                assert!((std - 0.5).abs() < 0.02, "{what}: std {std}");
            }
        }
    }

    /// Few-step ODE solvers land near the 1000-step ODE solution from the same noise: DDIM in 50 steps and
    /// DPM-Solver++(2M) in 20 (its point: fewer evaluations for the same accuracy).
    #[test]
    fn few_step_solvers_track_the_ode_solution() {
        let schedule = NoiseSchedule::linear(1000, 1e-4, 0.02);
        let oracle = GaussianOracle { mu: 0.7, s: 0.5, schedule: schedule.clone(), prediction: Prediction::Epsilon };
        let exact = run(&oracle, Method::Ddim { eta: 0.0 }, 1000, Prediction::Epsilon);
        let rms = |x: &Tensor| {
            (x.data().iter().zip(exact.data()).map(|(a, b)| (a - b).powi(2)).sum::<f32>() / x.numel() as f32).sqrt()
        };
        let ddim50 = rms(&run(&oracle, Method::Ddim { eta: 0.0 }, 50, Prediction::Epsilon));
        let dpm20 = rms(&run(&oracle, Method::DpmSolver2M, 20, Prediction::Epsilon));
        let ddim20 = rms(&run(&oracle, Method::Ddim { eta: 0.0 }, 20, Prediction::Epsilon));
        eprintln!("rms to the 1000-step ODE solution: ddim50 {ddim50}, dpm20 {dpm20}, ddim20 {ddim20}");
        assert!(ddim50 < 0.05 && dpm20 < 0.05, "ddim50 {ddim50}, dpm20 {dpm20}");
        assert!(dpm20 < ddim20, "DPM-Solver++ beats DDIM at the same 20 steps: {dpm20} vs {ddim20}");
    }

    #[test]
    fn trailing_spacing_ends_on_the_posterior_mean() {
        // Trailing spacing's last timestep is T/n − 1, not 0; the final jump to ᾱ = 1 returns x̂_0 = E[x_0 | x_t],
        // whose spread is smaller than the data's. The mean is still right.
        let schedule = NoiseSchedule::linear(1000, 1e-4, 0.02);
        let oracle = GaussianOracle { mu: 0.7, s: 0.3, schedule: schedule.clone(), prediction: Prediction::Epsilon };
        let config =
            SamplerConfig { method: Method::Ddim { eta: 0.0 }, steps: 10, spacing: Spacing::Trailing, clip_x0: None };
        let x = sample(
            &oracle,
            &ParamStore::new(),
            &schedule,
            Prediction::Epsilon,
            &config,
            &[4000, 1],
            &mut StdRng::seed_from_u64(3),
        );
        let (mean, std) = moments(&x);
        assert!((mean - 0.7).abs() < 0.02 && std < 0.3, "mean {mean} std {std}");
    }

    #[test]
    fn ddim_with_eta_zero_is_deterministic_given_the_starting_noise() {
        let schedule = NoiseSchedule::linear(100, 1e-3, 0.05);
        let oracle = GaussianOracle { mu: 0.0, s: 1.0, schedule: schedule.clone(), prediction: Prediction::Epsilon };
        let config = SamplerConfig {
            method: Method::Ddim { eta: 0.0 },
            steps: 10,
            spacing: Spacing::Leading,
            clip_x0: Some(1.0),
        };
        let run = || {
            sample(
                &oracle,
                &ParamStore::new(),
                &schedule,
                Prediction::Epsilon,
                &config,
                &[8, 3],
                &mut StdRng::seed_from_u64(9),
            )
        };
        assert_eq!(run(), run());
        assert!(run().data().iter().all(|v| v.abs() <= 1.0 + 1e-6), "clipped x̂_0 keeps the last step in range");
    }
}
