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
use diffusion::cli::{exit_on_error, Args};
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
    let mut args = Args::from_env()?;
    let quick = args.flag("quick", "an untrained model, few steps: for CI")?;
    let checkpoint = args.path("checkpoint", "out/03/model.safetensors", "weights or checkpoint from example 03")?;
    let steps: usize = args.value_in(
        "steps",
        if quick { 4 } else { 50 },
        diffusion::sampling::sampler::SAMPLER_STEPS,
        "DDIM steps for strength 1",
    )?;
    let count: usize = args.value_in("count", 6, 1..=10_000, "digits to start from")?;
    let seed: u64 = args.value("seed", 0, "random seed")?;
    let out = args.out(quick, "08/img2img.png", "output PNG")?;
    args.finish()?;

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
