use super::*;
use crate::gradcheck::gradcheck;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn_seeded(shape, seed)
}

#[test]
fn add_gradcheck_with_broadcast() {
    gradcheck(&[randn(&[3, 1, 5], 1), randn(&[4, 1], 2)], |t, x| t.add(&x[0], &x[1])).unwrap();
}

#[test]
fn sub_gradcheck_with_broadcast() {
    gradcheck(&[randn(&[2, 3], 1), randn(&[3], 2)], |t, x| t.sub(&x[0], &x[1])).unwrap();
    gradcheck(&[randn(&[1], 3), randn(&[2, 3], 4)], |t, x| t.sub(&x[0], &x[1])).unwrap();
}

#[test]
fn mul_gradcheck_with_broadcast() {
    gradcheck(&[randn(&[3, 1, 5], 1), randn(&[4, 1], 2)], |t, x| t.mul(&x[0], &x[1])).unwrap();
    gradcheck(&[randn(&[2, 3], 5), randn(&[2, 3], 6)], |t, x| t.mul(&x[0], &x[1])).unwrap();
    // One operand broadcast, the other of the output's shape (the same-shape fast path must not apply to a).
    gradcheck(&[randn(&[1, 3], 7), randn(&[2, 3], 8)], |t, x| t.mul(&x[0], &x[1])).unwrap();
}

#[test]
fn div_gradcheck_with_broadcast() {
    // Keep the denominator away from zero so the finite differences are well conditioned.
    let b = Tensor::rand_uniform_seeded(&[4, 1], 0.5, 2.0, 2);
    gradcheck(&[randn(&[3, 1, 5], 1), b.clone()], |t, x| t.div(&x[0], &x[1])).unwrap();
    let a = Tensor::rand_uniform_seeded(&[3], 0.5, 2.0, 3);
    gradcheck(&[randn(&[2, 3], 4), a], |t, x| t.div(&x[0], &x[1])).unwrap();
}

#[test]
fn scalar_ops_gradcheck() {
    gradcheck(&[randn(&[3, 4], 1)], |t, x| t.add_scalar(&x[0], 2.5)).unwrap();
    gradcheck(&[randn(&[3, 4], 1)], |t, x| t.mul_scalar(&x[0], -1.5)).unwrap();
}

#[test]
fn fast_equals_naive_on_odd_shapes() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[13, 7], &[13, 7]),
        (&[13, 7], &[7]),
        (&[13, 1], &[1, 7]),
        (&[3, 1, 65], &[7, 1]),
        (&[1], &[3, 13]),
        (&[], &[5]),
        (&[2, 1, 3], &[1, 65, 1]),
        // From 32768 outputs the slabs along the first axis run in parallel: the time embedding's add, a
        // broadcast first axis, and a last axis of 1.
        (&[5, 64, 11, 13], &[5, 64, 1, 1]),
        (&[1, 64, 1, 13], &[3, 64, 11, 13]),
        (&[7, 3, 4096, 1], &[1, 3, 1, 1]),
    ];
    for (i, (sa, sb)) in cases.iter().enumerate() {
        let a = randn(sa, i as u64);
        let b = randn(sb, 100 + i as u64);
        let out = broadcast_shape(sa, sb).unwrap();
        for f in [|x: f32, y: f32| x + y, |x: f32, y: f32| x * y - y] {
            let fast = binary_forward(a.data(), sa, b.data(), sb, &out, f);
            let naive = binary_forward_naive(a.data(), sa, b.data(), sb, &out, f);
            assert_eq!(fast, naive, "{sa:?} with {sb:?}");
        }
    }
}

#[test]
fn values_with_broadcast() {
    let mut t = Tape::new();
    let a = t.constant(Tensor::from_vec(&[2, 1], vec![1.0, 2.0]));
    let b = t.constant(Tensor::from_vec(&[3], vec![10.0, 20.0, 30.0]));
    assert_eq!(t.add(&a, &b).value().data(), &[11., 21., 31., 12., 22., 32.]);
    assert_eq!(t.div(&b, &a).value().data(), &[10., 20., 30., 5., 10., 15.]);
}

#[test]
#[should_panic(expected = "mul: shapes a [2, 3] and b [3, 2] do not broadcast")]
fn mul_rejects_incompatible_shapes() {
    let mut t = Tape::new();
    let a = t.constant(Tensor::zeros(&[2, 3]));
    let b = t.constant(Tensor::zeros(&[3, 2]));
    t.mul(&a, &b);
}

#[test]
fn shape_panic_points_at_the_callers_line() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Option<(String, u32)>>> = Arc::default();
    let seen_in_hook = seen.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<String>().cloned().unwrap_or_default();
        if msg.starts_with("add: shapes") {
            let loc = info.location().unwrap();
            *seen_in_hook.lock().unwrap() = Some((loc.file().to_string(), loc.line()));
        }
    }));
    let line = line!() + 4;
    let result = std::panic::catch_unwind(|| {
        let mut t = Tape::new();
        let (a, b) = (Var::constant(Tensor::zeros(&[2])), Var::constant(Tensor::zeros(&[3])));
        t.add(&a, &b)
    });
    std::panic::set_hook(previous);
    assert!(result.is_err());
    let (file, at) = seen.lock().unwrap().clone().expect("the add panic was seen");
    assert!(file.ends_with("arith/tests.rs"), "panic located in {file}");
    assert_eq!(at, line);
}

#[test]
fn same_shape_simd_kernels_equal_the_broadcast_kernel_at_every_level() {
    for n in [1, 3, 7, 13, 65, 100_003] {
        let (a, b) = (randn(&[n], 1), randn(&[n], 2));
        let add = binary_forward_naive(a.data(), &[n], b.data(), &[n], &[n], |x, y| x + y);
        let mul = binary_forward_naive(a.data(), &[n], b.data(), &[n], &[n], |x, y| x * y);
        for level in crate::cpu::available() {
            assert_eq!(add_same_at(level, a.data(), b.data()), add, "add n {n} {level:?}");
            assert_eq!(mul_same_at(level, a.data(), b.data()), mul, "mul n {n} {level:?}");
        }
    }
}
