//! # 04 — Sample from a trained model with any sampler
//!
//! Loads the weights example 03 wrote (`out/03/model.safetensors`), or the EMA weights of one of its
//! checkpoints (`out/03/checkpoints/step-*.safetensors`); either file records the U-Net config, the
//! prediction target and the schedule. Draws `--count` images with the chosen sampler and step count,
//! timing it. The same `--seed` gives the same images every time. The samplers are written out in
//! `diffusion/src/sampling/` (DDPM, DDIM, DPM-Solver++ in `sampler/`; Euler, Heun, UniPC and the rest in
//! `solvers.rs`); example 06 measures how their quality depends on the step count; `--label` and
//! `--guidance` are explained by example 07.
//!
//! ```text
//! cargo run --release --example 04_sample                             # SDE-DPM-Solver++(2M), 20 steps
//! cargo run --release --example 04_sample -- --sampler ddim --steps 50
//! cargo run --release --example 04_sample -- --sampler dpm --steps 20
//! cargo run --release --example 04_sample -- --sampler heun --spacing karras --steps 15   # EDM's sampler
//! cargo run --release --example 04_sample -- --sampler ddpm             # all T steps
//! cargo run --release --example 04_sample -- --checkpoint out/03c/model.safetensors --label 7   # sevens
//! cargo run --release --example 04_sample -- --quick                    # untrained tiny model, for CI
//! ```

use std::time::Instant;

use diffusion::cli::{self, exit_on_error, in_range, Common, Parser, Weights};
use diffusion::model::guidance::Guided;
use diffusion::model::unet::UNetConfig;
use diffusion::plot::image_grid;
use diffusion::sampling::sampler::{sample, sampler_timesteps, Method, SamplerConfig, Spacing};
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
    let (quick, seed, out, checkpoint) = (c.quick, c.seed, c.out("04/samples.png"), flags.weights.checkpoint);
    let (random, sampler, label) =
        (flags.random_weights.unwrap_or_default(), flags.sampler, flags.label.unwrap_or_default());
    let (steps, eta, spacing_name) = (flags.steps.unwrap_or(c.q(20, 4)), flags.eta, flags.spacing);
    let (no_clip, count, guidance) = (flags.no_clip, flags.count, flags.guidance);

    let method = Method::from_name(&sampler, eta)
        .ok_or_else(|| Error::Usage(format!("--sampler {sampler:?}: unknown ({})", Method::NAMES)))?;
    let spacing = Spacing::from_name(&spacing_name)
        .ok_or_else(|| Error::Usage(format!("--spacing {spacing_name:?}: unknown")))?;

    let trained = if quick || !random.is_empty() {
        let preset = if quick { "tiny" } else { random.as_str() };
        let config = UNetConfig::preset(preset)
            .ok_or_else(|| Error::Usage(format!("--random-weights {preset:?}: unknown preset")))?;
        println!("an untrained '{preset}' U-Net (random weights): the images are noise; the timing is real");
        Trained::untrained(config, if quick { 100 } else { 1000 }, seed)
    } else {
        // The file's metadata describes the model; build it, then load the weights into it.
        let trained = Trained::load(&checkpoint)?;
        let m = &trained.metadata;
        let describe = |key: &str| m.get(key).map_or("?", String::as_str).to_string();
        println!(
            "loaded {} ({} parameters, '{}' preset, {} prediction, {} schedule, T = {}{})",
            checkpoint.display(),
            trained.params.num_elements(),
            describe("preset"),
            trained.prediction.name(),
            describe("schedule"),
            trained.schedule.steps(),
            m.get("step").map_or(String::new(), |s| format!(", checkpoint of step {s}: its EMA weights"))
        );
        trained
    };
    trained.check_sampling(if method == Method::Ddpm { trained.schedule.steps() } else { steps }, count)?;
    let Trained { model, params, prediction, schedule, .. } = trained;

    let config = SamplerConfig { method, steps, spacing, clip_x0: (!no_clip).then_some(1.0) };
    let c = &model.config;
    let shape = [count, c.image_channels, c.image_size, c.image_size];
    let started = Instant::now();
    let rng = &mut StdRng::seed_from_u64(seed);
    let classes = model.config.num_classes;
    let images = if classes > 0 {
        let labels: Vec<usize> = match label.as_str() {
            "" => (0..count).map(|i| i % classes).collect(),
            text => {
                let k: usize = text.parse().map_err(|_| Error::Usage(format!("--label {text:?}: not a number")))?;
                if k >= classes {
                    return Err(Error::Usage(format!("--label {k}: the model has classes 0 to {}", classes - 1)));
                }
                vec![k; count]
            }
        };
        println!("classes {:?}…, guidance w = {guidance}", &labels[..labels.len().min(10)]);
        let guided = Guided { model: &model, labels, scale: guidance };
        sample(&guided, &params, &schedule, prediction, &config, &shape, rng)
    } else {
        if !label.is_empty() {
            return Err(Error::Usage("--label: this model is unconditional (train one with --conditional)".into()));
        }
        sample(&model, &params, &schedule, prediction, &config, &shape, rng)
    };
    let seconds = started.elapsed().as_secs_f64();
    let evaluations = method.evaluations(sampler_timesteps(&schedule, &config).len());
    println!("{} with {evaluations} network evaluations: {count} images in {seconds:.2} s", method.name());
    let cols = (count as f64).sqrt().ceil() as usize;
    image_grid(&images, cols, 2).write_png(&out)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Draw new digits from the weights example 03 wrote.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    common: Common,
    /// Sample from an untrained model of this preset (for timing)
    #[arg(long)]
    random_weights: Option<String>,
    #[command(flatten)]
    weights: Weights,
    /// ddpm, ddim, ddim-overshoot (Meng et al.'s stochastic sampler for example 12's students), dpm
    /// (DPM-Solver++ 2M), dpm3m, dpm-sde (its SDE variant, the best at 20), euler, euler-a, heun or unipc
    #[arg(long, default_value = "dpm-sde")]
    sampler: String,
    /// Network evaluations, ddpm: all T [default: 20; --quick: 4]
    #[arg(long, value_parser = in_range(diffusion::sampling::sampler::SAMPLER_STEPS))]
    steps: Option<usize>,
    /// DDIM noise scale
    #[arg(long, default_value_t = 0.0, value_parser = in_range(0.0f32..=1.0))]
    eta: f32,
    /// Timestep spacing: linspace, leading, trailing, karras
    #[arg(long, default_value = "linspace")]
    spacing: String,
    /// Do not clamp the predicted x0 to [-1, 1]
    #[arg(long)]
    no_clip: bool,
    /// Images to draw
    #[arg(long, default_value_t = 16, value_parser = in_range(1..=100_000usize))]
    count: usize,
    /// Class-conditional models: the class to draw [default: every class in turn]
    #[arg(long)]
    label: Option<String>,
    /// Class-conditional models: classifier-free guidance scale w
    #[arg(long, default_value_t = 2.0, value_parser = in_range(diffusion::model::guidance::SCALE))]
    guidance: f32,
}
