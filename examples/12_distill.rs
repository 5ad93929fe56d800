//! # 12 — Distillation: the main job's model in a few steps
//!
//! Progressive distillation (Salimans & Ho 2022): a student, a copy of its teacher, learns to take in one
//! deterministic DDIM step what the teacher takes in two; then it is the teacher, and the count halves
//! again: 64 → 32 → 16 → 8 → 4 → 2 → 1. Each round is an ordinary training run of the loop in
//! `training/train/` on the objective of `diffusion/src/distill/progressive.rs`, and writes
//! `out/12/steps-N/`: the student's weights (`model.safetensors`, which examples 04 and 06 sample with
//! `--sampler ddim --spacing trailing --steps N`), its `loss.csv` and a grid drawn in its N steps.
//!
//! ```text
//! cargo run --release --example 12_distill                   # from out/03/model.safetensors
//! cargo run --release --example 06_evaluate -- --checkpoint out/12/steps-4/model.safetensors --samplers ddim --spacing trailing --nfe 4
//! cargo run --release --example 12_distill -- --quick        # an untrained model, two short rounds
//! ```

use std::time::Instant;

use autograd::Tensor;
use diffusion::cli::{self, exit_on_error, in_range, Common, Parser, Weights};
use diffusion::data::idx::{read_images, shipped_mnist_dir};
use diffusion::distill::progressive::{grids, Progressive};
use diffusion::model::unet::UNetConfig;
use diffusion::sampling::sampler::{Method, SamplerConfig, Spacing};
use diffusion::training::checkpoint::Trained;
use diffusion::training::train::{train_with, TrainConfig};
use diffusion::{Error, Result};

fn main() {
    exit_on_error(run);
}

fn run() -> Result<()> {
    let flags: Flags = cli::parse()?;
    let c = &flags.common;
    let (quick, seed, out) = (c.quick, c.seed, c.out("12"));
    let (from, to) = (flags.from_steps.unwrap_or(c.q(64, 4)), flags.to_steps.unwrap_or(c.q(1, 2)));
    let (round_steps, batch) = (flags.round_steps.unwrap_or(c.q(400, 2)), flags.batch.unwrap_or(c.q(32, 2)));
    if !from.is_power_of_two() || !to.is_power_of_two() || to >= from {
        return Err(Error::Usage(format!("--from-steps {from} --to-steps {to}: powers of two, from above to")));
    }
    let mut teacher = match quick {
        true => Trained::untrained(UNetConfig::small(), 100, seed),
        false => Trained::load(&flags.weights.checkpoint)?,
    };
    teacher.require_digits()?;
    if from > teacher.schedule.steps() / 2 {
        return Err(Error::Usage(format!("--from-steps {from}: the model has T = {}", teacher.schedule.steps())));
    }
    let images = read_images(shipped_mnist_dir().join("images-idx3-ubyte.gz"))?.to_tensor();
    let images = if quick { Tensor::from_vec(&[16, 1, 28, 28], images.data()[..16 * 784].to_vec()) } else { images };
    println!(
        "teacher: {} parameters, {} prediction, T = {}; {round_steps} steps of batch {batch} per round",
        teacher.params.num_elements(),
        teacher.prediction.name(),
        teacher.schedule.steps()
    );

    let mut rounds = Vec::new();
    let mut steps = from / 2;
    while steps >= to {
        let dir = out.join(format!("steps-{steps}"));
        let mut config = TrainConfig::new(round_steps, batch, &dir);
        config.lr = flags.lr;
        config.warmup = round_steps.min(20);
        config.ema_decay = flags.ema;
        config.prediction = teacher.prediction;
        config.seed = seed;
        config.checkpoint_every = 0;
        config.keep_checkpoints = 1;
        config.grid_images = c.q(64, 4);
        config.grid_sampler =
            SamplerConfig { method: Method::Ddim { eta: 0.0 }, steps, spacing: Spacing::Trailing, clip_x0: Some(1.0) };
        // What the teacher's file says of the run (schedule, data, preset), without its own bookkeeping.
        let inherited = |k: &str| !["train.", "unet.", "format", "step"].iter().any(|p| k.starts_with(p));
        config.run_metadata =
            teacher.metadata.iter().filter(|(k, _)| inherited(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        config.run_metadata.extend([
            ("distill.method".to_string(), "progressive".to_string()),
            ("distill.steps".to_string(), steps.to_string()),
            ("distill.sampler".to_string(), "ddim, trailing spacing".to_string()),
        ]);
        grids(&teacher.schedule, steps); // checks that the teacher's grid halves
        let objective = Progressive {
            teacher: &teacher.model,
            teacher_params: &teacher.params,
            prediction: teacher.prediction,
            steps,
            clip: Some(1.0),
        };
        println!("round: {} teacher steps → {steps}", 2 * steps);
        let mut student = teacher.params.clone();
        let started = Instant::now();
        let (ema, report) =
            train_with(&teacher.model, &mut student, &teacher.schedule, &images, None, &config, None, &objective)?;
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        rounds.push((steps, minutes, report.final_loss, dir.join("model.safetensors")));
        teacher.params = ema.params().clone();
        steps /= 2;
    }
    println!("\n| student steps | minutes | final loss | weights |\n|---|---|---|---|");
    for (steps, minutes, loss, path) in &rounds {
        println!("| {steps} | {minutes:.1} | {loss:.4} | {} |", path.display());
    }
    let total: f64 = rounds.iter().map(|r| r.1).sum();
    println!("all rounds: {total:.1} min");
    if let Some((steps, _, _, path)) = rounds.iter().find(|r| r.0 == 4).or(rounds.last()) {
        println!("\nnext:\n  cargo run --release --example 06_evaluate -- --checkpoint {} --samplers ddim --spacing trailing --nfe {steps}", path.display());
    }
    Ok(())
}

/// Distil a trained model into one that samples in a few steps.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    weights: Weights,
    /// The teacher's DDIM steps in the first round (a power of two) [default: 64; --quick: 4]
    #[arg(long, value_parser = in_range(1..=65_536usize))]
    from_steps: Option<usize>,
    /// The last student's steps [default: 1; --quick: 2]
    #[arg(long, value_parser = in_range(1..=65_536usize))]
    to_steps: Option<usize>,
    /// Training steps per round [default: 400; --quick: 2]
    #[arg(long, value_parser = in_range(1..=10_000_000usize))]
    round_steps: Option<usize>,
    /// Images per training step [default: 32; --quick: 2]
    #[arg(long, value_parser = in_range(1..=4096usize))]
    batch: Option<usize>,
    /// Peak learning rate of each round (20 warmup steps, then cosine decay)
    #[arg(long, default_value_t = 2e-4, value_parser = in_range(1e-8f32..=1.0))]
    lr: f32,
    /// EMA decay of the student's weights (the next round's teacher)
    #[arg(long, default_value_t = 0.995, value_parser = in_range(0.0f32..=0.999_999))]
    ema: f32,
}
