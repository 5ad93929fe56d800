use super::*;
use crate::cpu;
use crate::gradcheck::gradcheck;

#[test]
fn group_norm_gradcheck() {
    let xs = [
        Tensor::randn_seeded(&[2, 6, 3, 5], 1),
        Tensor::rand_uniform_seeded(&[6], 0.5, 1.5, 2),
        Tensor::randn_seeded(&[6], 3),
    ];
    for groups in [1, 2, 3, 6] {
        gradcheck(&xs, |t, v| t.group_norm(&v[0], groups, &v[1], &v[2], 1e-5)).unwrap();
    }
}

#[test]
fn group_norm_silu_gradcheck() {
    let xs = [
        Tensor::randn_seeded(&[2, 6, 3, 5], 4),
        Tensor::rand_uniform_seeded(&[6], 0.5, 1.5, 5),
        Tensor::randn_seeded(&[6], 6),
    ];
    for groups in [1, 3] {
        gradcheck(&xs, |t, v| t.group_norm_silu(&v[0], groups, &v[1], &v[2], 1e-5)).unwrap();
    }
}

#[test]
fn the_tape_records_the_number_of_groups() {
    let mut tape = Tape::new();
    let x = tape.leaf(Tensor::randn_seeded(&[2, 6, 3, 5], 7));
    let (w, b) = (tape.leaf(Tensor::ones(&[6])), tape.leaf(Tensor::zeros(&[6])));
    let _ = tape.group_norm_silu(&x, 3, &w, &b, 1e-5);
    let ops = tape.recorded_ops();
    assert_eq!((ops[0].name, ops[0].attributes.as_str()), ("group_norm_silu", "groups 3"));
    assert_eq!(ops[0].needs_grad, [true, true, true]);
}

/// The fused op against its naive chain rule, and against the two ops it replaces, which it must equal bit
/// for bit (it computes the same expressions on the same values), at every SIMD level; on channels shorter
/// than `SHORT_CHANNEL` (SiLU in a pass of its own over the slice) and longer (in the same pass).
#[test]
fn fused_silu_equals_naive_and_the_two_ops_in_sequence() {
    let shapes = [(1, 1, 1, 1), (3, 6, 13, 3), (2, 65, 7, 13), (3, 8, 65, 4), (2, 6, 255, 2), (2, 4, 301, 2)];
    for (i, (n, c, hw, groups)) in shapes.into_iter().enumerate() {
        let s = GroupNormShape { n, c, hw, groups };
        let x = Tensor::randn_seeded(&[n * c * hw], 40 + i as u64);
        let g = Tensor::randn_seeded(&[c], 50 + i as u64);
        let b = Tensor::randn_seeded(&[c], 60 + i as u64);
        let dy = Tensor::randn_seeded(&[n * c * hw], 70 + i as u64);
        let (ny, nmean, nrstd) = group_norm_silu_forward_naive(x.data(), g.data(), b.data(), &s, 1e-5);
        let (ndx, ndg, ndb) =
            group_norm_silu_backward_naive(x.data(), g.data(), b.data(), &nmean, &nrstd, dy.data(), &s);
        for level in cpu::available() {
            let (y, mean, rstd) = group_norm_silu_forward_at(level, x.data(), g.data(), b.data(), &s, 1e-5);
            let (dx, dg, db) =
                group_norm_silu_backward_at(level, x.data(), g.data(), b.data(), &mean, &rstd, dy.data(), &s);
            for (what, fast, naive) in [("y", &y, &ny), ("dx", &dx, &ndx), ("dgamma", &dg, &ndg), ("dbeta", &db, &ndb)]
            {
                for (a, e) in fast.iter().zip(naive.iter()) {
                    assert!((a - e).abs() <= 2e-4 * (1.0 + e.abs()), "{what} {s:?} {level:?}: {a} vs {e}");
                }
            }
            // The two ops in sequence: group norm, then SiLU's own kernels.
            let (z, _, _) = group_norm_forward_at(level, x.data(), g.data(), b.data(), &s, 1e-5);
            assert!(y == crate::ops::unary::silu_forward_at(level, &z), "y {s:?} {level:?}");
            let dz = crate::ops::unary::silu_backward_at(level, dy.data(), &z);
            let (dx2, dg2, db2) = group_norm_backward_at(level, x.data(), g.data(), &mean, &rstd, &dz, &s);
            assert!(dx == dx2 && dg == dg2 && db == db2, "backward {s:?} {level:?}");
        }
    }
}

#[test]
fn fast_equals_naive_on_odd_shapes_at_every_simd_level() {
    for (i, (n, c, hw, groups)) in
        [(1, 1, 1, 1), (3, 6, 13, 3), (2, 65, 7, 13), (3, 8, 65, 4), (1, 4, 1, 2)].into_iter().enumerate()
    {
        let s = GroupNormShape { n, c, hw, groups };
        let x = Tensor::randn_seeded(&[n * c * hw], i as u64);
        let g = Tensor::randn_seeded(&[c], 10 + i as u64);
        let b = Tensor::randn_seeded(&[c], 20 + i as u64);
        let dy = Tensor::randn_seeded(&[n * c * hw], 30 + i as u64);
        let (ny, nmean, nrstd) = group_norm_forward_naive(x.data(), g.data(), b.data(), &s, 1e-5);
        let (ndx, ndg, ndb) = group_norm_backward_naive(x.data(), g.data(), &nmean, &nrstd, dy.data(), &s);
        for level in cpu::available() {
            {
                let (y, mean, rstd) = group_norm_forward_at(level, x.data(), g.data(), b.data(), &s, 1e-5);
                let (dx, dg, db) = group_norm_backward_at(level, x.data(), g.data(), &mean, &rstd, dy.data(), &s);
                for (what, fast, naive) in [
                    ("y", &y, &ny),
                    ("mean", &mean, &nmean),
                    ("dx", &dx, &ndx),
                    ("dgamma", &dg, &ndg),
                    ("dbeta", &db, &ndb),
                ] {
                    for (a, e) in fast.iter().zip(naive.iter()) {
                        assert!((a - e).abs() <= 2e-4 * (1.0 + e.abs()), "{what} {s:?} {level:?}: {a} vs {e}");
                    }
                }
                // rstd can be large when a group has one element (var = 0): compare relatively.
                for (a, e) in rstd.iter().zip(&nrstd) {
                    assert!((a - e).abs() <= 1e-4 * e.abs(), "rstd {s:?}");
                }
            }
        }
    }
}

#[test]
fn output_is_normalized_per_group() {
    let x = Var::constant(Tensor::randn_seeded(&[2, 4, 8, 8], 1));
    let (g, b) = (Var::constant(Tensor::ones(&[4])), Var::constant(Tensor::zeros(&[4])));
    let y = Tape::new().group_norm(&x, 2, &g, &b, 1e-5);
    for group in y.value().data().chunks(2 * 64) {
        let mean = group.iter().sum::<f32>() / 128.0;
        let var = group.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 128.0;
        assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3, "mean {mean} var {var}");
    }
}

#[test]
fn results_are_bit_identical_at_one_and_two_threads() {
    let s = GroupNormShape { n: 4, c: 16, hw: 100, groups: 4 };
    let x = Tensor::randn_seeded(&[6400], 1);
    let g = Tensor::randn_seeded(&[16], 2);
    let dy = Tensor::randn_seeded(&[6400], 3);
    let run = |threads| {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
            let (y, mean, rstd) = group_norm_forward(x.data(), g.data(), g.data(), &s, 1e-5);
            (y.clone(), group_norm_backward(x.data(), g.data(), &mean, &rstd, dy.data(), &s))
        })
    };
    assert!(run(1) == run(2));
}

#[test]
#[should_panic(expected = "group_norm: x [2, 6, 4, 4] must be [N, C, …] with C divisible by num_groups = 4")]
fn group_norm_rejects_indivisible_channels() {
    let x = Var::constant(Tensor::zeros(&[2, 6, 4, 4]));
    let g = Var::constant(Tensor::ones(&[6]));
    Tape::new().group_norm(&x, 4, &g, &g, 1e-5);
}
