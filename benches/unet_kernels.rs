//! Every convolution, group norm and attention the `small` U-Net runs in a training step at batch 32, each
//! at its own shape, forward and backward: the kernel half of the comparison with PyTorch.
//!
//! ```text
//! cargo bench --bench unet_kernels                      # ours; also writes target/unet_kernels.txt
//! ~/torch-venv/bin/python benches/torch_unet_kernels.py target/unet_kernels.txt --json torch.json
//! python3 benches/compare_unet_kernels.py --ours target/criterion/unet_kernels --torch torch.json
//! ```
//! The list is not written by hand: the bench runs the U-Net's forward once on a tape and reads back what
//! it recorded (`Tape::recorded_ops`), so it follows the model. Each distinct call is one kernel, numbered
//! in the order the forward first meets it; `target/unet_kernels.txt` gives, per number, the op, its
//! shapes, its settings, how many times a step runs it, and whether its input needs a gradient (the first
//! convolution's does not: x_t is data). The PyTorch script times the same list.
//!
//! Phases, as a training step runs them (inside `cpu::with_spinning_workers`, results given back to the
//! buffer pool): `forward`, and `backward` with exactly the gradients the step asks for (a convolution's
//! input gradient only where its input needs one; group norm's x, γ, β; attention's q, k, v).

use autograd::cpu::with_spinning_workers;
use autograd::ops::attention::{attention_backward, attention_forward, AttentionShape};
use autograd::ops::conv2d::{conv2d_backward, conv2d_forward, ConvShape};
use autograd::ops::group_norm::{
    group_norm_backward_at, group_norm_forward_at, group_norm_silu_backward_at, group_norm_silu_forward_at,
    GroupNormShape,
};
use autograd::{cpu, pool, ParamStore, RecordedOp, Tape, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use diffusion::model::unet::{UNet, UNetConfig};

const BATCH: usize = 32;

/// The ops whose kernels this bench times (every other op of the U-Net is elementwise or a copy).
const KERNELS: &[&str] = &["conv2d", "group_norm", "group_norm_silu", "scaled_dot_product_attention"];

/// The distinct kernel calls of one forward pass of `small` at batch 32, in first-call order, each with
/// its count.
fn unet_kernel_calls() -> Vec<(RecordedOp, usize)> {
    let mut params = ParamStore::new();
    let model = UNet::new(UNetConfig::small(), &mut params, 0);
    let mut tape = Tape::new();
    let x = tape.constant(Tensor::randn_seeded(&[BATCH, 1, 28, 28], 1));
    let t: Vec<f32> = (0..BATCH).map(|i| (i * 31 % 1000) as f32).collect();
    let _ = model.forward(&mut tape, &params, &x, &t, None, None);
    let mut calls: Vec<(RecordedOp, usize)> = Vec::new();
    for op in tape.recorded_ops().into_iter().filter(|op| KERNELS.contains(&op.name)) {
        match calls.iter_mut().find(|(seen, _)| *seen == op) {
            Some((_, count)) => *count += 1,
            None => calls.push((op, 1)),
        }
    }
    calls
}

/// One line per kernel: `07 conv2d x=32,32,28,28 w=32,32,3,3 bias=1 stride=2 padding=1 dx=1 calls=1`.
fn describe(index: usize, op: &RecordedOp, calls: usize) -> String {
    let dims = |s: &[usize]| s.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let mut line = format!("{index:02} {}", op.name);
    match op.name {
        "conv2d" => {
            line += &format!(
                " x={} w={} bias={}",
                dims(&op.input_shapes[0]),
                dims(&op.input_shapes[1]),
                op.input_shapes.len() - 2
            );
        }
        "scaled_dot_product_attention" => {
            line += &format!(" q={} k={}", dims(&op.input_shapes[0]), dims(&op.input_shapes[1]))
        }
        _ => line += &format!(" x={}", dims(&op.input_shapes[0])),
    }
    for setting in op.attributes.split(", ").filter(|a| !a.is_empty()) {
        line += &format!(" {}", setting.replace(' ', "="));
    }
    line + &format!(" dx={} calls={calls}", op.needs_grad[0] as usize)
}

/// The number after `name ` in an op's attributes (`"stride 2, padding 1"`).
fn setting(op: &RecordedOp, name: &str) -> usize {
    let value = op.attributes.split(", ").find_map(|a| a.strip_prefix(name)?.trim().parse().ok());
    value.unwrap_or_else(|| panic!("{} records no {name}: {:?}", op.name, op.attributes))
}

fn write_list(calls: &[(RecordedOp, usize)]) {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
    let path = std::path::Path::new(&target).join("unet_kernels.txt");
    let mut text = format!("# the small U-Net's kernels at batch {BATCH}, from benches/unet_kernels.rs\n");
    for (i, (op, count)) in calls.iter().enumerate() {
        text += &describe(i, op, *count);
        text.push('\n');
    }
    std::fs::create_dir_all(&target).expect("cannot create the target directory");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn bench_unet_kernels(c: &mut Criterion) {
    let calls = unet_kernel_calls();
    write_list(&calls);
    let mut group = c.benchmark_group("unet_kernels");
    group.sample_size(10);
    for (i, (op, _)) in calls.iter().enumerate() {
        let id = format!("{i:02}");
        let seed = 10 * i as u64;
        let shape = &op.input_shapes;
        match op.name {
            "conv2d" => {
                let s = ConvShape::new(&shape[0], &shape[1], setting(op, "stride"), setting(op, "padding")).unwrap();
                let (x, w) = (Tensor::randn_seeded(&shape[0], seed), Tensor::randn_seeded(&shape[1], seed + 1));
                let b = (shape.len() == 3).then(|| Tensor::randn_seeded(&shape[2], seed + 2));
                let dy = Tensor::randn_seeded(&op.output_shape, seed + 3);
                let want_dx = op.needs_grad[0];
                let bias = b.as_ref().map(|b| b.data());
                let forward = || pool::give(conv2d_forward(x.data(), w.data(), bias, &s));
                let backward = || {
                    let (dx, dw, db) = conv2d_backward(x.data(), w.data(), dy.data(), &s, want_dx, true);
                    dx.into_iter().chain(dw).chain([db]).for_each(pool::give);
                };
                time(&mut group, &id, forward, backward);
            }
            "group_norm" | "group_norm_silu" => {
                let xs = &shape[0];
                let s =
                    GroupNormShape { n: xs[0], c: xs[1], hw: xs[2..].iter().product(), groups: setting(op, "groups") };
                let (x, dy) = (Tensor::randn_seeded(xs, seed), Tensor::randn_seeded(xs, seed + 1));
                let (gamma, beta) = (Tensor::randn_seeded(&[s.c], seed + 2), Tensor::randn_seeded(&[s.c], seed + 3));
                let (level, silu) = (cpu::simd(), op.name == "group_norm_silu");
                let run_forward = || match silu {
                    true => group_norm_silu_forward_at(level, x.data(), gamma.data(), beta.data(), &s, 1e-5),
                    false => group_norm_forward_at(level, x.data(), gamma.data(), beta.data(), &s, 1e-5),
                };
                let (_, mean, rstd) = run_forward();
                let forward = || pool::give(run_forward().0);
                let backward = || {
                    let (dx, dgamma, dbeta) = match silu {
                        true => group_norm_silu_backward_at(
                            level,
                            x.data(),
                            gamma.data(),
                            beta.data(),
                            &mean,
                            &rstd,
                            dy.data(),
                            &s,
                        ),
                        false => group_norm_backward_at(level, x.data(), gamma.data(), &mean, &rstd, dy.data(), &s),
                    };
                    [dx, dgamma, dbeta].into_iter().for_each(pool::give);
                };
                time(&mut group, &id, forward, backward);
            }
            _ => {
                let (qs, ks) = (&shape[0], &shape[1]);
                let r = qs.len();
                let s = AttentionShape {
                    batch: qs[..r - 2].iter().product(),
                    sq: qs[r - 2],
                    sk: ks[r - 2],
                    d: qs[r - 1],
                    dv: shape[2][r - 1],
                };
                let (q, k, v) = (
                    Tensor::randn_seeded(qs, seed),
                    Tensor::randn_seeded(ks, seed + 1),
                    Tensor::randn_seeded(&shape[2], seed + 2),
                );
                let dout = Tensor::randn_seeded(&op.output_shape, seed + 3);
                let (o, lse) = attention_forward(q.data(), k.data(), v.data(), &s);
                let forward = || pool::give(attention_forward(q.data(), k.data(), v.data(), &s).0);
                let backward = || {
                    let (dq, dk, dv) = attention_backward(q.data(), k.data(), v.data(), &o, &lse, dout.data(), &s);
                    [dq, dk, dv].into_iter().for_each(pool::give);
                };
                time(&mut group, &id, forward, backward);
            }
        }
    }
    group.finish();
}

/// Times both phases as training runs them: with the workers kept spinning.
fn time(
    group: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    id: &str,
    forward: impl Fn() + Sync,
    backward: impl Fn() + Sync,
) {
    group.bench_function(BenchmarkId::new("forward", id), |b| with_spinning_workers(|| b.iter(&forward)));
    group.bench_function(BenchmarkId::new("backward", id), |b| with_spinning_workers(|| b.iter(&backward)));
}

criterion_group!(benches, bench_unet_kernels);
criterion_main!(benches);
