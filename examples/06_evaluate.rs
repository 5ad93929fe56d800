//! # 06 — How good are the samples, and how many network evaluations do they need?
//!
//! For each sampler of `--samplers` at each count of network evaluations of `--nfe` (DDPM takes all T),
//! draws `--count` images from a trained model (example 03's weights or checkpoint) and reports the
//! Fréchet distance of their classifier features to real digits (example 05's classifier), next to its
//! floor (real vs real) and ceiling (real vs noise), plus the classifier's mean confidence, the classes it
//! sees and the sampling time. Writes `out/06/evaluation.csv`, `out/06/frechet_vs_nfe.png` (one line per
//! sampler) and a grid of the first 64 samples of each row. The samplers are those of example 04.
//!
//! Measure on digits the model did not train on: `--real-images` takes an IDX file, for example the full
//! MNIST test set (`../shared/data/mnist-t10k/t10k-images-idx3-ubyte.gz` beside this repository); by
//! default the shipped digits are the reference, which the main job trained on. At 1,000 samples the
//! distance's noise is about ±2 (at 256, about ±10: too coarse to rank samplers).
//!
//! ```text
//! cargo run --release --example 05_classifier        # once: the judge
//! cargo run --release --example 06_evaluate          # every sampler: about 1.5 hours on 2 cores
//! cargo run --release --example 06_evaluate -- --samplers heun,unipc --nfe 5,9 --count 256
//! cargo run --release --example 06_evaluate -- --quick
//! ```

use std::path::PathBuf;
use std::time::Instant;

use autograd::Tensor;
use diffusion::cli::{self, exit_on_error, in_range, Common, Parser, Weights};
use diffusion::data::idx::{read_images, shipped_mnist_dir};
use diffusion::distill::{consistency, students};
use diffusion::eval::classifier::{self, split_idx, train_classifier, ClassifierTraining};
use diffusion::eval::evaluate::{Reference, SamplerTable};
use diffusion::plot::image_grid;
use diffusion::sampling::sampler::{sampler_timesteps, Method, SamplerConfig, Spacing};
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
    let (quick, seed, out, checkpoint) = (c.quick, c.seed, c.out("06"), flags.weights.checkpoint);
    let (count, batch) = (flags.count.unwrap_or(c.q(1000, 16)), flags.batch);
    let parse = |text: &str| text.split(',').map(Method::parse_flag).collect::<std::result::Result<Vec<_>, _>>();
    let methods = flags.samplers.unwrap_or_else(|| parse(c.q(ALL, "ddpm,ddim,heun,dpm,unipc")).unwrap_or_default());
    let counts = flags.nfe.unwrap_or(c.q(vec![4, 6, 8, 10, 15, 20, 50], vec![2, 4]));
    let spacing = Spacing::from_name(&flags.spacing)
        .ok_or_else(|| Error::Usage(format!("--spacing {:?}: unknown", flags.spacing)))?;

    let mnist = shipped_mnist_dir();
    let split = split_idx(&mnist.join("images-idx3-ubyte.gz"), &mnist.join("labels-idx1-ubyte.gz"), 0)?;
    let real = match &flags.real_images {
        Some(path) => read_images(path)?.to_tensor(),
        None => split.train_images.clone(),
    };
    let (judge, judge_params) = if quick {
        let few = Tensor::from_vec(&[256, 1, 28, 28], split.train_images.data()[..256 * 784].to_vec());
        let config = ClassifierTraining { epochs: 1, ..ClassifierTraining::default() };
        train_classifier(&few, &split.train_labels[..256], 10, &config, |_, _| {})
    } else {
        classifier::load(&flags.classifier).map_err(|e| {
            Error::Usage(format!("{e} (train the classifier first: cargo run --release --example 05_classifier)"))
        })?
    };
    if quick {
        println!("an untrained 'small' U-Net with T = 20 (--quick): the numbers exercise the code, nothing more");
    }
    let trained = Trained::load_or_untrained(&checkpoint, quick, seed)?;
    trained.require_digits()?;
    trained.model.config.check_memory(batch, false).map_err(Error::Usage)?;
    if 2 * count > real.shape()[0] {
        return Err(Error::Usage(format!(
            "--count {count}: the reference needs {} real digits, {} given",
            2 * count,
            real.shape()[0]
        )));
    }

    let started = Instant::now();
    let reference = Reference::new(&judge, &judge_params, &real, count, seed);
    let (floor, ceiling, secs) = (reference.floor, reference.ceiling, started.elapsed().as_secs_f64());
    println!("reference: {count} real digits; floor (real vs real) {floor:.3}, ceiling (real vs noise) {ceiling:.3} ({secs:.1} s)");
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    println!("\n| sampler | NFE | Fréchet distance | mean confidence | classes 0-9 | time for {count} |\n|---|---|---|---|---|---|");
    let mut table = SamplerTable::default();
    let write = |table: &SamplerTable| -> Result<()> {
        let (csv, chart) = table.write(&reference, &out)?;
        println!(
            "\nwrote {}, {} (dashed grey: the real-vs-real floor) and a grid per row",
            csv.display(),
            chart.display()
        );
        Ok(())
    };
    // Draws `count` digits with `draw`, scores them, and writes a grid of the first 64.
    let mut score = |name: &str, evaluations: usize, draw: &dyn Fn(&mut StdRng) -> Tensor| -> Result<()> {
        let mut rng = StdRng::seed_from_u64(seed + 1);
        let started = Instant::now();
        let images = draw(&mut rng);
        let (score, _) = reference.score(&judge, &judge_params, &images);
        table.push(name, evaluations, score, started.elapsed().as_secs_f64());
        let shown = 64.min(count);
        let grid = Tensor::from_vec(&[shown, 1, 28, 28], images.data()[..shown * 784].to_vec());
        image_grid(&grid, 8, 2).write_png(out.join(format!("{name}_{evaluations}.png")))
    };
    for method in methods {
        // DDPM takes every timestep; the others each count of --nfe (Heun: its nearest odd count below).
        let steps_list = if method == Method::Ddpm { vec![trained.schedule.steps()] } else { counts.clone() };
        for steps in steps_list {
            let config = SamplerConfig { method, steps, spacing, clip_x0: Some(1.0) };
            let evaluations = method.evaluations(sampler_timesteps(&trained.schedule, &config).len());
            score(method.short_name(), evaluations, &|rng| trained.sample_batched(&config, count, batch, rng))?;
        }
    }
    // Example 12's students, each in its own steps (x̂ unclipped) with DDIM and with Meng et al.'s stochastic
    // overshoot, and its consistency model.
    let Some(dir) = &flags.distilled else { return write(&table) };
    for (steps, path) in students(dir)? {
        let student = Trained::load(&path)?;
        student.require_digits()?;
        for (name, method) in [("distilled", Method::Ddim { eta: 0.0 }), ("distilled-overshoot", Method::DdimOvershoot)]
        {
            let config = SamplerConfig { method, steps, spacing: Spacing::Trailing, clip_x0: None };
            score(name, steps, &|rng| student.sample_batched(&config, count, batch, rng))?;
        }
    }
    let path = dir.join("consistency").join("model.safetensors");
    if path.is_file() {
        let m = Trained::load(&path)?;
        for steps in [1, 2] {
            let draw = |rng: &mut StdRng| consistency::sample_trained(&m, steps, count, batch, rng);
            score("consistency", steps, &draw)?;
        }
    }
    write(&table)
}

/// Every sampler, in the order of the table.
const ALL: &str = "ddpm,ddim,euler,euler-a,heun,dpm,dpm3m,dpm-sde,unipc";

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
    /// Real digits to compare with, IDX [default: the shipped training digits]
    #[arg(long)]
    real_images: Option<PathBuf>,
    /// Samples per sampler and reference [default: 1000; --quick: 16]
    #[arg(long, value_parser = in_range(2..=100_000usize))]
    count: Option<usize>,
    /// Samples drawn at once
    #[arg(long, default_value_t = 250, value_parser = in_range(1..=100_000usize))]
    batch: usize,
    /// Samplers, comma-separated [default: all of example 04's]
    #[arg(long, value_delimiter = ',', value_parser = Method::parse_flag)]
    samplers: Option<Vec<Method>>,
    /// Network evaluations, comma-separated [default: 4,6,8,10,15,20,50; --quick: 2,4]
    #[arg(long, value_delimiter = ',', value_parser = in_range(1..=1000usize))]
    nfe: Option<Vec<usize>>,
    /// Timestep spacing of every sampler but DDPM
    #[arg(long, default_value = "karras")]
    spacing: String,
    /// Also score example 12's students in this folder (steps-N/), each in its N steps with DDIM and with DDIM
    /// overshoot
    #[arg(long)]
    distilled: Option<PathBuf>,
}
