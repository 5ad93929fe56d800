//! Layers: parameters plus the op that uses them. A layer holds only [`ParamId`]s; its `forward` binds them
//! to the step's tape, so the same layer serves training (recording tape) and sampling (inference tape).

use rand::rngs::StdRng;

use crate::init;
use crate::params::{ParamId, ParamStore};
use crate::tape::{Tape, Var};

/// Fully connected layer, y = x·Wᵀ + b, initialized as `torch.nn.Linear`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: ParamId,
    pub bias: Option<ParamId>,
    pub in_features: usize,
    pub out_features: usize,
}

impl Linear {
    /// Adds `{name}.weight` [out, in] and `{name}.bias` [out] to the store.
    pub fn new(
        params: &mut ParamStore,
        name: &str,
        in_features: usize,
        out_features: usize,
        rng: &mut StdRng,
    ) -> Linear {
        let weight = params.add(format!("{name}.weight"), init::default_weight(&[out_features, in_features], rng));
        let bias = params.add(format!("{name}.bias"), init::default_bias(out_features, in_features, rng));
        Linear { weight, bias: Some(bias), in_features, out_features }
    }

    #[track_caller]
    pub fn forward(&self, tape: &mut Tape, params: &ParamStore, x: &Var) -> Var {
        let w = tape.param(params, self.weight);
        let b = self.bias.map(|b| tape.param(params, b));
        tape.linear(x, &w, b.as_ref())
    }
}
