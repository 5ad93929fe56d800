use crate::gradcheck::gradcheck;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

#[test]
fn reshape_gradcheck() {
    // Multiply after reshaping so each position's gradient differs: a mix-up would show.
    let w = Tensor::randn_seeded(&[6, 2], 9);
    gradcheck(&[Tensor::randn_seeded(&[3, 4], 1), w], |t, v| {
        let r = t.reshape(&v[0], &[6, 2]);
        t.mul(&r, &v[1])
    })
    .unwrap();
}

#[test]
fn reshape_keeps_row_major_order() {
    let mut t = Tape::new();
    let x = Var::constant(Tensor::from_vec(&[2, 3], vec![0., 1., 2., 3., 4., 5.]));
    let y = t.reshape(&x, &[3, 1, 2]);
    assert_eq!(y.value().at(&[1, 0, 1]), 3.0);
}

#[test]
#[should_panic(expected = "reshape: cannot view x [2, 3] (6 values) as [4, 2] (8 values)")]
fn reshape_rejects_a_different_count() {
    Tape::new().reshape(&Var::constant(Tensor::zeros(&[2, 3])), &[4, 2]);
}
