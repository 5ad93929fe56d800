use super::*;
use crate::gradcheck::gradcheck;

#[test]
fn concat_gradcheck_every_axis() {
    for axis in 0..3 {
        let mut a = vec![2, 3, 4];
        let mut b = vec![2, 3, 4];
        a[axis] = 1;
        b[axis] = 3;
        let xs = [Tensor::randn_seeded(&a, 1), Tensor::randn_seeded(&b, 2), Tensor::randn_seeded(&[2, 3, 4], 3)];
        gradcheck(&xs, |t, v| t.concat(&[&v[0], &v[1], &v[2]], axis)).unwrap();
    }
}

#[test]
fn concat_values() {
    let mut t = Tape::new();
    let a = Var::constant(Tensor::from_vec(&[2, 1], vec![1., 2.]));
    let b = Var::constant(Tensor::from_vec(&[2, 2], vec![3., 4., 5., 6.]));
    let c = t.concat(&[&a, &b], 1);
    assert_eq!((c.shape(), c.value().data()), (&[2, 3][..], &[1., 3., 4., 2., 5., 6.][..]));
}

#[test]
fn only_inputs_that_need_it_get_a_gradient() {
    let mut t = Tape::new();
    let a = t.leaf(Tensor::ones(&[1, 2]));
    let b = Var::constant(Tensor::ones(&[3, 2]));
    let c = t.concat(&[&b, &a], 0);
    let s = t.sum_all(&c);
    let g = t.backward(&s);
    assert_eq!(g.leaf(&a).unwrap().data(), &[1.0, 1.0]);
}

#[test]
#[should_panic(expected = "concat: shapes [[2, 3], [3, 3]] differ outside axis 1")]
fn concat_rejects_mismatched_shapes() {
    let a = Var::constant(Tensor::zeros(&[2, 3]));
    let b = Var::constant(Tensor::zeros(&[3, 3]));
    Tape::new().concat(&[&a, &b], 1);
}
