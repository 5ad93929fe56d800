//! Steering a trained model without retraining it: start from an image (img2img), keep part of an image
//! (inpainting), or walk between two noises (interpolation). All work with any sampler and any denoiser,
//! guided ones included.
//!
//! ```text
//! img2img (SDEdit, Meng et al. 2022): x_τ = √ᾱ_τ x_image + √(1 − ᾱ_τ) ε with τ at `strength` of the sampler's
//!     steps, then sample from τ down. Strength 0 returns the image, 1 ignores it; in between the result keeps
//!     the image's layout and takes the model's style.
//! inpainting (Lugmayr et al. 2022, "RePaint"): after every step t → s, the known pixels are replaced by the
//!     known image noised to s,  x_s ← m ⊙ q_sample(x_known, s) + (1 − m) ⊙ x_s  (m = 1 where known).
//!     With `resample` r > 1, each step is repeated r times, going back from s to t by the forward process,
//!     x_t = √(ᾱ_t/ᾱ_s) x_s + √(1 − ᾱ_t/ᾱ_s) z, so the unknown part can agree with the known part (RePaint's
//!     "resampling", with jump length 1).
//! interpolation: spherical (Shoemake 1985), since Gaussian noise lives near a sphere and a straight line
//!     between two noises passes through low-norm points the model never saw:
//!     slerp(a, b, α) = sin((1 − α)θ)/sin θ · a + sin(αθ)/sin θ · b,   cos θ = ⟨a, b⟩ / (‖a‖ ‖b‖)
//! ```

use autograd::{ParamStore, Tensor};
use rand::rngs::StdRng;

use crate::model::denoiser::Denoiser;
use crate::process::objective::Prediction;
use crate::process::schedule::NoiseSchedule;
use crate::sampling::sampler::{sampler_timesteps, Method, SamplerConfig, Stepper};

/// SDEdit: `image` [B, C, H, W] noised to `strength` ∈ [0, 1] of the sampler's steps, then denoised.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub fn img2img(
    model: &impl Denoiser,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    prediction: Prediction,
    config: &SamplerConfig,
    image: &Tensor,
    strength: f32,
    rng: &mut StdRng,
) -> Tensor {
    assert!((0.0..=1.0).contains(&strength), "img2img: strength {strength} must be in [0, 1]");
    let ts = sampler_timesteps(schedule, config);
    // As diffusers: the last ⌊steps · strength⌋ of the sampler's timesteps.
    let keep = ((ts.len() as f32 * strength) as usize).min(ts.len());
    if keep == 0 {
        return image.clone();
    }
    let ts = &ts[ts.len() - keep..];
    let noise = Tensor::randn(image.shape(), rng);
    let x = schedule.q_sample(image, &vec![ts[0]; image.shape()[0]], &noise);
    Stepper::new(model, params, schedule, prediction, config).run(ts, x, rng, |_, _| {})
}

/// What to keep when inpainting: the known image and a mask of the same shape, 1 where a pixel is known.
pub struct Inpaint<'a> {
    pub known: &'a Tensor,
    pub mask: &'a Tensor,
    /// RePaint's resampling: times each step is done (1 = plain replacement).
    pub resample: usize,
}

/// Fills the unknown pixels of `inpaint.known` (mask 0) to agree with the known ones (mask 1).
#[track_caller]
pub fn inpaint(
    model: &impl Denoiser,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    prediction: Prediction,
    config: &SamplerConfig,
    inpaint: &Inpaint,
    rng: &mut StdRng,
) -> Tensor {
    let (known, mask) = (inpaint.known, inpaint.mask);
    assert_eq!(known.shape(), mask.shape(), "inpaint: known image {:?} and mask {:?}", known.shape(), mask.shape());
    assert!(inpaint.resample >= 1, "inpaint: resample must be at least 1");
    assert!(
        inpaint.resample == 1 || config.method != Method::DpmSolver2M,
        "inpaint: resampling needs a one-step method (DDPM or DDIM); DPM-Solver++(2M) keeps a history"
    );
    let ts = sampler_timesteps(schedule, config);
    let b = known.shape()[0];
    // x_s ← m ⊙ known noised to s + (1 − m) ⊙ x_s; at the end (s = None), the known pixels themselves.
    let paste = |x: &Tensor, s: Option<usize>, rng: &mut StdRng| -> Tensor {
        let known_s = match s {
            Some(s) => schedule.q_sample(known, &vec![s; b], &Tensor::randn(known.shape(), rng)),
            None => known.clone(),
        };
        let data = (0..x.numel())
            .map(|i| {
                let m = mask.data()[i];
                m * known_s.data()[i] + (1.0 - m) * x.data()[i]
            })
            .collect();
        Tensor::from_vec(x.shape(), data)
    };
    let mut stepper = Stepper::new(model, params, schedule, prediction, config);
    let mut x = paste(&Tensor::randn(known.shape(), rng), Some(ts[0]), rng);
    for (i, &t) in ts.iter().enumerate() {
        let next = ts.get(i + 1).copied();
        for round in 0..inpaint.resample {
            let x_s = paste(&stepper.step(t, next, &x, rng), next, rng);
            match next {
                Some(s) if round + 1 < inpaint.resample => {
                    // Back from s to t along the forward process.
                    let ratio = schedule.alpha_bar[t] / schedule.alpha_bar[s];
                    let (a, c) = (ratio.sqrt() as f32, (1.0 - ratio).sqrt() as f32);
                    let z = Tensor::randn(x_s.shape(), rng);
                    x = Tensor::from_vec(
                        x_s.shape(),
                        x_s.data().iter().zip(z.data()).map(|(&v, &n)| a * v + c * n).collect(),
                    );
                }
                _ => {
                    x = x_s;
                    break;
                }
            }
        }
    }
    x
}

/// Spherical interpolation between `a` and `b` (same shape) at α ∈ [0, 1] (see the module doc); falls back to
/// the straight line when they are (nearly) parallel.
#[track_caller]
pub fn slerp(a: &Tensor, b: &Tensor, alpha: f32) -> Tensor {
    assert_eq!(a.shape(), b.shape(), "slerp: shapes {:?} and {:?}", a.shape(), b.shape());
    let dot: f64 = a.data().iter().zip(b.data()).map(|(&x, &y)| x as f64 * y as f64).sum();
    let norm = |t: &Tensor| t.data().iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let cos = (dot / (norm(a) * norm(b)).max(f64::MIN_POSITIVE)).clamp(-1.0, 1.0);
    let theta = cos.acos();
    let alpha = alpha as f64;
    let (wa, wb) = if theta.sin().abs() < 1e-6 {
        (1.0 - alpha, alpha)
    } else {
        (((1.0 - alpha) * theta).sin() / theta.sin(), (alpha * theta).sin() / theta.sin())
    };
    let data = a.data().iter().zip(b.data()).map(|(&x, &y)| (wa * x as f64 + wb * y as f64) as f32).collect();
    Tensor::from_vec(a.shape(), data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::sampler::Spacing;
    use autograd::{Tape, Var};
    use rand::SeedableRng;

    /// A denoiser that knows the data is exactly `target` (every pixel): it predicts x̂_0 = target.
    struct Knows(Tensor);

    impl Denoiser for Knows {
        fn predict(&self, _: &mut Tape, _: &ParamStore, x_t: &Var, _: &[usize]) -> Var {
            let b = x_t.shape()[0];
            let row = self.0.numel();
            let data = (0..b).flat_map(|_| self.0.data().iter().copied()).collect::<Vec<_>>();
            assert_eq!(data.len(), b * row);
            Var::constant(Tensor::from_vec(x_t.shape(), data))
        }
    }

    fn ddim(steps: usize) -> SamplerConfig {
        SamplerConfig { method: Method::Ddim { eta: 0.0 }, steps, spacing: Spacing::Linspace, clip_x0: None }
    }

    #[test]
    fn img2img_strength_zero_keeps_the_image_and_one_follows_the_model() {
        let schedule = NoiseSchedule::linear_scaled(100);
        let target = Tensor::full(&[1, 4], 0.5);
        let image = Tensor::from_vec(&[1, 1, 1, 4], vec![-1.0, 0.0, 1.0, 0.25]);
        let model = Knows(target);
        let mut rng = StdRng::seed_from_u64(0);
        let p = ParamStore::new();
        let same = img2img(&model, &p, &schedule, Prediction::Sample, &ddim(10), &image, 0.0, &mut rng);
        assert_eq!(same.data(), image.data());
        let full = img2img(&model, &p, &schedule, Prediction::Sample, &ddim(10), &image, 1.0, &mut rng);
        assert!(full.data().iter().all(|&v| (v - 0.5).abs() < 1e-5), "{:?}", full.data());
    }

    #[test]
    fn inpainting_keeps_the_known_pixels_and_fills_the_rest_from_the_model() {
        let schedule = NoiseSchedule::linear_scaled(100);
        let model = Knows(Tensor::full(&[1, 4], 0.5));
        let known = Tensor::from_vec(&[1, 1, 1, 4], vec![-1.0, -1.0, 0.0, 0.0]);
        let mask = Tensor::from_vec(&[1, 1, 1, 4], vec![1.0, 1.0, 0.0, 0.0]);
        let p = ParamStore::new();
        for (method, resample) in [(Method::Ddim { eta: 0.0 }, 1), (Method::Ddim { eta: 0.0 }, 3), (Method::Ddpm, 2)] {
            let config = SamplerConfig { method, ..ddim(8) };
            let task = Inpaint { known: &known, mask: &mask, resample };
            let out = inpaint(&model, &p, &schedule, Prediction::Sample, &config, &task, &mut StdRng::seed_from_u64(1));
            assert_eq!(&out.data()[..2], &[-1.0, -1.0], "known pixels are kept exactly");
            for &v in &out.data()[2..] {
                assert!((v - 0.5).abs() < 1e-4, "{method:?} r={resample}: {:?}", out.data());
            }
        }
    }

    #[test]
    fn slerp_ends_at_its_endpoints_and_keeps_the_norm_between_orthogonal_unit_vectors() {
        let a = Tensor::from_vec(&[2], vec![1.0, 0.0]);
        let b = Tensor::from_vec(&[2], vec![0.0, 1.0]);
        assert_eq!(slerp(&a, &b, 0.0).data(), a.data());
        assert!(slerp(&a, &b, 1.0).data().iter().zip(b.data()).all(|(x, y)| (x - y).abs() < 1e-6));
        let mid = slerp(&a, &b, 0.5);
        let half = std::f32::consts::FRAC_1_SQRT_2;
        assert!((mid.data()[0] - half).abs() < 1e-6 && (mid.data()[1] - half).abs() < 1e-6);
        // Parallel vectors: the straight line.
        let twice = Tensor::from_vec(&[2], vec![2.0, 0.0]);
        assert!((slerp(&a, &twice, 0.5).data()[0] - 1.5).abs() < 1e-6);
    }
}
