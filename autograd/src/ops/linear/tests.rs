use crate::gradcheck::gradcheck;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

#[test]
fn linear_gradcheck_with_and_without_bias() {
    let x = Tensor::randn_seeded(&[2, 3, 5], 1);
    let w = Tensor::randn_seeded(&[4, 5], 2);
    let b = Tensor::randn_seeded(&[4], 3);
    gradcheck(&[x.clone(), w.clone(), b], |t, v| t.linear(&v[0], &v[1], Some(&v[2]))).unwrap();
    gradcheck(&[x, w], |t, v| t.linear(&v[0], &v[1], None)).unwrap();
}

#[test]
fn linear_equals_matmul_with_transposed_weight_plus_bias() {
    // The fast path (strided gemm) against the composition of plain ops on odd sizes.
    let x = Var::constant(Tensor::randn_seeded(&[13, 7], 1));
    let w = Var::constant(Tensor::randn_seeded(&[3, 7], 2));
    let b = Var::constant(Tensor::randn_seeded(&[3], 3));
    let mut t = Tape::new();
    let fast = t.linear(&x, &w, Some(&b));
    let wt = t.transpose(&w, 0, 1);
    let xw = t.matmul(&x, &wt);
    let plain = t.add(&xw, &b);
    assert!(fast.value().max_abs_diff(plain.value()) < 1e-5);
}

#[test]
#[should_panic(expected = "linear: weight [4, 5] expects x [..., 5], got x [2, 3]")]
fn linear_rejects_wrong_input_size() {
    let x = Var::constant(Tensor::zeros(&[2, 3]));
    let w = Var::constant(Tensor::zeros(&[4, 5]));
    Tape::new().linear(&x, &w, None);
}
