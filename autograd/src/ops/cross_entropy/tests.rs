use crate::gradcheck::gradcheck;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

#[test]
fn cross_entropy_gradcheck() {
    let logits = Tensor::randn_seeded(&[4, 7], 1);
    gradcheck(&[logits], |t, v| t.cross_entropy(&v[0], &[0, 6, 3, 3])).unwrap();
}

#[test]
fn cross_entropy_of_uniform_logits_is_ln_c() {
    // Equal logits: every class has probability 1/C, so the loss is ln C whatever the labels.
    let logits = Var::constant(Tensor::zeros(&[3, 10]));
    let loss = Tape::new().cross_entropy(&logits, &[1, 5, 9]);
    assert!((loss.value().item() - 10f32.ln()).abs() < 1e-6);
}

#[test]
#[should_panic(expected = "cross_entropy: label 10 is out of range for 10 classes")]
fn cross_entropy_rejects_a_bad_label() {
    Tape::new().cross_entropy(&Var::constant(Tensor::zeros(&[1, 10])), &[10]);
}
