//! Parameter initialization, matching PyTorch's defaults so that a model here starts where its PyTorch twin
//! would.
//!
//! # Reference
//! `torch.nn.Linear.reset_parameters` and `torch.nn.Conv2d.reset_parameters`: the weight is
//! `kaiming_uniform_(w, a=√5)` and the bias `uniform_(−1/√fan_in, 1/√fan_in)`.
//!
//! ```text
//! kaiming_uniform(a):  gain = √(2 / (1 + a²)),  bound = gain · √(3 / fan_in),  w ~ U(−bound, bound)
//! with a = √5:         gain = √(1/3),           bound = 1/√fan_in
//! fan_in = in_features (linear) or c_in · k_h · k_w (conv)
//! ```
//! He et al. 2015, "Delving Deep into Rectifiers", §2.2.

use rand::rngs::StdRng;

use crate::tensor::Tensor;

/// He (Kaiming) uniform initialization with negative slope `a`: U(−b, b), b = √(2/(1+a²)) · √(3/fan_in).
pub fn kaiming_uniform(shape: &[usize], fan_in: usize, a: f32, rng: &mut StdRng) -> Tensor {
    let gain = (2.0 / (1.0 + a * a)).sqrt();
    let bound = gain * (3.0 / fan_in as f32).sqrt();
    Tensor::rand_uniform(shape, -bound, bound, rng)
}

/// PyTorch's default weight init for `Linear` and `Conv2d`: `kaiming_uniform` with a = √5, so
/// U(−1/√fan_in, 1/√fan_in). `fan_in` is the product of all dimensions after the first.
pub fn default_weight(shape: &[usize], rng: &mut StdRng) -> Tensor {
    let fan_in: usize = shape[1..].iter().product();
    kaiming_uniform(shape, fan_in, 5f32.sqrt(), rng)
}

/// PyTorch's default bias init for `Linear` and `Conv2d`: U(−1/√fan_in, 1/√fan_in).
pub fn default_bias(size: usize, fan_in: usize, rng: &mut StdRng) -> Tensor {
    let bound = 1.0 / (fan_in as f32).sqrt();
    Tensor::rand_uniform(&[size], -bound, bound, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn default_weight_bound_is_one_over_sqrt_fan_in() {
        // Linear(400 → 30): fan_in = 400, bound = 1/20. The max of 12,000 uniform draws lies within 0.1% of it.
        let w = default_weight(&[30, 400], &mut StdRng::seed_from_u64(0));
        let max = w.data().iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max <= 0.05 && max > 0.0499, "max |w| = {max}");
        // Variance of U(−b, b) is b²/3.
        let var = w.data().iter().map(|v| v * v).sum::<f32>() / w.numel() as f32;
        assert!((var - 0.0025 / 3.0).abs() < 0.00005, "var {var}");
        // Conv [8, 3, 3, 3]: fan_in = 27.
        let c = default_weight(&[8, 3, 3, 3], &mut StdRng::seed_from_u64(1));
        let max = c.data().iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max <= 1.0 / 27f32.sqrt());
    }

    #[test]
    fn default_bias_bound() {
        let b = default_bias(1000, 16, &mut StdRng::seed_from_u64(0));
        assert!(b.data().iter().all(|v| v.abs() <= 0.25));
        assert!(b.data().iter().any(|v| v.abs() > 0.24));
    }
}
