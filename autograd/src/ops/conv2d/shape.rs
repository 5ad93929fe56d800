//! The sizes of one convolution, checked once at the op's entry and then shared by every path (naive,
//! im2col, direct, Winograd): the lowest layer of the conv2d folder, which the paths import and which
//! imports none of them.
//!
//! Legend: `n` batch, `c_in`/`c_out` channels, `h`×`w` input size, `kh`×`kw` kernel, `stride`, `padding`,
//! `oh`×`ow` output size.

/// Sizes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvShape {
    /// Sizes from x [n, c_in, h, w] and weight [c_out, c_in, kh, kw]; `Err` says what does not fit.
    pub fn new(x: &[usize], weight: &[usize], stride: usize, padding: usize) -> Result<ConvShape, String> {
        if x.len() != 4 || weight.len() != 4 {
            return Err(format!("x {x:?} must be [N, C, H, W] and weight {weight:?} [C_out, C_in, KH, KW]"));
        }
        if weight[1] != x[1] {
            return Err(format!("weight {weight:?} expects {} input channels, got x {x:?}", weight[1]));
        }
        if stride == 0 {
            return Err("stride must be at least 1".into());
        }
        let (h, w, kh, kw) = (x[2] + 2 * padding, x[3] + 2 * padding, weight[2], weight[3]);
        if kh > h || kw > w || kh == 0 || kw == 0 {
            return Err(format!("kernel {kh}x{kw} does not fit x {x:?} with padding {padding}"));
        }
        Ok(ConvShape {
            n: x[0],
            c_in: x[1],
            h: x[2],
            w: x[3],
            c_out: weight[0],
            kh,
            kw,
            stride,
            padding,
            oh: (h - kh) / stride + 1,
            ow: (w - kw) / stride + 1,
        })
    }

    pub fn ckk(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    pub fn ohw(&self) -> usize {
        self.oh * self.ow
    }

    /// FLOPs of the forward (a multiply and an add per weight per output pixel).
    pub fn flops(&self) -> usize {
        2 * self.n * self.c_out * self.ckk() * self.ohw()
    }

    /// A 1×1, stride 1, unpadded convolution: `col` is the image itself, no copy needed.
    pub(super) fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }

    /// The output columns lo..hi whose input column ox·stride + kx − padding lies inside the image.
    #[inline(always)]
    pub(super) fn valid_columns(&self, kx: usize) -> (usize, usize) {
        let lo = self.padding.saturating_sub(kx).div_ceil(self.stride).min(self.ow);
        // last valid ox: ox·stride ≤ w − 1 + padding − kx
        let hi = match (self.w - 1 + self.padding).checked_sub(kx) {
            Some(span) => (span / self.stride + 1).clamp(lo, self.ow),
            None => lo,
        };
        (lo, hi)
    }

    /// Input row (or column) read by output position `o` at kernel offset `k`, if inside the image.
    #[inline(always)]
    pub(super) fn input_index(&self, o: usize, k: usize, size: usize) -> Option<usize> {
        (o * self.stride + k).checked_sub(self.padding).filter(|&i| i < size)
    }
}

/// One "same" convolution for a kernel that reads its weight packed (the direct and Winograd paths): the
/// forward (x, the weight packed as it is, bias) or the input gradient (dy, the weight packed turned 180°
/// with its channel axes swapped, no bias). out [n, ch_out, h, w] = bias + conv(input [n, ch_in, h, w]).
pub struct SameConv<'a> {
    pub input: &'a [f32],
    pub ch_in: usize,
    pub packed: &'a [f32],
    pub ch_out: usize,
    pub bias: Option<&'a [f32]>,
    pub shape: &'a ConvShape,
}
