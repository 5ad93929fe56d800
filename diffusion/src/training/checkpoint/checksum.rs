//! The checksum every file this crate writes carries in its `checksum` entry (safetensors has none of its
//! own, so a flipped bit in a weight would otherwise load silently).

use std::collections::BTreeMap;

use safetensors::Dtype;

/// FNV-1a (64-bit) over 8-byte little-endian words of every tensor (sorted by name: name, dtype, shape,
/// bytes, each preceded by its length) and every metadata entry (sorted by key). One step,
/// `h ← (h ⊕ w) · p mod 2⁶⁴`, is a bijection of h for a fixed word and of w for a fixed h, so two inputs
/// of the same length that differ in one word always hash differently.
pub(super) fn checksum<'a>(
    tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
    metadata: &BTreeMap<String, String>,
) -> String {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (name, dtype, shape, data) in sorted {
        h.bytes(name.as_bytes());
        h.bytes(format!("{dtype:?}").as_bytes());
        h.word(shape.len() as u64);
        shape.iter().for_each(|&d| h.word(d as u64));
        h.bytes(data);
    }
    for (key, value) in metadata {
        h.bytes(key.as_bytes());
        h.bytes(value.as_bytes());
    }
    format!("fnv1a64-words:{:016x}", h.0)
}

/// The running FNV-1a state.
struct Fnv(u64);

impl Fnv {
    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0x0000_0100_0000_01b3);
    }

    /// The length, then the bytes as little-endian words (the last one zero-padded).
    fn bytes(&mut self, b: &[u8]) {
        self.word(b.len() as u64);
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.word(u64::from_le_bytes(tail));
    }
}
