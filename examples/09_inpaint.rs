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
use diffusion::cli::{exit_on_error, Args};
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
    let mut args = Args::from_env()?;
    let quick = args.flag("quick", "an untrained model, few steps: for CI")?;
    let checkpoint = args.path("checkpoint", "out/03/model.safetensors", "weights or checkpoint from example 03")?;
    let mask_name: String = args.value("mask", "right".to_string(), "what to hide: right, bottom, square")?;
    let resample: usize =
        args.value_in("resample", if quick { 2 } else { 5 }, 1..=100, "RePaint resampling (1: plain replacement)")?;
    let steps: usize =
        args.value_in("steps", if quick { 3 } else { 50 }, diffusion::sampling::sampler::SAMPLER_STEPS, "DDIM steps")?;
    let count: usize = args.value_in("count", 6, 1..=10_000, "digits")?;
    let seed: u64 = args.value("seed", 0, "random seed")?;
    let out = args.out(quick, "09/inpaint.png", "output PNG")?;
    args.finish()?;

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
