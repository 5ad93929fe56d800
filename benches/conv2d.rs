//! 3×3 convolution (padding 1, stride 1, bias), forward, backward-input and backward-weight, on the U-Net's
//! shapes. Throughput in FLOPs: 2·N·C_out·C_in·9·H·W for each of the three.
//!
//! ```text
//! cargo bench --bench conv2d
//! ```
//! Variants: `naive` (the reference loops, first-layer shape only: the others take seconds per call),
//! `fast-1t` (what `conv2d` runs, on one thread: Winograd F(2×2, 3×3) for the forward and both gradients of
//! the 64- and 128-channel layers, the weight gradient in the Winograd domain too; for the 3-channel layer
//! the direct kernel forward and im2col gradients; `autograd::ops::conv2d::forward_path` says which shape
//! takes which path), `fast` (all threads), `direct` (the direct
//! kernel on all threads, for comparison), `im2col` (im2col + matrix product on all threads, the path every
//! other convolution takes).

use autograd::cpu::simd;
use autograd::ops::conv2d::{
    conv2d_backward, conv2d_backward_im2col, conv2d_backward_naive, conv2d_forward, conv2d_forward_direct,
    conv2d_forward_im2col, conv2d_forward_naive, ConvShape,
};
use autograd::Tensor;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SHAPES: &[(&str, [usize; 4], usize)] = &[
    ("x[16,64,32,32]->64", [16, 64, 32, 32], 64),
    ("x[16,128,16,16]->128", [16, 128, 16, 16], 128),
    ("x[16,3,32,32]->64", [16, 3, 32, 32], 64),
];

fn bench_conv2d(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d");
    group.sample_size(10);
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for &(name, xs, c_out) in SHAPES {
        let ws = [c_out, xs[1], 3, 3];
        let s = ConvShape::new(&xs, &ws, 1, 1).unwrap();
        let x = Tensor::randn_seeded(&xs, 1);
        let w = Tensor::randn_seeded(&ws, 2);
        let b = Tensor::randn_seeded(&[c_out], 3);
        let dy = Tensor::randn_seeded(&[s.n, c_out, s.oh, s.ow], 4);
        check_once(&s, &x, &w, &b, &dy);
        group.throughput(Throughput::Elements(s.flops() as u64));

        // Every result goes back to the buffer pool, as in a training step, where steady state makes no
        // fresh allocations (otherwise each call would also pay the page faults of a new buffer).
        let forward = || recycle(conv2d_forward(x.data(), w.data(), Some(b.data()), &s));
        let backward_input = || recycle_all(conv2d_backward(x.data(), w.data(), dy.data(), &s, true, false));
        let backward_weight = || recycle_all(conv2d_backward(x.data(), w.data(), dy.data(), &s, false, true));
        let backward_all = || recycle_all(conv2d_backward(x.data(), w.data(), dy.data(), &s, true, true));
        if xs[1] <= 3 {
            group.bench_function(BenchmarkId::new("forward/naive", name), |bch| {
                bch.iter(|| conv2d_forward_naive(x.data(), w.data(), Some(b.data()), &s))
            });
        }
        group.bench_function(BenchmarkId::new("forward/fast-1t", name), |bch| bch.iter(|| one_thread.install(forward)));
        group.bench_function(BenchmarkId::new("forward/fast", name), |bch| bch.iter(forward));
        group.bench_function(BenchmarkId::new("backward-input/fast-1t", name), |bch| {
            bch.iter(|| one_thread.install(backward_input))
        });
        group.bench_function(BenchmarkId::new("backward-input/fast", name), |bch| bch.iter(backward_input));
        group.bench_function(BenchmarkId::new("backward-weight/fast-1t", name), |bch| {
            bch.iter(|| one_thread.install(backward_weight))
        });
        group.bench_function(BenchmarkId::new("backward-weight/fast", name), |bch| bch.iter(backward_weight));
        // input + weight + bias in one call: what PyTorch's backward figure measures.
        group.throughput(Throughput::Elements(2 * s.flops() as u64));
        group.bench_function(BenchmarkId::new("backward-all/fast", name), |bch| bch.iter(backward_all));
        group.throughput(Throughput::Elements(s.flops() as u64));
        group.bench_function(BenchmarkId::new("forward/direct", name), |bch| {
            bch.iter(|| recycle(conv2d_forward_direct(simd(), x.data(), w.data(), Some(b.data()), &s)))
        });
        group.bench_function(BenchmarkId::new("forward/im2col", name), |bch| {
            bch.iter(|| recycle(conv2d_forward_im2col(x.data(), w.data(), Some(b.data()), &s)))
        });
        group.bench_function(BenchmarkId::new("backward-input/im2col", name), |bch| {
            bch.iter(|| recycle_pair(conv2d_backward_im2col(x.data(), w.data(), dy.data(), &s, true, false)))
        });
        group.bench_function(BenchmarkId::new("backward-weight/im2col", name), |bch| {
            bch.iter(|| recycle_pair(conv2d_backward_im2col(x.data(), w.data(), dy.data(), &s, false, true)))
        });
    }
    group.finish();
}

fn recycle(v: Vec<f32>) {
    autograd::pool::give(v);
}

fn recycle_pair((dx, dweight): (Option<Vec<f32>>, Option<Vec<f32>>)) {
    dx.into_iter().chain(dweight).for_each(recycle);
}

fn recycle_all((dx, dweight, _): (Option<Vec<f32>>, Option<Vec<f32>>, Vec<f32>)) {
    recycle_pair((dx, dweight));
}

/// fast == naive once before timing, on the first image only (the naive kernel is slow).
fn check_once(s: &ConvShape, x: &Tensor, w: &Tensor, b: &Tensor, dy: &Tensor) {
    let one = ConvShape { n: 1, ..*s };
    let x1 = &x.data()[..s.c_in * s.h * s.w];
    let dy1 = &dy.data()[..s.c_out * s.ohw()];
    let naive = conv2d_forward_naive(x1, w.data(), Some(b.data()), &one);
    let fast = conv2d_forward(x1, w.data(), Some(b.data()), &one);
    let (ndx, ndw, _) = conv2d_backward_naive(x1, w.data(), dy1, &one);
    let (dx, dw, _) = conv2d_backward(x1, w.data(), dy1, &one, true, true);
    for (f, n) in [(&fast, &naive), (&dx.unwrap(), &ndx), (&dw.unwrap(), &ndw)] {
        let err = f.iter().zip(n.iter()).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0f32, f32::max);
        assert!(err < 1e-3, "conv2d fast and naive differ by {err}");
    }
}

criterion_group!(benches, bench_conv2d);
criterion_main!(benches);
