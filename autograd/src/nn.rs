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

/// 2-D convolution layer, NCHW, initialized as `torch.nn.Conv2d` (weight [c_out, c_in, k, k], bias [c_out]).
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: ParamId,
    pub bias: Option<ParamId>,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    /// Adds `{name}.weight` and `{name}.bias`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        params: &mut ParamStore,
        name: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        rng: &mut StdRng,
    ) -> Conv2d {
        let weight = params.add(format!("{name}.weight"), init::default_weight(&[c_out, c_in, kernel, kernel], rng));
        let bias = params.add(format!("{name}.bias"), init::default_bias(c_out, c_in * kernel * kernel, rng));
        Conv2d { weight, bias: Some(bias), stride, padding }
    }

    #[track_caller]
    pub fn forward(&self, tape: &mut Tape, params: &ParamStore, x: &Var) -> Var {
        let w = tape.param(params, self.weight);
        let b = self.bias.map(|b| tape.param(params, b));
        tape.conv2d(x, &w, b.as_ref(), self.stride, self.padding)
    }
}

/// Group normalization layer with a per-channel affine (γ = 1, β = 0 at start, as `torch.nn.GroupNorm`).
#[derive(Clone, Debug)]
pub struct GroupNorm {
    pub weight: ParamId,
    pub bias: ParamId,
    pub num_groups: usize,
    pub eps: f32,
}

impl GroupNorm {
    /// Adds `{name}.weight` and `{name}.bias`, eps = 1e-5 (PyTorch's default).
    pub fn new(params: &mut ParamStore, name: &str, num_groups: usize, channels: usize) -> GroupNorm {
        let weight = params.add(format!("{name}.weight"), crate::Tensor::ones(&[channels]));
        let bias = params.add(format!("{name}.bias"), crate::Tensor::zeros(&[channels]));
        GroupNorm { weight, bias, num_groups, eps: 1e-5 }
    }

    #[track_caller]
    pub fn forward(&self, tape: &mut Tape, params: &ParamStore, x: &Var) -> Var {
        let (w, b) = (tape.param(params, self.weight), tape.param(params, self.bias));
        tape.group_norm(x, self.num_groups, &w, &b, self.eps)
    }
}
