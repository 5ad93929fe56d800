use super::im2col::{col2im, im2col};
use super::shape::SameConv;
use super::*;
use crate::gradcheck::gradcheck;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn_seeded(shape, seed)
}

#[test]
fn conv2d_gradcheck_3x3_padded() {
    let xs = [randn(&[2, 3, 5, 4], 1), randn(&[4, 3, 3, 3], 2), randn(&[4], 3)];
    gradcheck(&xs, |t, v| t.conv2d(&v[0], &v[1], Some(&v[2]), 1, 1)).unwrap();
}

/// A last layer, 8 channels in and 2 out: dx on the direct kernel, dweight on `narrow_dweight.rs`.
#[test]
fn conv2d_gradcheck_few_output_channels() {
    let xs = [randn(&[2, 8, 5, 4], 21), randn(&[2, 8, 3, 3], 22), randn(&[2], 23)];
    gradcheck(&xs, |t, v| t.conv2d(&v[0], &v[1], Some(&v[2]), 1, 1)).unwrap();
}

/// At least 8 channels in and out: the direct kernels compute both gradients (with fewer they go through
/// im2col), so this checks them against finite differences too.
#[test]
fn conv2d_gradcheck_direct_gradients() {
    let xs = [randn(&[2, 8, 4, 5], 11), randn(&[9, 8, 3, 3], 12), randn(&[9], 13)];
    gradcheck(&xs, |t, v| t.conv2d(&v[0], &v[1], Some(&v[2]), 1, 1)).unwrap();
}

/// At least 8 channels: Winograd computes the forward and both gradients, channel-minor on a small map and
/// with one channel's tiles in the lanes on a large one.
#[test]
fn conv2d_gradcheck_winograd() {
    let xs = [randn(&[1, 8, 12, 13], 14), randn(&[9, 8, 3, 3], 15), randn(&[9], 16)];
    gradcheck(&xs, |t, v| t.conv2d(&v[0], &v[1], Some(&v[2]), 1, 1)).unwrap();
    let xs = [randn(&[1, 8, 24, 25], 17), randn(&[8, 8, 3, 3], 18)];
    gradcheck(&xs, |t, v| t.conv2d(&v[0], &v[1], None, 1, 1)).unwrap();
}

/// At least 8 channels, stride 2: the phase-plane direct kernels compute both gradients, and on this small
/// map `strided_cm.rs` the forward.
#[test]
fn conv2d_gradcheck_strided_direct() {
    let xs = [randn(&[2, 8, 7, 6], 19), randn(&[9, 8, 3, 3], 20), randn(&[9], 21)];
    gradcheck(&xs, |t, v| t.conv2d(&v[0], &v[1], Some(&v[2]), 2, 1)).unwrap();
}

#[test]
fn conv2d_gradcheck_stride_2_and_1x1_and_no_bias() {
    let xs = [randn(&[2, 2, 7, 6], 4), randn(&[3, 2, 3, 3], 5)];
    gradcheck(&xs, |t, v| t.conv2d(&v[0], &v[1], None, 2, 1)).unwrap();
    let xs = [randn(&[2, 3, 4, 5], 6), randn(&[2, 3, 1, 1], 7), randn(&[2], 8)];
    gradcheck(&xs, |t, v| t.conv2d(&v[0], &v[1], Some(&v[2]), 1, 0)).unwrap();
    let xs = [randn(&[1, 2, 6, 5], 9), randn(&[2, 2, 2, 3], 10)];
    gradcheck(&xs, |t, v| t.conv2d(&v[0], &v[1], None, 1, 0)).unwrap();
}

#[test]
fn the_tape_records_a_convolutions_stride_padding_and_which_inputs_need_gradients() {
    let mut params = crate::ParamStore::new();
    let w = params.add("w", randn(&[4, 2, 3, 3], 1));
    let mut tape = Tape::new();
    let x = tape.constant(randn(&[1, 2, 9, 9], 2));
    let wv = tape.param(&params, w);
    let y = tape.conv2d(&x, &wv, None, 2, 1);
    assert_eq!(y.shape(), [1, 4, 5, 5]);
    let ops = tape.recorded_ops();
    assert_eq!(ops.len(), 1, "the parameter leaf is not an op");
    assert_eq!((ops[0].name, ops[0].attributes.as_str()), ("conv2d", "stride 2, padding 1"));
    assert_eq!(ops[0].input_shapes, [vec![1, 2, 9, 9], vec![4, 2, 3, 3]]);
    assert_eq!(
        (ops[0].needs_grad.as_slice(), ops[0].output_shape.as_slice()),
        ([false, true].as_slice(), [1, 4, 5, 5].as_slice())
    );
    assert!(tape.graph().contains("conv2d (stride 2, padding 1)"), "{}", tape.graph());
}

/// Odd shapes: sizes 1, 3, 7, 13 and a 65-channel case, 1×1, 3×3 and 5×5 kernels, strides 1 and 2.
fn odd_shapes() -> Vec<([usize; 4], [usize; 4], usize, usize)> {
    vec![
        ([1, 1, 7, 13], [3, 1, 3, 3], 1, 1),
        ([3, 3, 13, 7], [7, 3, 3, 3], 1, 1),
        ([2, 7, 13, 13], [5, 7, 3, 3], 2, 1),
        ([3, 65, 3, 7], [1, 65, 1, 1], 1, 0),
        // 1×1 on maps of 101 to 784 pixels (forward on im2col, gradients on the pointwise kernels) and above.
        ([2, 13, 11, 17], [9, 13, 1, 1], 1, 0),
        ([1, 5, 29, 29], [3, 5, 1, 1], 1, 0),
        ([2, 3, 7, 7], [13, 3, 5, 5], 1, 2),
        ([2, 13, 1, 1], [3, 13, 3, 3], 1, 1),
        ([1, 2, 13, 7], [3, 2, 3, 3], 2, 0),
        // Wide rows: several blocks of output rows in the blocked im2col path.
        ([2, 5, 13, 65], [4, 5, 3, 3], 1, 1),
        ([3, 1, 13, 65], [2, 1, 3, 3], 1, 1),
        // The direct weight gradient (≥ 100 pixels, ≥ 8 output channels): a partial channel block (13, 65)
        // and a partial block of weight rows (c_in·9 = 63), a 5×5 "same" convolution.
        ([3, 5, 13, 11], [13, 5, 3, 3], 1, 1),
        ([2, 7, 10, 13], [65, 7, 3, 3], 1, 1),
        ([2, 3, 11, 13], [9, 3, 5, 5], 1, 2),
        // Winograd (3×3, both sides ≥ 12, ≥ 8 channels in and out): odd sizes, partial channel blocks.
        ([2, 9, 13, 12], [10, 9, 3, 3], 1, 1),
        ([1, 8, 12, 17], [17, 8, 3, 3], 1, 1),
        // Winograd on a small map (channel-minor): several images per call, half tiles at both edges.
        ([3, 9, 5, 7], [8, 9, 3, 3], 1, 1),
        // ... and more than one block of output channels (64 at AVX-512) and of input channels (128) both
        // ways, partial ones.
        ([2, 130, 3, 5], [131, 130, 3, 3], 1, 1),
        // Winograd on a large map (one channel's tiles in the lanes), an odd width.
        ([1, 8, 24, 25], [9, 8, 3, 3], 1, 1),
        // Strided on phase planes with both gradients (≥ 8 channels): the U-Net's even 14×14, odd sizes,
        // unpadded, 5×5, stride 3, a 2×2 patchify (no reach past a position), and a kernel smaller than
        // its stride (phases no tap reads).
        ([2, 9, 14, 14], [8, 9, 3, 3], 2, 1),
        ([3, 8, 13, 11], [10, 8, 3, 3], 2, 1),
        ([2, 8, 9, 10], [9, 8, 3, 3], 2, 0),
        ([1, 8, 11, 13], [8, 8, 5, 5], 2, 2),
        ([2, 8, 10, 11], [8, 8, 3, 3], 3, 1),
        ([2, 8, 8, 9], [8, 8, 2, 2], 2, 0),
        ([1, 8, 7, 7], [9, 8, 2, 2], 3, 1),
    ]
}

/// `direct::forward_flat` widens a "same" convolution's rows to whole vectors where that costs at most 1/8
/// of a row, and then no vector of outputs runs across a row's end; other rows keep w + k − 1.
#[test]
fn flat_rows_widen_to_whole_vectors_only_where_cheap() {
    use super::direct::{forward_flat, Place};
    let conv = |hw: usize, k: usize, stride: usize| {
        ConvShape::new(&[2, 3, hw, hw], &[8, 3, k, k], stride, if stride == 1 { (k - 1) / 2 } else { 0 }).unwrap()
    };
    for (level, lanes) in [(crate::cpu::Simd::Avx2, 8), (crate::cpu::Simd::Avx512, 16)] {
        assert_eq!(forward_flat(level, &conv(28, 3, 1)).wp, 32, "28×28 at {lanes} lanes: 30 → 32");
        assert_eq!(forward_flat(level, &conv(7, 3, 1)).wp, 9, "7×7: 16 would add 78%");
        assert_eq!(forward_flat(level, &conv(28, 1, 1)).wp, 28, "1×1: no padding, not a same convolution");
        assert_eq!(forward_flat(level, &conv(28, 3, 2)).wp, 14, "strided: its phase planes keep their rows");
        let flat = forward_flat(level, &conv(28, 3, 1));
        for q in (0..flat.qr).step_by(lanes) {
            if let Place::Split { col, .. } = Place::of(flat.rows(), q, lanes) {
                assert!(col + lanes <= flat.wp, "the vector at {q} runs across a row's end");
            }
        }
    }
}

/// The direct path at every SIMD level this CPU has (the intrinsics and their portable twin), on every odd
/// "same" or strided shape, whatever its size and channels.
#[test]
fn direct_equals_naive_at_every_simd_level() {
    for (i, (xs, ws, stride, padding)) in odd_shapes().into_iter().enumerate() {
        let s = ConvShape::new(&xs, &ws, stride, padding).unwrap();
        let same = stride == 1 && ws[2] == ws[3] && ws[2] > 1 && 2 * padding + 1 == ws[2];
        let strided = stride > 1 && ws[2] == ws[3] && ws[2] > 1;
        if !(same || strided) {
            continue;
        }
        let x = randn(&xs, i as u64);
        let w = randn(&ws, 100 + i as u64);
        let b = randn(&[ws[0]], 200 + i as u64);
        let dy = randn(&[s.n, s.c_out, s.oh, s.ow], 300 + i as u64);
        let naive_y = conv2d_forward_naive(x.data(), w.data(), Some(b.data()), &s);
        let (ndx, ndw, _) = conv2d_backward_naive(x.data(), w.data(), dy.data(), &s);
        for level in crate::cpu::available() {
            let what = format!("{xs:?} * {ws:?} s{stride} p{padding} at {level:?}");
            let y = conv2d_forward_direct(level, x.data(), w.data(), Some(b.data()), &s);
            assert_close(&y, &naive_y, &format!("y {what}"));
            let backward = if strided { conv2d_backward_strided } else { conv2d_backward_direct };
            let (dx, dw) = backward(level, x.data(), w.data(), dy.data(), &s, true, true);
            assert_close(&dx.unwrap(), &ndx, &format!("dx {what}"));
            assert_close(&dw.unwrap(), &ndw, &format!("dweight {what}"));
            // Strided onto small maps, the weight gradient is `strided_cm.rs`'s; the phase planes' too.
            let dw = direct_dweight::direct_dweight(level, x.data(), dy.data(), &s);
            assert_close(&dw, &ndw, &format!("dweight (phase planes) {what}"));
        }
    }
}

/// The weight gradient of "same" convolutions with few output channels (`narrow_dweight.rs`) at every SIMD
/// level: the U-Net's last layer on a short batch, odd maps (5×7, 1×1), 1 to 7 output channels, and 5×5
/// and 7×7 kernels, whose 25 and 49 taps take several rounds of 9, the last one partial.
#[test]
fn narrow_dweight_equals_naive_at_every_simd_level() {
    let shapes = [
        ([3, 32, 28, 28], [1, 32, 3, 3], 1),
        ([2, 9, 5, 7], [3, 9, 3, 3], 1),
        ([1, 13, 1, 1], [7, 13, 3, 3], 1),
        ([2, 8, 6, 5], [2, 8, 5, 5], 2),
        ([2, 8, 4, 4], [1, 8, 7, 7], 3),
    ];
    for (i, (xs, ws, padding)) in shapes.into_iter().enumerate() {
        let s = ConvShape::new(&xs, &ws, 1, padding).unwrap();
        let x = randn(&xs, i as u64);
        let dy = randn(&[s.n, s.c_out, s.oh, s.ow], 300 + i as u64);
        let (_, ndw, _) = conv2d_backward_naive(x.data(), randn(&ws, 100).data(), dy.data(), &s);
        for level in crate::cpu::available() {
            let dw = narrow_dweight::narrow_dweight(level, x.data(), dy.data(), &s);
            assert_close(&dw, &ndw, &format!("dweight {xs:?} * {ws:?} at {level:?}"));
        }
    }
}

/// The Winograd kernel at every SIMD level on every 3×3 "same" shape, whatever its size and channels
/// (the op only sends it the larger ones), and on images of 1 to 5 pixels a side.
#[test]
fn winograd_equals_naive_at_every_simd_level() {
    let mut shapes: Vec<([usize; 4], [usize; 4])> = odd_shapes()
        .into_iter()
        .filter(|&(_, ws, stride, padding)| stride == 1 && ws[2] == 3 && ws[3] == 3 && padding == 1)
        .map(|(xs, ws, _, _)| (xs, ws))
        .collect();
    for (h, w) in [(1, 1), (1, 4), (2, 2), (3, 5), (5, 1)] {
        shapes.push(([2, 3, h, w], [9, 3, 3, 3]));
    }
    for (i, (xs, ws)) in shapes.into_iter().enumerate() {
        let s = ConvShape::new(&xs, &ws, 1, 1).unwrap();
        let x = randn(&xs, i as u64);
        let w = randn(&ws, 100 + i as u64);
        let b = randn(&[ws[0]], 200 + i as u64);
        let naive_y = conv2d_forward_naive(x.data(), w.data(), Some(b.data()), &s);
        for level in crate::cpu::available() {
            let y = conv2d_forward_winograd(level, x.data(), w.data(), Some(b.data()), &s);
            assert_close(&y, &naive_y, &format!("y {xs:?} * {ws:?} at {level:?}"));
            let y = conv2d_forward_winograd_cm(level, x.data(), w.data(), Some(b.data()), &s);
            assert_close(&y, &naive_y, &format!("y (channel-minor) {xs:?} * {ws:?} at {level:?}"));
        }
    }
}

/// The channel-minor Winograd weight pack, vectorised (a vector of output channels at a time, their taps
/// transposed in registers), equals its definition bit for bit at every level, as it is and rotated for the
/// input gradient: channel counts under one vector, past one block, and partial blocks and vectors.
#[test]
fn winograd_cm_pack_equals_naive_at_every_simd_level() {
    use super::winograd_cm::{pack_weight, pack_weight_naive, padding, tile};
    for (i, (c_out, c_in)) in [(1, 1), (3, 5), (9, 3), (17, 40), (70, 33), (128, 64)].into_iter().enumerate() {
        let w = randn(&[c_out, c_in, 3, 3], 300 + i as u64);
        for level in crate::cpu::available() {
            for rotate in [false, true] {
                let (outs, ins) = if rotate { (c_in, c_out) } else { (c_out, c_in) };
                let (cpo, cpi) = padding(level, outs, ins);
                let (_, nv, lanes) = tile(level);
                let layout = (cpo, cpi, nv * lanes);
                let fast = pack_weight(level, w.data(), c_out, c_in, layout, rotate);
                let naive = pack_weight_naive(w.data(), c_out, c_in, layout, rotate);
                assert_eq!(fast.len(), naive.len());
                let differ = fast.iter().zip(&naive).position(|(a, b)| a.to_bits() != b.to_bits());
                assert_eq!(differ, None, "[{c_out}, {c_in}, 3, 3] rotate {rotate} at {level:?}: first difference");
            }
        }
    }
}

/// Every strided odd shape whatever its output size, then the U-Net's downsampling to 7×7 with more than one
/// block of output channels (a partial one), to 14×14 with 32 (the narrow tile) and with 33: the shapes both
/// channel-minor strided tests start from.
fn strided_cm_shapes() -> Vec<([usize; 4], [usize; 4], usize, usize)> {
    let mut shapes: Vec<_> = odd_shapes().into_iter().filter(|&(_, ws, stride, _)| stride > 1 && ws[2] > 1).collect();
    shapes.push(([3, 64, 14, 14], [70, 64, 3, 3], 2, 1));
    shapes.push(([2, 32, 28, 28], [32, 32, 3, 3], 2, 1));
    shapes.push(([2, 17, 28, 28], [33, 17, 3, 3], 2, 1));
    shapes
}

/// The channel-minor strided forward at every SIMD level, on every strided odd shape whatever its output
/// size, the U-Net's downsampling to 7×7 with more than one block of output channels (a partial one), to
/// 14×14 with 32 (the narrow tile) and with 33, and a batch that splits into uneven groups of images.
#[test]
fn strided_cm_equals_naive_at_every_simd_level() {
    let mut shapes = strided_cm_shapes();
    shapes.push(([7, 5, 9, 9], [3, 5, 3, 3], 2, 1));
    for (i, (xs, ws, stride, padding)) in shapes.into_iter().enumerate() {
        let s = ConvShape::new(&xs, &ws, stride, padding).unwrap();
        let x = randn(&xs, i as u64);
        let w = randn(&ws, 100 + i as u64);
        let b = randn(&[ws[0]], 200 + i as u64);
        let naive_y = conv2d_forward_naive(x.data(), w.data(), Some(b.data()), &s);
        for level in crate::cpu::available() {
            let packed = strided_cm::pack(level, w.data(), &s);
            let job = forward_job(&x, &packed, &b, &s);
            let what = format!("{xs:?} * {ws:?} s{stride} p{padding} at {level:?}");
            assert_close(&strided_cm::conv(level, job), &naive_y, &format!("y {what}"));
        }
    }
}

/// The channel-minor weight gradient at every SIMD level, on the same shapes as the strided forward, and at
/// 1 and 2 threads (its groups' partial sums must not depend on them).
#[test]
fn strided_cm_dweight_equals_naive_at_every_simd_level() {
    let mut shapes = strided_cm_shapes();
    shapes.push(([13, 5, 9, 9], [3, 5, 3, 3], 2, 1));
    shapes.push(([24, 8, 9, 9], [9, 8, 3, 3], 2, 1)); // four groups of 6 images
    for (i, (xs, ws, stride, padding)) in shapes.into_iter().enumerate() {
        let s = ConvShape::new(&xs, &ws, stride, padding).unwrap();
        let x = randn(&xs, i as u64);
        let w = randn(&ws, 100 + i as u64);
        let dy = randn(&[s.n, s.c_out, s.oh, s.ow], 300 + i as u64);
        let (_, ndw, _) = conv2d_backward_naive(x.data(), w.data(), dy.data(), &s);
        for level in crate::cpu::available() {
            let what = format!("{xs:?} * {ws:?} s{stride} p{padding} at {level:?}");
            let dw = strided_cm::dweight(level, x.data(), dy.data(), &s);
            assert_close(&dw, &ndw, &format!("dweight {what}"));
            let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            assert_eq!(one.install(|| strided_cm::dweight(level, x.data(), dy.data(), &s)), dw, "1 thread: {what}");
        }
    }
}

/// The 1×1 path at every SIMD level, forward, input gradient and weight gradient (the last also at 1 and 2
/// threads: its groups' partial sums must not depend on them), on odd shapes: batches that split into
/// uneven groups of images (11 of 7×7), one image, maps of 1 and 99 pixels, channel counts that leave
/// partial blocks and tiles (1, 13, 65, 70 in; 1, 9, 17, 130 out), whatever the dispatch would choose.
#[test]
fn pointwise_equals_naive_at_every_simd_level() {
    let shapes = [
        ([11, 13, 7, 7], [17, 13, 1, 1]),
        ([1, 65, 3, 5], [9, 65, 1, 1]),
        ([3, 1, 9, 11], [1, 1, 1, 1]),
        ([5, 9, 1, 1], [13, 9, 1, 1]),
        ([2, 16, 14, 14], [8, 16, 1, 1]),
        ([3, 70, 7, 7], [130, 70, 1, 1]),
    ];
    for (i, (xs, ws)) in shapes.into_iter().enumerate() {
        let s = ConvShape::new(&xs, &ws, 1, 0).unwrap();
        let x = randn(&xs, i as u64);
        let w = randn(&ws, 100 + i as u64);
        let b = randn(&[ws[0]], 200 + i as u64);
        let dy = randn(&[s.n, s.c_out, s.oh, s.ow], 300 + i as u64);
        let naive_y = conv2d_forward_naive(x.data(), w.data(), Some(b.data()), &s);
        let (ndx, ndw, _) = conv2d_backward_naive(x.data(), w.data(), dy.data(), &s);
        for level in crate::cpu::available() {
            let what = format!("{xs:?} * {ws:?} at {level:?}");
            let packed = direct::pack(level, w.data(), &s, false);
            let job = forward_job(&x, &packed, &b, &s);
            assert_close(&pointwise::conv(level, job), &naive_y, &format!("y {what}"));
            let transposed = direct::pack(level, w.data(), &s, true);
            let job = SameConv {
                input: dy.data(),
                ch_in: s.c_out,
                packed: &transposed,
                ch_out: s.c_in,
                bias: None,
                shape: &s,
            };
            assert_close(&pointwise::conv(level, job), &ndx, &format!("dx {what}"));
            let dw = pointwise_dweight::dweight(level, x.data(), dy.data(), &s);
            assert_close(&dw, &ndw, &format!("dweight {what}"));
            let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            let dw_one = one.install(|| pointwise_dweight::dweight(level, x.data(), dy.data(), &s));
            assert_eq!(dw_one, dw, "dweight on 1 thread: {what}");
        }
    }
}

/// The forward of x with a packed weight and bias b, as a path's `conv` takes it.
fn forward_job<'a>(x: &'a Tensor, packed: &'a [f32], b: &'a Tensor, s: &'a ConvShape) -> SameConv<'a> {
    SameConv { input: x.data(), ch_in: s.c_in, packed, ch_out: s.c_out, bias: Some(b.data()), shape: s }
}

fn assert_close(fast: &[f32], naive: &[f32], what: &str) {
    assert_eq!(fast.len(), naive.len(), "{what}");
    for (i, (a, b)) in fast.iter().zip(naive).enumerate() {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{what}[{i}]: fast {a} naive {b}");
    }
}

#[test]
fn fast_equals_naive_on_odd_shapes() {
    // The SIMD inside is matrixmultiply's, which picks its micro-kernel by its own run-time detection.
    for (i, (xs, ws, stride, padding)) in odd_shapes().into_iter().enumerate() {
        let s = ConvShape::new(&xs, &ws, stride, padding).unwrap();
        let x = randn(&xs, i as u64);
        let w = randn(&ws, 100 + i as u64);
        let b = randn(&[ws[0]], 200 + i as u64);
        let dy = randn(&[s.n, s.c_out, s.oh, s.ow], 300 + i as u64);
        let naive_y = conv2d_forward_naive(x.data(), w.data(), Some(b.data()), &s);
        let (ndx, ndw, ndb) = conv2d_backward_naive(x.data(), w.data(), dy.data(), &s);
        {
            {
                let what = format!("{xs:?} * {ws:?} s{stride} p{padding}");
                assert_close(&conv2d_forward(x.data(), w.data(), Some(b.data()), &s), &naive_y, &format!("y {what}"));
                let (dx, dw, db) = conv2d_backward(x.data(), w.data(), dy.data(), &s, true, true);
                assert_close(&dx.unwrap(), &ndx, &format!("dx {what}"));
                assert_close(&dw.unwrap(), &ndw, &format!("dweight {what}"));
                assert_close(&db, &ndb, &format!("dbias {what}"));
            }
        }
    }
}

#[test]
fn results_are_bit_identical_at_one_and_two_threads() {
    // Five images (the per-image paths) and one (fewer images than threads: the product, or on the direct
    // path the output channels, split instead), 3×3 and 1×1; 12×12 takes the direct weight gradient.
    let shapes = [
        ([5, 8, 9, 9], [16, 8, 3, 3]),
        ([1, 8, 19, 21], [16, 8, 3, 3]),
        ([1, 40, 9, 9], [70, 40, 1, 1]),
        // 1×1 at 7×7 (`pointwise.rs`): images grouped 6 + 5 on one thread and 3 + 3 + 3 + 2 on two.
        ([11, 24, 7, 7], [40, 24, 1, 1]),
        ([5, 6, 12, 12], [20, 6, 3, 3]),
        // A last layer: the weight gradient on `narrow_dweight.rs`, split over input channels.
        ([5, 12, 10, 9], [1, 12, 3, 3]),
    ];
    for (xs, ws) in shapes {
        check_threads(&xs, &ws, 1, ws[2] / 2);
    }
    // Strided, on phase planes: five images, and one (its input channels split across threads for dx).
    check_threads(&[5, 8, 14, 14], &[16, 8, 3, 3], 2, 1);
    check_threads(&[1, 16, 13, 13], &[8, 16, 3, 3], 2, 1);
}

fn check_threads(xs: &[usize; 4], ws: &[usize; 4], stride: usize, padding: usize) {
    let s = ConvShape::new(xs, ws, stride, padding).unwrap();
    let x = randn(xs, 1);
    let w = randn(ws, 2);
    let dy = randn(&[s.n, s.c_out, s.oh, s.ow], 3);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
            let y = conv2d_forward(x.data(), w.data(), None, &s);
            let (dx, dw, db) = conv2d_backward(x.data(), w.data(), dy.data(), &s, true, true);
            (y, dx, dw, db)
        })
    };
    assert!(run(1) == run(2), "{xs:?} * {ws:?}");
}

#[test]
fn im2col_then_col2im_counts_each_pixels_uses() {
    // col2im(im2col(1)) = how many output pixels read each input pixel: for 3×3, padding 1, stride 1 on a
    // 4×4 image, 9 in the interior, 6 on an edge, 4 in a corner.
    let s = ConvShape::new(&[1, 1, 4, 4], &[1, 1, 3, 3], 1, 1).unwrap();
    let mut col = vec![0.0; s.ckk() * s.ohw()];
    im2col(&[1.0; 16], &s, &mut col);
    let mut counts = vec![0.0; 16];
    col2im(&col, &s, &mut counts);
    assert_eq!(&counts[..4], &[4.0, 6.0, 6.0, 4.0]);
    assert_eq!(&counts[4..8], &[6.0, 9.0, 9.0, 6.0]);
}

#[test]
#[should_panic(expected = "conv2d: weight [64, 3, 3, 3] expects 3 input channels, got x [16, 64, 32, 32]")]
fn conv2d_rejects_wrong_channels() {
    let x = Var::constant(Tensor::zeros(&[16, 64, 32, 32]));
    let w = Var::constant(Tensor::zeros(&[64, 3, 3, 3]));
    Tape::new().conv2d(&x, &w, None, 1, 1);
}

/// Outside training the op keeps each weight's rearranged copy ([`Tensor::derived`]); the outputs are the
/// same bits as the training path's, on every forward path, and stay right after the weight changes.
#[test]
fn inference_reuses_the_packed_weight_with_the_same_result() {
    // Winograd (large map, small map), direct (one channel in), im2col (stride 2), 1×1 on a small map.
    let cases = [
        ([1, 8, 24, 24], [8, 8, 3, 3], 1, 1),
        ([2, 8, 7, 7], [16, 8, 3, 3], 1, 1),
        ([2, 1, 9, 9], [8, 1, 3, 3], 1, 1),
        ([2, 8, 9, 9], [8, 8, 3, 3], 2, 1),
        ([3, 16, 7, 7], [24, 16, 1, 1], 1, 0),
    ];
    for (i, (xs, ws, stride, padding)) in cases.into_iter().enumerate() {
        let x = Var::constant(randn(&xs, 40 + i as u64));
        let mut w = randn(&ws, 50 + i as u64);
        for _ in 0..2 {
            let training = {
                let mut t = Tape::new();
                let wv = t.leaf(w.clone());
                t.conv2d(&x, &wv, None, stride, padding).value().clone()
            };
            let mut t = Tape::inference();
            let wv = Var::constant(w.clone());
            let first = t.conv2d(&x, &wv, None, stride, padding).value().clone();
            let again = t.conv2d(&x, &wv, None, stride, padding).value().clone();
            assert!(first == training && again == training, "{xs:?} * {ws:?} stride {stride}");
            w.data_mut()[0] += 1.0; // the next round must not reuse the old rearrangement
        }
    }
}

/// Calls of whole images come in a count the threads share equally, as large as `most` allows.
#[test]
fn images_per_call_splits_a_batch_equally_over_the_threads() {
    use super::parallel::images_per_call;
    assert_eq!(images_per_call(32, 5, 2), 4, "8 calls, not 7 of 5");
    assert_eq!(images_per_call(32, 3, 2), 2, "16 calls, not 11 of 3");
    assert_eq!(images_per_call(32, 8, 2), 8, "4 calls, 2 a thread");
    assert_eq!(images_per_call(32, 8, 8), 2, "16 calls on 8 threads");
    assert_eq!(images_per_call(3, 8, 2), 1, "too few images: one a call");
    assert_eq!(images_per_call(7, 0, 1), 1);
}

/// The U-Net's convolutions, each on the path the dispatch doc says it takes.
#[test]
fn each_shape_takes_its_documented_path() {
    let path = |x: [usize; 4], c_out: usize, k: usize, stride: usize, padding: usize| {
        forward_path(&ConvShape::new(&x, &[c_out, x[1], k, k], stride, padding).unwrap())
    };
    let packed = Path::Packed;
    assert_eq!(path([32, 64, 28, 28], 64, 3, 1, 1), packed(Packing::Winograd));
    assert_eq!(path([32, 128, 7, 7], 128, 3, 1, 1), packed(Packing::WinogradChannelMinor));
    assert_eq!(path([32, 64, 14, 14], 64, 3, 1, 1), packed(Packing::WinogradChannelMinor));
    assert_eq!(path([32, 1, 28, 28], 32, 3, 1, 1), packed(Packing::Direct), "the first layer: 1 channel in");
    assert_eq!(path([32, 32, 28, 28], 1, 3, 1, 1), packed(Packing::Direct), "the last layer: 1 channel out");
    assert_eq!(path([32, 32, 28, 28], 32, 5, 1, 2), packed(Packing::Direct), "5×5 same");
    let strided_cm = packed(Packing::StridedChannelMinor);
    assert_eq!(path([32, 32, 28, 28], 32, 3, 2, 1), strided_cm, "downsampling to 14×14");
    assert_eq!(path([32, 64, 14, 14], 64, 3, 2, 1), strided_cm, "downsampling to 7×7");
    assert_eq!(path([32, 32, 56, 56], 32, 3, 2, 1), packed(Packing::Direct), "downsampling to 28×28");
    assert_eq!(path([32, 32, 28, 28], 32, 1, 2, 0), Path::Im2col, "1×1, stride 2");
    assert_eq!(path([32, 128, 7, 7], 384, 1, 1, 0), packed(Packing::Pointwise), "1×1 at 7×7 (attention's qkv)");
    assert_eq!(path([32, 192, 14, 14], 64, 1, 1, 0), Path::Im2col, "1×1 at 14×14");
    assert_eq!(path([2, 8, 9, 9], 8, 3, 1, 0), Path::Im2col, "unpadded");
}
