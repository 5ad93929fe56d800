//! # 07 — Choosing what it draws: class conditioning and classifier-free guidance
//!
//! Samples digit k in row k from a class-conditional model (example 03 with `--conditional`), at several
//! guidance scales w (0: unconditional, 1: conditional, more: guided), and asks example 05's classifier how
//! often each sample is the digit that was asked for. Writes `out/07/guidance_w<w>.png`.
//!
//! ```text
//! cargo run --release --example 03_train_mnist -- --conditional --out out/03c   # once: about 21 minutes
//! cargo run --release --example 07_guidance
//! cargo run --release --example 07_guidance -- --quick
//! ```

use std::time::Instant;

use autograd::Tensor;
use diffusion::cli::{exit_on_error, Args};
use diffusion::error::check_range;
use diffusion::eval::classifier::{self, Classifier};
use diffusion::model::guidance::Guided;
use diffusion::model::unet::UNetConfig;
use diffusion::plot::image_grid;
use diffusion::sampling::sampler::{sample, Method, SamplerConfig, Spacing};
use diffusion::training::checkpoint::Trained;
use diffusion::{Error, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn main() {
    exit_on_error(run);
}

fn run() -> Result<()> {
    let mut args = Args::from_env()?;
    let quick = args.flag("quick", "an untrained conditional model, few steps: for CI")?;
    let checkpoint = args.path(
        "checkpoint",
        "out/03c/model.safetensors",
        "a class-conditional model from example 03 --conditional",
    )?;
    let classifier_path =
        args.path("classifier", "out/05/classifier.safetensors", "classifier from example 05 (judges the digits)")?;
    let scales: String = args.value("scales", "0,1,2,3".to_string(), "guidance scales w, comma-separated")?;
    let per_class: usize =
        args.value_in("per-class", if quick { 1 } else { 20 }, 1..=10_000, "samples of each digit per scale")?;
    let sampler_steps: usize = args.value_in(
        "steps",
        if quick { 2 } else { 20 },
        diffusion::sampling::sampler::SAMPLER_STEPS,
        "DPM-Solver++ steps",
    )?;
    let seed: u64 = args.value("seed", 0, "random seed")?;
    let out = args.out(quick, "07", "output directory")?;
    args.finish()?;
    let scales: Vec<f32> = scales
        .split(',')
        .map(|s| {
            let w: f32 = s.trim().parse().map_err(|_| Error::Usage(format!("--scales: {s:?} is not a number")))?;
            check_range("--scales: a scale", &w, &diffusion::model::guidance::SCALE).map_err(Error::Usage)?;
            Ok(w)
        })
        .collect::<Result<_>>()?;

    let trained = if quick {
        Trained::untrained(UNetConfig { num_classes: 10, ..UNetConfig::small() }, 20, seed)
    } else {
        Trained::load(&checkpoint)?
    };
    let classes = trained.model.config.num_classes;
    trained.check_sampling(sampler_steps, per_class * classes.max(1))?;
    if classes == 0 {
        return Err(Error::Usage(format!(
            "{} is unconditional; train one with: cargo run --release --example 03_train_mnist -- --conditional --out out/03c",
            checkpoint.display()
        )));
    }
    let judge: Option<(Classifier, _)> = if quick { None } else { Some(classifier::load(&classifier_path)?) };
    let config = SamplerConfig {
        method: Method::DpmSolver2M,
        steps: sampler_steps,
        spacing: Spacing::Linspace,
        clip_x0: Some(1.0),
    };
    let labels: Vec<usize> = (0..classes).flat_map(|k| std::iter::repeat_n(k, per_class)).collect();
    println!(
        "{} samples per scale ({per_class} of each of {classes} classes), DPM-Solver++ {sampler_steps} steps",
        labels.len()
    );
    for &scale in &scales {
        let guided = Guided { model: &trained.model, labels: labels.clone(), scale };
        let c = &trained.model.config;
        let shape = [labels.len(), c.image_channels, c.image_size, c.image_size];
        let started = Instant::now();
        let images = sample(
            &guided,
            &trained.params,
            &trained.schedule,
            trained.prediction,
            &config,
            &shape,
            &mut StdRng::seed_from_u64(seed),
        );
        let seconds = started.elapsed().as_secs_f64();
        let path = out.join(format!("guidance_w{scale}.png"));
        // Rows = classes: up to 10 samples of each.
        let shown = per_class.min(10);
        let row = images.numel() / labels.len();
        let picked: Vec<f32> = (0..classes)
            .flat_map(|k| (0..shown).flat_map(move |j| (k * per_class + j) * row..(k * per_class + j + 1) * row))
            .map(|i| images.data()[i])
            .collect();
        image_grid(&Tensor::from_vec(&[classes * shown, shape[1], shape[2], shape[3]], picked), shown, 2)
            .write_png(&path)?;
        match &judge {
            Some((model, params)) => {
                let judged = model.judge(params, &images);
                println!(
                    "w = {scale}: {:.1}% are the digit asked for, mean confidence {:.3} ({seconds:.1} s); wrote {}",
                    100.0 * judged.accuracy(&labels),
                    judged.mean_confidence(),
                    path.display()
                );
            }
            None => println!("w = {scale}: sampled in {seconds:.1} s; wrote {}", path.display()),
        }
    }
    Ok(())
}
