use super::*;
use crate::gradcheck::gradcheck;

#[test]
fn upsample_gradcheck() {
    gradcheck(&[Tensor::randn_seeded(&[2, 3, 3, 4], 1)], |t, v| t.upsample_nearest2d(&v[0], 2)).unwrap();
    gradcheck(&[Tensor::randn_seeded(&[1, 2, 2, 3], 2)], |t, v| t.upsample_nearest2d(&v[0], 3)).unwrap();
}

#[test]
fn fast_equals_naive_on_odd_shapes() {
    for (planes, h, w, s) in [(1, 1, 1, 2), (3, 7, 13, 2), (13, 3, 7, 3), (2, 65, 1, 2), (7, 13, 3, 1)] {
        let x = Tensor::randn_seeded(&[planes * h * w], 1);
        assert_eq!(upsample_forward(x.data(), planes, h, w, s), upsample_forward_naive(x.data(), planes, h, w, s));
        let dy = Tensor::randn_seeded(&[planes * h * w * s * s], 2);
        let fast = upsample_backward(dy.data(), planes, h, w, s);
        let naive = upsample_backward_naive(dy.data(), planes, h, w, s);
        assert!(fast.iter().zip(&naive).all(|(a, b)| (a - b).abs() < 1e-5), "{planes} {h} {w} {s}");
    }
}

#[test]
fn upsample_values() {
    let x = Var::constant(Tensor::from_vec(&[1, 1, 1, 2], vec![1.0, 2.0]));
    let y = Tape::new().upsample_nearest2d(&x, 2);
    assert_eq!(y.value().data(), &[1., 1., 2., 2., 1., 1., 2., 2.]);
}

#[test]
#[should_panic(expected = "upsample_nearest2d: x [2, 3, 4] must be [N, C, H, W] and scale_factor 2 at least 1")]
fn upsample_rejects_3d_input() {
    Tape::new().upsample_nearest2d(&Var::constant(Tensor::zeros(&[2, 3, 4])), 2);
}
