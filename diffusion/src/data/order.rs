//! The order a run visits its data in, and its random streams: a generator keyed by (seed, stream, index),
//! so that a run's randomness is a function of where it is (which step, which epoch), not of how it got
//! there. That is what makes resuming exact without saving any generator state, and what lets the
//! classifier and the evaluation draw their subsets the same way.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The random generator of one purpose and one index (a step, an epoch), keyed by the run's seed: ChaCha12
/// whose key is (seed, stream, index). A run's randomness is then a function of where it is, not of how it
/// got there, which is what makes resuming exact without saving any generator state.
pub fn keyed_rng(seed: u64, stream: Stream, index: u64) -> StdRng {
    pass_rng(seed, stream, index, 0)
}

/// The generator of pass `pass` of index `index` (a step whose gradient is accumulated over several passes):
/// ChaCha12 keyed (seed, stream, index, pass). Pass 0's is [`keyed_rng`]'s, so a step of one pass draws
/// what it always drew.
pub fn pass_rng(seed: u64, stream: Stream, index: u64, pass: u64) -> StdRng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(stream as u64).to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    key[24..].copy_from_slice(&pass.to_le_bytes());
    StdRng::from_seed(key)
}

/// The independent random streams of a training run.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    /// One generator per step: timesteps, noise, dropout.
    Step = 1,
    /// One generator per epoch: the order of the data.
    Shuffle = 2,
}

/// The order in which epoch `epoch` visits `n` items (Fisher–Yates with that epoch's generator).
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut keyed_rng(seed, Stream::Shuffle, epoch));
    order
}

/// Shuffles `items` in place (Fisher–Yates: each position from the last down swaps with a uniformly chosen
/// one at or before it).
pub fn shuffle(items: &mut [usize], rng: &mut StdRng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.random_range(0..=i));
    }
}
