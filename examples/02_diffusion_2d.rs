//! # 02 — Diffusion on 2-D point clouds
//!
//! The whole DDPM recipe on data you can see: a small MLP learns to predict the noise that was added to
//! points of a 2-D shape (two moons, a swiss roll, a ring of Gaussians), and the ancestral sampler then
//! turns pure Gaussian noise into new points on that shape.
//!
//! Writes `out/02_<dataset>.png`: the real data (left, blue) beside the samples (right, red). Prints how far
//! the samples are from the data: the mean distance from each point to its nearest neighbour in a reference
//! set of real points, for the samples and for a fresh draw of real points (the best a model could score).
//!
//! ```text
//! cargo run --release --example 02_diffusion_2d -- --dataset moons     # or swiss-roll, ring, all
//! cargo run --release --example 02_diffusion_2d -- --quick             # a few seconds, for CI
//! ```

use std::time::Instant;

use autograd::optim::{Adam, Optimizer};
use autograd::{ParamStore, Tape};
use diffusion::cli::{self, exit_on_error, in_range, Common, Parser};
use diffusion::data::toy2d::{mean_nearest_distance, Toy2d};
use diffusion::model::mlp::MlpDenoiser;
use diffusion::plot::Canvas;
use diffusion::process::ddpm;
use diffusion::process::schedule::NoiseSchedule;
use diffusion::{Error, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn main() {
    exit_on_error(run);
}

fn run() -> Result<()> {
    let flags: Flags = cli::parse()?;
    let c = &flags.common;
    let (seed, out, dataset, batch, lr) = (c.seed, c.out(""), flags.dataset, flags.batch, flags.lr);
    let steps = flags.steps.unwrap_or(c.q(8000, 300));
    let timesteps = flags.timesteps.unwrap_or(c.q(1000, 100));
    let samples = flags.samples.unwrap_or(c.q(2000, 300));

    let datasets: Vec<Toy2d> = if dataset == "all" {
        Toy2d::ALL.to_vec()
    } else {
        vec![Toy2d::from_name(&dataset).ok_or_else(|| Error::Usage(format!("--dataset {dataset:?}: unknown")))?]
    };
    for data in datasets {
        let start = Instant::now();
        let mut rng = StdRng::seed_from_u64(seed);
        let schedule = NoiseSchedule::linear_scaled(timesteps);
        let mut params = ParamStore::new();
        let model = MlpDenoiser::new(&mut params, 2, 128, 4, &mut rng);
        let mut opt = Adam::new(lr);
        let train = data.sample(20_000, &mut rng);
        println!(
            "{}: {} parameters, {steps} steps of batch {batch}, T = {timesteps}",
            data.name(),
            params.num_elements()
        );

        let mut tape = Tape::new();
        let mut recent = 0.0;
        for step in 0..steps {
            // Cosine decay of the learning rate to 0 over the run.
            let progress = step as f32 / steps as f32;
            opt.set_lr(lr * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos()));
            let rows: Vec<usize> = (0..batch).map(|i| (step * batch + i) % train.shape()[0]).collect();
            let x_0 = autograd::Tensor::from_vec(
                &[batch, 2],
                rows.iter().flat_map(|&r| [train.at(&[r, 0]), train.at(&[r, 1])]).collect(),
            );
            let loss = ddpm::eps_loss(&mut tape, &model, &params, &schedule, &x_0, &mut rng);
            let grads = tape.backward(&loss);
            opt.step(&mut params, &grads);
            recent += loss.value().item();
            if (step + 1) % (steps / 5).max(1) == 0 {
                println!("  step {:>5}  loss {:.4}", step + 1, recent / (steps / 5).max(1) as f32);
                recent = 0.0;
            }
        }
        let generated = ddpm::sample(&model, &params, &schedule, &[samples, 2], &mut rng);

        // Quality: nearest-neighbour distance to a reference set, samples vs a fresh real draw.
        let reference = data.sample(samples, &mut rng);
        let fresh = data.sample(samples, &mut rng);
        let (d_samples, d_fresh) =
            (mean_nearest_distance(&generated, &reference), mean_nearest_distance(&fresh, &reference));
        println!(
            "  mean distance to nearest real point: samples {d_samples:.4}, fresh real {d_fresh:.4} (ratio {:.2})",
            d_samples / d_fresh
        );

        let bounds = (-3.0, 3.0);
        let mut left = Canvas::new(400, 400, [255, 255, 255]);
        left.scatter(&reference, bounds, [40, 90, 200]);
        let mut right = Canvas::new(400, 400, [255, 255, 255]);
        right.scatter(&generated, bounds, [210, 50, 40]);
        let path = out.join(format!("02_{}.png", data.name()));
        left.beside(&right, 4, [0, 0, 0]).write_png(&path)?;
        println!("  wrote {} (left: data, right: samples) in {:.1} s", path.display(), start.elapsed().as_secs_f32());
    }
    Ok(())
}

/// Diffusion on 2-D points: train a small MLP denoiser, sample, compare with the data.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    common: Common,
    /// moons, swiss-roll, ring or all
    #[arg(long, default_value = "moons")]
    dataset: String,
    /// Training steps [default: 8000; --quick: 300]
    #[arg(long, value_parser = in_range(1..=10_000_000usize))]
    steps: Option<usize>,
    /// Points per training step
    #[arg(long, default_value_t = 256, value_parser = in_range(1..=1_000_000usize))]
    batch: usize,
    /// Adam learning rate
    #[arg(long, default_value_t = 1e-3, value_parser = in_range(diffusion::training::train::limits::LR))]
    lr: f32,
    /// Diffusion steps T [default: 1000; --quick: 100]
    #[arg(long, value_parser = in_range(diffusion::process::schedule::TIMESTEPS))]
    timesteps: Option<usize>,
    /// Points to generate [default: 2000; --quick: 300]
    #[arg(long, value_parser = in_range(1..=1_000_000usize))]
    samples: Option<usize>,
}
