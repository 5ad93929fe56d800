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

use std::path::PathBuf;
use std::time::Instant;

use autograd::Tensor;
use diffusion::cli::{self, exit_on_error, in_range, Common, Parser};
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
    let flags: Flags = cli::parse()?;
    let c = &flags.common;
    let (quick, seed, out, checkpoint, classifier_path) =
        (c.quick, c.seed, c.out("07"), flags.checkpoint, flags.classifier);
    let (scales, per_class) = (flags.scales, flags.per_class.unwrap_or(c.q(20, 1)));
    let sampler_steps = flags.steps.unwrap_or(c.q(20, 2));
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

/// Classifier-free guidance: the same classes drawn at several guidance scales.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    common: Common,
    /// A class-conditional model from example 03 --conditional
    #[arg(long, default_value = "out/03c/model.safetensors")]
    checkpoint: PathBuf,
    /// Classifier from example 05 (judges the digits)
    #[arg(long, default_value = "out/05/classifier.safetensors")]
    classifier: PathBuf,
    /// Guidance scales w, comma-separated
    #[arg(long, default_value = "0,1,2,3")]
    scales: String,
    /// Samples of each digit per scale [default: 20; --quick: 1]
    #[arg(long, value_parser = in_range(1..=10_000usize))]
    per_class: Option<usize>,
    /// DPM-Solver++ steps [default: 20; --quick: 2]
    #[arg(long, value_parser = in_range(diffusion::sampling::sampler::SAMPLER_STEPS))]
    steps: Option<usize>,
}
