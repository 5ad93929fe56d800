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

    /// SiLU(group_norm(x)) as one fused op ([`Tape::group_norm_silu`]), equal to the two in sequence.
    #[track_caller]
    pub fn forward_silu(&self, tape: &mut Tape, params: &ParamStore, x: &Var) -> Var {
        let (w, b) = (tape.param(params, self.weight), tape.param(params, self.bias));
        tape.group_norm_silu(x, self.num_groups, &w, &b, self.eps)
    }
}

/// A lookup table of learned vectors, one per index (class labels, tokens), initialized N(0, 1) as
/// `torch.nn.Embedding`. The lookup is written as a product with one-hot rows,
/// ```text
/// y = onehot(indices) · W      [B, num] · [num, dim] → [B, dim]
/// ∂L/∂W = onehot(indices)ᵀ · ∂L/∂y   (each row of ∂L/∂y added to the row of W it came from)
/// ```
/// so the matmul's backward is the scatter-add an embedding needs; with a few dozen entries the product
/// costs nothing.
#[derive(Clone, Debug)]
pub struct Embedding {
    pub weight: ParamId,
    pub num: usize,
    pub dim: usize,
}

impl Embedding {
    /// Adds `{name}.weight` [num, dim].
    pub fn new(params: &mut ParamStore, name: &str, num: usize, dim: usize, rng: &mut StdRng) -> Embedding {
        let weight = params.add(format!("{name}.weight"), crate::Tensor::randn(&[num, dim], rng));
        Embedding { weight, num, dim }
    }

    /// The rows of the table at `indices`: [indices.len(), dim].
    #[track_caller]
    pub fn forward(&self, tape: &mut Tape, params: &ParamStore, indices: &[usize]) -> Var {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.num) {
            panic!("Embedding: index {bad} out of range for a table of {} entries", self.num);
        }
        let mut one_hot = vec![0.0; indices.len() * self.num];
        indices.iter().enumerate().for_each(|(b, &i)| one_hot[b * self.num + i] = 1.0);
        let one_hot = tape.constant(crate::Tensor::from_vec(&[indices.len(), self.num], one_hot));
        let w = tape.param(params, self.weight);
        tape.matmul(&one_hot, &w)
    }
}

#[cfg(test)]
mod embedding_tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn lookup_returns_rows_and_backward_adds_into_them() {
        let mut params = ParamStore::new();
        let emb = Embedding::new(&mut params, "classes", 4, 3, &mut StdRng::seed_from_u64(0));
        let table = params.get(emb.weight).clone();
        let mut tape = Tape::new();
        let y = emb.forward(&mut tape, &params, &[2, 0, 2]);
        assert_eq!(&y.value().data()[..3], &table.data()[6..9]);
        assert_eq!(&y.value().data()[3..6], &table.data()[..3]);
        let loss = tape.sum_all(&y);
        let grads = tape.backward(&loss);
        // Row 2 was used twice, row 0 once, rows 1 and 3 never.
        assert_eq!(grads.param(emb.weight).unwrap().data(), &[1., 1., 1., 0., 0., 0., 2., 2., 2., 0., 0., 0.]);
    }

    #[test]
    #[should_panic(expected = "Embedding: index 4 out of range for a table of 4 entries")]
    fn out_of_range_index_panics_with_the_sizes() {
        let mut params = ParamStore::new();
        let emb = Embedding::new(&mut params, "classes", 4, 3, &mut StdRng::seed_from_u64(0));
        emb.forward(&mut Tape::new(), &params, &[4]);
    }
}
