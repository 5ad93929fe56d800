//! Class conditioning and classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion
//! Guidance").
//!
//! One network learns both the conditional and the unconditional model: in training, each label is replaced
//! by the "no class" label with probability p_uncond (10%). In sampling, the two predictions are mixed,
//! ```text
//! ε̃ = ε(x_t, ∅) + w · (ε(x_t, c) − ε(x_t, ∅))        w = 1: conditional; w > 1: more like class c, less varied
//! ```
//! (the paper's eq. 6 with w = 1 + its w). The mix is the same whatever the network predicts: x̂_0, ε̂ and v̂
//! are affine in each other for a fixed x_t, so mixing any of them mixes the others alike. Both predictions
//! come from one batch of 2B, [x_t; x_t] with labels [c; ∅].

use autograd::{ParamStore, Tape, Var};
use rand::rngs::StdRng;
use rand::RngExt;

use crate::model::denoiser::Denoiser;
use crate::model::unet::UNet;

/// The U-Net with one class label per batch row, for training: labels are dropped to "no class" with
/// probability `label_dropout` in [`Denoiser::predict_train`]. With `labels` = `None` (an unconditional
/// model) it is the plain U-Net.
pub struct Conditional<'a> {
    pub model: &'a UNet,
    pub labels: Option<&'a [usize]>,
    pub label_dropout: f32,
}

impl Denoiser for Conditional<'_> {
    fn predict(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize]) -> Var {
        self.model.forward_at(tape, params, x_t, t, self.labels, None)
    }

    fn predict_train(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize], rng: &mut StdRng) -> Var {
        let null = self.model.config.num_classes;
        let dropped: Option<Vec<usize>> = self.labels.map(|labels| {
            labels.iter().map(|&c| if rng.random::<f32>() < self.label_dropout { null } else { c }).collect()
        });
        self.model.forward_at(tape, params, x_t, t, dropped.as_deref(), Some(rng))
    }
}

/// The guidance scales w a flag or config may ask for: finite, and wide enough for any use (w = 7.5 is
/// common for text-to-image models; w = 0 is unconditional, w < 0 steers away from the class).
pub const SCALE: std::ops::RangeInclusive<f32> = -100.0..=100.0;

/// The U-Net guided toward one class per batch row, for sampling with any sampler.
pub struct Guided<'a> {
    pub model: &'a UNet,
    pub labels: Vec<usize>,
    /// w: 0 = unconditional, 1 = conditional, above 1 = guided.
    pub scale: f32,
}

impl Denoiser for Guided<'_> {
    #[track_caller]
    fn predict(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize]) -> Var {
        let b = x_t.shape()[0];
        assert_eq!(self.labels.len(), b, "Guided: {} labels for a batch of {b}", self.labels.len());
        if self.scale == 1.0 {
            return self.model.forward_at(tape, params, x_t, t, Some(&self.labels), None);
        }
        let null = self.model.config.num_classes;
        let both_x = tape.concat(&[x_t, x_t], 0);
        let both_t: Vec<usize> = t.iter().chain(t).copied().collect();
        let both_labels: Vec<usize> = self.labels.iter().copied().chain(std::iter::repeat_n(null, b)).collect();
        let out = self.model.forward_at(tape, params, &both_x, &both_t, Some(&both_labels), None);
        let conditional = tape.narrow(&out, 0, 0, b);
        let unconditional = tape.narrow(&out, 0, b, b);
        let difference = tape.sub(&conditional, &unconditional);
        let push = tape.mul_scalar(&difference, self.scale);
        tape.add(&unconditional, &push)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::unet::UNetConfig;
    use autograd::Tensor;
    use rand::SeedableRng;

    fn model() -> (UNet, ParamStore) {
        let mut params = ParamStore::new();
        let model = UNet::new(UNetConfig { num_classes: 3, ..UNetConfig::tiny() }, &mut params, 0);
        (model, params)
    }

    #[test]
    fn guidance_mixes_the_conditional_and_unconditional_predictions() {
        let (model, params) = model();
        let x = Var::constant(Tensor::randn(&[2, 1, 8, 8], &mut StdRng::seed_from_u64(1)));
        let t = [10, 150];
        let mut tape = Tape::inference();
        let run = |labels: Vec<usize>, scale: f32, tape: &mut Tape| {
            Guided { model: &model, labels, scale }.predict(tape, &params, &x, &t).into_value()
        };
        let conditional = run(vec![0, 2], 1.0, &mut tape);
        let unconditional = run(vec![3, 3], 1.0, &mut tape);
        assert!(conditional.data() != unconditional.data(), "the label changes the prediction");
        let guided = run(vec![0, 2], 3.0, &mut tape);
        for i in 0..guided.numel() {
            let (c, u) = (conditional.data()[i], unconditional.data()[i]);
            let expected = u + 3.0 * (c - u);
            assert!((guided.data()[i] - expected).abs() < 1e-4 * (1.0 + expected.abs()), "{i}");
        }
        let none = run(vec![0, 2], 0.0, &mut tape);
        for (a, b) in none.data().iter().zip(unconditional.data()) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn label_dropout_one_is_unconditional_and_zero_is_conditional() {
        let (model, params) = model();
        let x = Var::constant(Tensor::randn(&[2, 1, 8, 8], &mut StdRng::seed_from_u64(1)));
        let labels = [0, 2];
        for (p, used) in [(0.0, [0, 2]), (1.0, [3, 3])] {
            let c = Conditional { model: &model, labels: Some(&labels), label_dropout: p };
            let mut rng = StdRng::seed_from_u64(2);
            let out = c.predict_train(&mut Tape::inference(), &params, &x, &[5, 9], &mut rng).into_value();
            let reference = model.forward(&mut Tape::inference(), &params, &x, &[5.0, 9.0], Some(&used), None);
            assert_eq!(out.data(), reference.value().data(), "label dropout {p}");
        }
    }

    #[test]
    #[should_panic(expected = "UNet: class labels given to a model without classes")]
    fn labels_for_an_unconditional_model_panic() {
        let mut params = ParamStore::new();
        let model = UNet::new(UNetConfig::tiny(), &mut params, 0);
        let x = Var::constant(Tensor::zeros(&[1, 1, 8, 8]));
        model.forward(&mut Tape::inference(), &params, &x, &[1.0], Some(&[0]), None);
    }
}
