//! The sizes of one attention call and what its forward saves for the backward, shared by the flash kernels
//! (`kernels.rs`) and the short-sequence ones (`short.rs`): the lowest layer of the attention folder, which
//! imports neither.

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub sq: usize,
    pub sk: usize,
    pub d: usize,
    pub dv: usize,
}

impl AttentionShape {
    pub fn scale(&self) -> f32 {
        1.0 / (self.d as f32).sqrt()
    }
    /// FLOPs of the forward: q·kᵀ and p·v, 2 per multiply-add.
    pub fn flops(&self) -> usize {
        2 * self.batch * self.sq * self.sk * (self.d + self.dv)
    }
}

/// What a forward keeps for its backward: the log-sum-exp of each row of scores, lse [batch, sq], from
/// which flash attention's backward recomputes each tile's probabilities; and for short sequences
/// (`short.rs`) the probabilities themselves, pᵀ [batch, sk, ld] with ld = sq rounded up to whole vectors
/// (49 × 64 floats per head at 7×7, fewer than q, k and v hold together), which spares that backward a
/// product and an exponential per score.
#[derive(Clone, Debug, PartialEq)]
pub struct Saved {
    pub lse: Vec<f32>,
    pub probabilities: Option<(Vec<f32>, usize)>,
}

impl Drop for Saved {
    /// The probabilities go back to the buffer pool they came from (1.6 MB per call at the U-Net's 7×7:
    /// fresh from the system allocator every step, their page faults made the forward 15% slower).
    fn drop(&mut self) {
        if let Some((probabilities, _)) = self.probabilities.take() {
            crate::pool::give(probabilities);
        }
    }
}
