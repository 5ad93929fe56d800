//! The U-Net's most frequent elementwise kernels on 2²⁰ elements (4 MiB per tensor): same-shape add and mul,
//! SiLU forward and backward, and the AdamW update. Throughput in elements per second; these kernels are
//! bound by memory traffic, not arithmetic.
//!
//! ```text
//! cargo bench --bench elementwise
//! ```

use autograd::cpu::{self, Simd};
use autograd::ops::arith::{add_same_at, binary_forward_naive, mul_same_at};
use autograd::ops::unary::{silu_backward_at, silu_forward_at, unary_forward};
use autograd::optim::{adam_update_at, AdamStep};
use autograd::{pool, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const N: usize = 1 << 20;

fn bench_elementwise(c: &mut Criterion) {
    let mut group = c.benchmark_group("elementwise");
    let (a, b) = (Tensor::randn_seeded(&[N], 1), Tensor::randn_seeded(&[N], 2));
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let best = cpu::simd();
    // fast == naive once before timing.
    assert_eq!(
        add_same_at(best, a.data(), b.data()),
        binary_forward_naive(a.data(), &[N], b.data(), &[N], &[N], |x, y| x + y)
    );
    let naive_silu = unary_forward(a.data(), |x| x / (1.0 + (-x).exp()));
    assert!(silu_forward_at(best, a.data()).iter().zip(&naive_silu).all(|(x, y)| (x - y).abs() < 1e-5));
    group.throughput(Throughput::Elements(N as u64));

    let variants = [("naive", Simd::Baseline, false), ("simd-1t", best, true), ("simd", best, false)];
    for (variant, level, single) in variants {
        let run = |f: &(dyn Fn() + Sync)| if single { one_thread.install(f) } else { f() };
        group.bench_function(BenchmarkId::new("add", variant), |bch| {
            bch.iter(|| run(&|| pool::give(add_same_at(level, a.data(), b.data()))))
        });
        group.bench_function(BenchmarkId::new("mul", variant), |bch| {
            bch.iter(|| run(&|| pool::give(mul_same_at(level, a.data(), b.data()))))
        });
        if variant == "naive" {
            group.bench_function(BenchmarkId::new("silu-forward", variant), |bch| {
                bch.iter(|| pool::give(unary_forward(a.data(), |x| x / (1.0 + (-x).exp()))))
            });
        } else {
            group.bench_function(BenchmarkId::new("silu-forward", variant), |bch| {
                bch.iter(|| run(&|| pool::give(silu_forward_at(level, a.data()))))
            });
            group.bench_function(BenchmarkId::new("silu-backward", variant), |bch| {
                bch.iter(|| run(&|| pool::give(silu_backward_at(level, b.data(), a.data()))))
            });
        }
        let (mut p, mut m, mut v) = (a.data().to_vec(), vec![0.0; N], vec![0.0; N]);
        let h = AdamStep {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            decoupled: true,
            step_size: 1e-3,
            bias_correction2_sqrt: 0.03,
        };
        group.bench_function(BenchmarkId::new("adamw-update", variant), |bch| {
            bch.iter(|| {
                let mut step = || adam_update_at(level, &mut p, b.data(), &mut m, &mut v, h);
                if single {
                    one_thread.install(step)
                } else {
                    step()
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_elementwise);
criterion_main!(benches);
