//! Scaled dot-product attention, q, k, v [16, 4, 256, 32], forward and backward. Throughput in FLOPs:
//! forward 2·B·H·Sq·Sk·(D + Dv); backward counted as 2.5× that (five tile products against two).
//!
//! ```text
//! cargo bench --bench attention
//! ```

use autograd::ops::attention::{attention_backward, attention_forward, attention_forward_naive, AttentionShape};
use autograd::{pool, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench_attention(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention");
    group.sample_size(10);
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let name = "qkv[16,4,256,32]";
    let s = AttentionShape { batch: 64, sq: 256, sk: 256, d: 32, dv: 32 };
    let n = 64 * 256 * 32;
    let (q, k, v, dout) = (
        Tensor::randn_seeded(&[n], 1),
        Tensor::randn_seeded(&[n], 2),
        Tensor::randn_seeded(&[n], 3),
        Tensor::randn_seeded(&[n], 4),
    );
    let (o, lse) = attention_forward(q.data(), k.data(), v.data(), &s);
    let naive = attention_forward_naive(q.data(), k.data(), v.data(), &s);
    let err = o.iter().zip(&naive).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(err < 1e-3, "fast and naive differ by {err}");

    let forward = || {
        let (o, _) = attention_forward(q.data(), k.data(), v.data(), &s);
        pool::give(o);
    };
    let backward = || {
        let (dq, dk, dv) = attention_backward(q.data(), k.data(), v.data(), &o, &lse, dout.data(), &s);
        [dq, dk, dv].into_iter().for_each(pool::give);
    };
    group.throughput(Throughput::Elements(s.flops() as u64));
    group.bench_function(BenchmarkId::new("forward/naive", name), |b| {
        b.iter(|| attention_forward_naive(q.data(), k.data(), v.data(), &s))
    });
    group.bench_function(BenchmarkId::new("forward/fast-1t", name), |b| b.iter(|| one_thread.install(forward)));
    group.bench_function(BenchmarkId::new("forward/fast", name), |b| b.iter(forward));
    group.throughput(Throughput::Elements((s.flops() * 5 / 2) as u64));
    group.bench_function(BenchmarkId::new("backward/fast-1t", name), |b| b.iter(|| one_thread.install(backward)));
    group.bench_function(BenchmarkId::new("backward/fast", name), |b| b.iter(backward));
    group.finish();
}

criterion_group!(benches, bench_attention);
criterion_main!(benches);
