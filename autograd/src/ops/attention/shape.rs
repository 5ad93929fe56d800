//! The sizes of one attention call, shared by the flash kernels (`kernels.rs`) and the short-sequence ones
//! (`short.rs`): the lowest layer of the attention folder, which imports neither.

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
