//! # 04 — Sample from a trained model with any sampler
//!
//! Loads the weights example 03 wrote (`out/03/model.safetensors`, which also records the preset, the
//! prediction target and the schedule) and draws `--count` images with the chosen sampler and step count,
//! timing it. The same `--seed` gives the same images every time.
//!
//! ```text
//! cargo run --release --example 04_sample -- --sampler ddim --steps 50
//! cargo run --release --example 04_sample -- --sampler dpm --steps 20
//! cargo run --release --example 04_sample -- --sampler ddpm             # all T steps
//! cargo run --release --example 04_sample -- --quick                    # untrained tiny model, for CI
//! ```

use std::path::PathBuf;
use std::time::Instant;

use autograd::ParamStore;
use diffusion::checkpoint::{load_weights, read_metadata};
use diffusion::cli::{exit_on_error, Args};
use diffusion::objective::Prediction;
use diffusion::plot::image_grid;
use diffusion::sampler::{sample, Method, SamplerConfig, Spacing};
use diffusion::schedule::NoiseSchedule;
use diffusion::unet::{UNet, UNetConfig};
use diffusion::{Error, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn main() {
    exit_on_error(run);
}

fn run() -> Result<()> {
    let mut args = Args::from_env()?;
    let quick = args.flag("quick", "sample from an untrained tiny model (exercises the code, for CI)")?;
    let random: String =
        args.value("random-weights", String::new(), "sample from an untrained model of this preset (for timing)")?;
    let checkpoint =
        PathBuf::from(args.value("checkpoint", "out/03/model.safetensors".to_string(), "weights from example 03")?);
    let sampler: String = args.value("sampler", "dpm".to_string(), "ddpm, ddim or dpm (DPM-Solver++ 2M)")?;
    let steps: usize = args.value("steps", if quick { 4 } else { 20 }, "network evaluations (ddpm: all T)")?;
    let eta: f32 = args.value("eta", 0.0, "DDIM noise scale")?;
    let spacing_name: String =
        args.value("spacing", "linspace".to_string(), "timestep spacing: linspace, leading, trailing")?;
    let no_clip = args.flag("no-clip", "do not clamp the predicted x0 to [-1, 1]")?;
    let count: usize = args.value("count", 16, "images to draw")?;
    let seed: u64 = args.value("seed", 0, "random seed")?;
    let out = PathBuf::from(args.value("out", "out/04/samples.png".to_string(), "output PNG")?);
    args.finish()?;

    let method = match sampler.as_str() {
        "ddpm" => Method::Ddpm,
        "ddim" => Method::Ddim { eta },
        "dpm" => Method::DpmSolver2M,
        other => return Err(Error::Usage(format!("--sampler {other:?}: unknown (ddpm, ddim, dpm)"))),
    };
    let spacing = Spacing::from_name(&spacing_name)
        .ok_or_else(|| Error::Usage(format!("--spacing {spacing_name:?}: unknown")))?;

    let mut params = ParamStore::new();
    let (model, prediction, schedule) = if quick || !random.is_empty() {
        let preset = if quick { "tiny" } else { random.as_str() };
        let config = UNetConfig::preset(preset)
            .ok_or_else(|| Error::Usage(format!("--random-weights {preset:?}: unknown preset")))?;
        let model = UNet::new(config, &mut params, seed);
        println!("an untrained '{preset}' U-Net (random weights): the images are noise; the timing is real");
        (model, Prediction::Epsilon, NoiseSchedule::linear_scaled(if quick { 100 } else { 1000 }))
    } else {
        // Read the metadata first to build the right model, then load its weights into it.
        let meta = read_metadata(&checkpoint)?;
        let field = |key: &str| {
            meta.get(key).cloned().ok_or_else(|| Error::format(&checkpoint, format!("has no {key:?} in its metadata")))
        };
        let preset = field("preset")?;
        let config = UNetConfig::preset(&preset)
            .ok_or_else(|| Error::format(&checkpoint, format!("names an unknown preset {preset:?}")))?;
        let prediction_name = field("prediction")?;
        let prediction = Prediction::from_name(&prediction_name)
            .ok_or_else(|| Error::format(&checkpoint, format!("names an unknown prediction {prediction_name:?}")))?;
        let timesteps: usize = field("timesteps")?
            .parse()
            .map_err(|_| Error::format(&checkpoint, "has a timesteps value that is not a number"))?;
        let schedule_name = field("schedule")?;
        let schedule = NoiseSchedule::by_name(&schedule_name, timesteps)
            .ok_or_else(|| Error::format(&checkpoint, format!("names an unknown schedule {schedule_name:?}")))?;
        let model = UNet::new(config, &mut params, 0);
        load_weights(&checkpoint, &mut params)?;
        println!(
            "loaded {} ('{preset}', {} parameters, {prediction_name}, {schedule_name} schedule, T = {timesteps})",
            checkpoint.display(),
            params.num_elements()
        );
        (model, prediction, schedule)
    };

    let config = SamplerConfig { method, steps, spacing, clip_x0: (!no_clip).then_some(1.0) };
    let c = &model.config;
    let shape = [count, c.image_channels, c.image_size, c.image_size];
    let started = Instant::now();
    let images = sample(&model, &params, &schedule, prediction, &config, &shape, &mut StdRng::seed_from_u64(seed));
    let seconds = started.elapsed().as_secs_f64();
    let evaluations = if method == Method::Ddpm { schedule.steps() } else { steps };
    println!("{} with {evaluations} network evaluations: {count} images in {seconds:.2} s", method.name());
    let cols = (count as f64).sqrt().ceil() as usize;
    image_grid(&images, cols, 2).write_png(&out)?;
    println!("wrote {}", out.display());
    Ok(())
}
