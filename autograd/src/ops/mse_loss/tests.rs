use crate::gradcheck::gradcheck;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

#[test]
fn mse_loss_gradcheck_both_inputs() {
    let p = Tensor::randn_seeded(&[3, 5], 1);
    let t = Tensor::randn_seeded(&[3, 5], 2);
    gradcheck(&[p, t], |tape, v| tape.mse_loss(&v[0], &v[1])).unwrap();
}

#[test]
fn mse_loss_value() {
    // ((1−0)² + (2−4)²)/2 = 2.5
    let p = Var::constant(Tensor::from_vec(&[2], vec![1.0, 2.0]));
    let t = Var::constant(Tensor::from_vec(&[2], vec![0.0, 4.0]));
    assert_eq!(Tape::new().mse_loss(&p, &t).value().item(), 2.5);
}

#[test]
#[should_panic(expected = "mse_loss: pred [2, 3] and target [3] must have the same shape")]
fn mse_loss_rejects_shape_mismatch() {
    let p = Var::constant(Tensor::zeros(&[2, 3]));
    let t = Var::constant(Tensor::zeros(&[3]));
    Tape::new().mse_loss(&p, &t);
}
