//! Group normalization kernels.
//!
//! Legend: `n` batch, `c` channels, `hw` = H·W pixels per channel, `groups` G, `cg` = C/G channels per group,
//! `m` = cg·hw elements per (n, g). In NCHW the channels of one group are adjacent, so the m elements of
//! (n, g) are one contiguous slice `x[(n·G + g)·m ..][..m]`, the unit of work of every kernel here.

use rayon::prelude::*;

use crate::cpu::{self, exp_fast, pairwise_sum, sum, sum_and_dot, sum_sq_dev, Simd};

/// Sizes of one group norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupNormShape {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub groups: usize,
}

impl GroupNormShape {
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }
    pub fn m(&self) -> usize {
        self.cg() * self.hw
    }
}

/// Plain reference. Returns (y [n, c, hw], mean [n, G], rstd [n, G]).
pub fn group_norm_forward_naive(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    s: &GroupNormShape,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (m, cg) = (s.m(), s.cg());
    let mut y = vec![0.0; x.len()];
    let (mut means, mut rstds) = (vec![0.0; s.n * s.groups], vec![0.0; s.n * s.groups]);
    for ng in 0..s.n * s.groups {
        let xs = &x[ng * m..(ng + 1) * m];
        let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / m as f64;
        let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / m as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for (i, &v) in xs.iter().enumerate() {
            let ch = (ng % s.groups) * cg + i / s.hw;
            y[ng * m + i] = ((v as f64 - mean) * rstd) as f32 * gamma[ch] + beta[ch];
        }
        means[ng] = mean as f32;
        rstds[ng] = rstd as f32;
    }
    (y, means, rstds)
}

/// Plain reference of the backward. Returns (dx, dgamma, dbeta).
/// ```text
/// x̂ = (x − μ)·rstd,  dx̂ = γ_c·dy
/// dβ_c = Σ_{n,pixels} dy,   dγ_c = Σ_{n,pixels} dy·x̂
/// dx = rstd · (dx̂ − mean_g(dx̂) − x̂ · mean_g(dx̂ · x̂))
/// ```
pub fn group_norm_backward_naive(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    s: &GroupNormShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (m, cg) = (s.m(), s.cg());
    let mut dx = vec![0.0; x.len()];
    let (mut dgamma, mut dbeta) = (vec![0.0; s.c], vec![0.0; s.c]);
    for ng in 0..s.n * s.groups {
        let channel = |i: usize| (ng % s.groups) * cg + i / s.hw;
        let x_hat = |i: usize| (x[ng * m + i] - mean[ng]) * rstd[ng];
        let (mut mean_dxh, mut mean_dxh_xh) = (0.0f64, 0.0f64);
        for i in 0..m {
            let g = dy[ng * m + i];
            let dxh = gamma[channel(i)] * g;
            mean_dxh += dxh as f64 / m as f64;
            mean_dxh_xh += (dxh * x_hat(i)) as f64 / m as f64;
            dgamma[channel(i)] += g * x_hat(i);
            dbeta[channel(i)] += g;
        }
        for i in 0..m {
            let dxh = gamma[channel(i)] * dy[ng * m + i];
            dx[ng * m + i] = rstd[ng] * (dxh - mean_dxh as f32 - x_hat(i) * mean_dxh_xh as f32);
        }
    }
    (dx, dgamma, dbeta)
}

/// Plain reference of group norm followed by SiLU: y = z·σ(z) with z = group_norm(x). Returns (y, mean, rstd).
pub fn group_norm_silu_forward_naive(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    s: &GroupNormShape,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (z, mean, rstd) = group_norm_forward_naive(x, gamma, beta, s, eps);
    (z.iter().map(|&z| z / (1.0 + (-z).exp())).collect(), mean, rstd)
}

/// Plain reference of the fused backward, by the chain rule through the two ops:
/// ```text
/// z = γ_c·x̂ + β_c,  dz = dy · σ(z)·(1 + z·(1 − σ(z))),  then group norm's backward with dz
/// ```
#[allow(clippy::too_many_arguments)]
pub fn group_norm_silu_backward_naive(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    s: &GroupNormShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = s.m();
    let dz: Vec<f32> = (0..x.len())
        .map(|i| {
            let (ng, ch) = (i / m, (i / m % s.groups) * s.cg() + i % m / s.hw);
            let z = (x[i] - mean[ng]) * rstd[ng] * gamma[ch] + beta[ch];
            let sig = 1.0 / (1.0 + (-z).exp());
            dy[i] * sig * (1.0 + z * (1.0 - sig))
        })
        .collect();
    group_norm_backward_naive(x, gamma, mean, rstd, &dz, s)
}

/// Channels with fewer values than this (the U-Net's 7×7 and 14×14 maps) take the fused SiLU's exponentials
/// and divisions in one pass over the whole (n, g) slice after its affine pass, instead of channel by
/// channel in the same pass: vectorized 8 or 16 at a time, a 49-value channel leaves a scalar tail of up
/// to 17 in each. Measured on the AMD EPYC (Zen 3) at batch 32, 8 groups, medians of 500 calls in two
/// alternated runs: [32, 256, 7, 7] forward 0.30–0.37 → 0.27–0.32 ms, backward 0.60–0.72 → 0.47; [32,
/// 192, 14, 14] forward 0.99–1.02 → 0.75–0.79; but [32, 96, 28, 28], whose slice no longer fits the L1
/// cache, 1.69 → 1.92–1.97 forward and 2.32–2.55 → 2.68–2.72 backward, so longer channels keep the single
/// pass. Either way each value is the same expression, so the result does not depend on it.
const SHORT_CHANNEL: usize = 256;

/// One (n, g) slice: statistics, then y = a_c·x + b_c per channel. Returns (mean, rstd).
/// With `silu`, the output is z·σ(z) of that z = a_c·x + b_c, while the slice is still in cache (SiLU's own
/// kernel, `silu_forward_at`, computes the same expression, so the fused op equals the two ops in sequence
/// bit for bit).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_group(
    xs: &[f32],
    y: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    hw: usize,
    eps: f32,
    silu: bool,
) -> (f32, f32) {
    let m = xs.len() as f32;
    let mean = sum(xs) / m;
    let rstd = 1.0 / (sum_sq_dev(xs, mean) / m + eps).sqrt();
    let silu_after = silu && hw < SHORT_CHANNEL;
    for (j, (yc, xc)) in y.chunks_mut(hw).zip(xs.chunks(hw)).enumerate() {
        let a = gamma[j] * rstd;
        let b = beta[j] - mean * a;
        if silu && !silu_after {
            yc.iter_mut().zip(xc).for_each(|(y, &x)| {
                let z = a * x + b;
                *y = z / (1.0 + exp_fast(-z));
            });
        } else {
            yc.iter_mut().zip(xc).for_each(|(y, &x)| *y = a * x + b);
        }
    }
    if silu_after {
        y.iter_mut().for_each(|y| *y = *y / (1.0 + exp_fast(-*y)));
    }
    (mean, rstd)
}
crate::multiversion!(fn forward_group_at(level: Simd, xs: &[f32], y: &mut [f32], gamma: &[f32], beta: &[f32], hw: usize, eps: f32, silu: bool) -> (f32, f32) => forward_group);

/// One (n, g) slice of the fused backward's first step: dz = dy · σ(z)·(1 + z·(1 − σ(z))) with z = a_c·x + b_c
/// recomputed exactly as the forward computed it (so dz equals what SiLU's backward would have passed on).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn silu_grad_group(xs: &[f32], dys: &[f32], gamma: &[f32], beta: &[f32], mu: f32, r: f32, hw: usize, dz: &mut [f32]) {
    let dz_of = |z: f32, g: f32| {
        let s = 1.0 / (1.0 + exp_fast(-z));
        g * s * (1.0 + z * (1.0 - s))
    };
    let after = hw < SHORT_CHANNEL; // z per channel, then dz over the whole slice, as in `forward_group`
    for (j, (dzc, (xc, dc))) in dz.chunks_mut(hw).zip(xs.chunks(hw).zip(dys.chunks(hw))).enumerate() {
        let a = gamma[j] * r;
        let b = beta[j] - mu * a;
        match after {
            true => dzc.iter_mut().zip(xc).for_each(|(z, &x)| *z = a * x + b),
            false => dzc.iter_mut().zip(xc.iter().zip(dc)).for_each(|(d, (&x, &g))| *d = dz_of(a * x + b, g)),
        }
    }
    if after {
        dz.iter_mut().zip(dys).for_each(|(d, &g)| *d = dz_of(*d, g));
    }
}
crate::multiversion!(fn silu_grad_group_at(level: Simd, xs: &[f32], dys: &[f32], gamma: &[f32], beta: &[f32], mu: f32, r: f32, hw: usize, dz: &mut [f32]) => silu_grad_group);

/// (Σ aᵢ, Σ aᵢ·bᵢ) of a channel shorter than 64 values (a 7×7 map's 49), in 8 lanes and one pass, then
/// pairwise across the lanes. `cpu::sum_and_dot` takes such a slice whole in its tail code, 16 lanes at a
/// time in two passes with 16-lane reductions: on the AMD EPYC (Zen 3), the backward of group norm + SiLU
/// [32, 256, 7, 7] ran 17% faster this way (0.713–0.748 → 0.594–0.625 ms, two runs of 1,000 calls each
/// way, alternated call by call, medians), but [32, 192, 14, 14] 10% slower, so only short channels take it.
#[inline(always)]
fn short_sum_and_dot(a: &[f32], b: &[f32]) -> (f32, f32) {
    let (mut s, mut d) = ([0.0f32; 8], [0.0f32; 8]);
    let ((a8, a1), (b8, b1)) = (a.as_chunks::<8>(), b.as_chunks::<8>());
    for (x, y) in a8.iter().zip(b8) {
        for i in 0..8 {
            s[i] += x[i];
            d[i] += x[i] * y[i];
        }
    }
    let (rs, rd) = a1.iter().zip(b1).fold((0.0f32, 0.0f32), |(s, d), (&x, &y)| (s + x, d + x * y));
    (pairwise_sum(s) + rs, pairwise_sum(d) + rd)
}

/// One (n, g) slice of the backward: dx, and the per-channel partial sums (Σ dy, Σ dy·x̂) into `part`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_group(
    xs: &[f32],
    dys: &[f32],
    dx: &mut [f32],
    gamma: &[f32],
    mu: f32,
    r: f32,
    hw: usize,
    part: &mut [(f32, f32)],
) {
    let m = xs.len() as f32;
    // Σ dx̂ and Σ dx̂·x̂ over the group, from per-channel Σ dy and Σ dy·x (x̂ = (x − μ)·r):
    // Σ dy·x̂ = r·(Σ dy·x − μ·Σ dy).
    let (mut s_dxh, mut s_dxh_xh) = (0.0f32, 0.0f32);
    for (j, p) in part.iter_mut().enumerate() {
        let (xc, dc) = (&xs[j * hw..(j + 1) * hw], &dys[j * hw..(j + 1) * hw]);
        // One pass over dy and x.
        let (sum_dy, sum_dy_x) = if hw < 64 { short_sum_and_dot(dc, xc) } else { sum_and_dot(dc, xc) };
        let sum_dy_xh = r * (sum_dy_x - mu * sum_dy);
        s_dxh += gamma[j] * sum_dy;
        s_dxh_xh += gamma[j] * sum_dy_xh;
        *p = (sum_dy, sum_dy_xh);
    }
    let (mean_dxh, mean_dxh_xh) = (s_dxh / m, s_dxh_xh / m);
    // dx = r·(γ_c·dy − mean_dxh − x̂·mean_dxh_xh) = (r·γ_c)·dy + k1·x + k0: two FMAs per element.
    for (j, &g) in gamma.iter().enumerate() {
        let (a, k1) = (r * g, -r * r * mean_dxh_xh);
        let k0 = -r * mean_dxh - k1 * mu;
        let (xc, dc) = (&xs[j * hw..(j + 1) * hw], &dys[j * hw..(j + 1) * hw]);
        dx[j * hw..(j + 1) * hw].iter_mut().zip(xc.iter().zip(dc)).for_each(|(d, (&x, &g))| *d = a * g + k1 * x + k0);
    }
}
crate::multiversion!(fn backward_group_at(level: Simd, xs: &[f32], dys: &[f32], dx: &mut [f32], gamma: &[f32], mu: f32, r: f32, hw: usize, part: &mut [(f32, f32)]) => backward_group);

/// Must equal [`group_norm_forward_naive`] up to rounding. Why it is faster: one rayon task per (n, g) slice;
/// the statistics use the vectorized [`sum`] and [`sum_sq_dev`] (two passes, numerically safe), compiled
/// for the CPU's SIMD level; the output is one fused multiply-add per element, y = a_c·x + b_c with
/// a_c = γ_c·rstd and b_c = β_c − μ·a_c.
pub fn group_norm_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    s: &GroupNormShape,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    group_norm_forward_at(cpu::simd(), x, gamma, beta, s, eps)
}

/// [`group_norm_forward`] at an explicit SIMD level (tests run every level).
pub fn group_norm_forward_at(
    level: Simd,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    s: &GroupNormShape,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    forward_impl(level, x, gamma, beta, s, eps, false)
}

/// Group norm followed by SiLU in one pass. Must equal [`group_norm_silu_forward_naive`] up to rounding, and
/// [`group_norm_forward_at`] followed by `silu_forward_at` exactly. Why: the U-Net applies SiLU after almost
/// every group norm; fused, the activations are read and written once instead of twice, with one parallel
/// loop instead of two.
pub fn group_norm_silu_forward_at(
    level: Simd,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    s: &GroupNormShape,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    forward_impl(level, x, gamma, beta, s, eps, true)
}

fn forward_impl(
    level: Simd,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    s: &GroupNormShape,
    eps: f32,
    silu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (m, cg, hw) = (s.m(), s.cg(), s.hw);
    let mut y = crate::pool::take_dirty(x.len());
    let mut stats = vec![(0.0f32, 0.0f32); s.n * s.groups];
    y.par_chunks_mut(m).zip(stats.par_iter_mut()).enumerate().with_min_len(8).for_each(|(ng, (y, stat))| {
        let channels = (ng % s.groups) * cg..(ng % s.groups + 1) * cg;
        let xs = &x[ng * m..(ng + 1) * m];
        *stat = forward_group_at(level, xs, y, &gamma[channels.clone()], &beta[channels], hw, eps, silu);
    });
    let (mean, rstd) = stats.into_iter().unzip();
    (y, mean, rstd)
}

/// Must equal [`group_norm_backward_naive`] up to rounding. One rayon task per (n, g) computes dx and its
/// per-channel partial sums of dy and dy·x̂; dγ and dβ then add those partials over n in order, so the
/// result does not depend on the number of threads.
pub fn group_norm_backward(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    s: &GroupNormShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    group_norm_backward_at(cpu::simd(), x, gamma, mean, rstd, dy, s)
}

/// [`group_norm_backward`] at an explicit SIMD level.
pub fn group_norm_backward_at(
    level: Simd,
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    s: &GroupNormShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    backward_impl(level, x, gamma, None, mean, rstd, dy, s)
}

/// The backward of [`group_norm_silu_forward_at`]. Must equal [`group_norm_silu_backward_naive`] up to
/// rounding, and SiLU's backward followed by [`group_norm_backward_at`] exactly. Per (n, g) slice, dz (the
/// gradient at the group norm's output) is computed into a scratch slice that stays in cache, then the
/// group norm's own slice backward runs on it.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_silu_backward_at(
    level: Simd,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    s: &GroupNormShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    backward_impl(level, x, gamma, Some(beta), mean, rstd, dy, s)
}

/// `silu_beta`: Some(β) for the fused op's backward.
#[allow(clippy::too_many_arguments)]
fn backward_impl(
    level: Simd,
    x: &[f32],
    gamma: &[f32],
    silu_beta: Option<&[f32]>,
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    s: &GroupNormShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (m, cg, hw) = (s.m(), s.cg(), s.hw);
    let mut dx = crate::pool::take_dirty(x.len());
    // Per (n, channel): (Σ dy, Σ dy·x̂).
    let mut partial = vec![(0.0f32, 0.0f32); s.n * s.c];
    let slices = dx.par_chunks_mut(m).zip(partial.par_chunks_mut(cg)).enumerate().with_min_len(8);
    slices.for_each_init(Vec::new, |dz, (ng, (dx, part))| {
        let channels = (ng % s.groups) * cg..(ng % s.groups + 1) * cg;
        let (xs, mut dys) = (&x[ng * m..(ng + 1) * m], &dy[ng * m..(ng + 1) * m]);
        if let Some(beta) = silu_beta {
            dz.resize(m, 0.0); // [m], reused across the slices of this task
            let (g, b) = (&gamma[channels.clone()], &beta[channels.clone()]);
            silu_grad_group_at(level, xs, dys, g, b, mean[ng], rstd[ng], hw, dz);
            dys = dz;
        }
        backward_group_at(level, xs, dys, dx, &gamma[channels], mean[ng], rstd[ng], hw, part);
    });
    let mut dgamma = vec![0.0; s.c];
    let mut dbeta = vec![0.0; s.c];
    for n in 0..s.n {
        for ch in 0..s.c {
            let (sdy, sdyxh) = partial[n * s.c + ch];
            dbeta[ch] += sdy;
            dgamma[ch] += sdyxh;
        }
    }
    (dx, dgamma, dbeta)
}
