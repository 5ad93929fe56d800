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

/// Large enough that the rows go to several parallel tasks: every value where the definition puts it, and
/// the gradients back, the two ops' kernels (`concat_forward`, `narrow_copy`) and narrow's backward.
#[test]
fn concat_and_narrow_of_large_tensors_put_every_value_in_its_place() {
    let (a, b) = (Tensor::randn_seeded(&[3, 5, 40, 41], 4), Tensor::randn_seeded(&[3, 2, 40, 41], 5));
    let mut t = Tape::new();
    let (va, vb) = (t.leaf(a.clone()), t.leaf(b.clone()));
    let c = t.concat(&[&va, &vb], 1);
    let hw = 40 * 41;
    for n in 0..3 {
        for ch in 0..7 {
            let want = match ch < 5 {
                true => &a.data()[(n * 5 + ch) * hw..][..hw],
                false => &b.data()[(n * 2 + ch - 5) * hw..][..hw],
            };
            assert_eq!(&c.value().data()[(n * 7 + ch) * hw..][..hw], want, "image {n}, channel {ch}");
        }
    }
    // Through narrow back to b, then the gradient of Σ 2·b back to both: zeros for a, twos for b.
    let nb = t.narrow(&c, 1, 5, 2);
    assert_eq!(nb.value().data(), b.data());
    let two = t.add(&nb, &nb);
    let s = t.sum_all(&two);
    let g = t.backward(&s);
    assert!(g.leaf(&va).unwrap().data().iter().all(|&v| v == 0.0));
    assert!(g.leaf(&vb).unwrap().data().iter().all(|&v| v == 2.0));
}
