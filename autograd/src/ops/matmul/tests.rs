use super::*;
use crate::gradcheck::gradcheck;

#[test]
fn matmul_gradcheck_2d() {
    gradcheck(&[Tensor::randn_seeded(&[3, 5], 1), Tensor::randn_seeded(&[5, 4], 2)], |t, v| t.matmul(&v[0], &v[1]))
        .unwrap();
}

#[test]
fn matmul_gradcheck_batched_and_broadcast() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 3, 5], &[2, 5, 4]),    // same batch
        (&[2, 3, 5], &[5, 4]),       // b shared (folded path)
        (&[3, 5], &[2, 5, 4]),       // a shared
        (&[2, 1, 3, 5], &[3, 5, 2]), // both broadcast
    ];
    for (i, (sa, sb)) in cases.iter().enumerate() {
        let a = Tensor::randn_seeded(sa, 10 + i as u64);
        let b = Tensor::randn_seeded(sb, 20 + i as u64);
        gradcheck(&[a, b], |t, v| t.matmul(&v[0], &v[1])).unwrap_or_else(|e| panic!("{sa:?}·{sb:?}: {e}"));
    }
}

#[test]
fn fast_equals_naive_on_odd_shapes() {
    for (m, k, n) in [(1, 1, 1), (3, 7, 13), (13, 65, 7), (65, 3, 1), (7, 13, 65), (1, 300, 65), (65, 1, 70), (5, 5, 5)]
    {
        let a = Tensor::randn_seeded(&[m, k], 1);
        let b = Tensor::randn_seeded(&[k, n], 2);
        let naive = matmul_naive(a.data(), b.data(), m, k, n);
        let fast = bmm(&[], m, k, n, a.data(), &[], false, b.data(), &[], false);
        for (x, y) in fast.iter().zip(&naive) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{m}x{k}x{n}: {x} vs {y}");
        }
        // The transposed reads: (aᵀ)ᵀ·b through strides, with aᵀ stored [k, m].
        let at = Tape::new().transpose(&Var::constant(a.clone()), 0, 1).into_value();
        let via_t = bmm(&[], m, k, n, at.data(), &[], true, b.data(), &[], false);
        assert!(via_t.iter().zip(&naive).all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs())));
    }
}

#[test]
fn matmul_values() {
    // [[1,2],[3,4]]·[[5,6],[7,8]] = [[19,22],[43,50]]
    let a = Var::constant(Tensor::from_vec(&[2, 2], vec![1., 2., 3., 4.]));
    let b = Var::constant(Tensor::from_vec(&[2, 2], vec![5., 6., 7., 8.]));
    assert_eq!(Tape::new().matmul(&a, &b).value().data(), &[19., 22., 43., 50.]);
}

#[test]
#[should_panic(expected = "matmul: a [2, 3] has 3 columns but b [4, 5] has 4 rows")]
fn matmul_rejects_inner_mismatch() {
    let a = Var::constant(Tensor::zeros(&[2, 3]));
    let b = Var::constant(Tensor::zeros(&[4, 5]));
    Tape::new().matmul(&a, &b);
}

#[test]
fn gemm_is_bit_identical_at_one_and_two_threads() {
    // Both splits: by rows (m ≥ n) and by columns (n > m).
    for (m, k, n) in [(333, 129, 65), (65, 129, 333)] {
        check_threads(m, k, n);
    }
}

fn check_threads(m: usize, k: usize, n: usize) {
    let a = Tensor::randn_seeded(&[m, k], 1);
    let b = Tensor::randn_seeded(&[k, n], 2);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut c = vec![0.0; m * n];
            gemm(m, k, n, a.data(), (k, 1), b.data(), (n, 1), &mut c, 0.0);
            c
        })
    };
    assert_eq!(run(1), run(2));
}
