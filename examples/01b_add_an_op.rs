//! # 01b — Adding an op: forward, backward, proof, then a fast kernel
//!
//! Every op in `autograd/src/ops/` is made the way this example makes softplus, y = ln(1 + eˣ):
//! 1. a naive kernel, the definition as a plain loop;
//! 2. the forward: compute the output, and build an [`Op`] struct holding what the backward needs;
//! 3. the backward, written out by hand from the derivative, dy/dx = σ(x) = 1/(1 + e⁻ˣ);
//! 4. proof: a finite-difference gradient check ([`gradcheck`]), and one that it catches a wrong backward;
//! 5. a fast kernel (chunks on all threads), proved equal to the naive one on odd sizes.
//!
//! ```text
//! cargo run --release --example 01b_add_an_op
//! cargo run --release --example 01b_add_an_op -- --quick
//! ```

use std::time::Instant;

use autograd::{gradcheck, Op, Tape, Tensor, Var};
use diffusion::cli::{self, exit_on_error, Parser};
use diffusion::{Error, Result};
use rayon::prelude::*;

/// ln(1 + eˣ), written so that it never overflows: max(x, 0) + ln(1 + e^(−|x|)).
fn softplus_scalar(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Step 1, the naive kernel: the definition, one element at a time.
fn softplus_forward_naive(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| softplus_scalar(v)).collect()
}

/// Step 5, the fast kernel: the same per-element arithmetic (so the same bits), in chunks of 16 Ki elements
/// on all threads. Must equal [`softplus_forward_naive`].
fn softplus_forward(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(1 << 14).zip(x.par_chunks(1 << 14)).for_each(|(y, x)| {
        for (out, &v) in y.iter_mut().zip(x) {
            *out = softplus_scalar(v);
        }
    });
    y
}

/// Step 2, the forward: softplus, elementwise.
/// ```text
/// # Shapes    x → y, same shape
/// # Forward   y = ln(1 + eˣ)
/// # Backward  dx = dy · σ(x),   σ(x) = 1/(1 + e⁻ˣ)
/// # Saved     x
/// # Reference torch.nn.functional.softplus
/// ```
fn softplus(tape: &mut Tape, x: &Var) -> Var {
    let y = Tensor::from_vec(x.shape(), softplus_forward(x.value().data()));
    tape.record(SoftplusOp { x: x.value().clone(), wrong: false }, &[x], y)
}

/// What the backward needs: x. (`wrong` breaks the derivative on purpose, to see the check catch it.)
struct SoftplusOp {
    x: Tensor,
    wrong: bool,
}

impl Op for SoftplusOp {
    fn name(&self) -> &'static str {
        "softplus"
    }

    // forward: y = ln(1 + eˣ)
    // 3. dy/dx = eˣ/(1 + eˣ) = σ(x), so dx = dy · σ(x)
    fn backward(&self, dy: &Tensor, _wants: &[bool]) -> Vec<Option<Tensor>> {
        let factor = if self.wrong { 2.0 } else { 1.0 };
        let dx = self.x.data().iter().zip(dy.data()).map(|(&x, &g)| factor * g / (1.0 + (-x).exp())).collect();
        vec![Some(Tensor::from_vec(self.x.shape(), dx))]
    }
}

fn main() {
    exit_on_error(run);
}

fn run() -> Result<()> {
    let quick = cli::parse::<Flags>()?.quick;
    let check = |what: &str, ok: bool| if ok { Ok(()) } else { Err(Error::Usage(format!("{what}: failed"))) };

    // A closed form: softplus(0) = ln 2 and σ(0) = ½.
    let mut tape = Tape::new();
    let x = tape.leaf(Tensor::from_vec(&[1], vec![0.0]));
    let y = softplus(&mut tape, &x);
    let grads = tape.backward(&y);
    let (value, slope) = (y.value().data()[0], grads.leaf(&x).unwrap().data()[0]);
    println!("softplus(0) = {value:.6} (ln 2 = {:.6}); its derivative there {slope} (σ(0) = 0.5)", 2f32.ln());
    check("the closed form", (value - 2f32.ln()).abs() < 1e-6 && slope == 0.5)?;

    // 4. Finite differences against the hand-written backward, on values across the range; and a wrong
    // backward is caught.
    let inputs = [Tensor::from_vec(&[2, 5], vec![-8.0, -3.0, -1.0, -0.3, 0.0, 0.2, 0.9, 2.0, 5.0, 9.0])];
    let ok = gradcheck(&inputs, |t, v| softplus(t, &v[0]));
    println!("gradcheck of the backward: {}", if ok.is_ok() { "passes".to_string() } else { format!("{ok:?}") });
    check("gradcheck", ok.is_ok())?;
    let broken = gradcheck(&inputs, |t, v| {
        let y = Tensor::from_vec(v[0].shape(), softplus_forward_naive(v[0].value().data()));
        t.record(SoftplusOp { x: v[0].value().clone(), wrong: true }, &[&v[0]], y)
    });
    println!("gradcheck of a backward off by 2×: {}", if broken.is_err() { "caught" } else { "NOT caught" });
    check("catching a wrong backward", broken.is_err())?;

    // 5. fast == naive, bit for bit, on sizes that are not multiples of the chunk (and one that is).
    let sizes: &[usize] = if quick { &[1, 7, 16_385] } else { &[1, 7, 16_384, 16_385, 1_000_003] };
    for &n in sizes {
        let x = Tensor::randn_seeded(&[n], n as u64).data().iter().map(|v| 6.0 * v).collect::<Vec<f32>>();
        check(&format!("fast == naive at {n} elements"), softplus_forward(&x) == softplus_forward_naive(&x))?;
    }
    println!("fast == naive, bit for bit, at {sizes:?} elements");

    // And what the fast kernel buys, on 2²² elements.
    let x: Vec<f32> = Tensor::randn_seeded(&[if quick { 1 << 16 } else { 1 << 22 }], 9).data().to_vec();
    let time = |f: &dyn Fn(&[f32]) -> Vec<f32>| {
        let started = Instant::now();
        std::hint::black_box(f(&x));
        started.elapsed().as_secs_f64() * 1e3
    };
    let (naive, fast) = (time(&softplus_forward_naive), time(&softplus_forward));
    println!(
        "{} elements: naive {naive:.2} ms, fast {fast:.2} ms on {} threads",
        x.len(),
        rayon::current_num_threads()
    );
    Ok(())
}

/// A new op, softplus: forward, backward, gradient check, fast kernel equal to the naive one.
#[derive(Parser)]
struct Flags {
    /// Smaller sizes, for CI
    #[arg(long)]
    quick: bool,
}
