//! # 12 — Distillation: the main job's model in a few steps
//!
//! Progressive distillation (Salimans & Ho 2022): a student, a copy of its teacher, learns to take in one
//! deterministic DDIM step what the teacher takes in two; then it is the teacher, and the count halves
//! again: 64 → 32 → 16 → 8 → 4 → 2 → 1 (or, with `--factor 4`, the student learns four teacher steps in
//! one: 64 → 16 → 4 → 1). Each round is an ordinary training run of the loop in
//! `training/train/` on the objective of `diffusion/src/distill/progressive.rs`, and writes
//! `out/12/steps-N/`: the student's weights (`model.safetensors`, which example 04 samples with
//! `--sampler ddim --spacing trailing --steps N --no-clip`, or stochastically with `--sampler ddim-overshoot`,
//! and 06 with `--distilled out/12`, both ways), its `loss.csv`
//! and a grid drawn in its N steps. A student is sampled without clipping x̂: the x̂ it learns is the one
//! that makes its single step land where the teacher's two did, which need not lie in [−1, 1].
//! Then easy consistency tuning (`distill/consistency.rs`) from the original model writes
//! `out/12/consistency/` (sampled in 1 and 2 steps by 06 `--distilled`; its grid is 2 steps).
//! By default it distils the main job's flow-matching model (its network input and velocity target are
//! carried through `Prediction`), with the settings the README measured: 700 steps a round at learning rate
//! 1e-4, 1.6–1.8 times the main job's own training time. The README also measures a v-prediction teacher (03
//! `--prediction v`) and says why an ε model distils badly.
//!
//! ```text
//! cargo run --release --example 12_distill                   # from out/03/model.safetensors (flow)
//! cargo run --release --example 06_evaluate -- --samplers ddim --spacing trailing --nfe 1,2,4,8,16,32,50,64 --distilled out/12
//! cargo run --release --example 12_distill -- --checkpoint out/03v/model.safetensors --round-steps 400 --out out/12v
//! cargo run --release --example 12_distill -- --quick        # an untrained model, two short rounds
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use autograd::Tensor;
use diffusion::cli::{self, exit_on_error, in_range, Common, Parser, Weights};
use diffusion::data::idx::{read_images, shipped_mnist_dir};
use diffusion::distill::consistency::{ConsistencyUNet, Ect};
use diffusion::distill::progressive::{grids, teacher_clip, Progressive, METHOD};
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
    let (round_steps, batch) = (flags.round_steps.unwrap_or(c.q(700, 2)), flags.batch.unwrap_or(c.q(32, 2)));
    let ect_steps = flags.consistency_steps.unwrap_or(c.q(600, 2));
    if !from.is_power_of_two() || !to.is_power_of_two() || to >= from {
        return Err(Error::Usage(format!("--from-steps {from} --to-steps {to}: powers of two, from above to")));
    }
    let factor = flags.factor;
    if !factor.is_power_of_two() || (from / to).trailing_zeros() % factor.trailing_zeros() != 0 {
        return Err(Error::Usage(format!(
            "--factor {factor}: a power of two whose powers lead from --from-steps {from} to --to-steps {to}"
        )));
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

    // A run of `steps` training steps into `dir`, the teacher's schedule and data recorded beside its weights.
    let inherited = |k: &str| !["train.", "unet.", "format", "step"].iter().any(|p| k.starts_with(p));
    let run_metadata: BTreeMap<String, String> =
        teacher.metadata.iter().filter(|(k, _)| inherited(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let config = |dir: &Path, steps: usize, lr: f32, entries: [(&str, String); 2]| {
        let mut config = TrainConfig::new(steps, batch, dir);
        (config.lr, config.warmup, config.ema_decay, config.seed) = (lr, steps.min(20), flags.ema, seed);
        (config.checkpoint_every, config.keep_checkpoints, config.grid_images) = (0, 1, c.q(64, 4));
        config.prediction = teacher.prediction;
        config.run_metadata = run_metadata.clone();
        config.run_metadata.extend(entries.map(|(k, v)| (format!("distill.{k}"), v)));
        config
    };
    let original = teacher.params.clone();
    // The teacher's two steps are taken as it is sampled: the trained model's x̂ clipped, a student's not
    // (a student given as --checkpoint, or this run's from the second round on).
    let mut clip = teacher_clip(&teacher.metadata);
    let mut rounds = Vec::new();
    let mut steps = from / factor;
    while steps >= to {
        let dir = out.join(format!("steps-{steps}"));
        let mut config = config(&dir, round_steps, flags.lr, [("method", METHOD.into()), ("steps", steps.to_string())]);
        config.grid_sampler =
            SamplerConfig { method: Method::Ddim { eta: 0.0 }, steps, spacing: Spacing::Trailing, clip_x0: None };
        grids(&teacher.schedule, steps, factor); // checks that the teacher's grid contains the student's
        let (model, prediction) = (&teacher.model, teacher.prediction);
        let objective =
            Progressive { teacher: model, teacher_params: &teacher.params, prediction, steps, factor, clip };
        println!("round: {} teacher steps → {steps}", factor * steps);
        let mut student = teacher.params.clone();
        let started = Instant::now();
        let (ema, report) =
            train_with(model, &mut student, &teacher.schedule, &images, None, &config, None, &objective)?;
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        rounds.push((steps.to_string(), minutes, report.final_loss, dir.join("model.safetensors")));
        teacher.params = ema.params().clone();
        clip = None;
        steps /= factor;
    }
    // Easy consistency tuning, from the original model.
    if ect_steps > 0 {
        let dir = out.join("consistency");
        let entries = [("method", "consistency".into()), ("steps", "1,2".into())];
        let config = config(&dir, ect_steps, flags.consistency_lr, entries);
        let model = ConsistencyUNet { unet: &teacher.model, prediction: teacher.prediction, grid_steps: 2 };
        let objective = Ect { prediction: teacher.prediction, steps: ect_steps, stages: 8 };
        println!("consistency tuning: {ect_steps} steps, Δ from T/4 halving to 1");
        let mut params = original;
        let started = Instant::now();
        let (_, report) = train_with(&model, &mut params, &teacher.schedule, &images, None, &config, None, &objective)?;
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        rounds.push(("consistency (1, 2)".into(), minutes, report.final_loss, dir.join("model.safetensors")));
    }
    println!("\n| student steps | minutes | final loss | weights |\n|---|---|---|---|");
    for (steps, minutes, loss, path) in &rounds {
        println!("| {steps} | {minutes:.1} | {loss:.4} | {} |", path.display());
    }
    let total: f64 = rounds.iter().map(|r| r.1).sum();
    println!("all rounds: {total:.1} min");
    let nfe: Vec<&str> = rounds.iter().map(|r| r.0.as_str()).filter(|s| s.parse::<usize>().is_ok()).collect();
    println!("\nnext (each student beside the teacher's DDIM in as many steps):");
    println!(
        "  cargo run --release --example 06_evaluate -- --checkpoint {} --samplers ddim --spacing trailing --nfe {} --distilled {}",
        flags.weights.checkpoint.display(),
        nfe.join(","),
        out.display()
    );
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
    /// Teacher steps per student step (a power of two): each round divides the step count by it
    #[arg(long, default_value_t = 2, value_parser = in_range(2..=65_536usize))]
    factor: usize,
    /// Training steps per round [default: 700; --quick: 2]
    #[arg(long, value_parser = in_range(1..=10_000_000usize))]
    round_steps: Option<usize>,
    /// Images per training step [default: 32; --quick: 2]
    #[arg(long, value_parser = in_range(1..=4096usize))]
    batch: Option<usize>,
    /// Peak learning rate of each round (20 warmup steps, then cosine decay)
    #[arg(long, default_value_t = 1e-4, value_parser = in_range(1e-8f32..=1.0))]
    lr: f32,
    /// Steps of consistency tuning after the rounds (0: none) [default: 600; --quick: 2]
    #[arg(long, value_parser = in_range(0..=10_000_000usize))]
    consistency_steps: Option<usize>,
    /// Peak learning rate of consistency tuning
    #[arg(long, default_value_t = 1e-4, value_parser = in_range(1e-8f32..=1.0))]
    consistency_lr: f32,
    /// EMA decay of the student's weights (the next round's teacher)
    #[arg(long, default_value_t = 0.995, value_parser = in_range(0.0f32..=0.999_999))]
    ema: f32,
}
