//! A probe of this machine's peak f32 FMA throughput, so kernel benches can say "% of peak".
//!
//! 256 independent accumulators (sixteen AVX-512 registers, thirty-two AVX2 ones), each updated by a fused
//! multiply-add per iteration: enough independent chains to keep every FMA unit busy through its latency.
//! FLOPs = 2 per lane per iteration. Runs on one thread and on all threads.
//!
//! ```text
//! cargo bench --bench peak
//! ```

use autograd::cpu;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const LANES: usize = 256;
const ITERS: usize = 100_000;

#[inline(always)]
fn fma_chains(seed: f32) -> f32 {
    let mut acc = [seed; LANES];
    let (x, y) = (0.999_999, 1e-7);
    for _ in 0..ITERS {
        for a in acc.iter_mut() {
            *a = a.mul_add(x, y);
        }
    }
    acc.iter().sum()
}
autograd::multiversion!(fn fma_chains_at(level: Simd, seed: f32) -> f32 => fma_chains);

fn bench_peak(c: &mut Criterion) {
    let mut group = c.benchmark_group("peak");
    group.sample_size(10);
    let level = cpu::simd();
    let threads = rayon::current_num_threads();
    group.throughput(Throughput::Elements((2 * LANES * ITERS) as u64));
    group.bench_function(BenchmarkId::new("fma", format!("{level:?}/1-thread")), |b| {
        b.iter(|| fma_chains_at(level, std::hint::black_box(1.0)))
    });
    group.throughput(Throughput::Elements((2 * LANES * ITERS * threads) as u64));
    group.bench_function(BenchmarkId::new("fma", format!("{level:?}/{threads}-threads")), |b| {
        b.iter(|| {
            use rayon::prelude::*;
            (0..threads).into_par_iter().map(|i| fma_chains_at(level, std::hint::black_box(i as f32))).sum::<f32>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_peak);
criterion_main!(benches);
