//! Reference values from PyTorch, the fourth proof of STYLE.md: each op's output and gradients against
//! `torch_reference.txt`, which `torch_reference.py` (beside this file, with its formulas for the inputs)
//! wrote. Running these tests needs no Python.

use crate::{Tape, Tensor, Var};

const FIXTURE: &str = include_str!("torch_reference.txt");

/// The values stored under `key` ("conv_s1.y", "conv_s1.dx", …).
fn reference(key: &str) -> Vec<f32> {
    let line = FIXTURE.lines().find(|l| l.split_whitespace().next() == Some(key));
    let line = line.unwrap_or_else(|| panic!("torch_reference.txt has no {key}"));
    line.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect()
}

/// Input `k` of a case, as the script makes it: scale · sin(0.61 j + 1.7 k + 0.2), in f64 rounded to f32.
fn input(shape: &[usize], k: usize, scale: f64) -> Tensor {
    let n = shape.iter().product::<usize>();
    let values = (0..n).map(|j| (scale * (0.61 * j as f64 + 1.7 * k as f64 + 0.2).sin()) as f32).collect();
    Tensor::from_vec(shape, values)
}

/// r_j = cos(0.13 j + 0.5): the seed of the backward pass, L = Σ y ⊙ r.
fn seed(shape: &[usize]) -> Tensor {
    let n = shape.iter().product::<usize>();
    Tensor::from_vec(shape, (0..n).map(|j| (0.13 * j as f64 + 0.5).cos() as f32).collect())
}

/// Runs `op` on leaves made from `inputs`, seeds its backward with r, and compares the output and every
/// input's gradient with the case's stored values (`names` are the inputs' names in the fixture).
fn check(case: &str, names: &[&str], inputs: Vec<Tensor>, op: impl Fn(&mut Tape, &[Var]) -> Var) {
    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs.into_iter().map(|t| tape.leaf(t)).collect();
    let y = op(&mut tape, &vars);
    let output = y.value().data().to_vec();
    let grads = tape.backward_from(&y, seed(y.shape()));
    let mut compared = vec![(format!("{case}.y"), output)];
    for (name, var) in names.iter().zip(&vars) {
        compared.push((format!("{case}.d{name}"), grads.leaf(var).unwrap().data().to_vec()));
    }
    for (key, ours) in compared {
        let theirs = reference(&key);
        assert_eq!(ours.len(), theirs.len(), "{key}");
        let scale = theirs.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
        let error = ours.iter().zip(&theirs).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        // Both are f32 sums of at most a few hundred terms, in different orders.
        assert!(error < 1e-5, "{key}: relative error {error:e}");
    }
}

#[test]
fn conv2d_matches_pytorch_at_stride_1_and_2_for_1x1_and_on_both_winograd_layouts() {
    let cases = [
        ("conv_s1", [2, 3, 7, 7], 4, 3, 1, 1),
        ("conv_s2", [2, 4, 9, 9], 5, 3, 2, 1),
        ("conv_1x1", [2, 6, 5, 5], 3, 1, 1, 0),
        ("conv_winograd_cm", [2, 8, 6, 6], 8, 3, 1, 1),
        ("conv_winograd", [1, 8, 24, 24], 8, 3, 1, 1),
    ];
    for (case, x, c_out, k, stride, padding) in cases {
        let inputs = vec![input(&x, 0, 1.0), input(&[c_out, x[1], k, k], 1, 0.3), input(&[c_out], 2, 0.3)];
        check(case, &["x", "w", "b"], inputs, |t, v| t.conv2d(&v[0], &v[1], Some(&v[2]), stride, padding));
    }
}

#[test]
fn group_norm_and_its_fusion_with_silu_match_pytorch() {
    let inputs = || vec![input(&[2, 8, 3, 5], 0, 1.0), input(&[8], 1, 1.0), input(&[8], 2, 1.0)];
    check("group_norm", &["x", "w", "b"], inputs(), |t, v| t.group_norm(&v[0], 4, &v[1], &v[2], 1e-5));
    check("group_norm_silu", &["x", "w", "b"], inputs(), |t, v| t.group_norm_silu(&v[0], 4, &v[1], &v[2], 1e-5));
}

#[test]
fn attention_matches_pytorch_sdpa() {
    for (case, shape) in [("attention", [2, 2, 5, 4]), ("attention_49", [1, 2, 49, 8])] {
        let inputs = (0..3).map(|k| input(&shape, k, 1.0)).collect();
        check(case, &["q", "k", "v"], inputs, |t, v| t.scaled_dot_product_attention(&v[0], &v[1], &v[2]));
    }
}

#[test]
fn softmax_log_softmax_and_cross_entropy_match_pytorch() {
    check("softmax", &["x"], vec![input(&[3, 7], 0, 1.0)], |t, v| t.softmax(&v[0], 1));
    check("log_softmax", &["x"], vec![input(&[3, 7], 0, 1.0)], |t, v| t.log_softmax(&v[0], 1));
    // The loss is the output, and the stored gradient is of the loss itself (no r).
    let mut tape = Tape::new();
    let logits = tape.leaf(input(&[4, 5], 0, 1.0));
    let loss = tape.cross_entropy(&logits, &[1, 0, 4, 2]);
    assert!((loss.value().item() - reference("cross_entropy.y")[0]).abs() < 1e-6);
    let grads = tape.backward(&loss);
    let ours = grads.leaf(&logits).unwrap().data().to_vec();
    let theirs = reference("cross_entropy.dlogits");
    let error = ours.iter().zip(&theirs).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(error < 1e-7, "cross_entropy.dlogits: {error:e}");
}
