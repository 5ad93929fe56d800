//! What the CPU can do, and how kernels use it: SIMD level chosen at run time, and threads.
//!
//! # SIMD
//! Kernels are written as plain Rust loops that the compiler can vectorize (fixed-width chunks, several
//! independent accumulators). [`with_simd`] runs such a loop inside a function compiled with the CPU's
//! wider instruction sets enabled (`#[target_feature]`), so the same source becomes AVX2+FMA or AVX-512 code
//! where the CPU has it, and baseline code elsewhere. On aarch64, NEON is part of the baseline.
//!
//! The level is detected once. `AUTOGRAD_SIMD=scalar` (or `avx2`) in the environment caps it, so tests and
//! benches can force the baseline path; tests also call [`with_simd`] with every level of [`available`].
//!
//! # Threads
//! rayon, on outer loops only, each task writing its own slice of the output. Work smaller than
//! [`PARALLEL_MIN_WORK`] runs on the calling thread. Reductions never depend on how work was split, so
//! results are bit-identical at any number of threads.

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

/// Runs `f` compiled for `level`: `f` (and everything it calls with `#[inline(always)]`) is inlined into a
/// function with that level's target features, so its loops are vectorized for them.
///
/// # Panics
/// If `level` is above what this CPU supports (that would be undefined behaviour).
#[inline(always)]
pub fn with_simd<R>(level: Simd, f: impl FnOnce() -> R) -> R {
    assert!(level <= detect(), "with_simd: {level:?} is not supported by this CPU");
    match level {
        // SAFETY: the assert above checked the CPU has these features.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { run_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { run_avx2(f) },
        _ => f(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// e^x for f32, written so that it vectorizes (no libm call, no branches): x = n·ln2 + r with |r| ≤ ln2/2,
/// e^r by a degree-6 polynomial (Taylor coefficients, relative error below 2e-7 on that range), 2ⁿ by
/// building the float's exponent bits. Inputs below −87 give 0; above 88 give +∞ (as f32::exp).
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.3, 88.7);
    let n = (x * LOG2E).round();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // e^r = 1 + r + r²/2! + … + r⁶/6!  (Horner form)
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127).clamp(0, 255) as u32) << 23);
    let y = p * scale;
    if x <= -87.3 {
        0.0
    } else {
        y
    }
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

    #[test]
    fn every_available_level_runs() {
        for level in available() {
            let s: f32 = with_simd(level, || (0..1000).map(|i| i as f32).sum());
            assert_eq!(s, 499_500.0);
        }
    }
}
