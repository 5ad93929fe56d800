//! # 08 — img2img (SDEdit): start from an image instead of pure noise
//!
//! Takes real digits from the shipped data, noises each to a fraction `strength` of the way to pure noise,
//! and lets the model (example 03's weights) denoise from there. Low strength keeps the digit almost as it is;
//! high strength keeps only its rough layout. Writes `out/08/img2img.png`: one row per digit, the original
//! on the left, then strengths 0.2, 0.4, 0.6, 0.8 and 1.0.
//!
//! ```text
//! cargo run --release --example 08_img2img
//! cargo run --release --example 08_img2img -- --quick
//! ```

use autograd::Tensor;
use diffusion::cli::{self, exit_on_error, in_range, Common, Parser, Weights};
use diffusion::eval::classifier::held_out_digits;
use diffusion::plot::image_grid;
use diffusion::sampling::control::img2img;
use diffusion::sampling::sampler::{Method, SamplerConfig, Spacing};
use diffusion::training::checkpoint::Trained;
use diffusion::Result;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn main() {
    exit_on_error(run);
}

fn run() -> Result<()> {
    let flags: Flags = cli::parse()?;
    let c = &flags.common;
    let (quick, seed, out, checkpoint, count) =
        (c.quick, c.seed, c.out("08/img2img.png"), flags.weights.checkpoint, flags.count);
    let steps = flags.steps.unwrap_or(c.q(50, 4));

    let t = Trained::load_or_untrained(&checkpoint, quick, seed)?;
    t.check_sampling(steps, count)?;
    t.require_digits()?;
    let originals = held_out_digits(count, 0)?;
    let config =
        SamplerConfig { method: Method::Ddim { eta: 0.0 }, steps, spacing: Spacing::Linspace, clip_x0: Some(1.0) };
    let strengths = [0.2f32, 0.4, 0.6, 0.8, 1.0];
    let mut columns = vec![originals.clone()];
    for &strength in &strengths {
        let mut rng = StdRng::seed_from_u64(seed);
        columns.push(img2img(&t.model, &t.params, &t.schedule, t.prediction, &config, &originals, strength, &mut rng));
        println!("strength {strength}: {} of {steps} DDIM steps", (steps as f32 * strength) as usize);
    }
    let mut grid = Vec::new();
    for i in 0..count {
        for col in &columns {
            grid.extend_from_slice(&col.data()[i * 784..(i + 1) * 784]);
        }
    }
    image_grid(&Tensor::from_vec(&[count * columns.len(), 1, 28, 28], grid), columns.len(), 2).write_png(&out)?;
    println!("wrote {} (rows: digits; columns: the original, then strengths {strengths:?})", out.display());
    Ok(())
}

/// img2img: noise real digits part of the way, then denoise them back.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    weights: Weights,
    /// DDIM steps for strength 1 [default: 50; --quick: 4]
    #[arg(long, value_parser = in_range(diffusion::sampling::sampler::SAMPLER_STEPS))]
    steps: Option<usize>,
    /// Digits to start from
    #[arg(long, default_value_t = 6, value_parser = in_range(1..=10_000usize))]
    count: usize,
}
