//! Copy kernels for concat and narrow. Legend: a tensor is viewed as [outer, size along axis, inner] where
//! outer = product of the sizes before the axis and inner = product of the sizes after it; along that view,
//! both ops are copies of contiguous blocks of `size · inner` values.

/// out [outer, Σ sizes, inner] from parts [outer, sizes[i], inner].
pub fn concat_forward(parts: &[&[f32]], sizes: &[usize], out_shape: &[usize], axis: usize) -> Vec<f32> {
    let outer: usize = out_shape[..axis].iter().product();
    let inner: usize = out_shape[axis + 1..].iter().product();
    let mut out = crate::pool::take(out_shape.iter().product());
    for o in 0..outer {
        for (part, &size) in parts.iter().zip(sizes) {
            let block = size * inner;
            out.extend_from_slice(&part[o * block..(o + 1) * block]);
        }
    }
    out
}

/// out [outer, len, inner] = x [outer, x_shape[axis], inner] at start..start+len along the axis.
pub fn narrow_copy(x: &[f32], x_shape: &[usize], axis: usize, start: usize, len: usize) -> Vec<f32> {
    let outer: usize = x_shape[..axis].iter().product();
    let inner: usize = x_shape[axis + 1..].iter().product();
    let row = x_shape[axis] * inner;
    let mut out = crate::pool::take(outer * len * inner);
    for o in 0..outer {
        let from = o * row + start * inner;
        out.extend_from_slice(&x[from..from + len * inner]);
    }
    out
}
