//! Matrix product: the naive triple loop against the strided sgemm the ops use.
//! Throughput is reported in FLOPs (2·m·k·n per product, a multiply and an add per term).
//!
//! ```text
//! cargo bench --bench matmul
//! ```

use autograd::ops::matmul::{bmm, matmul_naive};
use autograd::Tensor;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// (name, batch, m, k, n)
const SHAPES: &[(&str, usize, usize, usize, usize)] =
    &[("256^3", 1, 256, 256, 256), ("64x[256x32]x[32x256]", 64, 256, 32, 256), ("1024^3", 1, 1024, 1024, 1024)];

fn bench_matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10);
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for &(name, batch, m, k, n) in SHAPES {
        let a = Tensor::randn_seeded(&[batch, m, k], 1);
        let b = Tensor::randn_seeded(&[batch, k, n], 2);
        let fast = || bmm(&[batch], m, k, n, a.data(), &[batch], false, b.data(), &[batch], false);
        // Check fast == naive once (on the first matrix of the batch) before timing.
        let naive0 = matmul_naive(&a.data()[..m * k], &b.data()[..k * n], m, k, n);
        let fast_all = fast();
        let err = naive0.iter().zip(&fast_all).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(err < 1e-2, "{name}: fast and naive differ by {err}");

        group.throughput(Throughput::Elements((2 * batch * m * k * n) as u64));
        if m * k * n <= 256 * 256 * 256 {
            group.bench_function(BenchmarkId::new("naive", name), |bench| {
                bench.iter(|| {
                    let products: Vec<Vec<f32>> = (0..batch)
                        .map(|i| {
                            matmul_naive(&a.data()[i * m * k..][..m * k], &b.data()[i * k * n..][..k * n], m, k, n)
                        })
                        .collect();
                    products
                })
            });
        }
        group.bench_function(BenchmarkId::new("sgemm-1t", name), |bench| bench.iter(|| one_thread.install(fast)));
        group.bench_function(BenchmarkId::new("sgemm", name), |bench| bench.iter(fast));
    }
    group.finish();
}

criterion_group!(benches, bench_matmul);
criterion_main!(benches);
