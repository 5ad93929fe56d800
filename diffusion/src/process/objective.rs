//! What the network predicts, and the training loss.
//!
//! With x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, a network can be trained to predict any one of three quantities, each
//! determining the other two given x_t:
//! ```text
//! ε    the noise (Ho et al. 2020)                     x_0 = (x_t − √(1−ᾱ) ε) / √ᾱ
//! x_0  the clean sample                               ε   = (x_t − √ᾱ x_0) / √(1−ᾱ)
//! v    √ᾱ ε − √(1−ᾱ) x_0 (Salimans & Ho 2022, §4)     x_0 = √ᾱ x_t − √(1−ᾱ) v,  ε = √(1−ᾱ) x_t + √ᾱ v
//! ```
//! Flow matching (rectified flow) is a fourth: on the straight path z_t = (1 − t)x_0 + tε (the flow
//! schedule, [`NoiseSchedule::flow`]: z_t = x_t·√((1−t)² + t²), t = √(1−ᾱ)/(√ᾱ + √(1−ᾱ))) the network sees
//! z_t and predicts its velocity u = dz/dt = ε − x_0, so x_0 = z_t − t·u and ε = z_t + (1 − t)·u.
//!
//! The timesteps of a batch are drawn uniformly, or logit-normal (Esser et al. 2024, "Scaling Rectified Flow
//! Transformers", §3.1: τ = sigmoid(u), u ~ N(m, s²), which spends the steps on the middle of the path).
//! The loss is the mean squared error to the chosen target, optionally weighted per sample by min-SNR-γ
//! (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", eq. 8 and §3.4), which
//! keeps the easy low-noise timesteps from dominating training:
//! ```text
//! SNR_t = ᾱ_t / (1 − ᾱ_t);   weight = min(SNR, γ) · k,   k = ‖δx̂_0‖²/‖δoutput‖² (Prediction::x0_factor):
//! k = 1/SNR (ε),  1 (x_0),  1/(SNR + 1) (v),  1/(1 + √SNR)² (flow: δx̂_0 = −t·δu, t = 1/(1 + √SNR))
//! ```

use autograd::{ParamStore, Tape, Tensor, Var};
use rand::rngs::StdRng;
use rand::RngExt;

use crate::model::denoiser::Denoiser;
use crate::process::schedule::NoiseSchedule;

/// The network's target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    Sample,
    Velocity,
    /// Flow matching's velocity ε − x_0 on the straight path (with the flow schedule).
    Flow,
}

impl Prediction {
    pub fn name(self) -> &'static str {
        match self {
            Prediction::Epsilon => "epsilon",
            Prediction::Sample => "x0",
            Prediction::Velocity => "v",
            Prediction::Flow => "flow",
        }
    }

    pub fn from_name(name: &str) -> Option<Prediction> {
        [Prediction::Epsilon, Prediction::Sample, Prediction::Velocity, Prediction::Flow]
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// What the network's input is, times x_t: 1, except for flow matching, whose network sees the point
    /// on the straight path, z_t = x_t/(√ᾱ + √(1−ᾱ)).
    pub fn input_scale(self, alpha_bar: f64) -> f32 {
        match self {
            Prediction::Flow => (1.0 / (alpha_bar.sqrt() + (1.0 - alpha_bar).sqrt())) as f32,
            _ => 1.0,
        }
    }

    /// The network's input for x_t [B, …] at the timesteps `t` (one per row): x_t itself, or for flow
    /// matching z_t, x_t times [`Prediction::input_scale`].
    pub fn network_input(self, schedule: &NoiseSchedule, x_t: &Tensor, t: &[usize]) -> Tensor {
        if self != Prediction::Flow {
            return x_t.clone();
        }
        let row = x_t.numel() / t.len();
        let mut z = x_t.clone();
        for (b, &tb) in t.iter().enumerate() {
            let scale = self.input_scale(schedule.alpha_bar[tb]);
            z.data_mut()[b * row..(b + 1) * row].iter_mut().for_each(|v| *v *= scale);
        }
        z
    }

    /// How an error in the network's output carries to x̂_0 at `snr`: ‖δx̂_0‖² = k · ‖δoutput‖². A weight w
    /// of an x-space loss is w · k in the output's space (min-SNR-γ here, truncated SNR in distillation).
    pub fn x0_factor(self, snr: f64) -> f64 {
        match self {
            // x̂_0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ:  k = (1 − ᾱ)/ᾱ = 1/SNR
            Prediction::Epsilon => 1.0 / snr.max(1e-20),
            Prediction::Sample => 1.0,
            // x̂_0 = √ᾱ x_t − √(1−ᾱ) v̂:  k = 1 − ᾱ = 1/(SNR + 1)
            Prediction::Velocity => 1.0 / (snr + 1.0),
            // x̂_0 = z_t − t û,  t = √(1−ᾱ)/(√ᾱ + √(1−ᾱ)) = 1/(1 + √SNR):  k = t²
            Prediction::Flow => 1.0 / (1.0 + snr.sqrt()).powi(2),
        }
    }

    /// The training target for x_0 and its noise ε at ᾱ.
    pub fn target(self, x_0: f32, eps: f32, alpha_bar: f64) -> f32 {
        let (a, s) = (alpha_bar.sqrt() as f32, (1.0 - alpha_bar).sqrt() as f32);
        match self {
            Prediction::Epsilon => eps,
            Prediction::Sample => x_0,
            Prediction::Velocity => a * eps - s * x_0,
            Prediction::Flow => eps - x_0,
        }
    }

    /// (x̂_0, ε̂) from the network output at x_t and ᾱ (the table in the module doc).
    pub fn to_x0_eps(self, output: f32, x_t: f32, alpha_bar: f64) -> (f32, f32) {
        let (a, s) = (alpha_bar.sqrt() as f32, (1.0 - alpha_bar).sqrt() as f32);
        match self {
            Prediction::Epsilon => ((x_t - s * output) / a, output),
            Prediction::Sample => (output, (x_t - a * output) / s),
            Prediction::Velocity => (a * x_t - s * output, s * x_t + a * output),
            Prediction::Flow => {
                // z_t = x_t/(√ᾱ + √(1−ᾱ)),  t = √(1−ᾱ)/(√ᾱ + √(1−ᾱ))
                let (z, t) = (x_t / (a + s), s / (a + s));
                (z - t * output, z + (1.0 - t) * output)
            }
        }
    }
}

/// How a batch's timesteps are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TimeSampling {
    /// t ~ U{0 … T−1}.
    Uniform,
    /// Timestep k = round(τ·(T + 1)) − 1 with τ = sigmoid(u), u ~ N(mean, std²) (SD3's default: 0, 1).
    LogitNormal { mean: f64, std: f64 },
}

impl TimeSampling {
    /// Its name in flags and files: "uniform", or "logit-normal:<mean>,<std>" ("logit-normal" alone: 0, 1).
    pub fn name(self) -> String {
        match self {
            TimeSampling::Uniform => "uniform".into(),
            TimeSampling::LogitNormal { mean, std } => format!("logit-normal:{mean},{std}"),
        }
    }

    pub fn from_name(name: &str) -> Option<TimeSampling> {
        match name {
            "uniform" => Some(TimeSampling::Uniform),
            "logit-normal" => Some(TimeSampling::LogitNormal { mean: 0.0, std: 1.0 }),
            _ => {
                let (mean, std) = name.strip_prefix("logit-normal:")?.split_once(',')?;
                let (mean, std): (f64, f64) = (mean.parse().ok()?, std.parse().ok()?);
                (mean.is_finite() && std.is_finite() && std > 0.0).then_some(TimeSampling::LogitNormal { mean, std })
            }
        }
    }

    /// One timestep of a schedule of `steps`.
    pub fn draw(self, steps: usize, rng: &mut StdRng) -> usize {
        match self {
            TimeSampling::Uniform => rng.random_range(0..steps),
            TimeSampling::LogitNormal { mean, std } => {
                let u: f64 = mean + std * rng.sample::<f64, _>(rand_distr::StandardNormal);
                let tau = 1.0 / (1.0 + (-u).exp());
                ((tau * (steps + 1) as f64).round() as usize).clamp(1, steps) - 1
            }
        }
    }
}

/// Per-sample loss weighting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Weighting {
    Uniform,
    /// min-SNR-γ; the paper's default is γ = 5.
    MinSnr(f64),
}

impl Weighting {
    pub fn weight(self, prediction: Prediction, snr: f64) -> f64 {
        match self {
            Weighting::Uniform => 1.0,
            Weighting::MinSnr(gamma) => snr.min(gamma) * prediction.x0_factor(snr),
        }
    }
}

/// One batch's training loss: draws t by `sampling` and ε ~ N(0, I) from `rng`, noises x_0 [B, …] to x_t,
/// and returns mean_b(w_b · mean((output − target)²)) on the tape.
#[allow(clippy::too_many_arguments)]
pub fn training_loss(
    tape: &mut Tape,
    model: &(impl Denoiser + ?Sized),
    params: &ParamStore,
    schedule: &NoiseSchedule,
    prediction: Prediction,
    weighting: Weighting,
    sampling: TimeSampling,
    x_0: &Tensor,
    rng: &mut StdRng,
) -> Var {
    let batch = x_0.shape()[0];
    let row = x_0.numel() / batch;
    let t: Vec<usize> = (0..batch).map(|_| sampling.draw(schedule.steps(), rng)).collect();
    let eps = Tensor::randn(x_0.shape(), rng);
    let x_t = schedule.q_sample(x_0, &t, &eps);
    let x_t = tape.constant(prediction.network_input(schedule, &x_t, &t));
    let mut target = Vec::with_capacity(x_0.numel());
    for (b, &tb) in t.iter().enumerate() {
        let range = b * row..(b + 1) * row;
        let ab = schedule.alpha_bar[tb];
        target.extend(
            x_0.data()[range.clone()].iter().zip(&eps.data()[range]).map(|(&x, &e)| prediction.target(x, e, ab)),
        );
    }
    let target = tape.constant(Tensor::from_vec(x_0.shape(), target));
    let output = model.predict_train(tape, params, &x_t, &t, rng);
    if weighting == Weighting::Uniform {
        return tape.mse_loss(&output, &target);
    }
    let weights: Vec<f32> = t.iter().map(|&tb| weighting.weight(prediction, schedule.snr(tb)) as f32).collect();
    weighted_mse(tape, &output, &target, &weights)
}

/// The mean over the batch of `weights[b]` times row b's mean squared error between `output` and `target`.
pub fn weighted_mse(tape: &mut Tape, output: &Var, target: &Var, weights: &[f32]) -> Var {
    let per_sample = row_mean_squares(tape, output, target, weights.len());
    weighted_mean(tape, &per_sample, weights)
}

/// Row b's mean of (a − b)² over its elements: [batch].
pub fn row_mean_squares(tape: &mut Tape, a: &Var, b: &Var, batch: usize) -> Var {
    let row = a.value().numel() / batch;
    let diff = tape.sub(a, b);
    let sq = tape.mul(&diff, &diff);
    let flat = tape.reshape(&sq, &[batch, row]);
    tape.mean(&flat, &[1], false)
}

/// The mean over the batch of `weights[b]` · `per_sample[b]`.
pub fn weighted_mean(tape: &mut Tape, per_sample: &Var, weights: &[f32]) -> Var {
    let w = tape.constant(Tensor::from_vec(&[weights.len()], weights.to_vec()));
    let weighted = tape.mul(per_sample, &w);
    tape.mean_all(&weighted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prediction_recovers_x0_and_eps() {
        let (x0, eps, ab) = (0.3f32, -1.2f32, 0.64f64); // √ᾱ = 0.8, √(1−ᾱ) = 0.6
        let x_t = 0.8 * x0 + 0.6 * eps;
        for p in [Prediction::Epsilon, Prediction::Sample, Prediction::Velocity, Prediction::Flow] {
            let (x0_hat, eps_hat) = p.to_x0_eps(p.target(x0, eps, ab), x_t, ab);
            assert!((x0_hat - x0).abs() < 1e-6 && (eps_hat - eps).abs() < 1e-6, "{p:?}");
        }
        // v = √ᾱ ε − √(1−ᾱ) x_0 = 0.8·(−1.2) − 0.6·0.3 = −1.14
        assert!((Prediction::Velocity.target(x0, eps, ab) + 1.14).abs() < 1e-6);
    }

    /// The flow schedule's x_t, scaled by the flow input scale, is the straight path (1 − t)x_0 + tε at
    /// t_k = (k + 1)/(T + 1).
    #[test]
    fn the_flow_schedule_is_the_straight_path() {
        let schedule = NoiseSchedule::flow(9);
        let (x0, eps) = (0.3f64, -1.2f64);
        for k in 0..9 {
            let ab = schedule.alpha_bar[k];
            let x_t = ab.sqrt() * x0 + (1.0 - ab).sqrt() * eps;
            let t = (k + 1) as f64 / 10.0;
            let z = x_t * Prediction::Flow.input_scale(ab) as f64;
            assert!((z - ((1.0 - t) * x0 + t * eps)).abs() < 1e-6, "k {k}: {z}");
        }
        assert!(schedule.beta.iter().all(|b| *b > 0.0 && *b < 1.0));
    }

    /// Logit-normal timesteps crowd the middle of the schedule; uniform ones spread evenly; names round-trip.
    #[test]
    fn logit_normal_timesteps_favour_the_middle() {
        use rand::SeedableRng;
        let mut rng = StdRng::seed_from_u64(1);
        let ln = TimeSampling::from_name("logit-normal").unwrap();
        let draws: Vec<usize> = (0..20_000).map(|_| ln.draw(1000, &mut rng)).collect();
        let middle = draws.iter().filter(|&&k| (250..750).contains(&k)).count() as f64 / 20_000.0;
        // P(|u| < logit(0.75) = 1.0986) for u ~ N(0, 1) = 0.7275
        assert!((middle - 0.7275).abs() < 0.02, "{middle}");
        assert!(draws.iter().all(|&k| k < 1000));
        assert_eq!(TimeSampling::from_name(&ln.name()), Some(ln));
        assert_eq!(TimeSampling::from_name("uniform"), Some(TimeSampling::Uniform));
        assert_eq!(TimeSampling::from_name("logit-normal:0,-1"), None);
    }

    /// x0_factor is the square of ∂x̂_0/∂output that to_x0_eps implies, for every prediction.
    #[test]
    fn x0_factor_is_the_squared_slope_of_x0_hat() {
        for ab in [0.999, 0.64, 0.2, 0.003] {
            let snr = ab / (1.0 - ab);
            for p in [Prediction::Epsilon, Prediction::Sample, Prediction::Velocity, Prediction::Flow] {
                let slope = p.to_x0_eps(1.0, 0.4, ab).0 as f64 - p.to_x0_eps(0.0, 0.4, ab).0 as f64;
                let k = p.x0_factor(snr);
                assert!((slope * slope - k).abs() < 1e-5 * k.max(1.0), "{p:?} at ᾱ {ab}: {} vs {k}", slope * slope);
            }
        }
    }

    #[test]
    fn min_snr_weights() {
        let w = Weighting::MinSnr(5.0);
        // SNR 20 > γ: ε weight 5/20, x_0 weight 5, v weight 5/21; SNR 2 < γ: ε weight 1, v weight 2/3.
        assert!((w.weight(Prediction::Epsilon, 20.0) - 0.25).abs() < 1e-12);
        assert_eq!(w.weight(Prediction::Sample, 20.0), 5.0);
        assert!((w.weight(Prediction::Velocity, 20.0) - 5.0 / 21.0).abs() < 1e-12);
        assert_eq!(w.weight(Prediction::Epsilon, 2.0), 1.0);
        assert!((w.weight(Prediction::Velocity, 2.0) - 2.0 / 3.0).abs() < 1e-12);
        // flow at SNR 4: t = 1/(1 + 2) = 1/3, weight min(4, 5)/9
        assert!((w.weight(Prediction::Flow, 4.0) - 4.0 / 9.0).abs() < 1e-12);
        assert_eq!(Weighting::Uniform.weight(Prediction::Sample, 123.0), 1.0);
    }
}
