//! How the paths split their work over threads without letting the thread count change a result: work
//! is divided by the shape alone, and partial sums are added in a fixed order.

use rayon::prelude::*;

/// out [n, c_out, hw] from `image(n, co0, out_part)`, which computes channels co0.. of image n into out_part
/// [count, hw] (co0 a multiple of `c`). In parallel over images and, when there are fewer images than
/// threads, over blocks of output channels too; each output is computed by the same operations either way.
pub(super) fn per_image(
    n: usize,
    c_out: usize,
    hw: usize,
    c: usize,
    image: impl Fn(usize, usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let threads = rayon::current_num_threads();
    // Output channels per task: all of them, unless that leaves threads idle.
    let blocks = c_out.div_ceil(c);
    let per_task = if n >= threads { blocks } else { blocks.div_ceil(threads.div_ceil(n)) } * c;
    let mut out = crate::pool::take_dirty(n * c_out * hw);
    out.par_chunks_mut(c_out * hw).enumerate().for_each(|(n, out_n)| {
        out_n
            .par_chunks_mut(per_task * hw)
            .enumerate()
            .for_each(|(part, out_part)| image(n, part * per_task, out_part));
    });
    out
}

/// Images per call for a path that runs groups of whole images, one call per group (`par_chunks` of this
/// many): at most `most`, and as many as that allows while the number of calls is a multiple of the threads
/// and at least two per thread, so that the threads get equal shares (32 images at most 5 at a time on 2
/// threads: 4 each in 8 calls, where 5 each made 7 calls, 17 images for one thread and 15 for the other);
/// one image per call when no count is balanced (fewer images than two per thread). The paths compute each
/// output the same way in any call, so no result depends on it.
pub(super) fn images_per_call(n: usize, most: usize, threads: usize) -> usize {
    let (n, threads) = (n.max(1), threads.max(1));
    let balanced = |images: usize| n.div_ceil(images).is_multiple_of(threads) && n.div_ceil(images) >= 2 * threads;
    (1..=most.clamp(1, n)).rev().find(|&images| balanced(images)).unwrap_or(1)
}

/// Σ over groups, in group order, of partial [groups, len]; parallel over disjoint chunks of the result.
pub(super) fn sum_partials(partial: &[f32], groups: usize, len: usize) -> Vec<f32> {
    let mut total = crate::pool::take_dirty(len);
    total.par_chunks_mut(4096).enumerate().for_each(|(i, out)| {
        out.copy_from_slice(&partial[i * 4096..][..out.len()]);
        for g in 1..groups {
            let src = &partial[g * len + i * 4096..][..out.len()];
            out.iter_mut().zip(src).for_each(|(o, v)| *o += v);
        }
    });
    total
}
