//! A training step in steady state takes no fresh memory: every activation, gradient and scratch buffer of
//! steps 3 to 5 is a buffer recycled from the earlier steps (see `autograd::pool`), so the step causes (almost) no
//! page faults. Without the pool, every large buffer would be fresh pages, one fault per 4 KiB touched.
//!
//! Measured two ways on a small conv net with the U-Net's ops (conv2d, group_norm, silu, attention,
//! residual add, upsample) trained with AdamW: the pool's count of buffers it had to allocate, and the
//! process's minor page faults (Linux `/proc/self/stat`). This file is its own test binary, so no other
//! test allocates meanwhile.
//!
//! (matrixmultiply allocates its packing buffers on each call; the system allocator serves those from memory
//! it already holds, which the page-fault count confirms.)

use autograd::init;
use autograd::optim::{Adam, Optimizer};
use autograd::{pool, ParamStore, Tape, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Minor page faults of this process so far, where the platform reports them.
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesized command name; minflt is field 10 overall, the 8th after ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(7)?.parse().ok()
}

#[test]
fn third_training_step_takes_no_fresh_memory() {
    let mut rng = StdRng::seed_from_u64(0);
    let mut params = ParamStore::new();
    let w1 = params.add("conv1.weight", init::default_weight(&[32, 4, 3, 3], &mut rng));
    let b1 = params.add("conv1.bias", init::default_bias(32, 36, &mut rng));
    let gamma = params.add("norm.weight", Tensor::ones(&[32]));
    let beta = params.add("norm.bias", Tensor::zeros(&[32]));
    let w2 = params.add("conv2.weight", init::default_weight(&[4, 32, 3, 3], &mut rng));
    let mut opt = Adam::adamw(1e-3, 0.01);
    let x = Tensor::randn_seeded(&[16, 4, 16, 16], 1);
    let target = Tensor::randn_seeded(&[16, 4, 32, 32], 2);
    let mut tape = Tape::new();

    let (mut fresh, mut faults) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let (fresh0, faults0) = (pool::fresh_allocations(), minor_faults());
        {
            let xv = tape.constant(x.clone());
            let (w1v, b1v) = (tape.param(&params, w1), tape.param(&params, b1));
            let h = tape.conv2d(&xv, &w1v, Some(&b1v), 1, 1);
            let (g, b) = (tape.param(&params, gamma), tape.param(&params, beta));
            let h = tape.group_norm(&h, 8, &g, &b, 1e-5);
            let h = tape.silu(&h);
            // Self-attention over the 256 positions, one head: [16, 256, 32].
            let seq = tape.reshape(&h, &[16, 32, 256]);
            let seq = tape.transpose(&seq, 1, 2);
            let att = tape.scaled_dot_product_attention(&seq, &seq, &seq);
            let att = tape.transpose(&att, 1, 2);
            let att = tape.reshape(&att, &[16, 32, 16, 16]);
            let h = tape.add(&h, &att);
            let h = tape.upsample_nearest2d(&h, 2);
            let w2v = tape.param(&params, w2);
            let y = tape.conv2d(&h, &w2v, None, 1, 1);
            let t = tape.constant(target.clone());
            let loss = tape.mse_loss(&y, &t);
            let grads = tape.backward(&loss);
            opt.step(&mut params, &grads);
        }
        fresh.push(pool::fresh_allocations() - fresh0);
        if let (Some(a), Some(b)) = (faults0, minor_faults()) {
            faults.push(b - a);
        }
    }
    eprintln!("pool allocations per step {fresh:?}, minor page faults per step {faults:?}");
    assert!(fresh[0] > 0, "the first step allocates its buffers");
    // Steps 3 to 5: the quietest of them, since on a loaded machine the threads can meet the work in another
    // order for a step and, once, need a buffer the pool has lent elsewhere.
    assert_eq!(fresh[2..].iter().min(), Some(&0), "buffers the pool had to allocate, per step: {fresh:?}");
    if faults.len() == 5 {
        // Step 1 touches several MiB of fresh pages; a step in steady state should touch almost none.
        let steady = *faults[2..].iter().min().expect("three steps");
        assert!(steady * 20 < faults[0], "minor page faults per step: {faults:?}");
    }
}
