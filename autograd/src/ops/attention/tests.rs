use super::*;
use crate::cpu;
use crate::gradcheck::gradcheck;

#[test]
fn attention_gradcheck_multi_head() {
    let xs = [
        Tensor::randn_seeded(&[2, 2, 5, 3], 1),
        Tensor::randn_seeded(&[2, 2, 4, 3], 2),
        Tensor::randn_seeded(&[2, 2, 4, 2], 3),
    ];
    gradcheck(&xs, |t, v| t.scaled_dot_product_attention(&v[0], &v[1], &v[2])).unwrap();
}

#[test]
fn attention_gradcheck_across_tiles() {
    // More queries and keys than one tile holds, so the online softmax and the tiled backward are exercised.
    let (sq, sk) = (TILE_Q + 3, TILE_K + 5);
    let xs = [
        Tensor::randn_seeded(&[1, sq, 2], 4),
        Tensor::randn_seeded(&[1, sk, 2], 5),
        Tensor::randn_seeded(&[1, sk, 2], 6),
    ];
    gradcheck(&xs, |t, v| t.scaled_dot_product_attention(&v[0], &v[1], &v[2])).unwrap();
}

#[test]
fn fast_equals_naive_on_odd_shapes_at_every_simd_level() {
    // Short sequences (≤ 64, `short.rs`: the U-Net's 49 positions, odd head sizes, the limit) and longer ones
    // (flash attention, one tile and several).
    let shapes = [
        (1, 1, 1, 1, 1),
        (3, 7, 13, 3, 5),
        (2, 49, 49, 32, 32),
        (1, 64, 33, 5, 17),
        (2, 65, 7, 7, 3),
        (1, 13, 200, 13, 1),
        (2, 130, 129, 16, 16),
    ];
    for (i, (batch, sq, sk, d, dv)) in shapes.into_iter().enumerate() {
        let s = AttentionShape { batch, sq, sk, d, dv };
        let q = Tensor::randn_seeded(&[batch * sq * d], i as u64);
        let k = Tensor::randn_seeded(&[batch * sk * d], 10 + i as u64);
        let v = Tensor::randn_seeded(&[batch * sk * dv], 20 + i as u64);
        let dout = Tensor::randn_seeded(&[batch * sq * dv], 30 + i as u64);
        let naive_o = attention_forward_naive(q.data(), k.data(), v.data(), &s);
        let (ndq, ndk, ndv) = attention_backward_naive(q.data(), k.data(), v.data(), dout.data(), &s);
        for level in cpu::available() {
            let (o, lse) = attention_forward_at(level, q.data(), k.data(), v.data(), &s);
            let (dq, dk, dv) = attention_backward_at(level, q.data(), k.data(), v.data(), &o, &lse, dout.data(), &s);
            for (what, fast, naive) in [("o", &o, &naive_o), ("dq", &dq, &ndq), ("dk", &dk, &ndk), ("dv", &dv, &ndv)] {
                for (a, b) in fast.iter().zip(naive.iter()) {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{what} {s:?} {level:?}: {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn results_are_bit_identical_at_one_and_two_threads() {
    // Flash attention, and the short-sequence kernel.
    for (sq, sk) in [(70, 140), (49, 49)] {
        let s = AttentionShape { batch: 5, sq, sk, d: 8, dv: 8 };
        let q = Tensor::randn_seeded(&[5 * sq * 8], 1);
        let k = Tensor::randn_seeded(&[5 * sk * 8], 2);
        let dout = Tensor::randn_seeded(&[5 * sq * 8], 3);
        let run = |threads| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                let (o, lse) = attention_forward(q.data(), k.data(), k.data(), &s);
                let grads = attention_backward(q.data(), k.data(), k.data(), &o, &lse, dout.data(), &s);
                (o, grads)
            })
        };
        assert!(run(1) == run(2), "{s:?}");
    }
}

#[test]
fn uniform_scores_average_the_values() {
    // q = 0 makes every score 0, so p is uniform and o is the mean of v's rows.
    let q = Var::constant(Tensor::zeros(&[1, 2, 4]));
    let k = Var::constant(Tensor::randn_seeded(&[1, 3, 4], 1));
    let v = Var::constant(Tensor::from_vec(&[1, 3, 1], vec![1.0, 2.0, 6.0]));
    let o = Tape::new().scaled_dot_product_attention(&q, &k, &v);
    assert!(o.value().data().iter().all(|x| (x - 3.0).abs() < 1e-6));
}

#[test]
#[should_panic(expected = "scaled_dot_product_attention: q [2, 5, 4], k [2, 5, 3], v [2, 5, 4] must be")]
fn attention_rejects_mismatched_head_dim() {
    let q = Var::constant(Tensor::zeros(&[2, 5, 4]));
    let k = Var::constant(Tensor::zeros(&[2, 5, 3]));
    Tape::new().scaled_dot_product_attention(&q, &k, &q);
}
