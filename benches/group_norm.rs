//! Group norm, 32 groups, x [16, 128, 16, 16], forward and backward. Throughput in FLOPs, counted as about
//! 8 per element forward (two statistics passes and the affine output) and 12 backward; the kernel is bound
//! by memory traffic, so the time is the number to read.
//!
//! Variants: `naive`, `fast-1t`, `fast` (2 threads), and `fast-spin`: 2 threads inside
//! `cpu::with_spinning_workers`, as the training loop and the samplers run every kernel. A call here takes
//! under 0.2 ms, so in `fast` the time rayon's sleeping worker takes to wake (70–400 µs on this project's
//! KVM guest) is a large part of the figure; PyTorch's OpenMP threads spin between calls the same way.
//!
//! ```text
//! cargo bench --bench group_norm
//! ```

use autograd::ops::group_norm::{
    group_norm_backward, group_norm_backward_naive, group_norm_forward, group_norm_forward_naive, GroupNormShape,
};
use autograd::{pool, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench_group_norm(c: &mut Criterion) {
    let mut group = c.benchmark_group("group_norm");
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let name = "x[16,128,16,16]/32";
    let s = GroupNormShape { n: 16, c: 128, hw: 256, groups: 32 };
    let len = 16 * 128 * 256;
    let x = Tensor::randn_seeded(&[len], 1);
    let gamma = Tensor::randn_seeded(&[128], 2);
    let beta = Tensor::randn_seeded(&[128], 3);
    let dy = Tensor::randn_seeded(&[len], 4);
    let (y, mean, rstd) = group_norm_forward(x.data(), gamma.data(), beta.data(), &s, 1e-5);
    let (ny, _, _) = group_norm_forward_naive(x.data(), gamma.data(), beta.data(), &s, 1e-5);
    assert!(y.iter().zip(&ny).all(|(a, b)| (a - b).abs() < 1e-3), "fast and naive differ");

    // Outputs go back to the buffer pool, as a dropped Tensor's would in training.
    let forward = || pool::give(group_norm_forward(x.data(), gamma.data(), beta.data(), &s, 1e-5).0);
    let backward = || pool::give(group_norm_backward(x.data(), gamma.data(), &mean, &rstd, dy.data(), &s).0);
    group.throughput(Throughput::Elements(8 * len as u64));
    group.bench_function(BenchmarkId::new("forward/naive", name), |b| {
        b.iter(|| group_norm_forward_naive(x.data(), gamma.data(), beta.data(), &s, 1e-5))
    });
    group.bench_function(BenchmarkId::new("forward/fast-1t", name), |b| b.iter(|| one_thread.install(forward)));
    group.bench_function(BenchmarkId::new("forward/fast", name), |b| b.iter(forward));
    group.bench_function(BenchmarkId::new("forward/fast-spin", name), |b| {
        autograd::cpu::with_spinning_workers(|| b.iter(forward))
    });
    group.throughput(Throughput::Elements(12 * len as u64));
    group.bench_function(BenchmarkId::new("backward/naive", name), |b| {
        b.iter(|| group_norm_backward_naive(x.data(), gamma.data(), &mean, &rstd, dy.data(), &s))
    });
    group.bench_function(BenchmarkId::new("backward/fast-1t", name), |b| b.iter(|| one_thread.install(backward)));
    group.bench_function(BenchmarkId::new("backward/fast", name), |b| b.iter(backward));
    group.bench_function(BenchmarkId::new("backward/fast-spin", name), |b| {
        autograd::cpu::with_spinning_workers(|| b.iter(backward))
    });
    group.finish();
}

criterion_group!(benches, bench_group_norm);
criterion_main!(benches);
