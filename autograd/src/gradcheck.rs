//! Gradient checking by finite differences: the proof that a hand-written backward is right.
//!
//! For a function y = f(x₁, …, xₖ), fix a random tensor r of y's shape and look at the scalar
//! L = Σ r ⊙ y. Its gradient ∂L/∂xᵢ is what `backward` computes when seeded with r (a vector-Jacobian
//! product), and it can also be estimated from the forward alone by central differences:
//!
//! ```text
//! ∂L/∂x[j] ≈ (L(x + ε·e_j) − L(x − ε·e_j)) / 2ε          error O(ε²) from truncation, O(u·|L|/ε) from rounding
//! accept  |analytic − numeric| ≤ atol + rtol · max(|analytic|, |numeric|)
//! ```
//! A random r (rather than summing y) makes every output element count with a different weight, so a
//! backward that mixes up output positions cannot pass by symmetry. L is accumulated in f64 so the only
//! rounding is the f32 forward's own.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// Step and tolerances of a gradient check.
#[derive(Clone, Copy, Debug)]
pub struct GradcheckConfig {
    /// Finite-difference step ε.
    pub eps: f32,
    pub atol: f32,
    pub rtol: f32,
    /// Inputs larger than this are checked at this many random positions instead of everywhere.
    pub max_checks_per_input: usize,
}

impl Default for GradcheckConfig {
    fn default() -> Self {
        // ε = 1e-2 keeps the rounding error of an f32 forward (≈ 6e-8 · |L| / ε) near 1e-5 for |L| ~ 10,
        // while the truncation error ε²·f'''/6 stays below 1e-4 for the smooth ops here.
        GradcheckConfig { eps: 1e-2, atol: 2e-3, rtol: 1e-2, max_checks_per_input: 200 }
    }
}

/// Checks the gradients of `f` at `inputs` with the default configuration.
/// Returns `Err` describing the worst mismatch if any position fails.
pub fn gradcheck(inputs: &[Tensor], f: impl Fn(&mut Tape, &[Var]) -> Var) -> Result<(), String> {
    gradcheck_with(GradcheckConfig::default(), inputs, f)
}

/// [`gradcheck`] with an explicit configuration.
pub fn gradcheck_with(
    cfg: GradcheckConfig,
    inputs: &[Tensor],
    f: impl Fn(&mut Tape, &[Var]) -> Var,
) -> Result<(), String> {
    // Analytic: one backward seeded with r.
    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|x| tape.leaf(x.clone())).collect();
    let y = f(&mut tape, &vars);
    let r = Tensor::randn_seeded(y.shape(), 0x5eed);
    let grads = tape.backward_from(&y, r.clone());
    let analytic: Vec<Tensor> = vars
        .iter()
        .zip(inputs)
        .map(|(v, x)| grads.leaf(v).cloned().unwrap_or_else(|| Tensor::zeros(x.shape())))
        .collect();

    // L(x) = Σ r·f(x), evaluated without recording.
    let loss = |xs: &[Tensor]| -> f64 {
        let mut tape = Tape::inference();
        let vars: Vec<Var> = xs.iter().map(|x| Var::constant(x.clone())).collect();
        let y = f(&mut tape, &vars);
        y.value().data().iter().zip(r.data()).map(|(&a, &b)| a as f64 * b as f64).sum()
    };

    let mut rng = StdRng::seed_from_u64(7);
    let mut worst: Option<(f32, String)> = None;
    for (i, x) in inputs.iter().enumerate() {
        let positions: Vec<usize> = if x.numel() <= cfg.max_checks_per_input {
            (0..x.numel()).collect()
        } else {
            (0..cfg.max_checks_per_input).map(|_| rng.random_range(0..x.numel())).collect()
        };
        for j in positions {
            let mut xs = inputs.to_vec();
            xs[i].data_mut()[j] = x.data()[j] + cfg.eps;
            let plus = loss(&xs);
            xs[i].data_mut()[j] = x.data()[j] - cfg.eps;
            let minus = loss(&xs);
            let numeric = ((plus - minus) / (2.0 * cfg.eps as f64)) as f32;
            let got = analytic[i].data()[j];
            let excess = (got - numeric).abs() - (cfg.atol + cfg.rtol * got.abs().max(numeric.abs()));
            if excess > 0.0 && worst.as_ref().is_none_or(|(w, _)| excess > *w) {
                let msg = format!(
                    "input {i} {:?} at flat index {j}: backward gives {got}, finite differences give {numeric}",
                    x.shape()
                );
                worst = Some((excess, msg));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((_, msg)) => Err(format!("gradcheck failed: {msg}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tape::Op;

    /// y = x² with a deliberately wrong backward (3x instead of 2x).
    struct WrongSquare {
        x: Tensor,
    }
    impl Op for WrongSquare {
        fn name(&self) -> &'static str {
            "wrong_square"
        }
        fn backward(&self, dout: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
            let dx = dout.data().iter().zip(self.x.data()).map(|(g, x)| g * 3.0 * x).collect();
            vec![Some(Tensor::from_vec(self.x.shape(), dx))]
        }
    }

    fn wrong_square(tape: &mut Tape, x: &Var) -> Var {
        let y = x.value().data().iter().map(|v| v * v).collect();
        let y = Tensor::from_vec(x.shape(), y);
        tape.record(WrongSquare { x: x.value().clone() }, &[x], y)
    }

    #[test]
    fn checker_rejects_a_wrong_backward() {
        let x = Tensor::randn_seeded(&[5, 3], 1);
        let err = gradcheck(&[x], |t, v| wrong_square(t, &v[0])).unwrap_err();
        assert!(err.contains("input 0 [5, 3]"), "{err}");
    }

    #[test]
    fn checker_rejects_a_backward_that_mixes_up_positions() {
        // Right formula, wrong position: gradient of element j is written to element (j + 1) mod n.
        struct Shifted {
            x: Tensor,
        }
        impl Op for Shifted {
            fn name(&self) -> &'static str {
                "shifted"
            }
            fn backward(&self, dout: &Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
                let n = self.x.numel();
                let mut dx = vec![0.0; n];
                for j in 0..n {
                    dx[(j + 1) % n] = dout.data()[j] * 2.0 * self.x.data()[j];
                }
                vec![Some(Tensor::from_vec(self.x.shape(), dx))]
            }
        }
        let x = Tensor::randn_seeded(&[7], 2);
        let err = gradcheck(&[x], |t, v| {
            let y = v[0].value().data().iter().map(|a| a * a).collect();
            t.record(Shifted { x: v[0].value().clone() }, &[&v[0]], Tensor::from_vec(&[7], y))
        });
        assert!(err.is_err());
    }
}
