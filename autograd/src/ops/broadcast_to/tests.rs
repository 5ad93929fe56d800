use crate::gradcheck::gradcheck;
use crate::shape::{expand, sum_to};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

#[test]
fn broadcast_to_gradcheck() {
    gradcheck(&[Tensor::randn_seeded(&[3, 1], 1)], |t, v| t.broadcast_to(&v[0], &[2, 3, 5])).unwrap();
    gradcheck(&[Tensor::randn_seeded(&[4], 2)], |t, v| t.broadcast_to(&v[0], &[3, 4])).unwrap();
}

#[test]
fn expand_and_sum_to_equal_index_loops_on_odd_shapes() {
    // The kernels behind broadcast_to (expand) and its backward (sum_to), against direct index loops.
    let x = Tensor::randn_seeded(&[7, 1, 13], 3);
    let out = [3, 7, 5, 13];
    let y = expand(x.data(), x.shape(), &out);
    for (flat, v) in y.iter().enumerate() {
        let (i, k) = (flat / (5 * 13) % 7, flat % 13);
        assert_eq!(*v, x.at(&[i, 0, k]));
    }
    let g = Tensor::randn_seeded(&out, 4);
    let s = sum_to(g.data(), &out, &[7, 1, 13]);
    for i in 0..7 {
        for k in 0..13 {
            let mut want = 0.0;
            for a in 0..3 {
                for b in 0..5 {
                    want += g.at(&[a, i, b, k]);
                }
            }
            assert!((s[i * 13 + k] - want).abs() < 1e-5);
        }
    }
}

/// sum_to over trailing axes only (one contiguous block per output, summed in parallel): [B, C, 1, 1] from
/// [B, C, H, W] as the time embedding's gradient, and [B, 1, 1, 1], against index loops.
#[test]
fn sum_to_over_trailing_axes_equals_index_loops() {
    let from = [5, 67, 9, 11];
    let g = Tensor::randn_seeded(&from, 5);
    for kept in [1, 2, 3] {
        let shape: Vec<usize> = (0..4).map(|i| if i < kept { from[i] } else { 1 }).collect();
        let s = sum_to(g.data(), &from, &shape);
        let block: usize = from[kept..].iter().product();
        assert_eq!(s.len(), g.data().len() / block, "{shape:?}");
        for (i, got) in s.iter().enumerate() {
            let want: f64 = g.data()[i * block..][..block].iter().map(|&v| v as f64).sum();
            assert!((*got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "{shape:?} [{i}]: {got} against {want}");
        }
    }
}

#[test]
#[should_panic(expected = "broadcast_to: x [3, 2] does not broadcast to [3, 4]")]
fn broadcast_to_rejects_incompatible() {
    Tape::new().broadcast_to(&Var::constant(Tensor::zeros(&[3, 2])), &[3, 4]);
}
