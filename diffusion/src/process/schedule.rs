//! Noise schedules and the forward process q(x_t | x_0).
//!
//! Notation of Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (DDPM), §2, with timesteps
//! t = 0 … T−1 (the paper's 1 … T):
//! ```text
//! q(x_t | x_{t−1}) = N(√(1 − β_t) x_{t−1}, β_t I)
//! α_t = 1 − β_t,   ᾱ_t = Π_{s ≤ t} α_s
//! q(x_t | x_0)     = N(√ᾱ_t x_0, (1 − ᾱ_t) I)     ⇒   x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε,  ε ~ N(0, I)   (eq. 4)
//! ```

use std::ops::RangeInclusive;

use autograd::Tensor;

use crate::error::check_range;

/// The numbers of diffusion steps T a schedule may have.
pub const TIMESTEPS: RangeInclusive<usize> = 2..=100_000;

/// β_t, α_t and ᾱ_t for t = 0 … T−1.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseSchedule {
    pub beta: Vec<f64>,
    pub alpha: Vec<f64>,
    pub alpha_bar: Vec<f64>,
}

impl NoiseSchedule {
    /// A schedule from its β sequence; α and ᾱ follow by definition.
    pub fn from_betas(beta: Vec<f64>) -> NoiseSchedule {
        let alpha: Vec<f64> = beta.iter().map(|b| 1.0 - b).collect();
        let alpha_bar = alpha
            .iter()
            .scan(1.0, |prod, a| {
                *prod *= a;
                Some(*prod)
            })
            .collect();
        NoiseSchedule { beta, alpha, alpha_bar }
    }

    /// DDPM's linear schedule: β evenly spaced from `beta_start` to `beta_end` (the paper: 1e-4 to 0.02
    /// over T = 1000).
    pub fn linear(steps: usize, beta_start: f64, beta_end: f64) -> NoiseSchedule {
        let beta =
            (0..steps).map(|t| beta_start + (beta_end - beta_start) * t as f64 / (steps.max(2) - 1) as f64).collect();
        NoiseSchedule::from_betas(beta)
    }

    /// The linear schedule with DDPM's endpoints rescaled for `steps` ≠ 1000 (β·1000/T), so that the total
    /// noise Σβ, and so ᾱ at the end, stays about the same (Nichol & Dhariwal 2021, improved-diffusion).
    pub fn linear_scaled(steps: usize) -> NoiseSchedule {
        let scale = 1000.0 / steps as f64;
        NoiseSchedule::linear(steps, 1e-4 * scale, 0.02 * scale)
    }

    /// Flow matching's straight path x_t = (1 − t)·x_0 + t·ε (Liu et al. 2022, "Flow Straight and Fast";
    /// Lipman et al. 2022, "Flow Matching for Generative Modeling") at t_k = (k + 1)/(T + 1), as the VP schedule
    /// it is up to a scale: x_t/√((1 − t)² + t²) = √ᾱ x_0 + √(1 − ᾱ) ε with
    /// ```text
    /// ᾱ_k = (1 − t_k)² / ((1 − t_k)² + t_k²)
    /// ```
    /// so every sampler runs on it; the network sees x_t itself ([`crate::process::objective::Prediction::Flow`]
    /// scales its input). t stops short of 1 (ᾱ ≈ 1/T² at the end, not 0), as every β must lie in (0, 1).
    pub fn flow(steps: usize) -> NoiseSchedule {
        let alpha_bar: Vec<f64> = (0..steps)
            .map(|k| {
                let t = (k + 1) as f64 / (steps + 1) as f64;
                (1.0 - t).powi(2) / ((1.0 - t).powi(2) + t * t)
            })
            .collect();
        let beta = (0..steps).map(|k| 1.0 - alpha_bar[k] / if k == 0 { 1.0 } else { alpha_bar[k - 1] }).collect();
        NoiseSchedule::from_betas(beta)
    }

    /// The cosine schedule of Nichol & Dhariwal 2021, "Improved DDPM", eq. 17, with their clipping:
    /// ```text
    /// ᾱ(t) = f(t)/f(0),   f(t) = cos²(((t/T) + s)/(1 + s) · π/2),   s = 0.008
    /// β_t  = min(1 − ᾱ(t+1)/ᾱ(t), 0.999)          for t = 0 … T−1
    /// ```
    /// The clipping only bites near t = T−1, where ᾱ(T) = 0 would make β = 1.
    pub fn cosine(steps: usize) -> NoiseSchedule {
        let s = 0.008;
        let f = |t: f64| (((t / steps as f64) + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2).cos().powi(2);
        let beta = (0..steps).map(|t| (1.0 - f(t as f64 + 1.0) / f(t as f64)).min(0.999)).collect();
        NoiseSchedule::from_betas(beta)
    }

    /// The sigmoid schedule: β follows a logistic curve from `beta_start` to `beta_end`,
    /// β_t = β_start + (β_end − β_start)·σ(−6 + 12·t/(T−1)) (as in GeoDiff, Xu et al. 2022, and diffusers'
    /// `beta_schedule="sigmoid"`): slow at both ends, fast in the middle.
    pub fn sigmoid(steps: usize, beta_start: f64, beta_end: f64) -> NoiseSchedule {
        let beta = (0..steps)
            .map(|t| {
                let u = -6.0 + 12.0 * t as f64 / (steps.max(2) - 1) as f64;
                beta_start + (beta_end - beta_start) / (1.0 + (-u).exp())
            })
            .collect();
        NoiseSchedule::from_betas(beta)
    }

    /// Rescales the schedule to zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and
    /// Sample Steps are Flawed", Algorithm 1): shift and scale √ᾱ so that √ᾱ_{T−1} = 0 (pure noise at the
    /// last step, as at sampling time) while √ᾱ_0 is unchanged, then recompute β. Pair it with v-prediction:
    /// at ᾱ = 0 the ε-prediction objective carries no information about x_0.
    /// ```text
    /// a_t = √ᾱ_t,  a_t ← (a_t − a_{T−1}) · a_0 / (a_0 − a_{T−1}),  ᾱ_t = a_t²,  β_t = 1 − ᾱ_t/ᾱ_{t−1}
    /// ```
    pub fn rescale_zero_terminal_snr(&self) -> NoiseSchedule {
        let a: Vec<f64> = self.alpha_bar.iter().map(|ab| ab.sqrt()).collect();
        let (first, last) = (a[0], a[a.len() - 1]);
        let alpha_bar: Vec<f64> = a.iter().map(|&v| ((v - last) * first / (first - last)).powi(2)).collect();
        let beta =
            (0..alpha_bar.len()).map(|t| 1.0 - alpha_bar[t] / if t == 0 { 1.0 } else { alpha_bar[t - 1] }).collect();
        NoiseSchedule::from_betas(beta)
    }

    /// Signal-to-noise ratio at t: SNR = ᾱ_t / (1 − ᾱ_t).
    pub fn snr(&self, t: usize) -> f64 {
        self.alpha_bar[t] / (1.0 - self.alpha_bar[t])
    }

    /// A schedule by name, with the defaults the examples use: `linear` (DDPM's 1e-4 … 0.02, rescaled for
    /// T ≠ 1000), `cosine`, `sigmoid` (1e-4 … 0.02).
    pub fn by_name(name: &str, steps: usize) -> Option<NoiseSchedule> {
        NoiseSchedule::named(name, steps).ok()
    }

    /// The schedule `name` ("linear", "cosine" or "sigmoid") of `steps` timesteps, checked before it is
    /// built: `steps` in [`TIMESTEPS`] (each step is a few f64s of memory), and every β in (0, 1), without
    /// which ᾱ is no probability and training runs to NaN (the linear schedule scaled for T < 20 puts its
    /// last β above 1). The error says which.
    pub fn named(name: &str, steps: usize) -> std::result::Result<NoiseSchedule, String> {
        check_range("timesteps", &steps, &TIMESTEPS)?;
        let schedule = match name {
            "linear" => NoiseSchedule::linear_scaled(steps),
            "cosine" => NoiseSchedule::cosine(steps),
            "sigmoid" => NoiseSchedule::sigmoid(steps, 1e-4, 0.02),
            "flow" => NoiseSchedule::flow(steps),
            _ => return Err(format!("schedule {name:?}: unknown (linear, cosine, sigmoid, flow)")),
        };
        if let Some((t, beta)) = schedule.beta.iter().enumerate().find(|(_, b)| !(**b > 0.0 && **b < 1.0)) {
            return Err(format!("the {name} schedule with timesteps {steps} has β_{t} = {beta}, outside (0, 1)"));
        }
        Ok(schedule)
    }

    /// Number of timesteps T.
    pub fn steps(&self) -> usize {
        self.beta.len()
    }

    /// Samples x_t ~ q(x_t | x_0) for a batch: row b of x_0 [B, …] goes to timestep t[b] with noise ε [B, …].
    /// ```text
    /// x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε
    /// ```
    #[track_caller]
    pub fn q_sample(&self, x_0: &Tensor, t: &[usize], eps: &Tensor) -> Tensor {
        assert!(
            x_0.shape() == eps.shape() && x_0.shape().first() == Some(&t.len()),
            "q_sample: x_0 {:?}, eps {:?} and {} timesteps must agree",
            x_0.shape(),
            eps.shape(),
            t.len()
        );
        let row = x_0.numel() / t.len().max(1);
        let mut x_t = Vec::with_capacity(x_0.numel());
        for (b, &tb) in t.iter().enumerate() {
            let (a, s) = (self.alpha_bar[tb].sqrt() as f32, (1.0 - self.alpha_bar[tb]).sqrt() as f32);
            let range = b * row..(b + 1) * row;
            x_t.extend(x_0.data()[range.clone()].iter().zip(&eps.data()[range]).map(|(x, e)| a * x + s * e));
        }
        Tensor::from_vec(x_0.shape(), x_t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol * b.abs().max(1e-300), "{a} vs {b}");
    }

    #[test]
    fn named_schedules_refuse_betas_outside_zero_one_and_absurd_lengths() {
        assert_eq!(NoiseSchedule::named("linear", 1000).unwrap(), NoiseSchedule::linear_scaled(1000));
        // β_end = 0.02 · 1000/T passes 1 below T = 20.
        let err = NoiseSchedule::named("linear", 15).unwrap_err();
        assert!(err.starts_with("the linear schedule with timesteps 15 has β_11 = 1.049"), "{err}");
        NoiseSchedule::named("linear", 20).unwrap_err(); // β_end = 1 exactly: α = 0
        NoiseSchedule::named("linear", 21).unwrap();
        assert_eq!(NoiseSchedule::named("linear", 0).unwrap_err(), "timesteps 0: out of range (2 to 100000)");
        let err = NoiseSchedule::named("linear", 1_000_000_000).unwrap_err();
        assert_eq!(err, "timesteps 1000000000: out of range (2 to 100000)");
        let err = NoiseSchedule::named("quadratic", 1000).unwrap_err();
        assert_eq!(err, "schedule \"quadratic\": unknown (linear, cosine, sigmoid, flow)");
        for name in ["cosine", "sigmoid", "flow"] {
            NoiseSchedule::named(name, 2).unwrap();
            NoiseSchedule::named(name, 1000).unwrap();
        }
    }

    #[test]
    fn linear_alpha_bar_is_the_product_of_one_minus_beta() {
        let s = NoiseSchedule::linear(1000, 1e-4, 0.02);
        // t = 0: ᾱ = 1 − β₀ = 0.9999.
        close(s.alpha_bar[0], 0.9999, 1e-12);
        // Closed form of the product with β_t = β₀ + t·δ, computed independently in log space.
        let delta = (0.02 - 1e-4) / 999.0;
        for t in [0, 499, 999] {
            let log: f64 = (0..=t).map(|u| (1.0 - (1e-4 + u as f64 * delta)).ln()).sum();
            close(s.alpha_bar[t], log.exp(), 1e-9);
        }
        // The familiar figure: ᾱ at T−1 ≈ 4.04e-5 for DDPM's schedule.
        close(s.alpha_bar[999], 4.035e-5, 1e-3);
        assert_eq!(s.beta[999], 0.02);
    }

    #[test]
    fn cosine_matches_its_closed_form_and_clipping() {
        let steps = 1000;
        let s = NoiseSchedule::cosine(steps);
        let f = |t: f64| (((t / steps as f64) + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
        // Unclipped, the product telescopes: ᾱ_t = Π (ᾱ(u+1)/ᾱ(u)) = f(t+1)/f(0).
        for t in [0, 500] {
            close(s.alpha_bar[t], f(t as f64 + 1.0) / f(0.0), 1e-9);
        }
        // At T−1, f(T) = 0 would give β = 1: clipped to 0.999, so ᾱ_{T−1} = 0.001 · ᾱ_{T−2}.
        assert_eq!(s.beta[steps - 1], 0.999);
        close(s.alpha_bar[steps - 1], 0.001 * s.alpha_bar[steps - 2], 1e-12);
        assert!(s.beta.iter().all(|&b| b > 0.0 && b <= 0.999));
    }

    #[test]
    fn sigmoid_schedule_is_monotone_between_its_ends() {
        let s = NoiseSchedule::sigmoid(1000, 1e-4, 0.02);
        assert!(s.beta.windows(2).all(|w| w[0] < w[1]));
        // σ(±6) = 0.99753: the ends sit 0.25% of the range inside [β_start, β_end]; the middle is at half.
        close(s.beta[0], 1e-4 + (0.02 - 1e-4) * (1.0 / (1.0 + 6f64.exp())), 1e-12);
        assert!((s.beta[500] - (1e-4 + 0.5 * (0.02 - 1e-4))).abs() < 1e-4);
    }

    #[test]
    fn zero_terminal_snr_rescale() {
        let base = NoiseSchedule::linear(1000, 1e-4, 0.02);
        let z = base.rescale_zero_terminal_snr();
        assert_eq!(z.alpha_bar[999], 0.0);
        assert_eq!(z.snr(999), 0.0);
        close(z.alpha_bar[0], base.alpha_bar[0], 1e-12);
        assert!(z.alpha_bar.windows(2).all(|w| w[1] < w[0]));
        // β_{T−1} = 1 − 0/ᾱ_{T−2} = 1.
        assert_eq!(z.beta[999], 1.0);
    }

    #[test]
    fn q_sample_mixes_signal_and_noise() {
        let s = NoiseSchedule::linear(10, 0.1, 0.5);
        let x0 = Tensor::from_vec(&[2, 1], vec![1.0, 1.0]);
        let eps = Tensor::from_vec(&[2, 1], vec![0.0, 1.0]);
        let xt = s.q_sample(&x0, &[0, 9], &eps);
        close(xt.data()[0] as f64, 0.9f64.sqrt(), 1e-6);
        let ab = s.alpha_bar[9];
        close(xt.data()[1] as f64, ab.sqrt() + (1.0 - ab).sqrt(), 1e-6);
    }
}
