//! Sinusoidal timestep embedding (Vaswani et al. 2017 §3.5, as used for diffusion timesteps by Ho et al.
//! 2020 and the diffusers `get_timestep_embedding` with `flip_sin_to_cos=True`).
//!
//! ```text
//! half = dim/2,  freq_i = exp(−ln(max_period) · i / half),  i = 0 … half−1
//! emb(t) = [cos(t·freq_0), …, cos(t·freq_{half−1}), sin(t·freq_0), …, sin(t·freq_{half−1})]
//! ```
//! The cos half comes first. The embedding is a fixed function (no parameters); a model follows it with
//! learned layers. [`timestep_embedding_with`] has diffusers' two other options: the sin half first
//! (`flip_sin_to_cos = false`) and `freq_shift` s, which divides by half − s instead of half.

use autograd::Tensor;

/// Embeds each timestep as a `dim`-vector: [len(t), dim], cos half first. `dim` must be even.
#[track_caller]
pub fn timestep_embedding(t: &[f32], dim: usize, max_period: f32) -> Tensor {
    timestep_embedding_with(t, dim, max_period, true, 0.0)
}

/// [`timestep_embedding`] with the cos half first or not, and freq_i = exp(−ln(max_period)·i/(half − shift)).
#[track_caller]
pub fn timestep_embedding_with(t: &[f32], dim: usize, max_period: f32, flip_sin_to_cos: bool, shift: f32) -> Tensor {
    assert!(dim.is_multiple_of(2) && dim > 0, "timestep_embedding: dim {dim} must be even and positive");
    let half = dim / 2;
    assert!(shift < half as f32, "timestep_embedding: shift {shift} must be below half the dim {dim}");
    let freqs: Vec<f32> = (0..half).map(|i| (-(max_period.ln()) * i as f32 / (half as f32 - shift)).exp()).collect();
    let mut out = Vec::with_capacity(t.len() * dim);
    for &tb in t {
        let cos = freqs.iter().map(|f| (tb * f).cos());
        let sin = freqs.iter().map(|f| (tb * f).sin());
        if flip_sin_to_cos {
            out.extend(cos.chain(sin));
        } else {
            out.extend(sin.chain(cos));
        }
    }
    Tensor::from_vec(&[t.len(), dim], out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cos_half_then_sin_half() {
        let e = timestep_embedding(&[0.0, 3.0], 8, 10000.0);
        assert_eq!(e.shape(), &[2, 8]);
        // t = 0: cos 0 = 1 on the first half, sin 0 = 0 on the second.
        assert_eq!(&e.data()[..8], &[1., 1., 1., 1., 0., 0., 0., 0.]);
        // freq_0 = 1, freq_1 = 10000^(−1/4) = 0.1.
        assert!((e.at(&[1, 0]) - 3f32.cos()).abs() < 1e-6);
        assert!((e.at(&[1, 4]) - 3f32.sin()).abs() < 1e-6);
        assert!((e.at(&[1, 5]) - 0.3f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn sin_half_first_and_shifted_frequencies() {
        let e = timestep_embedding_with(&[3.0], 8, 10000.0, false, 1.0);
        // half − shift = 3: freq_1 = 10000^(−1/3).
        let f1 = 10000f32.powf(-1.0 / 3.0);
        assert!((e.at(&[0, 0]) - 3f32.sin()).abs() < 1e-6);
        assert!((e.at(&[0, 1]) - (3.0 * f1).sin()).abs() < 1e-5);
        assert!((e.at(&[0, 5]) - (3.0 * f1).cos()).abs() < 1e-5);
    }
}
