//! Matrix product kernels. Legend: `m` rows of the output, `k` the summed (inner) dimension, `n` columns of
//! the output; a matrix is read through (row stride, column stride), so a transposed operand is the same
//! buffer with its strides swapped.

use crate::shape::broadcast_strides;

/// The plain reference: c [m, n] = a [m, k] · b [k, n], all row-major, by the triple loop.
pub fn matmul_naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0;
            for p in 0..k {
                acc += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = acc;
        }
    }
    c
}

/// c [m, n] = a [m, k] · b [k, n] + beta · c, with a and b read through strides (rs, cs) and c row-major.
///
/// Must equal [`matmul_naive`] up to rounding. Why it is faster: matrixmultiply packs panels of a and b into
/// cache-sized blocks and runs a SIMD micro-kernel (AVX-512, AVX2/FMA or NEON, picked at run time) on them;
/// see bluss's matrixmultiply crate for the BLIS-style design. Large products are split into blocks of rows
/// of c, one rayon task each. Every element of c is still computed by the same sequence of operations over
/// k, so the result is bit-identical however many threads run it.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    strides_b: (usize, usize),
    c: &mut [f32],
    beta: f32,
) {
    let threads = rayon::current_num_threads();
    if threads == 1 || is_small(m, k) || m * n * k < 4 * crate::cpu::PARALLEL_MIN_WORK || m.max(n) < 64 {
        return gemm_serial(m, k, n, a, (rsa, csa), b, strides_b, c, beta);
    }
    assert!(c.len() >= m * n, "gemm: c too small for [{m}, {n}]");
    use rayon::prelude::*;
    if m >= n {
        // Blocks of rows of c: each task packs its rows of a and all of b.
        let rows = m.div_ceil(2 * threads).next_multiple_of(16);
        c[..m * n].par_chunks_mut(rows * n).enumerate().for_each(|(i, c_block)| {
            let mb = c_block.len() / n;
            gemm_serial(mb, k, n, &a[i * rows * rsa..], (rsa, csa), b, strides_b, c_block, beta);
        });
    } else {
        // Blocks of columns of c: each task packs all of a and only its columns of b, so a wide b (an
        // im2col matrix) is packed once in total rather than once per task.
        let cols = n.div_ceil(2 * threads).next_multiple_of(16);
        let c_ptr = SendPtr(c.as_mut_ptr());
        (0..n.div_ceil(cols)).into_par_iter().for_each(|j| {
            let (j0, nb) = (j * cols, cols.min(n - j * cols));
            let b_block = &b[j0 * strides_b.1..];
            // SAFETY: tasks write disjoint column ranges j0..j0+nb of c, whose bounds were checked above;
            // the row stride n keeps every write inside c.
            unsafe { sgemm_raw(m, k, nb, a, (rsa, csa), b_block, strides_b, c_ptr.at(j0), n, beta) };
        });
    }
}

/// Products with at most this many rows of c, or this long an inner dimension, skip the packed kernel.
const SMALL: usize = 4;

/// c [m, n] = a [m, k] · b [k, n] + beta·c (row i of c at `c[i·rsc]`) for a short m or k: a conv with one
/// output channel (m = 1) or a rank-1 update (k = 1). The packed kernel would fill whole register tiles of
/// which one row is used; here each row of c is built from vectorized axpys (b's rows contiguous) or dot
/// products (b's columns contiguous). Serial, and the same whatever the number of threads.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gemm_small(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    c: &mut [f32],
    rsc: usize,
    beta: f32,
) {
    for i in 0..m {
        let row = &mut c[i * rsc..][..n];
        if beta == 0.0 {
            row.fill(0.0); // not a multiply: c may hold garbage (a recycled buffer) when beta = 0
        } else if beta != 1.0 {
            row.iter_mut().for_each(|v| *v *= beta);
        }
        if csb == 1 {
            // row += a[i, p] · b[p, :], one contiguous axpy per p
            for p in 0..k {
                let alpha = a[i * rsa + p * csa];
                row.iter_mut().zip(&b[p * rsb..][..n]).for_each(|(r, &x)| *r += alpha * x);
            }
        } else if rsb == 1 && csa == 1 {
            // row[j] += a[i, :] · b[:, j], both contiguous
            let a_row = &a[i * rsa..][..k];
            for (j, r) in row.iter_mut().enumerate() {
                *r += crate::cpu::dot(a_row, &b[j * csb..][..k]);
            }
        } else {
            for (j, r) in row.iter_mut().enumerate() {
                *r += (0..k).map(|p| a[i * rsa + p * csa] * b[p * rsb + j * csb]).sum::<f32>();
            }
        }
    }
}
crate::multiversion!(fn gemm_small_at(level: Simd, m: usize, k: usize, n: usize, a: &[f32], strides_a: (usize, usize), b: &[f32], strides_b: (usize, usize), c: &mut [f32], rsc: usize, beta: f32) => gemm_small);

/// True when [`gemm_small`] serves this product better than the packed kernel.
fn is_small(m: usize, k: usize) -> bool {
    m <= SMALL || k <= SMALL
}

/// The signature of [`gemm`] and [`gemm_serial`].
pub type GemmFn = fn(usize, usize, usize, &[f32], (usize, usize), &[f32], (usize, usize), &mut [f32], f32);

/// Panics unless every element of a [m, k] and b [k, n] read through these strides is inside its slice.
fn check_bounds(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
) {
    if m > 0 && n > 0 && k > 0 {
        assert!((m - 1) * rsa + (k - 1) * csa < a.len(), "gemm: a too small for [{m}, {k}] with strides");
        assert!((k - 1) * rsb + (n - 1) * csb < b.len(), "gemm: b too small for [{k}, {n}] with strides");
    }
}

/// A raw pointer that may cross threads; users guarantee their writes are disjoint.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    /// The pointer advanced by `offset` (a method, so closures capture the whole Send wrapper).
    ///
    /// # Safety
    /// As `pointer::add`.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

/// sgemm into c with row stride `rsc`, after checking a and b bounds.
///
/// # Safety
/// `c` must be valid for writes at every (i·rsc + j), i < m, j < n, and not written by anyone else meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_raw(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    c: *mut f32,
    rsc: usize,
    beta: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    check_bounds(m, k, n, a, (rsa, csa), b, (rsb, csb));
    // SAFETY: a and b bounds are asserted above; c is the caller's promise.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c,
            rsc as isize,
            1,
        );
    }
}

/// [`gemm`] on the calling thread only.
#[allow(clippy::too_many_arguments)]
pub fn gemm_serial(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    c: &mut [f32],
    beta: f32,
) {
    gemm_serial_strided(m, k, n, a, (rsa, csa), b, (rsb, csb), c, n, beta)
}

/// [`gemm_serial`] into a block of a larger row-major matrix: row i of c starts at `c[i·rsc]`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_serial_strided(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    strides_a: (usize, usize),
    b: &[f32],
    strides_b: (usize, usize),
    c: &mut [f32],
    rsc: usize,
    beta: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(rsc >= n && c.len() >= (m - 1) * rsc + n, "gemm: c too small for [{m}, {n}] with row stride {rsc}");
    if is_small(m, k) {
        check_bounds(m, k, n, a, strides_a, b, strides_b);
        return gemm_small_at(crate::cpu::simd(), m, k, n, a, strides_a, b, strides_b, c, rsc, beta);
    }
    // SAFETY: c is exclusively borrowed and the assert bounds every (i·rsc + j), i < m, j < n.
    unsafe { sgemm_raw(m, k, n, a, strides_a, b, strides_b, c.as_mut_ptr(), rsc, beta) }
}

/// Batched product: for every index β of `batch`, out[β] [m, n] = op(a[β]) · op(b[β]), where op(a) is a
/// stored [m, k] (or [k, m] read transposed when `a_t`), likewise b [k, n] (or [n, k] when `b_t`). `a_batch`
/// and `b_batch` broadcast to `batch`.
#[allow(clippy::too_many_arguments)]
pub fn bmm(
    batch: &[usize],
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_batch: &[usize],
    a_t: bool,
    b: &[f32],
    b_batch: &[usize],
    b_t: bool,
) -> Vec<f32> {
    let count: usize = batch.iter().product();
    let mut out = crate::pool::take_filled(count * m * n, 0.0);
    let strides_a = if a_t { (1, m) } else { (k, 1) };
    let strides_b = if b_t { (1, k) } else { (n, 1) };
    // b shared by the whole batch and a in plain layout: fold the batch into the rows, one big gemm.
    if b_batch.is_empty() && !a_t && a_batch == batch {
        gemm(count * m, k, n, a, strides_a, b, strides_b, &mut out, 0.0);
        return out;
    }
    let sa = broadcast_strides(a_batch, batch);
    let sb = broadcast_strides(b_batch, batch);
    // With at least as many batch entries as threads, one task per entry, each product on its own thread;
    // with fewer, the entries run in turn and each product is split instead.
    let (product, parallel): (GemmFn, bool) =
        if count >= rayon::current_num_threads() { (gemm_serial, true) } else { (gemm, false) };
    let entry = |(beta, c): (usize, &mut [f32])| {
        // Offsets of this batch entry's a and b matrices, in units of whole matrices.
        let (mut ia, mut ib, mut rest) = (0, 0, beta);
        for d in (0..batch.len()).rev() {
            let i = rest % batch[d];
            rest /= batch[d];
            ia += i * sa[d];
            ib += i * sb[d];
        }
        let a_mat = &a[ia * m * k..(ia + 1) * m * k];
        let b_mat = &b[ib * k * n..(ib + 1) * k * n];
        product(m, k, n, a_mat, strides_a, b_mat, strides_b, c, 0.0);
    };
    if parallel {
        use rayon::prelude::*;
        out.par_chunks_mut(m * n).enumerate().for_each(entry);
    } else {
        out.chunks_mut(m * n).enumerate().for_each(entry);
    }
    out
}
