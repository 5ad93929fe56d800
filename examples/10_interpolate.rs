//! # 10 — Walking between two noises
//!
//! Deterministic DDIM (η = 0) maps each starting noise to one image, so a path between two noises is a path
//! between two images. The path is spherical (slerp): Gaussian noise in many dimensions lies near a sphere,
//! and the straight line between two noises passes through low-norm points the model never saw. Writes
//! `out/10/interpolation.png`: each row walks from one noise to another in `--frames` steps.
//!
//! ```text
//! cargo run --release --example 10_interpolate
//! cargo run --release --example 10_interpolate -- --quick
//! ```

use autograd::Tensor;
use diffusion::cli::{self, exit_on_error, in_range, Common, Parser, Weights};
use diffusion::model::denoiser::Denoiser;
use diffusion::model::guidance::Guided;
use diffusion::plot::image_grid;
use diffusion::sampling::control::slerp;
use diffusion::sampling::sampler::{sampler_timesteps, Method, SamplerConfig, Spacing, Stepper};
use diffusion::training::checkpoint::Trained;
use diffusion::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn main() {
    exit_on_error(run);
}

/// Deterministic DDIM from the given starting noise.
fn ddim_from(model: &impl Denoiser, t: &Trained, config: &SamplerConfig, noise: &Tensor) -> Tensor {
    let ts = sampler_timesteps(&t.schedule, config);
    let mut rng = StdRng::seed_from_u64(0); // unused: η = 0 draws nothing
    Stepper::new(model, &t.params, &t.schedule, t.prediction, config).run(&ts, noise.clone(), &mut rng, |_, _| {})
}

fn run() -> Result<()> {
    let flags: Flags = cli::parse()?;
    let c = &flags.common;
    let (quick, seed, out, checkpoint, label) =
        (c.quick, c.seed, c.out("10/interpolation.png"), flags.weights.checkpoint, flags.label);
    let (frames, rows, steps) =
        (flags.frames.unwrap_or(c.q(9, 3)), flags.rows.unwrap_or(c.q(4, 1)), flags.steps.unwrap_or(c.q(50, 3)));

    let t = Trained::load_or_untrained(&checkpoint, quick, seed)?;
    t.check_sampling(steps, frames * rows)?;
    let c = t.model.config.clone();
    let item = [1, c.image_channels, c.image_size, c.image_size];
    let config =
        SamplerConfig { method: Method::Ddim { eta: 0.0 }, steps, spacing: Spacing::Linspace, clip_x0: Some(1.0) };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut noises = Vec::new();
    for _ in 0..rows {
        let (a, b) = (Tensor::randn(&item, &mut rng), Tensor::randn(&item, &mut rng));
        for f in 0..frames {
            noises.extend_from_slice(slerp(&a, &b, f as f32 / (frames - 1).max(1) as f32).data());
        }
    }
    let all = Tensor::from_vec(&[rows * frames, item[1], item[2], item[3]], noises);
    let images = if c.num_classes > 0 {
        let guided = Guided { model: &t.model, labels: vec![label.min(c.num_classes - 1); rows * frames], scale: 3.0 };
        ddim_from(&guided, &t, &config, &all)
    } else {
        ddim_from(&t.model, &t, &config, &all)
    };
    image_grid(&images, frames, 2).write_png(&out)?;
    println!("wrote {} ({rows} rows of {frames}: slerp between two noises, DDIM {steps} steps, η = 0)", out.display());
    Ok(())
}

/// Interpolation: slerp between two noises, and the images in between.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    weights: Weights,
    /// Images per row, both ends included [default: 9; --quick: 3]
    #[arg(long, value_parser = in_range(2..=1000usize))]
    frames: Option<usize>,
    /// Pairs of noises [default: 4; --quick: 1]
    #[arg(long, value_parser = in_range(1..=1000usize))]
    rows: Option<usize>,
    /// DDIM steps [default: 50; --quick: 3]
    #[arg(long, value_parser = in_range(diffusion::sampling::sampler::SAMPLER_STEPS))]
    steps: Option<usize>,
    /// For a class-conditional model: the class to draw (guidance 3)
    #[arg(long, default_value_t = 0, value_parser = in_range(0..=100_000usize))]
    label: usize,
}
