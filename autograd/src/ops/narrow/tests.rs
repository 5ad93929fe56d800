use crate::gradcheck::gradcheck;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

#[test]
fn narrow_gradcheck() {
    let x = Tensor::randn_seeded(&[3, 5, 4], 1);
    gradcheck(std::slice::from_ref(&x), |t, v| t.narrow(&v[0], 1, 1, 3)).unwrap();
    gradcheck(std::slice::from_ref(&x), |t, v| t.narrow(&v[0], 0, 2, 1)).unwrap();
    gradcheck(&[x], |t, v| t.narrow(&v[0], 2, 0, 4)).unwrap();
}

#[test]
fn narrow_values() {
    let x = Var::constant(Tensor::from_vec(&[2, 3], vec![0., 1., 2., 3., 4., 5.]));
    let y = Tape::new().narrow(&x, 1, 1, 2);
    assert_eq!(y.value().data(), &[1., 2., 4., 5.]);
}

#[test]
#[should_panic(expected = "narrow: range 2..4 on axis 1 is out of bounds for x [2, 3]")]
fn narrow_rejects_out_of_bounds() {
    Tape::new().narrow(&Var::constant(Tensor::zeros(&[2, 3])), 1, 2, 2);
}
