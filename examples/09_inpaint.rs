//! # 09 — Inpainting: keep part of an image, let the model fill in the rest
//!
//! Hides part of real digits (`--mask`: the right half, the bottom half, or a centre square), then samples
//! with the known pixels pasted back after every step (RePaint; `--resample r` repeats each step r times,
//! going back along the forward process in between, so the filled part can agree with the kept part).
//! Writes `out/09/inpaint.png`: one row per digit, the masked input (hidden pixels grey), the result, and the
//! original.
//!
//! ```text
//! cargo run --release --example 09_inpaint
//! cargo run --release --example 09_inpaint -- --mask square --resample 5
//! cargo run --release --example 09_inpaint -- --quick
//! ```

use autograd::Tensor;
use diffusion::cli::{self, exit_on_error, in_range, Common, Parser, Weights};
use diffusion::eval::classifier::held_out_digits;
use diffusion::plot::image_grid;
use diffusion::sampling::control::{inpaint, Inpaint};
use diffusion::sampling::sampler::{Method, SamplerConfig, Spacing};
use diffusion::training::checkpoint::Trained;
use diffusion::{Error, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn main() {
    exit_on_error(run);
}

fn run() -> Result<()> {
    let flags: Flags = cli::parse()?;
    let c = &flags.common;
    let (quick, seed, out, checkpoint, count) =
        (c.quick, c.seed, c.out("09/inpaint.png"), flags.weights.checkpoint, flags.count);
    let (mask_name, resample, steps) =
        (flags.mask, flags.resample.unwrap_or(c.q(5, 2)), flags.steps.unwrap_or(c.q(50, 3)));

    let hidden = |y: usize, x: usize| match mask_name.as_str() {
        "right" => Some(x >= 14),
        "bottom" => Some(y >= 14),
        "square" => Some((8..20).contains(&y) && (8..20).contains(&x)),
        _ => None,
    };
    if hidden(0, 0).is_none() {
        return Err(Error::Usage(format!("--mask {mask_name:?}: unknown (right, bottom, square)")));
    }
    let t = Trained::load_or_untrained(&checkpoint, quick, seed)?;
    t.check_sampling(steps, count)?;
    t.require_digits()?;
    let originals = held_out_digits(count, 3)?;
    let one: Vec<f32> = (0..784).map(|i| if hidden(i / 28, i % 28) == Some(true) { 0.0 } else { 1.0 }).collect();
    let mask = Tensor::from_vec(&[count, 1, 28, 28], one.iter().copied().cycle().take(count * 784).collect());
    let config =
        SamplerConfig { method: Method::Ddim { eta: 0.0 }, steps, spacing: Spacing::Linspace, clip_x0: Some(1.0) };
    let task = Inpaint { known: &originals, mask: &mask, resample };
    let filled =
        inpaint(&t.model, &t.params, &t.schedule, t.prediction, &config, &task, &mut StdRng::seed_from_u64(seed));
    let shown: Vec<f32> =
        originals.data().iter().zip(mask.data()).map(|(&v, &m)| if m > 0.5 { v } else { 0.0 }).collect();
    let mut grid = Vec::new();
    for i in 0..count {
        for image in [&shown[..], filled.data(), originals.data()] {
            grid.extend_from_slice(&image[i * 784..(i + 1) * 784]);
        }
    }
    image_grid(&Tensor::from_vec(&[count * 3, 1, 28, 28], grid), 3, 2).write_png(&out)?;
    println!(
        "mask {mask_name:?}, DDIM {steps} steps, resample {resample}: wrote {} (rows: digits; columns: input with the hidden part grey, result, original)",
        out.display()
    );
    Ok(())
}

/// Inpainting: hide part of a digit and let the model fill it in (RePaint).
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    weights: Weights,
    /// What to hide: right, bottom, square
    #[arg(long, default_value = "right")]
    mask: String,
    /// RePaint resampling, 1: plain replacement [default: 5; --quick: 2]
    #[arg(long, value_parser = in_range(1..=100usize))]
    resample: Option<usize>,
    /// DDIM steps [default: 50; --quick: 3]
    #[arg(long, value_parser = in_range(diffusion::sampling::sampler::SAMPLER_STEPS))]
    steps: Option<usize>,
    /// Digits
    #[arg(long, default_value_t = 6, value_parser = in_range(1..=10_000usize))]
    count: usize,
}
