//! # 04 — Sample from a trained model with any sampler
//!
//! Loads the weights example 03 wrote (`out/03/model.safetensors`), or the EMA weights of one of its
//! checkpoints (`out/03/checkpoints/step-*.safetensors`); either file records the U-Net config, the
//! prediction target and the schedule. Draws `--count` images with the chosen sampler and step count,
//! timing it. The same `--seed` gives the same images every time.
//!
//! ```text
//! cargo run --release --example 04_sample -- --sampler ddim --steps 50
//! cargo run --release --example 04_sample -- --sampler dpm --steps 20
//! cargo run --release --example 04_sample -- --sampler ddpm             # all T steps
//! cargo run --release --example 04_sample -- --checkpoint out/03c/model.safetensors --label 7   # sevens
//! cargo run --release --example 04_sample -- --quick                    # untrained tiny model, for CI
//! ```

use std::time::Instant;

use diffusion::cli::{exit_on_error, Args};
use diffusion::model::guidance::Guided;
use diffusion::model::unet::UNetConfig;
use diffusion::plot::image_grid;
use diffusion::sampling::sampler::{sample, Method, SamplerConfig, Spacing, SAMPLER_STEPS};
use diffusion::training::checkpoint::Trained;
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
    let checkpoint = args.path("checkpoint", "out/03/model.safetensors", "weights or a checkpoint from example 03")?;
    let sampler: String = args.value("sampler", "dpm".to_string(), "ddpm, ddim or dpm (DPM-Solver++ 2M)")?;
    let steps: usize =
        args.value_in("steps", if quick { 4 } else { 20 }, SAMPLER_STEPS, "network evaluations (ddpm: all T)")?;
    let eta: f32 = args.value_in("eta", 0.0, 0.0..=1.0, "DDIM noise scale")?;
    let spacing_name: String =
        args.value("spacing", "linspace".to_string(), "timestep spacing: linspace, leading, trailing")?;
    let no_clip = args.flag("no-clip", "do not clamp the predicted x0 to [-1, 1]")?;
    let count: usize = args.value_in("count", 16, 1..=100_000, "images to draw")?;
    let seed: u64 = args.value("seed", 0, "random seed")?;
    let label: String = args.value(
        "label",
        String::new(),
        "class-conditional models: the class to draw (default: every class in turn)",
    )?;
    let guidance: f32 = args.value_in(
        "guidance",
        2.0,
        diffusion::model::guidance::SCALE,
        "class-conditional models: classifier-free guidance scale w",
    )?;
    let out = args.out(quick, "04/samples.png", "output PNG")?;
    args.finish()?;

    let method = match sampler.as_str() {
        "ddpm" => Method::Ddpm,
        "ddim" => Method::Ddim { eta },
        "dpm" => Method::DpmSolver2M,
        other => return Err(Error::Usage(format!("--sampler {other:?}: unknown (ddpm, ddim, dpm)"))),
    };
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
    let evaluations = if method == Method::Ddpm { schedule.steps() } else { steps };
    println!("{} with {evaluations} network evaluations: {count} images in {seconds:.2} s", method.name());
    let cols = (count as f64).sqrt().ceil() as usize;
    image_grid(&images, cols, 2).write_png(&out)?;
    println!("wrote {}", out.display());
    Ok(())
}
