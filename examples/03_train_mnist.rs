//! # 03 — Train a U-Net on handwritten digits (the main job)
//!
//! Trains the `small` U-Net (2.27 M parameters) on the 5,000 MNIST digits shipped in `data/mnist5k`, with
//! AdamW, warmup and cosine decay, gradient clipping and an EMA of the weights, then samples new digits
//! with the EMA weights. Writes into `--out` (default `out/03`): `loss.csv` (every step), a sample grid every
//! `--sample-every` steps and `samples.png` at the end, `denoising_strip.png` (four samples, x_t from
//! pure noise on the left to the digit on the right), and `model.safetensors` (the EMA weights).
//!
//! Checkpoints (parameters, EMA, Adam's moments, step, data position, config) go to `--out`/checkpoints every
//! `--checkpoint-every` steps, the newest `--keep` kept; `--resume` continues a run from one, exactly as if
//! it had not stopped. `--stop-at` ends a sitting early (with a checkpoint).
//!
//! ```text
//! cargo run --release --example 03_train_mnist                  # about 20 minutes on 2 cores
//! cargo run --release --example 03_train_mnist -- --quick       # seconds, for CI
//! cargo run --release --example 03_train_mnist -- --images PATH --labels PATH   # any IDX pair
//! cargo run --release --example 03_train_mnist -- --resume out/03/checkpoints   # continue from the newest
//! cargo run --release --example 03_train_mnist -- --cifar DIR --preset rgb32      # CIFAR-10 (binary version)
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use autograd::{ParamStore, Tensor};
use diffusion::cli::{exit_on_error, Args};
use diffusion::data::cifar::read_cifar10_path;
use diffusion::data::idx::{read_labeled, shipped_mnist_dir};
use diffusion::eval::classifier::{self, Classifier};
use diffusion::eval::evaluate::Reference;
use diffusion::metadata::Fields;
use diffusion::model::unet::{UNet, UNetConfig};
use diffusion::plot::image_grid;
use diffusion::process::objective::{Prediction, Weighting};
use diffusion::process::schedule::{NoiseSchedule, TIMESTEPS};
use diffusion::sampling::sampler::{sample, sample_traced, Method, SamplerConfig, Spacing};
use diffusion::training::checkpoint::{
    check_element_count, check_format, list_checkpoints, read_metadata, schedule_of, Checkpoint,
};
use diffusion::training::train::{limits, train, TrainConfig};
use diffusion::{Error, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn main() {
    exit_on_error(run);
}

/// The flags that define a run: stored in its checkpoints, and not to be given again with `--resume`
/// (`--quick` only changes defaults, so with `--resume` it changes nothing but the outputs).
const RUN_FLAGS: [&str; 16] = [
    "conditional",
    "label-dropout",
    "preset",
    "steps",
    "batch",
    "lr",
    "warmup",
    "weight-decay",
    "grad-clip",
    "ema",
    "timesteps",
    "schedule",
    "prediction",
    "min-snr",
    "seed",
    "limit",
];

fn run() -> Result<()> {
    let mut args = Args::from_env()?;
    let quick = args.flag("quick", "a few steps on a few images, for CI")?;
    let data = shipped_mnist_dir();
    let default_images = data.join("images-idx3-ubyte.gz").display().to_string();
    let default_labels = data.join("labels-idx1-ubyte.gz").display().to_string();
    let images_flag = args.value("images", default_images, "IDX images (gz or raw)")?;
    let labels_flag = args.value("labels", default_labels, "IDX labels, checked against the images")?;
    let cifar: String = args.value(
        "cifar",
        String::new(),
        "train on CIFAR-10 binary files instead (a file or the directory of data_batch_*.bin; use --preset rgb32)",
    )?;
    let limit: usize =
        args.value_in("limit", if quick { 64 } else { 0 }, 0..=10_000_000, "use only the first N images (0: all)")?;
    let preset: String = args.value("preset", "small".to_string(), "U-Net preset: small, tiny, rgb32")?;
    let steps: usize = args.value_in("steps", if quick { 3 } else { 3000 }, limits::STEPS, "training steps")?;
    let batch: usize = args.value_in("batch", if quick { 4 } else { 32 }, limits::BATCH, "images per step")?;
    let lr: f32 = args.value_in("lr", 1e-3, limits::LR, "peak learning rate (AdamW)")?;
    let warmup: usize = args.value_in(
        "warmup",
        if quick { 1 } else { 200 },
        limits::STEPS.start() - 1..=*limits::STEPS.end(),
        "warmup steps",
    )?;
    let weight_decay: f32 = args.value_in("weight-decay", 0.0, limits::WEIGHT_DECAY, "AdamW decoupled weight decay")?;
    let grad_clip: f32 = args.value_in("grad-clip", 1.0, limits::GRAD_CLIP, "global gradient-norm bound (0: off)")?;
    let ema_decay: f32 =
        args.value_in("ema", 0.999, limits::EMA_DECAY, "EMA decay of the weights used for sampling")?;
    let timesteps: usize = args.value_in("timesteps", 1000, TIMESTEPS, "diffusion steps T")?;
    let schedule_name: String =
        args.value("schedule", "linear".to_string(), "beta schedule: linear, cosine, sigmoid")?;
    let prediction_name: String = args.value("prediction", "epsilon".to_string(), "network target: epsilon, x0, v")?;
    let min_snr: f64 =
        args.value_in("min-snr", 0.0, 0.0..=*limits::MIN_SNR_GAMMA.end(), "min-SNR-gamma loss weighting (0: uniform)")?;
    let seed: u64 = args.value("seed", 0, "random seed")?;
    let conditional =
        args.flag("conditional", "class-conditional: learn p(x | label), for classifier-free guidance")?;
    let label_dropout: f32 = args.value_in(
        "label-dropout",
        0.1,
        limits::LABEL_DROPOUT,
        "probability of training an image as unlabeled (--conditional)",
    )?;
    let guidance: f32 = args.value_in(
        "guidance",
        3.0,
        diffusion::model::guidance::SCALE,
        "guidance scale of the sample grids (--conditional)",
    )?;
    let sample_every: usize = args.value("sample-every", if quick { 0 } else { 500 }, "steps between sample grids")?;
    let grid: usize =
        args.value_in("grid", if quick { 4 } else { 64 }, limits::GRID_IMAGES, "images in each sample grid")?;
    let sampler_steps: usize =
        args.value_in("sampler-steps", if quick { 3 } else { 20 }, 1..=100_000, "DPM-Solver++ steps for the grids")?;
    let checkpoint_every: usize =
        args.value("checkpoint-every", if quick { 2 } else { 500 }, "steps between checkpoints")?;
    let keep: usize = args.value("keep", 3, "checkpoints to keep, newest first (0: all)")?;
    let stop_at: usize =
        args.value("stop-at", 0, "end this sitting after this step, with a checkpoint (0: run to the end)")?;
    let eval_every: usize = args.value(
        "eval-every",
        0,
        "steps between evaluations of the EMA weights with example 05's classifier (0: none)",
    )?;
    let eval_count: usize =
        args.value_in("eval-count", 128, 2..=10_000, "samples per evaluation (DPM-Solver++, 10 steps)")?;
    let classifier_path =
        args.path("classifier", "out/05/classifier.safetensors", "the classifier for --eval-every")?;
    let resume: String =
        args.value("resume", String::new(), "continue from this checkpoint (a file, or a directory: its newest)")?;
    let out = args.out(quick, "03", "output directory")?;
    let profile = args.flag("profile", "print the time spent in each op of the training steps")?;
    let fixed: Vec<&str> = RUN_FLAGS.iter().copied().filter(|f| args.given(f)).collect();
    args.finish()?;

    let mut config = TrainConfig {
        lr,
        warmup,
        weight_decay,
        grad_clip,
        ema_decay,
        weighting: if min_snr > 0.0 { Weighting::MinSnr(min_snr) } else { Weighting::Uniform },
        seed,
        sample_every,
        grid_images: grid,
        grid_sampler: SamplerConfig { steps: sampler_steps, ..TrainConfig::default_grid_sampler() },
        checkpoint_every,
        keep_checkpoints: keep,
        stop_at: (stop_at > 0).then_some(stop_at),
        label_dropout,
        grid_guidance: guidance,
        profile,
        ..TrainConfig::new(steps, batch, out.clone())
    };
    let usage = |what: &str, value: &str| Error::Usage(format!("--{what} {value:?}: unknown"));
    let (mut net_config, preset, schedule_name, schedule, limit, resume_from) = if resume.is_empty() {
        let mut net_config = UNetConfig::preset(&preset).ok_or_else(|| usage("preset", &preset))?;
        net_config.num_classes = if conditional { 10 } else { 0 };
        config.prediction =
            Prediction::from_name(&prediction_name).ok_or_else(|| usage("prediction", &prediction_name))?;
        let schedule = NoiseSchedule::named(&schedule_name, timesteps).map_err(|problem| {
            Error::Usage(format!("--schedule {schedule_name} --timesteps {timesteps}: {problem}"))
        })?;
        (net_config, preset, schedule_name, schedule, limit, None)
    } else {
        // The run's settings come from the checkpoint; changing them would not continue the same run.
        if let Some(flag) = fixed.first() {
            return Err(Error::Usage(format!(
                "--{flag} cannot be given with --resume: the checkpoint holds the run's settings"
            )));
        }
        let mut path = PathBuf::from(&resume);
        if path.is_dir() {
            path = list_checkpoints(&path)?
                .pop()
                .ok_or_else(|| Error::Usage(format!("--resume {resume:?}: the directory holds no checkpoint")))?;
        }
        let metadata = read_metadata(&path)?;
        check_format(&path, &metadata)?;
        let fields = Fields::new(&path, &metadata);
        config.set_from_metadata(&fields)?;
        let net_config = UNetConfig::from_metadata(&fields)?;
        let schedule = schedule_of(&fields)?;
        let (preset, schedule_name) = (fields.text("preset")?.to_string(), fields.text("schedule")?.to_string());
        (net_config, preset, schedule_name, schedule, fields.get("data.limit")?, Some(path))
    };

    let (images_path, labels_path, mut images, mut labels) = if cifar.is_empty() {
        let (images_path, labels_path) = (PathBuf::from(images_flag), PathBuf::from(labels_flag));
        let data = read_labeled(&images_path, &labels_path)?;
        (images_path, labels_path, data.images.to_tensor(), data.labels)
    } else {
        let data = read_cifar10_path(&cifar)?;
        (PathBuf::from(&cifar), PathBuf::from(&cifar), data.to_tensor(), data.labels)
    };
    if let Some(&big) = labels.iter().find(|&&l| l as usize >= net_config.num_classes.max(10)) {
        return Err(Error::format(&labels_path, format!("has a label {big}; digits and CIFAR-10 have labels 0-9")));
    }
    // A preset is an architecture; a new run takes the image size and channels from its data (as diffusers'
    // `sample_size` and `in_channels`), so `--preset tiny` trains on 28×28 digits too. A resumed run's
    // model is fixed, and its data must fit it.
    let (data_channels, data_h, data_w) = (images.shape()[1], images.shape()[2], images.shape()[3]);
    let preset_item = (net_config.image_channels, net_config.image_size);
    if resume_from.is_none() && data_h == data_w && preset_item != (data_channels, data_h) {
        net_config.image_channels = data_channels;
        net_config.image_size = data_h;
        net_config.validate().map_err(|problem| {
            Error::Usage(format!("--preset {preset} cannot take {}: {problem}", images_path.display()))
        })?;
        println!("the '{preset}' preset, sized for the data: {data_channels}×{data_h}×{data_w} images");
    }
    let item = [net_config.image_channels, net_config.image_size, net_config.image_size];
    if images.shape()[1..] != item {
        return Err(Error::Usage(format!(
            "the model takes {item:?} images, {} holds {:?}",
            images_path.display(),
            &images.shape()[1..]
        )));
    }
    if limit > 0 && limit < images.shape()[0] {
        let few = images.data()[..limit * item.iter().product::<usize>()].to_vec();
        images = autograd::Tensor::from_vec(&[limit, item[0], item[1], item[2]], few);
        labels.truncate(limit);
    }
    let labels: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    config.run_metadata.extend([
        ("preset".to_string(), preset.clone()),
        ("schedule".to_string(), schedule_name.clone()),
        ("timesteps".to_string(), schedule.steps().to_string()),
        ("data.images".to_string(), images_path.display().to_string()),
        ("data.count".to_string(), images.shape()[0].to_string()),
        ("data.limit".to_string(), limit.to_string()),
    ]);

    // One check of the whole run, from flags or from a checkpoint, before anything is allocated for it.
    let invalid = |problem: String| match &resume_from {
        Some(path) => Error::format(path, format!("has {problem}")),
        None => Error::Usage(problem),
    };
    config.validate(&net_config, schedule.steps()).map_err(invalid)?;
    if let Some(path) = &resume_from {
        check_element_count(path, "model.", net_config.sizes().parameters)?;
    }
    let mut params = ParamStore::new();
    let model = UNet::new(net_config, &mut params, config.seed);
    let checkpoint = match &resume_from {
        Some(path) => {
            let c = Checkpoint::load(path, &params)?;
            let stored: usize = c.config.get("data.count").and_then(|v| v.parse().ok()).unwrap_or(0);
            if stored != images.shape()[0] {
                return Err(Error::Usage(format!(
                    "{} was trained on {stored} images; {} gives {}",
                    path.display(),
                    images_path.display(),
                    images.shape()[0]
                )));
            }
            c.fits(config.steps, images.shape()[0])
                .map_err(|problem| Error::format(path, format!("cannot continue this run: {problem}")))?;
            if let Some(stop) = config.stop_at.filter(|&stop| stop as u64 <= c.step) {
                return Err(Error::Usage(format!(
                    "--stop-at {stop}: {} is already at step {}",
                    path.display(),
                    c.step
                )));
            }
            println!("resuming {} at step {} of {}", path.display(), c.step, config.steps);
            Some(c)
        }
        None => None,
    };
    println!(
        "U-Net: {} parameters; {} images from {}; {} steps of batch {}",
        params.num_elements(),
        images.shape()[0],
        images_path.display(),
        config.steps,
        config.batch
    );
    let started = Instant::now();
    // With --eval-every, training runs in sittings that end at each evaluation and resume from its checkpoint;
    // resuming is exact, so the run is the same as without evaluations.
    let evaluator = match eval_every {
        0 => None,
        _ => Some(Evaluator::new(&classifier_path, &images, eval_count, &out)?),
    };
    let end = config.stop_at.unwrap_or(config.steps).min(config.steps);
    let mut checkpoint = checkpoint;
    let (ema, report) = loop {
        let done = checkpoint.as_ref().map_or(0, |c| c.step as usize);
        let stop = done.checked_div(eval_every).map_or(end, |sittings| (sittings + 1) * eval_every);
        let sitting = TrainConfig { stop_at: Some(stop.min(end)), ..config.clone() };
        let (ema, report) = train(&model, &mut params, &schedule, &images, Some(&labels), &sitting, checkpoint.take())?;
        if let Some(table) = &report.profile {
            print!("time per op over steps {}..{}:\n{table}", done + 1, report.step);
        }
        if let Some(evaluator) = &evaluator {
            evaluator.evaluate(&model, ema.params(), &schedule, config.prediction, report.step)?;
        }
        if report.step >= end {
            break (ema, report);
        }
        checkpoint = Some(Checkpoint::load(&report.checkpoint, &params)?);
    };
    if report.step < config.steps {
        println!(
            "stopped at step {} of {} ({:.0} ms per step); continue with --resume {}",
            report.step,
            config.steps,
            report.mean_step_ms,
            report.checkpoint.display()
        );
        return Ok(());
    }
    if report.trained_steps == 0 {
        println!("the run was already at step {} of {}: nothing left to train", report.step, config.steps);
    } else {
        println!(
            "trained in {:.1} min ({:.0} ms per step), final loss {:.4}; wrote {} and {}",
            started.elapsed().as_secs_f64() / 60.0,
            report.mean_step_ms,
            report.final_loss,
            out.join("loss.csv").display(),
            report.grid.display()
        );
    }
    let weights = report.weights.expect("written at the run's last step");
    println!("wrote {} (the EMA weights and the model's config)", weights.display());

    // The denoising strip: four samples, DDIM with 50 steps, x_t every 5 steps, then the result.
    let strip_sampler = SamplerConfig {
        method: Method::Ddim { eta: 0.0 },
        steps: if quick { 5 } else { 50 },
        spacing: Spacing::Linspace,
        clip_x0: Some(1.0),
    };
    let mut frames = Vec::new();
    let mut rng = StdRng::seed_from_u64(config.seed + 1);
    let mut k = 0;
    let last = sample_traced(
        &model,
        ema.params(),
        &schedule,
        config.prediction,
        &strip_sampler,
        &[4, item[0], item[1], item[2]],
        &mut rng,
        |_, x| {
            if k % 5 == 0 {
                frames.push(x.clone());
            }
            k += 1;
        },
    );
    frames.push(last);
    // Arrange as rows = samples, columns = time.
    let (cols, pixels) = (frames.len(), item.iter().product::<usize>());
    let mut strip = Vec::with_capacity(4 * cols * pixels);
    for s in 0..4 {
        for f in &frames {
            strip.extend_from_slice(&f.data()[s * pixels..(s + 1) * pixels]);
        }
    }
    let strip = autograd::Tensor::from_vec(&[4 * cols, item[0], item[1], item[2]], strip);
    let path = out.join("denoising_strip.png");
    image_grid(&strip, cols, 2).write_png(&path)?;
    println!("wrote {} (rows: samples; columns: x_t from noise to digit)", path.display());
    print_next_steps(&weights, model.config.num_classes > 0);
    Ok(())
}

/// What a user runs next on the weights just written (the reading path's examples 04 to 07).
fn print_next_steps(weights: &Path, conditional: bool) {
    let w = weights.display();
    println!("\nnext:");
    println!("  cargo run --release --example 04_sample -- --checkpoint {w}    # 16 new images");
    if conditional {
        println!("  cargo run --release --example 04_sample -- --checkpoint {w} --label 7    # sevens");
    }
    println!("  cargo run --release --example 05_classifier    # the judge example 06 uses (once)");
    println!("  cargo run --release --example 06_evaluate -- --checkpoint {w}    # Fréchet distance per sampler");
    if conditional {
        println!("  cargo run --release --example 07_guidance -- --checkpoint {w}    # classifier-free guidance");
    }
}

/// Periodic evaluation: the Fréchet distance of `count` samples' classifier features to real digits (with its
/// floor and ceiling) and the classifier's confidence, printed and appended to `eval.csv`.
struct Evaluator {
    classifier: Classifier,
    params: ParamStore,
    reference: Reference,
    csv: PathBuf,
}

impl Evaluator {
    fn new(classifier: &Path, images: &Tensor, count: usize, out: &Path) -> Result<Evaluator> {
        if images.shape()[1..] != [1, 28, 28] {
            return Err(Error::Usage("--eval-every judges 1×28×28 digits only".into()));
        }
        let count = count.min(images.shape()[0] / 2);
        let (model, params) = classifier::load(classifier)
            .map_err(|e| Error::Usage(format!("{e} (--eval-every needs example 05's classifier: run it first)")))?;
        let reference = Reference::new(&model, &params, images, count, 0);
        let csv = out.join("eval.csv");
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let header = "step,frechet,floor,ceiling,confidence\n";
        std::fs::write(&csv, header).map_err(|e| Error::io(&csv, e))?;
        Ok(Evaluator { classifier: model, params, reference, csv })
    }

    fn evaluate(
        &self,
        model: &UNet,
        weights: &ParamStore,
        schedule: &NoiseSchedule,
        prediction: Prediction,
        step: usize,
    ) -> Result<()> {
        let config = SamplerConfig { steps: 10, ..TrainConfig::default_grid_sampler() };
        let shape = [self.reference.count, 1, 28, 28];
        let images = sample(model, weights, schedule, prediction, &config, &shape, &mut StdRng::seed_from_u64(7));
        let (score, _) = self.reference.score(&self.classifier, &self.params, &images);
        println!(
            "eval at step {step}: Fréchet distance {:.1} (floor {:.1}, ceiling {:.1}), confidence {:.3}",
            score.frechet, self.reference.floor, self.reference.ceiling, score.confidence
        );
        let line = format!(
            "{step},{:.4},{:.4},{:.4},{:.4}\n",
            score.frechet, self.reference.floor, self.reference.ceiling, score.confidence
        );
        let mut file = std::fs::OpenOptions::new().append(true).open(&self.csv).map_err(|e| Error::io(&self.csv, e))?;
        file.write_all(line.as_bytes()).map_err(|e| Error::io(&self.csv, e))
    }
}
