use super::*;
use crate::gradcheck::gradcheck;

#[test]
fn permute_gradcheck() {
    let x = Tensor::randn_seeded(&[2, 3, 4], 1);
    for dims in [[0, 1, 2], [2, 0, 1], [1, 2, 0], [0, 2, 1]] {
        gradcheck(std::slice::from_ref(&x), |t, v| t.permute(&v[0], &dims)).unwrap();
    }
}

#[test]
fn transpose_gradcheck() {
    gradcheck(&[Tensor::randn_seeded(&[3, 5], 1)], |t, v| t.transpose(&v[0], 0, 1)).unwrap();
}

#[test]
fn transpose_values() {
    let mut t = Tape::new();
    let x = Var::constant(Tensor::from_vec(&[2, 3], vec![0., 1., 2., 3., 4., 5.]));
    let y = t.transpose(&x, 0, 1);
    assert_eq!((y.shape(), y.value().data()), (&[3, 2][..], &[0., 3., 1., 4., 2., 5.][..]));
}

#[test]
fn fast_equals_naive_on_odd_shapes() {
    let x = Tensor::randn_seeded(&[3, 7, 1, 13], 2);
    for dims in [[3, 2, 1, 0], [0, 1, 3, 2], [2, 0, 3, 1], [1, 3, 0, 2], [0, 1, 2, 3]] {
        let fast = permute_forward(x.data(), x.shape(), &dims);
        assert_eq!(fast, permute_forward_naive(x.data(), x.shape(), &dims), "dims {dims:?}");
    }
}

/// The swap of the last two axes (transposed in registers): matrices with whole blocks of 8 and 16 lanes
/// and leftovers on both sides, several of them, and a single one.
#[test]
fn swapping_the_last_two_axes_equals_naive() {
    let cases: [(&[usize], &[usize]); 5] = [
        (&[2, 3, 17, 21], &[0, 1, 3, 2]),
        (&[2, 4, 32, 49], &[0, 1, 3, 2]),
        (&[5, 16, 16], &[0, 2, 1]),
        (&[9, 20], &[1, 0]),
        (&[1, 1], &[1, 0]),
    ];
    for (i, (shape, dims)) in cases.into_iter().enumerate() {
        let x = Tensor::randn_seeded(shape, 10 + i as u64);
        let fast = permute_forward(x.data(), x.shape(), dims);
        assert_eq!(fast, permute_forward_naive(x.data(), x.shape(), dims), "{shape:?} dims {dims:?}");
    }
}

#[test]
#[should_panic(expected = "permute: dims [0, 0, 1] is not a permutation of the axes of x [2, 3, 4]")]
fn permute_rejects_a_non_permutation() {
    Tape::new().permute(&Var::constant(Tensor::zeros(&[2, 3, 4])), &[0, 0, 1]);
}
