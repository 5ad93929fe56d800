//! Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion
//! Models", Algorithm 2), on this project's discrete timesteps.
//!
//! A student of N deterministic DDIM steps visits the trailing timesteps s_0 > s_1 > … > s_{N−1} (and then
//! the clean image); its teacher takes 2N steps over the trailing timesteps of 2N, which are the student's
//! and one midpoint m_i inside each of its intervals (trailing spacing halves exactly: the 2N grid's even
//! points are the N grid). With α = √ᾱ, σ = √(1 − ᾱ), each training example is
//! ```text
//! x ~ data,  i ~ U{0 … N−1},  t = s_i,  t'' = s_{i+1} (or clean: α'' = 1, σ'' = 0),  ε ~ N(0, I)
//! z_t   = α_t x + σ_t ε
//! z_t'  = DDIM_teacher(z_t,  t  → m_i)        two teacher steps, x̂ clipped as the teacher is sampled
//!                                              (a trained model's to [−1, 1], a student's not: `teacher_clip`)
//! z_t'' = DDIM_teacher(z_t', m_i → t'')
//! x̃     = (z_t'' − (σ_t''/σ_t) z_t) / (α_t'' − (σ_t''/σ_t) α_t)      the x̂ with which ONE DDIM step from
//!                                                                     z_t lands exactly on z_t''
//! ε̃     = (z_t − α_t x̃)/σ_t,   the student's target o* = the prediction of (x̃, ε̃) (ε, x₀ or v)
//! loss  = w_t · ‖o_student(z_t, t) − o*‖²,   w_t = max(SNR_t, 1) in x space ("truncated SNR", §4),
//!         carried to the student's output space: ε: max(SNR, 1)/SNR, x₀: max(SNR, 1), v: max(SNR, 1)/(1 + SNR)
//! ```
//! With `factor` k > 2 (not in the paper) the teacher takes k steps over the trailing grid of kN from t to t''
//! ([`Progressive::rollout`]) and a round divides N by k: 16 → 4 in one round instead of two.
//! The student starts as a copy of its teacher; [`Progressive`] is the [`Objective`] the training loop
//! minimises, so a round is an ordinary training run ([`crate::training::train::train_with`]).

use std::collections::BTreeMap;

use autograd::{ParamStore, Tape, Tensor, Var};
use rand::rngs::StdRng;
use rand::RngExt;

use crate::model::denoiser::Denoiser;
use crate::process::objective::{weighted_mse, Prediction};
use crate::process::schedule::NoiseSchedule;
use crate::sampling::sampler::{estimate, timesteps, Spacing};
use crate::training::train::{Objective, TrainConfig};

/// The [`Objective`] of one round: the student learns `steps` DDIM steps from `teacher`'s 2 · `steps`.
pub struct Progressive<'a> {
    pub teacher: &'a dyn Denoiser,
    pub teacher_params: &'a ParamStore,
    pub prediction: Prediction,
    /// The student's step count N.
    pub steps: usize,
    /// The teacher's steps per student step: 2 in Salimans & Ho (a round halves N); 4 makes one round of
    /// two, its target four teacher steps.
    pub factor: usize,
    /// The clip of the teacher's x̂ (1: images in [−1, 1]).
    pub clip: Option<f32>,
}

/// The student's timesteps (trailing spacing of `steps`, descending) and the teacher's (of `factor` ·
/// `steps`), with `teacher[factor · i] = student[i]`.
pub fn grids(schedule: &NoiseSchedule, steps: usize, factor: usize) -> (Vec<usize>, Vec<usize>) {
    let student = timesteps(schedule, steps, Spacing::Trailing);
    let teacher = timesteps(schedule, factor * steps, Spacing::Trailing);
    assert!(
        teacher.len() == factor * student.len() && student.iter().enumerate().all(|(i, &s)| teacher[factor * i] == s),
        "progressive distillation: the trailing grid of {} steps of a T = {} schedule does not contain that of {steps}",
        factor * steps,
        schedule.steps()
    );
    (student, teacher)
}

/// The clip of a teacher's x̂ in its two steps, as that teacher is sampled, from the metadata of its weights:
/// a trained model's x̂ is an image, clipped to [−1, 1]; a student of an earlier round (`distill.method` =
/// `progressive`, which example 12 records) is sampled unclipped, because the x̂ it learned is whatever makes
/// its one step land where its teacher's two did, and clipping it would make its two steps in the target
/// differ from its own sampling.
pub fn teacher_clip(metadata: &BTreeMap<String, String>) -> Option<f32> {
    match metadata.get("distill.method").map(String::as_str) {
        Some(METHOD) => None,
        _ => Some(1.0),
    }
}

/// The `distill.method` a round's student records in its weights' metadata (read by [`teacher_clip`]).
pub const METHOD: &str = "progressive";

/// (α, σ) of timestep `t`, or of the clean image (1, 0).
fn alpha_sigma(schedule: &NoiseSchedule, t: Option<usize>) -> (f32, f32) {
    let ab = t.map_or(1.0, |t| schedule.alpha_bar[t]);
    (ab.sqrt() as f32, (1.0 - ab).sqrt() as f32)
}

/// The truncated-SNR weight max(SNR, 1) of an x-space loss, carried to the space of `prediction`'s output
/// ([`Prediction::x0_factor`]: ε 1/SNR, x₀ 1, v 1/(1 + SNR), flow 1/(1 + √SNR)²). For ε it grows as 1/SNR
/// at low SNR: infinite at SNR 0, where an ε-model carries no information about x (a zero-terminal-SNR
/// schedule needs a v-, x₀- or flow model to be distilled).
pub fn truncated_snr_weight(prediction: Prediction, snr: f64) -> f64 {
    snr.max(1.0) * prediction.x0_factor(snr)
}

/// x̃: the x̂ with which one DDIM step from z_t (α, σ) lands on z_t'' (α'', σ''), for one value.
/// ```text
/// z_t'' = α'' x̃ + σ'' (z_t − α x̃)/σ   ⇒   x̃ = (z_t'' − (σ''/σ) z_t) / (α'' − (σ''/σ) α)
/// ```
pub fn student_target(z_t: f32, z_next: f32, (a, s): (f32, f32), (a2, s2): (f32, f32)) -> f32 {
    let ratio = s2 / s;
    (z_next - ratio * z_t) / (a2 - ratio * a)
}

impl Progressive<'_> {
    /// One deterministic DDIM step of the teacher from z (row b at timestep `from[b]`) to `to[b]` (`None`:
    /// the clean image), its x̂ clipped.
    fn teacher_step(&self, schedule: &NoiseSchedule, z: &Tensor, from: &[usize], to: &[Option<usize>]) -> Tensor {
        let mut tape = Tape::inference();
        let input = tape.constant(self.prediction.network_input(schedule, z, from));
        let output = self.teacher.predict(&mut tape, self.teacher_params, &input, from);
        let row = z.numel() / from.len();
        let mut next = Vec::with_capacity(z.numel());
        for (b, (&t, &t2)) in from.iter().zip(to).enumerate() {
            let (a2, s2) = alpha_sigma(schedule, t2);
            let range = b * row..(b + 1) * row;
            for (&o, &zt) in output.value().data()[range.clone()].iter().zip(&z.data()[range]) {
                let (x0, eps) = estimate(self.prediction, o, zt, schedule.alpha_bar[t], self.clip);
                next.push(a2 * x0 + s2 * eps);
            }
        }
        Tensor::from_vec(z.shape(), next)
    }
}

impl Progressive<'_> {
    /// z_t'' of each row of `z_t`: the teacher's `factor` DDIM steps from the student's timestep `steps[b]`
    /// (an index into its grid) to its next, over teacher[factor·i] → teacher[factor·i + 1] → … → t''.
    pub fn rollout(&self, schedule: &NoiseSchedule, z_t: &Tensor, steps: &[usize]) -> Tensor {
        let (_, teacher) = grids(schedule, self.steps, self.factor);
        let mut from: Vec<usize> = steps.iter().map(|&i| teacher[self.factor * i]).collect();
        let mut z = z_t.clone();
        for j in 1..=self.factor {
            let to: Vec<Option<usize>> = steps.iter().map(|&i| teacher.get(self.factor * i + j).copied()).collect();
            z = self.teacher_step(schedule, &z, &from, &to);
            from = to.iter().map(|t| t.unwrap_or(0)).collect(); // `None` (the data) only after the last step
        }
        z
    }
}

impl Objective for Progressive<'_> {
    fn loss(
        &self,
        tape: &mut Tape,
        model: &dyn Denoiser,
        params: &ParamStore,
        schedule: &NoiseSchedule,
        _config: &TrainConfig,
        _step: usize,
        x_0: &Tensor,
        rng: &mut StdRng,
    ) -> Var {
        let (student, _) = grids(schedule, self.steps, self.factor);
        let batch = x_0.shape()[0];
        let row = x_0.numel() / batch;
        let steps: Vec<usize> = (0..batch).map(|_| rng.random_range(0..self.steps)).collect();
        let t: Vec<usize> = steps.iter().map(|&i| student[i]).collect();
        let end: Vec<Option<usize>> = steps.iter().map(|&i| student.get(i + 1).copied()).collect();
        let eps = Tensor::randn(x_0.shape(), rng);
        let z_t = schedule.q_sample(x_0, &t, &eps);
        let z_end = self.rollout(schedule, &z_t, &steps);

        let mut target = Vec::with_capacity(x_0.numel());
        let mut weights = Vec::with_capacity(batch);
        for b in 0..batch {
            let ((a, s), next) = (alpha_sigma(schedule, Some(t[b])), alpha_sigma(schedule, end[b]));
            let ab = schedule.alpha_bar[t[b]];
            let range = b * row..(b + 1) * row;
            for (&z, &z2) in z_t.data()[range.clone()].iter().zip(&z_end.data()[range]) {
                let x = student_target(z, z2, (a, s), next);
                target.push(self.prediction.target(x, (z - a * x) / s, ab));
            }
            weights.push(truncated_snr_weight(self.prediction, schedule.snr(t[b])) as f32);
        }
        let z_t = tape.constant(self.prediction.network_input(schedule, &z_t, &t));
        let target = tape.constant(Tensor::from_vec(x_0.shape(), target));
        let output = model.predict_train(tape, params, &z_t, &t, rng);
        weighted_mse(tape, &output, &target, &weights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::sampler::{Method, SamplerConfig, Stepper};
    use rand::SeedableRng;

    /// The exact denoiser of data that is one value `c` everywhere, predicting `prediction`'s target, plus
    /// `error`: DDIM with it lands on c in any number of steps, so two steps and one agree.
    struct PointMass {
        c: f32,
        prediction: Prediction,
        schedule: NoiseSchedule,
        error: f32,
    }

    impl Denoiser for PointMass {
        fn predict(&self, tape: &mut Tape, _: &ParamStore, x_t: &Var, t: &[usize]) -> Var {
            let row = x_t.value().numel() / t.len();
            let out = x_t.value().data().iter().enumerate().map(|(i, &input)| {
                let ab = self.schedule.alpha_bar[t[i / row]];
                let z = input / self.prediction.input_scale(ab); // flow matching's network sees z_t
                let eps = (z - ab.sqrt() as f32 * self.c) / (1.0 - ab).sqrt() as f32;
                self.prediction.target(self.c, eps, ab) + self.error
            });
            tape.constant(Tensor::from_vec(x_t.shape(), out.collect()))
        }
    }

    #[test]
    fn an_exact_teacher_gives_a_zero_loss_to_itself_and_not_to_a_wrong_student() {
        for prediction in [Prediction::Epsilon, Prediction::Sample, Prediction::Velocity, Prediction::Flow] {
            let schedule = match prediction {
                Prediction::Flow => NoiseSchedule::flow(1000),
                _ => NoiseSchedule::linear_scaled(1000),
            };
            let exact = |error| PointMass { c: 0.4, prediction, schedule: schedule.clone(), error };
            let teacher = exact(0.0);
            let params = ParamStore::new();
            let objective = Progressive {
                teacher: &teacher,
                teacher_params: &params,
                prediction,
                steps: 4,
                factor: 2,
                clip: Some(1.0),
            };
            let x_0 = Tensor::from_vec(&[8, 1, 2, 2], vec![0.4; 32]);
            let config = TrainConfig::new(1, 8, "unused");
            let loss = |student: &PointMass| {
                let mut tape = Tape::new();
                let rng = &mut StdRng::seed_from_u64(3);
                objective.loss(&mut tape, student, &params, &schedule, &config, 0, &x_0, rng).value().item()
            };
            let (same, wrong) = (loss(&exact(0.0)), loss(&exact(0.01)));
            assert!(same < 1e-6, "{prediction:?}: {same}");
            assert!(wrong > 1e-5, "{prediction:?}: {wrong}");
        }
    }

    #[test]
    fn the_rollout_is_the_teachers_own_ddim_over_its_grid() {
        // A teacher that is not exact (its output 0.05 off), so that its steps depend on where they go: the
        // target's rollout from each student timestep must be the sampler's DDIM over the teacher's grid there.
        let schedule = NoiseSchedule::flow(1000);
        let prediction = Prediction::Flow;
        let teacher = PointMass { c: 0.4, prediction, schedule: schedule.clone(), error: 0.05 };
        let params = ParamStore::new();
        let z = Tensor::randn(&[2, 1, 2, 2], &mut StdRng::seed_from_u64(5));
        for (steps, factor, i, grid) in
            [(1, 4, 0, vec![999, 749, 499, 249]), (2, 2, 1, vec![499, 249]), (2, 4, 0, vec![999, 874, 749, 624])]
        {
            let objective =
                Progressive { teacher: &teacher, teacher_params: &params, prediction, steps, factor, clip: None };
            let rolled = objective.rollout(&schedule, &z, &[i, i]);
            let config =
                SamplerConfig { method: Method::Ddim { eta: 0.0 }, steps, spacing: Spacing::Trailing, clip_x0: None };
            let mut stepper = Stepper::new(&teacher, &params, &schedule, prediction, &config);
            let mut expected = z.clone();
            for (k, &t) in grid.iter().enumerate() {
                let next = grid
                    .get(k + 1)
                    .copied()
                    .or_else(|| timesteps(&schedule, steps, Spacing::Trailing).get(i + 1).copied());
                expected = stepper.step(t, next, &expected, &mut StdRng::seed_from_u64(0));
            }
            for (a, b) in rolled.data().iter().zip(expected.data()) {
                assert!((a - b).abs() < 1e-5, "{steps} steps, factor {factor}, row {i}: {a} against {b}");
            }
        }
    }

    #[test]
    fn a_trained_teacher_is_clipped_and_a_student_teacher_is_not() {
        let metadata = |entries: &[(&str, &str)]| entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(teacher_clip(&metadata(&[("prediction", "flow")])), Some(1.0));
        assert_eq!(teacher_clip(&metadata(&[("distill.method", "consistency")])), Some(1.0));
        assert_eq!(teacher_clip(&metadata(&[("distill.method", "progressive"), ("distill.steps", "8")])), None);
    }

    #[test]
    fn the_teacher_grid_is_the_student_grid_with_midpoints() {
        let schedule = NoiseSchedule::linear_scaled(1000);
        for steps in [1, 2, 4, 8, 16, 32, 64] {
            let (student, teacher) = grids(&schedule, steps, 2);
            assert_eq!((student.len(), teacher.len(), student[0]), (steps, 2 * steps, 999));
            assert!(teacher.windows(2).all(|w| w[0] > w[1]));
        }
        assert_eq!(grids(&schedule, 2, 2), (vec![999, 499], vec![999, 749, 499, 249]));
        assert_eq!(grids(&schedule, 1, 4).1, vec![999, 749, 499, 249]);
    }

    #[test]
    fn the_student_target_is_worked_by_hand() {
        // α = 0.6, σ = 0.8 at t; α'' = 0.8, σ'' = 0.6 at t''; z_t = 1.0; two teacher steps gave z_t'' = 0.5.
        // x̃ = (0.5 − 0.75 · 1.0)/(0.8 − 0.75 · 0.6) = −0.25/0.35.
        let x = student_target(1.0, 0.5, (0.6, 0.8), (0.8, 0.6));
        assert!((x - (-0.25 / 0.35)).abs() < 1e-6, "{x}");
        // One DDIM step with it lands on z_t'': α'' x̃ + σ'' (z_t − α x̃)/σ = 0.5.
        let landed = 0.8 * x + 0.6 * (1.0 - 0.6 * x) / 0.8;
        assert!((landed - 0.5).abs() < 1e-6, "{landed}");
        // To the clean image (α'' = 1, σ'' = 0) the target is the teacher's endpoint itself.
        assert_eq!(student_target(1.0, 0.3, (0.6, 0.8), (1.0, 0.0)), 0.3);
    }

    #[test]
    fn truncated_snr_is_the_same_loss_in_every_output_space() {
        // At SNR 4 (α = 0.894, σ = 0.447) an x error δ is an ε error 2δ and a v error δ/σ: the weighted
        // losses must agree.
        let snr: f64 = 4.0;
        let (a, s) = ((snr / (1.0 + snr)).sqrt(), (1.0 / (1.0 + snr)).sqrt());
        let dx = 0.1;
        let x_loss = snr.max(1.0) * dx * dx;
        let de = -dx * a / s; // x = (z − σε)/α
        let dv = -dx / s; // x = αz − σv
        assert!((truncated_snr_weight(Prediction::Epsilon, snr) * de * de - x_loss).abs() < 1e-12);
        assert!((truncated_snr_weight(Prediction::Velocity, snr) * dv * dv - x_loss).abs() < 1e-12);
        let du = -dx * (1.0 + snr.sqrt()); // x = z − t·u, t = 1/(1 + √SNR) = 1/3
        assert!((truncated_snr_weight(Prediction::Flow, snr) * du * du - x_loss).abs() < 1e-12);
        assert_eq!(truncated_snr_weight(Prediction::Sample, 0.25), 1.0);
    }
}
