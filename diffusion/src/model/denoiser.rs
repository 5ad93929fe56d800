//! What every denoiser is to the rest of the crate: a network of (x_t, t). The losses, the samplers and the
//! training loop take any [`Denoiser`]: the MLP for 2-D points, the U-Net, or a U-Net wrapped for class
//! conditioning and guidance.

use autograd::{ParamStore, Tape, Var};
use rand::rngs::StdRng;

/// A network that looks at x_t at timesteps t (one per batch row) and predicts ε, x_0 or v, whichever it
/// was trained for ([`crate::process::objective::Prediction`]); the functions in this module use ε.
pub trait Denoiser: Sync {
    fn predict(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize]) -> Var;

    /// The prediction in training mode: `rng` drives whatever is random in training only (dropout).
    fn predict_train(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize], rng: &mut StdRng) -> Var {
        let _ = rng;
        self.predict(tape, params, x_t, t)
    }
}

/// A borrowed denoiser is one too (so that `&model` can stand wherever a model is taken by value).
impl<D: Denoiser + ?Sized> Denoiser for &D {
    fn predict(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize]) -> Var {
        (**self).predict(tape, params, x_t, t)
    }

    fn predict_train(&self, tape: &mut Tape, params: &ParamStore, x_t: &Var, t: &[usize], rng: &mut StdRng) -> Var {
        (**self).predict_train(tape, params, x_t, t, rng)
    }
}
