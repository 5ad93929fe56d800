//! Samplers: turn noise into data with a trained denoiser, in T steps or far fewer.
//!
//! Each step evaluates the network at (x_t, t), converts its output to an estimate x̂_0 (optionally clipped
//! to the data range) and ε̂, and moves to an earlier timestep:
//! ```text
//! DDPM (Ho et al. 2020, Alg. 2), every t:   x_{t−1} = μ̃_t(x_t, x̂_0) + σ_t z
//!     μ̃_t = β_t √ᾱ_{t−1}/(1−ᾱ_t) · x̂_0 + (1−ᾱ_{t−1}) √α_t/(1−ᾱ_t) · x_t,   σ_t² = β̃_t = β_t (1−ᾱ_{t−1})/(1−ᾱ_t)
//! DDIM (Song et al. 2021, eq. 12), t → s on a subsequence:
//!     x_s = √ᾱ_s x̂_0 + √(1 − ᾱ_s − σ²) ε̂ + σ z,   σ = η √((1−ᾱ_s)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_s)   (η = 0: deterministic)
//! DDIM overshoot (Meng et al. 2023, "On Distillation of Guided Diffusion Models", §3.3: the N-step
//! stochastic sampler of a distilled model), t → s with u the timestep after s (the data after the last):
//!     x_u = √ᾱ_u x̂_0 + √(1−ᾱ_u) ε̂                      a deterministic DDIM step two intervals down, then
//!     x_s = √(ᾱ_s/ᾱ_u) x_u + √(1 − ᾱ_s/ᾱ_u) z            the forward process back up one: q(x_s | x_u)
//!         = DDIM's x_s above with σ² = 1 − ᾱ_s/ᾱ_u;  the last step (to the data) is deterministic
//! DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2), t → s, with λ = ln(√ᾱ/√(1−ᾱ)), h = λ_s − λ_t:
//!     D = x̂_0 (first step),  D = (1 + 1/2r) x̂_0 − (1/2r) x̂_0,prev  with r = h_prev/h (later steps)
//!     x_s = (σ_s/σ_t) x_t − α_s (e^(−h) − 1) D,   α = √ᾱ, σ = √(1−ᾱ);  the last step (to σ = 0) returns x̂_0
//! ```
//! Timestep spacings as in diffusers (and Lin et al. 2024, Table 2): `linspace` round(linspace(0, T−1, n)),
//! `leading` (0, T/n, 2T/n, …), `trailing` round(arange(T, 0, −T/n)) − 1, each walked from high to low;
//! and `karras` (Karras et al. 2022, eq. 5, ρ = 7): σ_i = (σ_max^(1/ρ) + i/(n−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ
//! between the schedule's own σ_max and σ_min, each snapped to the timestep of nearest log σ (the network
//! knows only the T trained timesteps; two σ that snap to one timestep count once).
//!
//! The samplers of the EDM paper (Euler, Euler ancestral, Heun with its churn) and the multistep solvers
//! after DPM-Solver++(2M) (its 3M and SDE variants, UniPC) take their steps in `solvers.rs`, in the σ
//! coordinates where they are simplest; each still moves between the trained timesteps.

use autograd::{ParamStore, Tape, Tensor, Var};
use rand::rngs::StdRng;

use crate::model::denoiser::Denoiser;
use crate::process::objective::Prediction;
use crate::process::schedule::NoiseSchedule;
use crate::sampling::solvers::{self, sigma_of, Past};

/// How the sampling timesteps are chosen from 0 … T−1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    Linspace,
    Leading,
    Trailing,
    /// Karras et al.'s σ spacing, ρ = 7, snapped to the trained timesteps.
    Karras,
}

impl Spacing {
    pub fn from_name(name: &str) -> Option<Spacing> {
        match name {
            "linspace" => Some(Spacing::Linspace),
            "leading" => Some(Spacing::Leading),
            "trailing" => Some(Spacing::Trailing),
            "karras" => Some(Spacing::Karras),
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
    /// Meng et al.'s stochastic sampler for distilled models: from each timestep a deterministic DDIM step
    /// two intervals down, then fresh noise back up one; N evaluations, like DDIM's.
    DdimOvershoot,
    /// DPM-Solver++ (2M), multistep second order in x̂_0; good in 10–25 steps.
    DpmSolver2M,
    /// DPM-Solver++ (3M), multistep third order.
    DpmSolver3M,
    /// The SDE variant of DPM-Solver++(2M): fresh noise at every step.
    DpmSolver2MSde,
    /// Euler's method on the probability-flow ODE (the same steps as DDIM with η = 0).
    Euler,
    /// Euler ancestral: an Euler step to σ_down, then noise up to the next σ.
    EulerAncestral,
    /// Heun's second-order method (EDM Algorithm 1), two evaluations per step; with `churn`, EDM's
    /// Algorithm 2 (noise added before each step).
    Heun { churn: Churn },
    /// UniPC (bh2) of this order (1 to 3): a multistep predictor and a corrector that reuses the next
    /// step's evaluation.
    UniPc { order: usize },
}

/// EDM Algorithm 2's stochasticity (Karras et al. 2022, §4): at each step with σ in [s_tmin, s_tmax], σ is
/// raised by γ = min(s_churn/N, √2 − 1) (N: the steps) with fresh noise of scale s_noise before the step.
/// `s_churn = 0`: none (Algorithm 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Churn {
    pub s_churn: f32,
    pub s_tmin: f32,
    pub s_tmax: f32,
    pub s_noise: f32,
}

impl Churn {
    /// No churn: the deterministic Heun sampler.
    pub const NONE: Churn = Churn { s_churn: 0.0, s_tmin: 0.0, s_tmax: f32::INFINITY, s_noise: 1.0 };
}

impl Method {
    /// The family's name alone, for file names and tables: "ddpm", "ddim", "dpm-solver++".
    pub fn short_name(&self) -> &'static str {
        match self {
            Method::Ddpm => "ddpm",
            Method::Ddim { .. } => "ddim",
            Method::DdimOvershoot => "ddim-overshoot",
            Method::DpmSolver2M => "dpm-solver++",
            Method::DpmSolver3M => "dpm-solver++3m",
            Method::DpmSolver2MSde => "dpm-solver++sde",
            Method::Euler => "euler",
            Method::EulerAncestral => "euler-a",
            Method::Heun { .. } => "heun",
            Method::UniPc { .. } => "unipc",
        }
    }

    pub fn name(&self) -> String {
        match self {
            Method::Ddpm => "ddpm".into(),
            Method::Ddim { eta } => format!("ddim(eta={eta})"),
            Method::DdimOvershoot => "ddim-overshoot".into(),
            Method::DpmSolver2M => "dpm-solver++(2m)".into(),
            Method::DpmSolver3M => "dpm-solver++(3m)".into(),
            Method::DpmSolver2MSde => "sde-dpm-solver++(2m)".into(),
            Method::Euler => "euler".into(),
            Method::EulerAncestral => "euler-ancestral".into(),
            Method::Heun { churn } if churn.s_churn > 0.0 => format!("heun(churn={})", churn.s_churn),
            Method::Heun { .. } => "heun".into(),
            Method::UniPc { order } => format!("unipc(order={order})"),
        }
    }

    /// The names [`Method::from_name`] knows.
    pub const NAMES: &'static str = "ddpm, ddim, ddim-overshoot, dpm, dpm3m, dpm-sde, euler, euler-a, heun, unipc";

    /// The method a flag names: ddpm, ddim, ddim-overshoot, dpm (2M), dpm3m, dpm-sde, euler, euler-a, heun,
    /// unipc (order 2).
    pub fn from_name(name: &str, eta: f32) -> Option<Method> {
        Some(match name {
            "ddpm" => Method::Ddpm,
            "ddim" => Method::Ddim { eta },
            "ddim-overshoot" => Method::DdimOvershoot,
            "dpm" => Method::DpmSolver2M,
            "dpm3m" => Method::DpmSolver3M,
            "dpm-sde" => Method::DpmSolver2MSde,
            "euler" => Method::Euler,
            "euler-a" => Method::EulerAncestral,
            "heun" => Method::Heun { churn: Churn::NONE },
            "unipc" => Method::UniPc { order: 2 },
            _ => return None,
        })
    }

    /// [`Method::from_name`] as a flag's value parser (η = 0 for DDIM), naming the known methods on error.
    pub fn parse_flag(name: &str) -> std::result::Result<Method, String> {
        Method::from_name(name.trim(), 0.0).ok_or_else(|| format!("unknown sampler (known: {})", Method::NAMES))
    }

    /// The network evaluations of a run over `points` timesteps (what `sampler_timesteps` returns).
    pub fn evaluations(&self, points: usize) -> usize {
        match self {
            // Two per step, except the last (to σ = 0), which is an Euler step.
            Method::Heun { .. } => (2 * points).saturating_sub(1),
            _ => points,
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
pub fn timesteps(schedule: &NoiseSchedule, steps: usize, spacing: Spacing) -> Vec<usize> {
    let total = schedule.steps();
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
        Spacing::Karras => {
            const RHO: f64 = 7.0;
            let sigma = |t: usize| sigma_of(schedule.alpha_bar[t]);
            // σ_max of a zero-terminal-SNR schedule is infinite: the curve runs from the largest finite σ,
            // and the run still starts at T − 1.
            let top = (0..total).rev().find(|&t| sigma(t).is_finite()).unwrap_or(0);
            let (hi, lo) = (sigma(top).powf(1.0 / RHO), sigma(0).powf(1.0 / RHO));
            let at = |i: usize| if steps == 1 { 0.0 } else { i as f64 / (steps - 1) as f64 };
            let mut ts: Vec<usize> =
                (0..steps).map(|i| nearest_timestep(schedule, (hi + at(i) * (lo - hi)).powf(RHO))).collect();
            ts[0] = total - 1;
            ts
        }
    };
    ts.sort_unstable();
    ts.dedup();
    ts.reverse();
    ts
}

/// The timestep whose σ is nearest to `sigma` in log σ (σ grows with t).
pub fn nearest_timestep(schedule: &NoiseSchedule, sigma: f64) -> usize {
    let log_sigma = |t: usize| sigma_of(schedule.alpha_bar[t]).ln();
    let target = sigma.ln();
    // The first t with log σ_t ≥ target, then the nearer of it and the one before.
    let above = schedule.alpha_bar.partition_point(|&ab| sigma_of(ab).ln() < target).min(schedule.steps() - 1);
    match above.checked_sub(1) {
        Some(below) if target - log_sigma(below) < log_sigma(above) - target => below,
        _ => above,
    }
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

/// [`sample`] of `shape` = [count, …] drawn `batch` rows at a time, each batch going on drawing from `rng`:
/// the memory of `batch` rows, not of `count` (the main job's 64-image grid in batches of 32 keeps its peak
/// at training's: 386 MB against 473 MB in one batch).
#[allow(clippy::too_many_arguments)]
pub fn sample_batched(
    model: &impl Denoiser,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    prediction: Prediction,
    config: &SamplerConfig,
    shape: &[usize],
    batch: usize,
    rng: &mut StdRng,
) -> Tensor {
    let (count, item) = (shape[0], &shape[1..]);
    let mut images = Vec::with_capacity(shape.iter().product());
    for start in (0..count).step_by(batch.max(1)) {
        let rows = [&[batch.min(count - start)], item].concat();
        images.extend_from_slice(sample(model, params, schedule, prediction, config, &rows, rng).data());
    }
    Tensor::from_vec(shape, images)
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
    let ts = sampler_timesteps(schedule, config);
    let noise = Tensor::randn(shape, rng);
    Stepper::new(model, params, schedule, prediction, config).run(&ts, noise, rng, trace)
}

/// The descending timesteps `config` visits on `schedule`: as many as it has network evaluations, except
/// for Heun ([`Method::evaluations`]).
pub fn sampler_timesteps(schedule: &NoiseSchedule, config: &SamplerConfig) -> Vec<usize> {
    let total = schedule.steps();
    match config.method {
        Method::Ddpm => (0..total).rev().collect(),
        Method::Ddim { .. } | Method::DdimOvershoot | Method::Euler | Method::EulerAncestral => {
            timesteps(schedule, config.steps, config.spacing)
        }
        // The last step, to σ = 0, takes one evaluation; the others two.
        Method::Heun { .. } => timesteps(schedule, config.steps.div_ceil(2).max(1), config.spacing),
        // As diffusers' DPMSolverMultistepScheduler: steps + 1 points with the last (lowest) dropped, then a
        // final first-order step to σ = 0, which returns x̂_0. A second-order step down to t = 0 itself would
        // cross a huge jump in λ and extrapolate far past the data.
        Method::DpmSolver2M | Method::DpmSolver3M | Method::DpmSolver2MSde | Method::UniPc { .. } => {
            let mut ts = timesteps(schedule, config.steps + 1, config.spacing);
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
    /// The multistep solvers in `solvers.rs`: the denoised outputs of the earlier steps and their λ,
    /// newest first.
    history: Vec<(Vec<f32>, f64)>,
    /// UniPC: the step before's sample (corrected), its output, its λ and its predictor's order.
    unipc_last: Option<(Vec<f32>, Vec<f32>, f64, usize)>,
    /// Timesteps left in the run (set by [`Stepper::run`]): the multistep solvers lower their order on the
    /// last steps of short runs, and churn divides by the run's length.
    plan: Option<(usize, usize)>,
    /// The timestep after the next one (set by [`Stepper::run`]; `None`: the data), where DDIM overshoot
    /// steps before it noises back up to the next.
    after_next: Option<usize>,
}

impl<'a, D: Denoiser> Stepper<'a, D> {
    pub fn new(
        model: &'a D,
        params: &'a ParamStore,
        schedule: &'a NoiseSchedule,
        prediction: Prediction,
        config: &'a SamplerConfig,
    ) -> Self {
        Stepper {
            model,
            params,
            schedule,
            prediction,
            config,
            tape: Tape::inference(),
            previous: None,
            history: Vec::new(),
            unipc_last: None,
            plan: None,
            after_next: None,
        }
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
                (self.plan, self.after_next) = (Some((ts.len() - i, ts.len())), ts.get(i + 2).copied());
                x = self.step(t, ts.get(i + 1).copied(), &x, rng);
            }
            x
        })
    }

    /// (x̂_0, ε̂) of the network at (x, t).
    fn denoise(&mut self, t: usize, x: &Tensor) -> (Tensor, Tensor) {
        let batch_t = vec![t; x.shape()[0]];
        let input = self.prediction.network_input(self.schedule, x, &batch_t);
        let output = self.model.predict(&mut self.tape, self.params, &Var::constant(input), &batch_t).into_value();
        estimates(self.prediction, &output, x, self.schedule.alpha_bar[t], self.config.clip_x0)
    }

    /// x at timestep `t` → x at `next` (`None`: the end of sampling).
    pub fn step(&mut self, t: usize, next: Option<usize>, x: &Tensor, rng: &mut StdRng) -> Tensor {
        if !matches!(
            self.config.method,
            Method::Ddpm | Method::Ddim { .. } | Method::DdimOvershoot | Method::DpmSolver2M
        ) {
            return self.step_sigma(t, next, x, rng);
        }
        let ab = self.schedule.alpha_bar[t];
        let (x0, eps) = self.denoise(t, x);
        match self.config.method {
            Method::Ddpm => ddpm_update(self.schedule, t, x, &x0, rng),
            Method::Ddim { eta } => {
                let ab_next = next.map_or(1.0, |s| self.schedule.alpha_bar[s]);
                let sigma = eta as f64 * ((1.0 - ab_next) / (1.0 - ab)).sqrt() * (1.0 - ab / ab_next).max(0.0).sqrt();
                ddim_update(ab_next, &x0, &eps, sigma, rng)
            }
            Method::DdimOvershoot => match next {
                None => x0,
                Some(s) => {
                    // The forward process from ᾱ_u up to ᾱ_s adds the variance 1 − ᾱ_s/ᾱ_u.
                    let ab_s = self.schedule.alpha_bar[s];
                    let ab_u = self.after_next.map_or(1.0, |u| self.schedule.alpha_bar[u]);
                    ddim_update(ab_s, &x0, &eps, (1.0 - ab_s / ab_u).max(0.0).sqrt(), rng)
                }
            },
            Method::DpmSolver2M => match next {
                None => x0,
                Some(s) => {
                    let (x_new, h) = dpm_solver_update(ab, self.schedule.alpha_bar[s], x, &x0, self.previous.as_ref());
                    self.previous = Some((x0, h));
                    x_new
                }
            },
            _ => unreachable!("the σ-coordinate methods step in step_sigma"),
        }
    }

    /// A step of the samplers of `solvers.rs`, in the coordinates x̃ = x/√ᾱ, σ = √((1 − ᾱ)/ᾱ).
    fn step_sigma(&mut self, t: usize, next: Option<usize>, x: &Tensor, rng: &mut StdRng) -> Tensor {
        let ab = &self.schedule.alpha_bar;
        let (t, x) = match self.config.method {
            Method::Heun { churn } => self.churn(churn, t, x, rng),
            _ => (t, x.clone()),
        };
        let (sigma, sigma_next) = (sigma_of(ab[t]), next.map_or(0.0, |s| sigma_of(ab[s])));
        if !sigma.is_finite() {
            // ᾱ_t = 0 (a zero-terminal-SNR schedule's last step): x̃ is undefined there, and every rule here
            // tends to the first-order (DDIM) step, taken in x; no history is kept from it.
            let (x0, eps) = self.denoise(t, &x);
            return ddim_update(next.map_or(1.0, |s| ab[s]), &x0, &eps, 0.0, rng);
        }
        let (lambda, lambda_next) = (-sigma.ln(), -sigma_next.ln());
        let xt: Vec<f32> = x.data().iter().map(|v| v / ab[t].sqrt() as f32).collect();
        let (x0, _) = self.denoise(t, &x);
        let d = x0.data();
        let left = self.plan.map_or(usize::MAX, |(left, _)| left);
        let past = |history: &[(Vec<f32>, f64)], n: usize| -> Vec<(Vec<f32>, f64)> {
            history[..n.min(history.len())].to_vec()
        };
        let new: Vec<f32> = match (self.config.method, next) {
            (_, None) => d.to_vec(),
            (Method::Euler, Some(_)) => solvers::euler(&xt, d, sigma, sigma_next),
            (Method::EulerAncestral, Some(_)) => {
                let z = Tensor::randn(x.shape(), rng);
                solvers::euler_ancestral(&xt, d, sigma, sigma_next, z.data())
            }
            (Method::Heun { .. }, Some(s)) => {
                let x_euler = solvers::euler(&xt, d, sigma, sigma_next);
                let scale = ab[s].sqrt() as f32;
                let at_next = Tensor::from_vec(x.shape(), x_euler.iter().map(|v| v * scale).collect());
                let (x0_next, _) = self.denoise(s, &at_next);
                solvers::heun(&xt, d, &x_euler, x0_next.data(), sigma, sigma_next)
            }
            (Method::DpmSolver3M, Some(_)) => {
                // Order 3 once two earlier outputs exist; at most 2 on the second-to-last step of a short run.
                let order = if left == 2 && self.plan.is_some_and(|(_, n)| n < 15) { 2 } else { 3 };
                let past = past(&self.history, order - 1);
                let past: Vec<Past> = past.iter().map(|(d, l)| Past { denoised: d, lambda: *l }).collect();
                solvers::dpm_solver_pp(&xt, d, lambda, lambda_next, &past)
            }
            (Method::DpmSolver2MSde, Some(_)) => {
                let z = Tensor::randn(x.shape(), rng);
                let p1 = self.history.first().map(|(d, l)| Past { denoised: d, lambda: *l });
                solvers::dpm_solver_pp_sde(&xt, d, lambda, lambda_next, p1.as_ref(), sigma_next, z.data())
            }
            (Method::UniPc { order }, Some(_)) => {
                // The corrector first: the step before's prediction, corrected with this evaluation.
                let xt = match &self.unipc_last {
                    Some((x_before, before, lambda_before, last_order)) => {
                        let older = past(&self.history[1.min(self.history.len())..], last_order - 1);
                        let older: Vec<Past> = older.iter().map(|(d, l)| Past { denoised: d, lambda: *l }).collect();
                        solvers::unipc_correct(x_before, before, d, *lambda_before, lambda, &older)
                    }
                    None => xt,
                };
                let this_order = order.clamp(1, 3).min(self.history.len() + 1).min(left.max(1));
                let earlier = past(&self.history, this_order - 1);
                let earlier: Vec<Past> = earlier.iter().map(|(d, l)| Past { denoised: d, lambda: *l }).collect();
                let predicted = solvers::unipc_predict(&xt, d, lambda, lambda_next, &earlier);
                self.unipc_last = Some((xt, d.to_vec(), lambda, this_order));
                predicted
            }
            _ => unreachable!("step() takes the others"),
        };
        self.history.insert(0, (d.to_vec(), lambda));
        self.history.truncate(2);
        let scale = next.map_or(1.0, |s| ab[s].sqrt() as f32);
        Tensor::from_vec(x.shape(), new.into_iter().map(|v| v * scale).collect())
    }

    /// EDM Algorithm 2's churn before a step at `t`: if σ_t lies in [s_tmin, s_tmax], raise it to the
    /// trained timestep nearest σ_t·(1 + γ), γ = min(s_churn/N, √2 − 1), adding the noise that takes x̃ there.
    fn churn(&self, churn: Churn, t: usize, x: &Tensor, rng: &mut StdRng) -> (usize, Tensor) {
        let ab = &self.schedule.alpha_bar;
        let sigma = sigma_of(ab[t]);
        let steps = self.plan.map_or(1, |(_, n)| n) as f64;
        if churn.s_churn <= 0.0 || !sigma.is_finite() || !(churn.s_tmin as f64..=churn.s_tmax as f64).contains(&sigma) {
            return (t, x.clone());
        }
        let gamma = (churn.s_churn as f64 / steps).min(2f64.sqrt() - 1.0);
        let hat = nearest_timestep(self.schedule, sigma * (1.0 + gamma)).max(t);
        let sigma_hat = sigma_of(ab[hat]);
        let spread = (sigma_hat * sigma_hat - sigma * sigma).max(0.0).sqrt() * churn.s_noise as f64;
        let z = Tensor::randn(x.shape(), rng);
        let (down, up) = (ab[t].sqrt(), ab[hat].sqrt());
        // x̃ at σ̂ = x̃ + spread·z, back in x coordinates at `hat`.
        let data = x.data().iter().zip(z.data()).map(|(v, z)| ((*v as f64 / down + spread * *z as f64) * up) as f32);
        (hat, Tensor::from_vec(x.shape(), data.collect()))
    }
}

/// (x̂_0, ε̂) from the network output; with clipping, x̂_0 is clamped and ε̂ recomputed from it.
fn estimates(prediction: Prediction, output: &Tensor, x_t: &Tensor, ab: f64, clip: Option<f32>) -> (Tensor, Tensor) {
    let (x0, eps): (Vec<f32>, Vec<f32>) =
        output.data().iter().zip(x_t.data()).map(|(&o, &x)| estimate(prediction, o, x, ab, clip)).unzip();
    (Tensor::from_vec(x_t.shape(), x0), Tensor::from_vec(x_t.shape(), eps))
}

/// [`estimates`] for one value: (x̂_0, ε̂) of the network output `o` at x_t = `x`, ᾱ = `ab`.
pub fn estimate(prediction: Prediction, o: f32, x: f32, ab: f64, clip: Option<f32>) -> (f32, f32) {
    let (mut x0_hat, mut eps_hat) = prediction.to_x0_eps(o, x, ab);
    if let Some(c) = clip {
        x0_hat = x0_hat.clamp(-c, c);
        let s = (1.0 - ab).sqrt() as f32;
        if s > 0.0 {
            eps_hat = (x - ab.sqrt() as f32 * x0_hat) / s;
        }
    }
    (x0_hat, eps_hat)
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

/// DDIM's x_s = √ᾱ_s x̂_0 + √(1 − ᾱ_s − σ²) ε̂ + σ z (`ab_next` = ᾱ_s, fresh noise z of scale `sigma`).
fn ddim_update(ab_next: f64, x0: &Tensor, eps: &Tensor, sigma: f64, rng: &mut StdRng) -> Tensor {
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
mod tests;
