//! A pool of f32 buffers, keyed by capacity, so that a training step in steady state makes no large
//! allocations.
//!
//! Why: a fresh large buffer from the system allocator is fresh pages from the kernel, and every first touch
//! of a page is a page fault (zeroing 4 KiB, a trip into the kernel). PyTorch and candle lose 10–60% of a
//! CPU training step to this. A training step allocates the same buffer sizes every time (same shapes),
//! so keeping freed buffers and handing them out again removes nearly all of it (llm.c gets the same effect
//! by allocating every activation once, up front).
//!
//! Tensors give their buffer back here when their last reference drops; kernels take their outputs and
//! scratch space from here. (One exception: the channel-minor Winograd kernel, whose working memory has a
//! size per shape, keeps it in one buffer per thread instead, `ops/conv2d/winograd_cm.rs`.) Buffers under [`MIN_POOLED`] floats go to the system allocator as usual (small
//! allocations are served from the allocator's own free lists without page faults).
//!
//! The pool takes back only buffers it lent (it remembers their addresses and capacities): a buffer that some
//! other code allocated, wrapped in a tensor and dropped goes back to the system. The capacity is part of the
//! key because a lent buffer can end its life without coming back (taken as a kernel's output and dropped elsewhere),
//! and the allocator may then place a buffer of another size at its address. Otherwise every step's freshly built
//! batch, noise and targets would pile up in the pool, never to be asked for again, and a long run would grow
//! by their size every step. So the pool never holds more buffers of a size than were out at once. It also
//! holds at most [`MAX_POOLED_BYTES`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Smallest buffer (in f32s) worth pooling: 16 KiB.
pub const MIN_POOLED: usize = 4096;
/// Most bytes kept in the pool.
pub const MAX_POOLED_BYTES: usize = 6 << 30;

#[derive(Default)]
struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    bytes: usize,
    /// (address, capacity) of the buffers lent and not yet given back.
    lent: HashSet<(usize, usize)>,
}

fn lock() -> std::sync::MutexGuard<'static, Option<Pool>> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records that `v` is lent by the pool (so that [`give`] takes it back).
fn lend(v: Vec<f32>) -> Vec<f32> {
    if v.capacity() >= MIN_POOLED {
        lock().get_or_insert_with(Pool::default).lent.insert((v.as_ptr() as usize, v.capacity()));
    }
    v
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);
static FRESH: AtomicUsize = AtomicUsize::new(0);

/// Number of pool-sized buffers that had to come from the system allocator so far (a pool miss). In a steady
/// training loop this stops growing after the first step; tests and benches read it to show that.
pub fn fresh_allocations() -> usize {
    FRESH.load(Ordering::Relaxed)
}

/// A recycled buffer of capacity `len`, with whatever it held before, if one is free (marked as lent).
fn recycled(len: usize) -> Option<Vec<f32>> {
    if len < MIN_POOLED {
        return None;
    }
    let mut guard = lock();
    let pool = guard.get_or_insert_with(Pool::default);
    if let Some(v) = pool.free.get_mut(&len).and_then(Vec::pop) {
        pool.bytes -= len * 4;
        pool.lent.insert((v.as_ptr() as usize, v.capacity()));
        return Some(v);
    }
    FRESH.fetch_add(1, Ordering::Relaxed);
    None
}

/// An empty Vec with capacity exactly `len`, recycled if one is free.
pub fn take(len: usize) -> Vec<f32> {
    match recycled(len) {
        Some(mut v) => {
            v.clear();
            v
        }
        None => lend(Vec::with_capacity(len)),
    }
}

/// A Vec of length `len` whose values are unspecified (left over from an earlier use, or zero): for kernels
/// that overwrite every element, so no time goes into filling it first.
pub fn take_dirty(len: usize) -> Vec<f32> {
    match recycled(len) {
        Some(mut v) => {
            v.resize(len, 0.0);
            v
        }
        // Zeroed by the allocator (fresh pages arrive zeroed, so this costs no pass over the memory).
        None => lend(vec![0.0; len]),
    }
}

/// A Vec of `len` copies of `value`, recycled if one is free.
pub fn take_filled(len: usize, value: f32) -> Vec<f32> {
    let mut v = take(len);
    v.resize(len, value);
    v
}

/// Collects exactly `len` items into a recycled Vec.
pub fn collect(len: usize, items: impl IntoIterator<Item = f32>) -> Vec<f32> {
    let mut v = take(len);
    v.extend(items);
    v
}

/// Returns a buffer to the pool if the pool lent it (dropped instead if small, not lent, or if the pool is
/// full). Its contents stay, for [`take_dirty`].
pub fn give(v: Vec<f32>) {
    let cap = v.capacity();
    if cap < MIN_POOLED {
        return;
    }
    let mut guard = lock();
    let pool = guard.get_or_insert_with(Pool::default);
    if pool.lent.remove(&(v.as_ptr() as usize, cap)) && pool.bytes + cap * 4 <= MAX_POOLED_BYTES {
        pool.bytes += cap * 4;
        pool.free.entry(cap).or_default().push(v);
    }
}

/// Scratch space lent by the pool, handed back when it drops: `let mut col = pool::scratch(len);` and
/// nothing to remember at the end of the scope. Its values are unspecified at first, as [`take_dirty`]'s.
///
/// Scratch from [`scratch`] and [`scratch_filled`] starts on a cache line (64 bytes): the buffer is
/// [`ALIGN_SLACK`] floats longer and the scratch begins at its first aligned element ([`aligned_start`]).
/// Why: the kernels lay out their planes and panels at multiples of 16 floats so that each starts where the
/// first does within a line, but glibc's allocator puts a large buffer 16 bytes past a page boundary (a
/// smaller one on any 16-byte boundary), so every other 32-byte vector load of an AVX2 kernel crossed two
/// lines. Aligned, on an AMD EPYC (Zen 3),
/// `unet_kernels --bench 'unet_kernels/(forward|backward)/'`, the builds alternated, three rounds, medians:
/// the 1×1 forwards at 7×7 (`pointwise.rs`) [32, 128, 7, 7] → 384 2.23 → 1.93 ms, → 128 0.82 → 0.66 ms,
/// [32, 256, 7, 7] → 128 1.68 → 1.30 ms, and the 31 kernels' backwards together 182.4 → 165.3 ms.
pub struct Scratch {
    /// The buffer, its length cut to where the scratch ends (its capacity, the pool's key, unchanged).
    buf: Vec<f32>,
    start: usize,
}

/// Floats a buffer needs beyond `len` for `len` of them to start on a 64-byte line (a Vec<f32> starts on a
/// 4-byte boundary at least).
pub const ALIGN_SLACK: usize = 15;

/// The index of the first element of `v` that starts a 64-byte line (at most [`ALIGN_SLACK`]).
pub fn aligned_start(v: &[f32]) -> usize {
    (v.as_ptr() as usize).wrapping_neg() % 64 / 4
}

impl Scratch {
    /// The scratch of `len` floats at the first line boundary of `buf` (which holds `len` + [`ALIGN_SLACK`]).
    fn aligned(mut buf: Vec<f32>, len: usize) -> Scratch {
        let start = aligned_start(&buf);
        buf.truncate(start + len);
        Scratch { buf, start }
    }
}

/// [`take_dirty`] as a [`Scratch`]: `len` floats of unspecified value, starting on a cache line, given back on
/// drop.
pub fn scratch(len: usize) -> Scratch {
    Scratch::aligned(take_dirty(len + ALIGN_SLACK), len)
}

/// [`take_filled`] as a [`Scratch`]: `len` copies of `value`, starting on a cache line, given back on drop.
pub fn scratch_filled(len: usize, value: f32) -> Scratch {
    Scratch::aligned(take_filled(len + ALIGN_SLACK, value), len)
}

impl From<Vec<f32>> for Scratch {
    /// A buffer (a packed weight, say) to give back to the pool when it drops, all of it, where it starts.
    fn from(buf: Vec<f32>) -> Scratch {
        Scratch { buf, start: 0 }
    }
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[self.start..]
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.start..]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.buf));
    }
}

/// Bytes the pool holds, free for the taking.
pub fn pooled_bytes() -> usize {
    lock().as_ref().map_or(0, |p| p.bytes)
}

/// Frees every pooled buffer.
pub fn clear() {
    *lock() = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again() {
        let len = MIN_POOLED * 3 + 17; // a size no other test uses
        let v = take_filled(len, 1.0);
        let ptr = v.as_ptr();
        give(v);
        let w = take_filled(len, 2.0);
        assert_eq!(w.as_ptr(), ptr, "the same allocation comes back");
        assert!(w.iter().all(|&x| x == 2.0));
    }

    #[test]
    fn buffers_the_pool_did_not_lend_are_not_kept() {
        // A size no other test uses.
        let len = MIN_POOLED * 5 + 3;
        // Built elsewhere (as a batch of data is), given back many times: the pool must not grow.
        for _ in 0..10 {
            give(vec![1.0; len]);
        }
        let lent = take(len);
        let ptr = lent.as_ptr();
        give(lent);
        let again = take(len);
        assert_eq!(again.as_ptr(), ptr, "a lent buffer still comes back");
        give(again);
        // Other tests run in parallel and take and give buffers of their own sizes, so the pool's total bytes
        // can fall while this runs (a check that they did not failed once in a full run); this size holds
        // one buffer.
        let mut guard = lock();
        assert_eq!(guard.as_mut().unwrap().free.get(&len).map_or(0, Vec::len), 1);
    }

    #[test]
    fn scratch_starts_on_a_line_and_goes_back_when_it_drops() {
        let len = MIN_POOLED * 7 + 5; // a size no other test uses
        let ptr = {
            let s = scratch_filled(len, 3.0);
            assert_eq!((s.len(), s.as_ptr() as usize % 64), (len, 0));
            assert!(s.iter().all(|&x| x == 3.0));
            s.as_ptr()
        };
        let again = scratch(len);
        assert_eq!((again.len(), again.as_ptr()), (len, ptr), "the dropped scratch was lent again");
        let other = scratch(len);
        assert_ne!(other.as_ptr(), ptr, "a buffer held is not lent twice");
        assert_eq!(other.as_ptr() as usize % 64, 0);
        // Small scratch, from the system allocator, is aligned too.
        assert_eq!(scratch(37).as_ptr() as usize % 64, 0);
    }

    #[test]
    fn aligned_start_is_the_first_element_on_a_line() {
        let v = vec![0.0f32; 64];
        for skip in 0..16 {
            let at = aligned_start(&v[skip..]);
            assert!(at <= ALIGN_SLACK && (v[skip + at..].as_ptr() as usize).is_multiple_of(64), "skip {skip}: {at}");
        }
    }
}
