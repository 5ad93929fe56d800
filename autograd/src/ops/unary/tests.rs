use crate::gradcheck::gradcheck;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn_seeded(shape, seed)
}

fn positive(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand_uniform_seeded(shape, 0.3, 3.0, seed)
}

/// Values at least 0.1 away from 0, so a kink at 0 lies outside every finite-difference step.
fn away_from_zero(shape: &[usize], seed: u64) -> Tensor {
    let mut t = randn(shape, seed);
    for v in t.data_mut() {
        *v += 0.1f32.copysign(*v);
    }
    t
}

#[test]
fn neg_gradcheck() {
    gradcheck(&[randn(&[3, 5], 1)], |t, x| t.neg(&x[0])).unwrap();
}

#[test]
fn exp_gradcheck() {
    gradcheck(&[randn(&[3, 5], 1)], |t, x| t.exp(&x[0])).unwrap();
}

#[test]
fn log_gradcheck() {
    gradcheck(&[positive(&[3, 5], 1)], |t, x| t.log(&x[0])).unwrap();
}

#[test]
fn sqrt_gradcheck() {
    gradcheck(&[positive(&[3, 5], 1)], |t, x| t.sqrt(&x[0])).unwrap();
}

#[test]
fn pow_gradcheck() {
    for p in [2.0, 3.0, 0.5, -1.5] {
        gradcheck(&[positive(&[3, 5], 1)], |t, x| t.pow(&x[0], p)).unwrap();
    }
}

#[test]
fn tanh_gradcheck() {
    gradcheck(&[randn(&[3, 5], 1)], |t, x| t.tanh(&x[0])).unwrap();
}

#[test]
fn sigmoid_gradcheck() {
    gradcheck(&[randn(&[3, 5], 1)], |t, x| t.sigmoid(&x[0])).unwrap();
}

#[test]
fn relu_gradcheck() {
    gradcheck(&[away_from_zero(&[4, 7], 1)], |t, x| t.relu(&x[0])).unwrap();
}

#[test]
fn silu_gradcheck() {
    gradcheck(&[randn(&[4, 7], 1)], |t, x| t.silu(&x[0])).unwrap();
}

#[test]
fn gelu_gradcheck() {
    gradcheck(&[randn(&[4, 7], 1)], |t, x| t.gelu(&x[0])).unwrap();
}

#[test]
fn closed_form_values() {
    // σ(1) = 1/(1+e⁻¹) = 0.7310586; silu(1) = σ(1); Φ(1) = 0.8413447 so gelu(1) = 0.8413447, gelu(−1) = −0.1586553.
    let mut t = Tape::new();
    let x = Var::constant(Tensor::from_vec(&[3], vec![1.0, -1.0, 0.0]));
    let close = |v: &Var, want: &[f32]| {
        for (a, b) in v.value().data().iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{:?} vs {want:?}", v.value());
        }
    };
    close(&t.sigmoid(&x), &[0.731_058_6, 0.268_941_4, 0.5]);
    close(&t.silu(&x), &[0.731_058_6, -0.268_941_4, 0.0]);
    close(&t.gelu(&x), &[0.841_344_7, -0.158_655_3, 0.0]);
    close(&t.relu(&x), &[1.0, 0.0, 0.0]);
    close(&t.tanh(&x), &[0.761_594_2, -0.761_594_2, 0.0]);
}

#[test]
fn erf_matches_tabulated_values() {
    // erf(0.5) = 0.5204998778, erf(1) = 0.8427007929, erf(2) = 0.9953222650 (A&S table 7.1).
    for (x, want) in [(0.5, 0.520_499_9), (1.0, 0.842_700_8), (2.0, 0.995_322_3), (-1.0, -0.842_700_8)] {
        assert!((super::erf(x) - want).abs() < 2e-7, "erf({x})");
    }
}

#[test]
fn silu_simd_kernel_equals_the_plain_formula_at_every_level() {
    use super::*;
    let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
    for n in [1, 3, 7, 13, 65, 100_003] {
        let mut x = Tensor::randn_seeded(&[n], n as u64);
        x.data_mut().iter_mut().for_each(|v| *v *= 5.0);
        let dout = Tensor::randn_seeded(&[n], 1);
        let naive_y = unary_forward(x.data(), |x| x * sigmoid(x));
        let ys: Vec<f32> = naive_y.clone();
        let naive_dx = unary_backward(dout.data(), x.data(), &ys, |x, _| sigmoid(x) * (1.0 + x * (1.0 - sigmoid(x))));
        for level in crate::cpu::available() {
            let y = silu_forward_at(level, x.data());
            let dx = silu_backward_at(level, dout.data(), x.data());
            for (a, b) in y.iter().zip(&naive_y).chain(dx.iter().zip(&naive_dx)) {
                assert!((a - b).abs() <= 2e-6 * (1.0 + b.abs()), "n {n} {level:?}: {a} vs {b}");
            }
        }
    }
}
