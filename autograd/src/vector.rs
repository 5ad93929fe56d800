//! Hand-written SIMD: the one place in the crate with intrinsics.
//!
//! Most kernels are plain loops that the compiler vectorizes (see [`crate::cpu`]). Register-tiled
//! micro-kernels are the exception: a tile of 24 accumulator registers only stays in registers if the
//! compiler sees it as 24 registers, and the auto-vectorizer does not reliably do that (the same loop ran at
//! 280 GFLOP/s in one build and 11 in the next, after an unrelated change elsewhere in the file). So those
//! kernels are written once, generic over [`F32Vector`], a register of f32 lanes with the few operations
//! they need (fused multiply-adds for the tiles; adds and lane interleaving for the Winograd transforms),
//! and this file implements it for each instruction set:
//!
//! | type | instruction set | lanes | registers |
//! |---|---|---|---|
//! | [`Avx512`] | x86-64 AVX-512F | 16 | 32 |
//! | [`Avx2`] | x86-64 AVX2 + FMA | 8 | 16 |
//! | [`Neon`] | aarch64 NEON (baseline there) | 4 | 32 |
//! | [`Portable`] | plain Rust arrays, any target: x86-64's baseline and the twin every test compares against | 4 | |
//!
//! # Safety
//! Every method is `unsafe`: it may only run on a CPU with the type's instruction set (callers dispatch on
//! [`crate::cpu::simd`]), and `load`/`store` read and write `LANES` floats at a raw pointer that the caller
//! has checked.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A SIMD register of `LANES` f32 values.
///
/// # Safety
/// Implementations must only be used on CPUs with their instruction set, and `load`/`store` need `LANES`
/// readable/writable floats at the pointer (see the module doc); this covers every method below.
#[allow(clippy::missing_safety_doc)]
pub unsafe trait F32Vector: Copy {
    const LANES: usize;
    /// All lanes 0.
    unsafe fn zero() -> Self;
    /// All lanes `v`.
    unsafe fn splat(v: f32) -> Self;
    /// `LANES` floats from `p` (no alignment needed).
    unsafe fn load(p: *const f32) -> Self;
    /// Writes the lanes to `p` (no alignment needed).
    unsafe fn store(self, p: *mut f32);
    /// Writes lanes lo..hi to p[lo..hi] and nothing else (0 ≤ lo ≤ hi ≤ LANES): only those addresses need
    /// to be valid, so `p` itself may point before the buffer (make it with `wrapping_sub`).
    unsafe fn store_lanes(self, p: *mut f32, lo: usize, hi: usize);
    /// self · b + c per lane, fused (one rounding) where the instruction set has FMA.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// Σ of the lanes.
    unsafe fn sum(self) -> f32;
    /// self + b per lane.
    unsafe fn add(self, b: Self) -> Self;
    /// self − b per lane.
    unsafe fn sub(self, b: Self) -> Self;
    /// The lanes of self and b interleaved, a₀ b₀ a₁ b₁ …: (the first LANES of them, the last LANES).
    unsafe fn zip(self, b: Self) -> (Self, Self);
}

/// 16 lanes of AVX-512F.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Avx512(__m512);

#[cfg(target_arch = "x86_64")]
unsafe impl F32Vector for Avx512 {
    const LANES: usize = 16;
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn zero() -> Self {
        Avx512(_mm512_setzero_ps())
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn splat(v: f32) -> Self {
        Avx512(_mm512_set1_ps(v))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(p: *const f32) -> Self {
        Avx512(_mm512_loadu_ps(p))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self.0)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_lanes(self, p: *mut f32, lo: usize, hi: usize) {
        // A masked store: lanes outside the mask are neither written nor accessed.
        let mask = ((1u32 << hi) - 1) & !((1u32 << lo) - 1);
        _mm512_mask_storeu_ps(p, mask as u16, self.0)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        Avx512(_mm512_fmadd_ps(self.0, b.0, c.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn sum(self) -> f32 {
        _mm512_reduce_add_ps(self.0)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn add(self, b: Self) -> Self {
        Avx512(_mm512_add_ps(self.0, b.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn sub(self, b: Self) -> Self {
        Avx512(_mm512_sub_ps(self.0, b.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn zip(self, b: Self) -> (Self, Self) {
        // Index i < 16 takes self's lane i, 16 + i takes b's lane i.
        let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        (Avx512(_mm512_permutex2var_ps(self.0, lo, b.0)), Avx512(_mm512_permutex2var_ps(self.0, hi, b.0)))
    }
}

/// 8 lanes of AVX2 with FMA.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Avx2(__m256);

#[cfg(target_arch = "x86_64")]
unsafe impl F32Vector for Avx2 {
    const LANES: usize = 8;
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn zero() -> Self {
        Avx2(_mm256_setzero_ps())
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn splat(v: f32) -> Self {
        Avx2(_mm256_set1_ps(v))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(p: *const f32) -> Self {
        Avx2(_mm256_loadu_ps(p))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self.0)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_lanes(self, p: *mut f32, lo: usize, hi: usize) {
        // Not vmaskmovps: AMD runs its store form as microcode (Zen 2 and 3: 42 μops, one per 12 cycles;
        // uops.info), which made it most of the direct kernel's time on few input channels. A whole vector
        // is one plain store; a part of one, lanes lo..hi, is at most two overlapping stores of 4, 2 or 1
        // lanes, each from a copy of the vector turned so that its first stored lane is lane 0. Nothing
        // outside lanes lo..hi is written or read.
        if lo == 0 && hi == 8 {
            return _mm256_storeu_ps(p, self.0);
        }
        let from = |first: usize| {
            let index = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(first as i32));
            _mm256_castps256_ps128(_mm256_permutevar8x32_ps(self.0, index))
        };
        match hi.saturating_sub(lo) {
            0 => {}
            1 => _mm_store_ss(p.wrapping_add(lo), from(lo)),
            2 | 3 => {
                _mm_store_sd(p.wrapping_add(lo).cast(), _mm_castps_pd(from(lo)));
                _mm_store_sd(p.wrapping_add(hi - 2).cast(), _mm_castps_pd(from(hi - 2)));
            }
            _ => {
                _mm_storeu_ps(p.wrapping_add(lo), from(lo));
                _mm_storeu_ps(p.wrapping_add(hi - 4), from(hi - 4));
            }
        }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        Avx2(_mm256_fmadd_ps(self.0, b.0, c.0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum(self) -> f32 {
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), self.0);
        crate::cpu::pairwise_sum(lanes)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn add(self, b: Self) -> Self {
        Avx2(_mm256_add_ps(self.0, b.0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sub(self, b: Self) -> Self {
        Avx2(_mm256_sub_ps(self.0, b.0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn zip(self, b: Self) -> (Self, Self) {
        // unpack interleaves within each 128-bit half: l = a0 b0 a1 b1 | a4 b4 a5 b5, h = a2 b2 a3 b3 | a6 b6 a7 b7.
        let (l, h) = (_mm256_unpacklo_ps(self.0, b.0), _mm256_unpackhi_ps(self.0, b.0));
        (Avx2(_mm256_permute2f128_ps::<0x20>(l, h)), Avx2(_mm256_permute2f128_ps::<0x31>(l, h)))
    }
}

/// 4 lanes of aarch64 NEON.
#[cfg(target_arch = "aarch64")]
#[derive(Clone, Copy)]
pub struct Neon(std::arch::aarch64::float32x4_t);

#[cfg(target_arch = "aarch64")]
unsafe impl F32Vector for Neon {
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Neon(std::arch::aarch64::vdupq_n_f32(0.0))
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Neon(std::arch::aarch64::vdupq_n_f32(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Neon(std::arch::aarch64::vld1q_f32(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::arch::aarch64::vst1q_f32(p, self.0)
    }
    #[inline(always)]
    unsafe fn store_lanes(self, p: *mut f32, lo: usize, hi: usize) {
        let mut lanes = [0.0f32; 4];
        std::arch::aarch64::vst1q_f32(lanes.as_mut_ptr(), self.0);
        for (i, &v) in lanes.iter().enumerate().take(hi).skip(lo) {
            *p.wrapping_add(i) = v;
        }
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        // vfmaq_f32(c, a, b) = c + a·b
        Neon(std::arch::aarch64::vfmaq_f32(c.0, self.0, b.0))
    }
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        std::arch::aarch64::vaddvq_f32(self.0)
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Neon(std::arch::aarch64::vaddq_f32(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Neon(std::arch::aarch64::vsubq_f32(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn zip(self, b: Self) -> (Self, Self) {
        (Neon(std::arch::aarch64::vzip1q_f32(self.0, b.0)), Neon(std::arch::aarch64::vzip2q_f32(self.0, b.0)))
    }
}

/// 4 lanes as a plain array: runs anywhere (x86-64's baseline), and is what the tests compare the
/// intrinsics against. Multiply then add, not fused: `f32::mul_add` is a slow library call without FMA.
#[derive(Clone, Copy)]
pub struct Portable([f32; 4]);

unsafe impl F32Vector for Portable {
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 4])
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Portable([v; 4])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Portable(std::ptr::read_unaligned(p as *const [f32; 4]))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::ptr::write_unaligned(p as *mut [f32; 4], self.0)
    }
    #[inline(always)]
    unsafe fn store_lanes(self, p: *mut f32, lo: usize, hi: usize) {
        for (i, &v) in self.0.iter().enumerate().take(hi).skip(lo) {
            *p.wrapping_add(i) = v;
        }
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] * b.0[i] + c.0[i]))
    }
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        crate::cpu::pairwise_sum(self.0)
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] + b.0[i]))
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] - b.0[i]))
    }
    #[inline(always)]
    unsafe fn zip(self, b: Self) -> (Self, Self) {
        let both = |i: usize| if i.is_multiple_of(2) { self.0[i / 2] } else { b.0[i / 2] };
        (Portable(std::array::from_fn(both)), Portable(std::array::from_fn(|i| both(i + 4))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "x86_64")]
    use crate::cpu::{available, Simd};

    /// Every operation of one vector type against plain arithmetic.
    unsafe fn check<V: F32Vector>() {
        let n = V::LANES;
        let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.0).collect();
        let b: Vec<f32> = (0..n).map(|i| 2.0 - i as f32).collect();
        let mut out = vec![0.0f32; n + 1];
        let fused = V::load(a.as_ptr()).mul_add(V::load(b.as_ptr()), V::splat(3.0));
        fused.store(out.as_mut_ptr());
        for i in 0..n {
            assert_eq!(out[i], a[i] * b[i] + 3.0, "mul_add lane {i}"); // exact: small integers and halves
        }
        assert_eq!(out[n], 0.0, "store wrote past its lanes");
        // store_lanes writes exactly lanes lo..hi, through a pointer that may start before the buffer, for
        // every range.
        for (lo, hi) in (0..=n).flat_map(|lo| (lo..=n).map(move |hi| (lo, hi))) {
            let mut part = vec![-1.0f32; n - lo];
            let base = part.as_mut_ptr().wrapping_sub(lo);
            V::load(a.as_ptr()).store_lanes(base, lo, hi);
            for (j, &v) in part.iter().enumerate() {
                let want = if lo + j < hi { a[lo + j] } else { -1.0 };
                assert_eq!(v, want, "store_lanes({lo}, {hi}) lane {}", lo + j);
            }
        }
        assert_eq!(V::load(a.as_ptr()).sum(), a.iter().sum::<f32>());
        assert_eq!(V::zero().sum(), 0.0);
        let (va, vb) = (V::load(a.as_ptr()), V::load(b.as_ptr()));
        va.add(vb).store(out.as_mut_ptr());
        assert!((0..n).all(|i| out[i] == a[i] + b[i]), "add");
        va.sub(vb).store(out.as_mut_ptr());
        assert!((0..n).all(|i| out[i] == a[i] - b[i]), "sub");
        let (lo, hi) = va.zip(vb);
        let mut zipped = vec![0.0f32; 2 * n];
        lo.store(zipped.as_mut_ptr());
        hi.store(zipped[n..].as_mut_ptr());
        for (i, &z) in zipped.iter().enumerate() {
            assert_eq!(z, if i % 2 == 0 { a[i / 2] } else { b[i / 2] }, "zip lane {i}");
        }
    }

    #[test]
    fn every_vector_type_this_cpu_runs_agrees_with_plain_arithmetic() {
        unsafe { check::<Portable>() };
        #[cfg(target_arch = "aarch64")]
        unsafe {
            check::<Neon>()
        };
        #[cfg(target_arch = "x86_64")]
        for level in available() {
            match level {
                Simd::Avx512 => unsafe { check_avx512() },
                Simd::Avx2 => unsafe { check_avx2() },
                Simd::Baseline => {}
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn check_avx512() {
        check::<Avx512>()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn check_avx2() {
        check::<Avx2>()
    }
}
