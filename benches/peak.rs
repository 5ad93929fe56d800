//! A probe of this machine's peak f32 FMA throughput, so kernel benches can say "% of peak".
//!
//! Independent accumulators, each updated by a fused multiply-add per iteration: enough chains to keep
//! every FMA unit busy through its latency, few enough to stay in registers ([`chains`]: sixteen AVX-512
//! registers of 16 lanes; twelve AVX2 ones of 8, whose file has 16; twenty-four NEON ones of 4, of 32; twelve SSE ones). With
//! 256 lanes on AVX2 the chains spilled to memory and the probe read 39 GFLOP/s a thread on an AMD EPYC
//! (Zen 3) whose tiles reach more; 96 lanes read 88–91 there (2 pipes × 8 lanes × 2 FLOPs × about 2.8
//! GHz). FLOPs = 2 per lane per iteration. Runs on one thread and on all threads.
//!
//! ```text
//! cargo bench --bench peak
//! ```

use autograd::cpu::{self, Simd};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const ITERS: usize = 400_000;

/// The lanes of independent chains at a SIMD level (see the module doc).
fn chains(level: Simd) -> usize {
    match level {
        Simd::Avx512 => 256,
        Simd::Avx2 => 96,
        // NEON: 32 registers of 4 lanes, and up to four FMA pipes (Apple's) to cover.
        Simd::Baseline if cfg!(target_arch = "aarch64") => 96,
        Simd::Baseline => 48,
    }
}

#[inline(always)]
fn fma_chains<const LANES: usize>(seed: f32) -> f32 {
    let mut acc = [seed; LANES];
    let (x, y) = (0.999_999, 1e-7);
    for _ in 0..ITERS {
        for a in acc.iter_mut() {
            *a = a.mul_add(x, y);
        }
    }
    acc.iter().sum()
}

#[inline(always)]
fn fma_chains_256(seed: f32) -> f32 {
    fma_chains::<256>(seed)
}

#[inline(always)]
fn fma_chains_96(seed: f32) -> f32 {
    fma_chains::<96>(seed)
}

#[inline(always)]
fn fma_chains_48(seed: f32) -> f32 {
    fma_chains::<48>(seed)
}

autograd::multiversion!(fn fma_256_at(level: Simd, seed: f32) -> f32 => fma_chains_256);
autograd::multiversion!(fn fma_96_at(level: Simd, seed: f32) -> f32 => fma_chains_96);
autograd::multiversion!(fn fma_48_at(level: Simd, seed: f32) -> f32 => fma_chains_48);

/// One run of [`chains`]`(level)` lanes' chains at `level`.
fn fma_chains_at(level: Simd, seed: f32) -> f32 {
    match chains(level) {
        256 => fma_256_at(level, seed),
        96 => fma_96_at(level, seed),
        _ => fma_48_at(level, seed),
    }
}

fn bench_peak(c: &mut Criterion) {
    let mut group = c.benchmark_group("peak");
    group.sample_size(10);
    let level = cpu::simd();
    let threads = rayon::current_num_threads();
    let lanes = chains(level);
    group.throughput(Throughput::Elements((2 * lanes * ITERS) as u64));
    group.bench_function(BenchmarkId::new("fma", format!("{level:?}/1-thread")), |b| {
        b.iter(|| fma_chains_at(level, std::hint::black_box(1.0)))
    });
    group.throughput(Throughput::Elements((2 * lanes * ITERS * threads) as u64));
    // With the workers spinning between calls, as the kernels run in training (`unet_kernels`): waking
    // sleeping ones cost this KVM guest up to hundreds of µs a call.
    group.bench_function(BenchmarkId::new("fma", format!("{level:?}/{threads}-threads")), |b| {
        cpu::with_spinning_workers(|| {
            b.iter(|| {
                use rayon::prelude::*;
                let chains = |i: usize| fma_chains_at(level, std::hint::black_box(i as f32));
                (0..threads).into_par_iter().map(chains).sum::<f32>()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_peak);
criterion_main!(benches);
