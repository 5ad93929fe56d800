//! What the CPU can do, and how kernels use it: SIMD level chosen at run time, and threads.
//!
//! # SIMD
//! Kernels are written as plain Rust loops that the compiler can vectorize (fixed-width chunks, several
//! independent accumulators). [`multiversion!`](crate::multiversion) compiles such a body again inside
//! functions built with the CPU's wider instruction sets enabled (`#[target_feature]`), so the same source
//! becomes AVX2+FMA or AVX-512 code where the CPU has it, and baseline code elsewhere. On aarch64, NEON is
//! part of the baseline.
//!
//! The level is detected once. `AUTOGRAD_SIMD=scalar` (or `avx2`) in the environment caps it, so tests and
//! benches can force the baseline path; kernel tests also run every level of [`available`] explicitly.
//!
//! # Threads
//! rayon, on outer loops only, each task writing its own slice of the output. Work smaller than
//! [`PARALLEL_MIN_WORK`] runs on the calling thread. Reductions never depend on how work was split, so
//! results are bit-identical at any number of threads. [`with_spinning_workers`] keeps the other threads
//! awake through a training or sampling loop.

use std::sync::OnceLock;

/// Instruction-set level a kernel body is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    /// The target's baseline (SSE2 on x86-64, NEON on aarch64).
    Baseline,
    /// x86-64 AVX2 with FMA (8 f32 lanes).
    Avx2,
    /// x86-64 AVX-512 F/VL/BW/DQ (16 f32 lanes).
    Avx512,
}

impl Simd {
    /// f32 lanes per vector at this level (the baseline's: SSE2 and NEON, 4).
    pub fn lanes(self) -> usize {
        match self {
            Simd::Avx512 => 16,
            Simd::Avx2 => 8,
            Simd::Baseline => 4,
        }
    }
}

/// Below this many scalar operations a kernel does not split work across threads.
pub const PARALLEL_MIN_WORK: usize = 1 << 15;

fn detect() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return Simd::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Simd::Avx2;
        }
    }
    Simd::Baseline
}

/// Every level this CPU supports, lowest first (what tests compare against the naive kernels).
pub fn available() -> Vec<Simd> {
    let best = detect();
    [Simd::Baseline, Simd::Avx2, Simd::Avx512].into_iter().filter(|&s| s <= best).collect()
}

/// The level kernels use: the best detected, capped by `AUTOGRAD_SIMD` (`scalar`/`baseline`, `avx2`).
pub fn simd() -> Simd {
    static LEVEL: OnceLock<Simd> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = detect();
        match std::env::var("AUTOGRAD_SIMD").as_deref() {
            Ok("scalar") | Ok("baseline") => Simd::Baseline,
            Ok("avx2") => best.min(Simd::Avx2),
            _ => best,
        }
    })
}

/// Defines a function that runs an `#[inline(always)]` kernel body compiled for a chosen [`Simd`] level.
///
/// ```text
/// multiversion!(pub fn scale(level: Simd, x: &mut [f32], c: f32) => scale_body);
/// ```
/// expands to `pub fn scale(level, x, c)` which calls `scale_body(x, c)` inlined into a function built with
/// `#[target_feature(enable = "avx2,fma")]` or the AVX-512 set, or directly for `Baseline`. The body is
/// plain Rust; inlined there, its loops are vectorized for the wider registers. (A closure passed to a
/// `#[target_feature]` function is not reliably inlined, so the body must be a named function.)
///
/// # Panics
/// If `level` is above what this CPU supports (running it would be undefined behaviour).
#[macro_export]
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident(level: Simd $(, $arg:ident : $ty:ty)* $(,)?) $(-> $ret:ty)? => $body:path) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(level: $crate::cpu::Simd $(, $arg: $ty)*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                $body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                $body($($arg),*)
            }
            $crate::cpu::check_supported(level);
            match level {
                // SAFETY: check_supported verified the CPU has these features.
                #[cfg(target_arch = "x86_64")]
                $crate::cpu::Simd::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::cpu::Simd::Avx2 => unsafe { avx2($($arg),*) },
                _ => $body($($arg),*),
            }
        }
    };
}

/// Runs `f` on a rayon pool (as many threads as the global one) whose other workers, instead of going to
/// sleep whenever they run out of work, keep polling for it until `f` returns.
///
/// Why: a training step runs a few hundred parallel loops with short serial stretches between them, and
/// rayon puts idle workers to sleep within microseconds. Waking a sleeping thread costs little on bare
/// metal, but on this project's build machine (a KVM guest) it took 70 µs after a short sleep and 400 µs
/// after 5 ms, for every parallel loop; a loop of two 315 µs tasks took 385–767 µs instead of ~320. OpenMP
/// runtimes (PyTorch's) spin-wait for the same reason. Measured with three interleaved runs each: the
/// small U-Net's training step 322–340 → 299–310 ms, 50-step DDIM of 16 images 2.64–2.74 → 2.38–2.49 s.
/// The cost: the other cores stay busy while `f` runs serial code. Results are unchanged (the work is split
/// exactly as it would be). Used by the training loop and the samplers.
pub fn with_spinning_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let threads = rayon::current_num_threads();
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("cannot start the thread pool")
    });
    if pool.current_num_threads() == 1 {
        return pool.install(f);
    }
    /// Sets `stop` when dropped, so that a panic in `f` still releases the spinners.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    pool.install(|| {
        let (stop, started) = (AtomicBool::new(false), AtomicUsize::new(0));
        let spinners = pool.current_num_threads() - 1;
        rayon::scope(|scope| {
            for _ in 0..spinners {
                scope.spawn(|_| {
                    started.fetch_add(1, Ordering::AcqRel);
                    while !stop.load(Ordering::Acquire) {
                        // Run a waiting job if there is one (stolen from the thread running f), else spin.
                        if rayon::yield_now() != Some(rayon::Yield::Executed) {
                            std::hint::spin_loop();
                        }
                    }
                });
            }
            let _stop = Stop(&stop);
            // Each spinner must be running on its own thread before f starts: the thread running f must
            // not pick one up itself (it would spin inside f's first parallel loop).
            while started.load(Ordering::Acquire) < spinners {
                std::hint::spin_loop();
            }
            f()
        })
    })
}

/// Panics unless this CPU supports `level`.
#[inline]
pub fn check_supported(level: Simd) {
    assert!(level <= detect(), "{level:?} is not supported by this CPU");
}

/// e^x for f32, written so that it vectorizes (no libm call, no branches): x = n·ln2 + r with |r| ≤ ln2/2,
/// e^r by a degree-6 polynomial (Taylor coefficients, relative error below 2e-7 on that range), 2ⁿ by
/// building the float's exponent bits. Inputs below −87 give 0; above 88 give +∞ (as f32::exp).
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Round to nearest by adding 1.5·2²³: the sum's low mantissa bits then hold n as an integer, so both
    // n and 2ⁿ come from bit arithmetic. (`f32::round` is a library call without SSE4.1, and a float → int
    // `as` cast saturates, which the compiler does one lane at a time.)
    const ROUNDER: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.7);
    let shifted = x * LOG2E + ROUNDER;
    let n = shifted - ROUNDER;
    let n_int = shifted.to_bits() as i32 - ROUNDER.to_bits() as i32;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // e^r = 1 + r + r²/2! + … + r⁶/6!  (Horner form)
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n_int + 127).clamp(0, 255) as u32) << 23);
    let y = p * scale;
    if x <= -87.3 {
        0.0
    } else {
        y
    }
}

/// Independent accumulators in the reductions below: 64 lanes are four AVX-512 registers (or eight AVX2
/// ones), enough chains to hide the 4-cycle latency of a vector add. With one register of 16 lanes the loop
/// runs at one add per 4 cycles whatever the SIMD width.
const LANES: usize = 64;

/// Adds the accumulators pairwise (64 → 32 → … → 1): vector adds, and a chain of 6 rather than 64
/// dependent additions.
#[inline(always)]
fn horizontal_sum(acc: [f32; LANES]) -> f32 {
    pairwise_sum(acc)
}

/// Σ of N values (N a power of two), pairwise: N → N/2 → … → 1.
#[inline(always)]
pub fn pairwise_sum<const N: usize>(mut acc: [f32; N]) -> f32 {
    let mut width = N / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0]
}

/// Σ x, with [`LANES`] independent accumulators so the loop vectorizes (a plain `.sum()` is one serial
/// chain). The order of additions is fixed by the length alone.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    horizontal_sum(acc) + sum_short(tail)
}

/// Lanes for what a reduction leaves past its last full chunk of [`LANES`]: 16 at a time, then one by one.
/// A short slice is all tail (a 7×7 channel is 49 values), and summed one by one it would be a single
/// chain of dependent adds, four cycles each.
const TAIL_LANES: usize = 16;

/// Σ x for a slice shorter than [`LANES`], [`TAIL_LANES`] at a time.
#[inline(always)]
fn sum_short(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; TAIL_LANES];
    let chunks = x.chunks_exact(TAIL_LANES);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..TAIL_LANES {
            acc[i] += c[i];
        }
    }
    pairwise_sum(acc) + rest
}

/// Σ aᵢ·bᵢ for slices shorter than [`LANES`], like [`sum_short`].
#[inline(always)]
fn dot_short(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; TAIL_LANES];
    let (ca, cb) = (a.chunks_exact(TAIL_LANES), b.chunks_exact(TAIL_LANES));
    let rest: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..TAIL_LANES {
            acc[i] += x[i] * y[i];
        }
    }
    pairwise_sum(acc) + rest
}

/// max(init, max x) for a slice shorter than [`LANES`], [`TAIL_LANES`] at a time (a row of attention
/// scores at 7×7 is 49 values; the maximum is the same in any order).
#[inline(always)]
fn max_short(x: &[f32], init: f32) -> f32 {
    let mut acc = [init; TAIL_LANES];
    let chunks = x.chunks_exact(TAIL_LANES);
    let rest = chunks.remainder().iter().copied().fold(init, f32::max);
    for c in chunks {
        for i in 0..TAIL_LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.into_iter().fold(rest, f32::max)
}

/// max(init, max x), with [`LANES`] independent running maxima (a plain fold is one serial chain).
#[inline(always)]
pub fn max(x: &[f32], init: f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = max_short(chunks.remainder(), init);
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] = acc[i].max(acc[i + width]);
        }
        width /= 2;
    }
    acc[0].max(tail)
}

/// Σ aᵢ·bᵢ, vectorized like [`sum`].
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail = dot_short(ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    horizontal_sum(acc) + tail
}

/// (Σ aᵢ, Σ aᵢ·bᵢ) in one pass over both, vectorized like [`sum`] (each sum added in the same order as
/// [`sum`] and [`dot`] would add it).
#[inline(always)]
pub fn sum_and_dot(a: &[f32], b: &[f32]) -> (f32, f32) {
    let (mut acc, mut acc_dot) = ([0.0f32; LANES], [0.0f32; LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (tail_sum, tail_dot) = (sum_short(ca.remainder()), dot_short(ca.remainder(), cb.remainder()));
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i];
            acc_dot[i] += x[i] * y[i];
        }
    }
    (horizontal_sum(acc) + tail_sum, horizontal_sum(acc_dot) + tail_dot)
}

/// Σ (xᵢ − c)², vectorized like [`sum`].
#[inline(always)]
pub fn sum_sq_dev(x: &[f32], c: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|v| (v - c) * (v - c)).sum();
    for ch in chunks {
        for i in 0..LANES {
            let d = ch[i] - c;
            acc[i] += d * d;
        }
    }
    horizontal_sum(acc) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_fast_is_close_to_exp() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp_fast(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp_fast(-200.0), 0.0);
        assert!(exp_fast(100.0) > 1e38);
    }

    #[inline(always)]
    fn total(x: &[f32]) -> f32 {
        sum(x)
    }
    multiversion!(fn total_at(level: Simd, x: &[f32]) -> f32 => total);

    #[test]
    fn max_equals_the_plain_fold_at_every_tail_length() {
        for n in [0, 1, 15, 16, 17, 49, 63, 64, 65, 1000] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * (i as f32)).collect();
            assert_eq!(max(&x, -5.0), x.iter().copied().fold(-5.0, f32::max), "n = {n}");
        }
    }

    #[test]
    fn sum_and_dot_equals_sum_and_dot_exactly() {
        for n in [0, 1, 15, 16, 17, 49, 63, 64, 65, 1000] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            assert_eq!(sum_and_dot(&a, &b), (sum(&a), dot(&a, &b)), "n = {n}");
        }
    }

    #[test]
    fn spinning_workers_run_parallel_loops_and_return() {
        use rayon::prelude::*;
        let total: u64 = with_spinning_workers(|| (0..10_000u64).into_par_iter().map(|i| i * i).sum());
        assert_eq!(total, (0..10_000u64).map(|i| i * i).sum());
        // Twice in a row, and a panic inside is passed on (the spinners are released, not left running).
        assert_eq!(with_spinning_workers(|| 7), 7);
        let caught = std::panic::catch_unwind(|| with_spinning_workers(|| panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(with_spinning_workers(|| (0..100).into_par_iter().count()), 100);
        // Nested (sampling a grid inside the training loop): the inner call runs in the same pool.
        let nested = with_spinning_workers(|| with_spinning_workers(|| (0..1000).into_par_iter().sum::<i32>()));
        assert_eq!(nested, 499_500);
    }

    #[test]
    fn every_available_level_runs() {
        let x: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        for level in available() {
            assert_eq!(total_at(level, &x), 499_500.0);
        }
    }
}
