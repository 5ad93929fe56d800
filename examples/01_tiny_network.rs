//! # 01 — A tiny network, its graph, and one gradient checked by hand
//!
//! Part 1 takes a single neuron, y = tanh(w·x + b), with loss L = (y − target)², and computes ∂L/∂w three
//! ways: by the tape's backward, by the chain rule written out by hand, and by finite differences.
//!
//! Part 2 trains a two-layer network to tell points inside a circle from points outside it, prints the graph
//! the tape recorded for one training step, and reports the loss and accuracy as it learns.
//!
//! ```text
//! cargo run --release --example 01_tiny_network
//! cargo run --release --example 01_tiny_network -- --quick
//! ```

use autograd::nn::Linear;
use autograd::optim::{Adam, Optimizer};
use autograd::{ParamStore, Tape, Tensor};
use diffusion::cli::{self, exit_on_error, in_range, Parser};
use diffusion::Result;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn main() {
    exit_on_error(run);
}

fn run() -> Result<()> {
    let flags: Flags = cli::parse()?;
    let steps = flags.steps.unwrap_or(if flags.quick { 100 } else { 1500 });
    let seed = flags.seed;

    one_gradient_by_hand();
    train_circle_classifier(steps, seed);
    Ok(())
}

/// Part 1: ∂L/∂w for L = (tanh(w·x + b) − target)², three ways.
fn one_gradient_by_hand() {
    let (w, b, x, target) = (0.7f32, -0.2f32, 1.5f32, 0.3f32);
    let loss_at = |w: f32| ((w * x + b).tanh() - target).powi(2);

    // 1. The tape.
    let mut params = ParamStore::new();
    let w_id = params.add("w", Tensor::scalar(w));
    let b_id = params.add("b", Tensor::scalar(b));
    let mut tape = Tape::new();
    let (wv, bv) = (tape.param(&params, w_id), tape.param(&params, b_id));
    let xv = tape.constant(Tensor::scalar(x));
    let z = tape.mul(&wv, &xv);
    let z = tape.add(&z, &bv);
    let y = tape.tanh(&z);
    let t = tape.constant(Tensor::scalar(target));
    let loss = tape.mse_loss(&y, &t);
    println!("Part 1: one neuron, y = tanh(w·x + b), L = (y − target)²");
    println!("the recorded graph (% = node id, const = a value that needs no gradient):\n{}", tape.graph());
    let grads = tape.backward(&loss);
    let from_tape = grads.param(w_id).expect("L depends on w").item();

    // 2. The chain rule by hand: ∂L/∂w = 2(y − target) · (1 − y²) · x.
    let yv = (w * x + b).tanh();
    let by_hand = 2.0 * (yv - target) * (1.0 - yv * yv) * x;

    // 3. Central differences.
    let eps = 1e-3;
    let numeric = (loss_at(w + eps) - loss_at(w - eps)) / (2.0 * eps);
    println!("∂L/∂w  tape {from_tape:.6}   by hand {by_hand:.6}   finite differences {numeric:.6}\n");
}

/// Part 2: a 2 → 32 → 2 network classifies points as inside or outside the circle of radius 1.
fn train_circle_classifier(steps: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut params = ParamStore::new();
    let hidden = Linear::new(&mut params, "hidden", 2, 32, &mut rng);
    let output = Linear::new(&mut params, "output", 32, 2, &mut rng);
    let mut opt = Adam::new(0.01);
    println!(
        "Part 2: a 2 → 32 → 2 network, {} parameters, learns inside/outside the unit circle",
        params.num_elements()
    );

    let batch = 128;
    let mut tape = Tape::new();
    for step in 0..steps {
        let points: Vec<f32> = (0..2 * batch).map(|_| rng.random_range(-1.5f32..1.5)).collect();
        let labels: Vec<usize> = points.chunks(2).map(|p| usize::from(p[0].hypot(p[1]) < 1.0)).collect();
        let x = tape.constant(Tensor::from_vec(&[batch, 2], points));
        let h = hidden.forward(&mut tape, &params, &x);
        let h = tape.relu(&h);
        let logits = output.forward(&mut tape, &params, &h);
        let loss = tape.cross_entropy(&logits, &labels);
        if step == 0 {
            println!("the graph of one training step:\n{}", tape.graph());
        }
        let correct =
            logits.value().data().chunks(2).zip(&labels).filter(|(l, &y)| usize::from(l[1] > l[0]) == y).count();
        let grads = tape.backward(&loss);
        opt.step(&mut params, &grads);
        if step % (steps / 5).max(1) == 0 || step + 1 == steps {
            println!(
                "step {step:>5}  loss {:.4}  batch accuracy {:.1}%",
                loss.value().item(),
                100.0 * correct as f32 / batch as f32
            );
        }
    }
}

/// A network, its gradient by hand and by the tape, and a small classifier trained on it.
#[derive(Parser)]
struct Flags {
    /// A short run for CI
    #[arg(long)]
    quick: bool,
    /// Training steps [default: 1500; --quick: 100]
    #[arg(long, value_parser = in_range(1..=10_000_000usize))]
    steps: Option<usize>,
    /// Random seed
    #[arg(long, default_value_t = 0)]
    seed: u64,
}
