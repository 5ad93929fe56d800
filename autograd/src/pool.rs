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
//! scratch space from here. Buffers under [`MIN_POOLED`] floats go to the system allocator as usual (small
//! allocations are served from the allocator's own free lists without page faults). The pool holds at most
//! [`MAX_POOLED_BYTES`]; beyond that, freed buffers go back to the system.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Smallest buffer (in f32s) worth pooling: 16 KiB.
pub const MIN_POOLED: usize = 4096;
/// Most bytes kept in the pool.
pub const MAX_POOLED_BYTES: usize = 6 << 30;

struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    bytes: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);
static FRESH: AtomicUsize = AtomicUsize::new(0);

/// Number of pool-sized buffers that had to come from the system allocator so far (a pool miss). In a steady
/// training loop this stops growing after the first step; tests and benches read it to show that.
pub fn fresh_allocations() -> usize {
    FRESH.load(Ordering::Relaxed)
}

/// A recycled buffer of capacity `len`, with whatever it held before, if one is free.
fn recycled(len: usize) -> Option<Vec<f32>> {
    if len < MIN_POOLED {
        return None;
    }
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = guard.as_mut().and_then(|pool| {
        let v = pool.free.get_mut(&len).and_then(Vec::pop)?;
        pool.bytes -= len * 4;
        Some(v)
    }) {
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
        None => Vec::with_capacity(len),
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
        None => vec![0.0; len],
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

/// Returns a buffer to the pool (dropped instead if small or if the pool is full). Its contents stay, for
/// [`take_dirty`].
pub fn give(v: Vec<f32>) {
    let cap = v.capacity();
    if cap < MIN_POOLED {
        return;
    }
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = guard.get_or_insert_with(|| Pool { free: HashMap::new(), bytes: 0 });
    if pool.bytes + cap * 4 <= MAX_POOLED_BYTES {
        pool.bytes += cap * 4;
        pool.free.entry(cap).or_default().push(v);
    }
}

/// Frees every pooled buffer.
pub fn clear() {
    *POOL.lock().unwrap_or_else(|e| e.into_inner()) = None;
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
}
