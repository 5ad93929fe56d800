use super::*;
use crate::gradcheck::gradcheck;

#[test]
fn sum_gradcheck_axes_and_keepdim() {
    let x = Tensor::randn_seeded(&[3, 4, 5], 1);
    for axes in [&[0][..], &[1], &[2], &[0, 2], &[2, 0, 1]] {
        for keepdim in [false, true] {
            gradcheck(std::slice::from_ref(&x), |t, v| t.sum(&v[0], axes, keepdim)).unwrap();
        }
    }
}

#[test]
fn mean_gradcheck_axes_and_keepdim() {
    let x = Tensor::randn_seeded(&[3, 4, 5], 2);
    for axes in [&[1][..], &[0, 1], &[0, 1, 2]] {
        for keepdim in [false, true] {
            gradcheck(std::slice::from_ref(&x), |t, v| t.mean(&v[0], axes, keepdim)).unwrap();
        }
    }
}

#[test]
fn shapes_and_values() {
    let mut t = Tape::new();
    let x = Var::constant(Tensor::from_vec(&[2, 3], vec![1., 2., 3., 4., 5., 6.]));
    let s = t.sum(&x, &[1], false);
    assert_eq!((s.shape(), s.value().data()), (&[2][..], &[6., 15.][..]));
    let m = t.mean(&x, &[0], true);
    assert_eq!((m.shape(), m.value().data()), (&[1, 3][..], &[2.5, 3.5, 4.5][..]));
    let all = t.sum_all(&x);
    assert_eq!((all.shape(), all.value().item()), (&[][..], 21.0));
}

#[test]
fn fast_equals_naive_on_odd_shapes() {
    let x = Tensor::randn_seeded(&[3, 7, 13], 3);
    for keep in [[1, 7, 13], [3, 1, 13], [3, 7, 1], [1, 1, 13], [1, 7, 1], [1, 1, 1]] {
        let fast = sum_forward(x.data(), x.shape(), &keep);
        let naive = sum_forward_naive(x.data(), x.shape(), &keep);
        for (a, b) in fast.iter().zip(&naive) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "keep {keep:?}: {a} vs {b}");
        }
    }
}

#[test]
#[should_panic(expected = "sum: axis 3 is out of range for x [2, 3, 4]")]
fn sum_rejects_a_bad_axis() {
    let mut t = Tape::new();
    t.sum(&Var::constant(Tensor::zeros(&[2, 3, 4])), &[3], false);
}
