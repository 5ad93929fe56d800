use super::*;
use crate::gradcheck::gradcheck;

#[test]
fn softmax_gradcheck_every_axis() {
    let x = Tensor::randn_seeded(&[3, 4, 5], 1);
    for axis in 0..3 {
        gradcheck(std::slice::from_ref(&x), |t, v| t.softmax(&v[0], axis)).unwrap();
    }
}

#[test]
fn log_softmax_gradcheck_every_axis() {
    let x = Tensor::randn_seeded(&[3, 4, 5], 2);
    for axis in 0..3 {
        gradcheck(std::slice::from_ref(&x), |t, v| t.log_softmax(&v[0], axis)).unwrap();
    }
}

#[test]
fn fast_equals_naive_on_odd_shapes() {
    for dims in [(1, 1, 1), (13, 7, 1), (3, 65, 1), (7, 13, 3)] {
        let x = Tensor::randn_seeded(&[dims.0 * dims.1 * dims.2], 3);
        let fast = softmax_forward(x.data(), dims);
        let naive = softmax_forward_naive(x.data(), dims);
        assert!(fast.iter().zip(&naive).all(|(a, b)| (a - b).abs() < 1e-6), "{dims:?}");
    }
}

#[test]
fn softmax_is_stable_and_normalized() {
    // Huge logits would overflow e^x without the max subtraction.
    let x = Var::constant(Tensor::from_vec(&[1, 3], vec![1000.0, 1001.0, 1002.0]));
    let mut t = Tape::new();
    let y = t.softmax(&x, 1);
    // e^0, e^1, e^2 normalized: 0.09003057, 0.24472847, 0.66524096
    for (a, b) in y.value().data().iter().zip([0.090_030_57, 0.244_728_47, 0.665_240_96]) {
        assert!((a - b).abs() < 1e-6);
    }
    let ly = t.log_softmax(&x, 1);
    // f32 spacing near 1000 is 6e-5, so y = x − lse is good to about 1e-4 there.
    assert!((ly.value().data()[2] - 0.665_240_96f32.ln()).abs() < 2e-4);
}

#[test]
#[should_panic(expected = "softmax: axis 2 is out of range for x [3, 4]")]
fn softmax_rejects_a_bad_axis() {
    Tape::new().softmax(&Var::constant(Tensor::zeros(&[3, 4])), 2);
}
