//! # 06 — How good are the samples, and how many steps do they need?
//!
//! For each sampler and step count (DDPM 1000; DDIM 10, 20, 50; DPM-Solver++ 10, 20) draws `--count` images
//! from a trained model (example 03's weights or checkpoint) and reports the Fréchet distance of their
//! classifier features to real digits (example 05's classifier), next to its floor (real vs real) and
//! ceiling (real vs noise), plus the classifier's mean confidence, the classes it sees and the sampling time.
//! Writes `out/06/evaluation.csv`, `out/06/frechet_vs_steps.png` (one line per sampler) and a grid of the
//! first 64 samples of each row.
//!
//! ```text
//! cargo run --release --example 05_classifier        # once: the judge
//! cargo run --release --example 06_evaluate          # about 20 minutes on 2 cores (DDPM's 1000 steps are most of it)
//! cargo run --release --example 06_evaluate -- --quick
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use autograd::Tensor;
use diffusion::cli::{self, exit_on_error, in_range, Common, Parser, Weights};
use diffusion::data::idx::shipped_mnist_dir;
use diffusion::eval::classifier::{self, split_idx, train_classifier, ClassifierTraining};
use diffusion::eval::evaluate::Reference;
use diffusion::plot::{image_grid, line_chart, Series};
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
    let (quick, seed, out, checkpoint, classifier_path) =
        (c.quick, c.seed, c.out("06"), flags.weights.checkpoint, flags.classifier);
    let (count, batch) = (flags.count.unwrap_or(c.q(256, 16)), flags.batch);

    let mnist = shipped_mnist_dir();
    let split = split_idx(&mnist.join("images-idx3-ubyte.gz"), &mnist.join("labels-idx1-ubyte.gz"), 0)?;
    let real = split.train_images;
    let (judge, judge_params) = if quick {
        let few = autograd::Tensor::from_vec(&[256, 1, 28, 28], real.data()[..256 * 784].to_vec());
        let config = ClassifierTraining { epochs: 1, ..ClassifierTraining::default() };
        train_classifier(&few, &split.train_labels[..256], 10, &config, |_, _| {})
    } else {
        classifier::load(&classifier_path).map_err(|e| {
            Error::Usage(format!("{e} (train the classifier first: cargo run --release --example 05_classifier)"))
        })?
    };
    if quick {
        println!("an untrained 'small' U-Net with T = 20 (--quick): the numbers exercise the code, nothing more");
    }
    let trained = Trained::load_or_untrained(&checkpoint, quick, seed)?;
    trained.require_digits()?;
    trained.model.config.check_memory(batch, false).map_err(Error::Usage)?;

    let started = Instant::now();
    let reference = Reference::new(&judge, &judge_params, &real, count, seed);
    println!(
        "reference: {count} real images; Fréchet distance floor (real vs real) {:.3}, ceiling (real vs noise) {:.3} ({:.1} s)",
        reference.floor,
        reference.ceiling,
        started.elapsed().as_secs_f64()
    );

    let (ddim, dpm) = (Method::Ddim { eta: 0.0 }, Method::DpmSolver2M);
    let runs: Vec<(Method, usize)> = if quick {
        vec![(Method::Ddpm, 20), (ddim, 2), (ddim, 4), (dpm, 2)]
    } else {
        vec![(Method::Ddpm, trained.schedule.steps()), (ddim, 10), (ddim, 20), (ddim, 50), (dpm, 10), (dpm, 20)]
    };
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let mut csv = String::from("sampler,steps,frechet,floor,ceiling,confidence,seconds,histogram\n");
    println!("\n| sampler | steps | Fréchet distance | mean confidence | classes 0-9 | time for {count} |\n|---|---|---|---|---|---|");
    // (steps, distance) per sampler family, for the chart.
    let mut lines: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for (method, steps) in runs {
        let config = SamplerConfig { method, steps, spacing: Spacing::Linspace, clip_x0: Some(1.0) };
        let mut rng = StdRng::seed_from_u64(seed + 1);
        let started = Instant::now();
        let images = trained.sample_batched(&config, count, batch, &mut rng);
        let seconds = started.elapsed().as_secs_f64();
        let (score, _) = reference.score(&judge, &judge_params, &images);
        let name = method.short_name();
        let histogram = score.histogram.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(" ");
        println!(
            "| {name} | {steps} | {:.3} | {:.3} | {histogram} | {seconds:.1} s |",
            score.frechet, score.confidence
        );
        let _ = writeln!(
            csv,
            "{name},{steps},{:.4},{:.4},{:.4},{:.4},{seconds:.2},{histogram}",
            score.frechet, reference.floor, reference.ceiling, score.confidence
        );
        let shown = 64.min(count);
        let grid = Tensor::from_vec(&[shown, 1, 28, 28], images.data()[..shown * 784].to_vec());
        image_grid(&grid, 8, 2).write_png(out.join(format!("{name}_{steps}.png")))?;
        lines.entry(name).or_default().push((steps as f64, score.frechet));
    }
    let csv_path = out.join("evaluation.csv");
    std::fs::write(&csv_path, csv).map_err(|e| Error::io(&csv_path, e))?;
    let points = lines.values().flatten();
    let y_max = points.clone().map(|p| p.1).fold(reference.floor, f64::max) * 1.15;
    let mut ticks: Vec<f64> = points.map(|p| p.0).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    let colors = [("ddim", [31, 119, 180]), ("dpm-solver++", [255, 127, 14]), ("ddpm", [0, 0, 0])];
    let series: Vec<Series> = colors
        .iter()
        .map(|(name, color)| Series { points: lines.remove(name).unwrap_or_default(), color: *color })
        .collect();
    let chart = line_chart(&series, &ticks, y_max.max(1e-6), &[(reference.floor, [150, 150, 150])]);
    let chart_path = out.join("frechet_vs_steps.png");
    chart.write_png(&chart_path)?;
    println!(
        "\nwrote {}, {} (blue DDIM, orange DPM-Solver++, black DDPM; dashed grey: the real-vs-real floor) and a grid per row",
        csv_path.display(),
        chart_path.display()
    );
    Ok(())
}

/// Score samplers by the Fréchet distance of their digits in the classifier's features.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    weights: Weights,
    /// Classifier from example 05
    #[arg(long, default_value = "out/05/classifier.safetensors")]
    classifier: PathBuf,
    /// Samples per sampler and reference [default: 256; --quick: 16]
    #[arg(long, value_parser = in_range(2..=100_000usize))]
    count: Option<usize>,
    /// Samples drawn at once
    #[arg(long, default_value_t = 64, value_parser = in_range(1..=100_000usize))]
    batch: usize,
}
