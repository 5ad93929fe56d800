//! # 03 — Train a U-Net on handwritten digits (the main job)
//!
//! Trains the `small` U-Net (2.27 M parameters) on the 5,000 MNIST digits in `data/mnist5k` with AdamW,
//! warmup and cosine decay, clipping and an EMA of the weights. Writes into `--out` (`out/03`): `loss.csv`,
//! sample grids, `samples.png`, `denoising_strip.png` (noise to digit), `model.safetensors` (the EMA weights
//! and the model's config) and `checkpoints/`, from which `--resume` continues exactly. What a run is, new or
//! resumed, lives in `diffusion::training::run`; the loop in `diffusion::training::train`.
//!
//! ```text
//! cargo run --release --example 03_train_mnist                  # about 12 minutes on 2 cores
//! cargo run --release --example 03_train_mnist -- --quick       # seconds, for CI
//! cargo run --release --example 03_train_mnist -- --resume out/03/checkpoints   # continue from the newest
//! cargo run --release --example 03_train_mnist -- --cifar DIR --preset rgb32      # CIFAR-10 (binary version)
//! ```

use std::path::Path;
use std::time::Instant;

use diffusion::cli::{exit_on_error, Args};
use diffusion::data::idx::shipped_mnist_dir;
use diffusion::eval::evaluate::DuringTraining;
use diffusion::model::guidance::SCALE;
use diffusion::process::objective::Weighting;
use diffusion::process::schedule::TIMESTEPS;
use diffusion::sampling::sampler::{SamplerConfig, SAMPLER_STEPS};
use diffusion::training::run::{Data, NewRun, Run, Start, RUN_SETTINGS};
use diffusion::training::train::{limits, TrainConfig};
use diffusion::{Error, Result};

fn main() {
    exit_on_error(run);
}

fn run() -> Result<()> {
    let mut args = Args::from_env()?;
    let quick = args.flag("quick", "a few steps on a few images, for CI")?;
    let q = |quick_value, value| if quick { quick_value } else { value };
    let mnist = |file: &str| shipped_mnist_dir().join(file).display().to_string();
    let images: String = args.value("images", mnist("images-idx3-ubyte.gz"), "IDX images (gz or raw)")?;
    let labels: String = args.value("labels", mnist("labels-idx1-ubyte.gz"), "IDX labels of the images")?;
    let cifar: String = args.value("cifar", String::new(), "CIFAR-10 binary files instead (use --preset rgb32)")?;
    let limit = args.value_in("limit", q(64, 0), 0..=10_000_000, "use only the first N images (0: all)")?;
    let preset: String = args.value("preset", "small".to_string(), "U-Net preset: small, tiny, rgb32")?;
    let steps = args.value_in("steps", q(3, 3000), limits::STEPS, "training steps")?;
    let batch = args.value_in("batch", q(4, 32), limits::BATCH, "images per step")?;
    let lr = args.value_in("lr", 1e-3, limits::LR, "peak learning rate (AdamW)")?;
    let warmup = args.value_in("warmup", q(1, 200), limits::WARMUP, "warmup steps")?;
    let weight_decay = args.value_in("weight-decay", 0.0, limits::WEIGHT_DECAY, "AdamW decoupled weight decay")?;
    let grad_clip = args.value_in("grad-clip", 1.0, limits::GRAD_CLIP, "global gradient-norm bound (0: off)")?;
    let ema_decay = args.value_in("ema", 0.999, limits::EMA_DECAY, "EMA decay of the weights sampled from")?;
    let timesteps = args.value_in("timesteps", 1000, TIMESTEPS, "diffusion steps T")?;
    let schedule: String = args.value("schedule", "linear".to_string(), "beta schedule: linear, cosine, sigmoid")?;
    let prediction: String = args.value("prediction", "epsilon".to_string(), "network target: epsilon, x0, v")?;
    let min_snr = args.value_in("min-snr", 0.0, limits::MIN_SNR_FLAG, "min-SNR-gamma weighting (0: uniform)")?;
    let seed: u64 = args.value("seed", 0, "random seed")?;
    let conditional = args.flag("conditional", "learn p(x | label), for classifier-free guidance")?;
    let label_dropout =
        args.value_in("label-dropout", 0.1, limits::LABEL_DROPOUT, "unlabeled share (--conditional)")?;
    let guidance = args.value_in("guidance", 3.0, SCALE, "guidance scale of the grids (--conditional)")?;
    let sample_every: usize = args.value("sample-every", q(0, 500), "steps between sample grids")?;
    let grid = args.value_in("grid", q(4, 64), limits::GRID_IMAGES, "images in each sample grid")?;
    let sampler_steps = args.value_in("sampler-steps", q(3, 20), SAMPLER_STEPS, "DPM-Solver++ steps of the grids")?;
    let checkpoint_every: usize = args.value("checkpoint-every", q(2, 500), "steps between checkpoints")?;
    let keep: usize = args.value("keep", 3, "checkpoints to keep, newest first (0: all)")?;
    let stop_at: usize = args.value("stop-at", 0, "end this sitting after this step (0: run to the end)")?;
    let eval_every: usize = args.value("eval-every", 0, "steps between evaluations with 05's classifier (0: none)")?;
    let eval_count = args.value_in("eval-count", 128, 2..=10_000, "samples per evaluation")?;
    let classifier_path = args.path("classifier", "out/05/classifier.safetensors", "the judge of --eval-every")?;
    let resume: String = args.value("resume", String::new(), "continue from a checkpoint (or a folder's newest)")?;
    let out = args.out(quick, "03", "output directory")?;
    let profile = args.flag("profile", "print the time spent in each op of the training steps")?;
    let fixed: Vec<&str> = RUN_SETTINGS.iter().copied().filter(|f| args.given(f)).collect();
    args.finish()?;

    let config = TrainConfig {
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
    let start = match (resume.is_empty(), fixed.first()) {
        (true, _) => Start::New(NewRun { preset, conditional, prediction, schedule, timesteps, limit }),
        (false, None) => Start::Resume(resume.into()),
        // The run's settings come from the checkpoint; changing them would not continue the same run.
        (false, Some(flag)) => {
            let problem = "cannot be given with --resume: the checkpoint holds the run's settings";
            return Err(Error::Usage(format!("--{flag} {problem}")));
        }
    };
    let data = if cifar.is_empty() {
        Data::Idx { images: images.into(), labels: labels.into() }
    } else {
        Data::Cifar(cifar.into())
    };
    let mut run = Run::prepare(start, config, &data)?;
    let started = Instant::now();
    // With --eval-every, training runs in sittings that end at each evaluation (see Run::train).
    let evaluator =
        (eval_every > 0).then(|| DuringTraining::new(&classifier_path, &run.images, eval_count, &out)).transpose()?;
    let (ema, report) = run.train(eval_every, |run, ema, step| {
        evaluator.as_ref().map_or(Ok(()), |e| e.evaluate(&run.model, ema, &run.schedule, run.config.prediction, step))
    })?;
    let steps = run.config.steps;
    if report.step < steps {
        let (ms, at) = (report.mean_step_ms, report.checkpoint.display());
        println!("stopped at step {} of {steps} ({ms:.0} ms per step); continue with --resume {at}", report.step);
        return Ok(());
    }
    if report.trained_steps == 0 {
        println!("the run was already at step {} of {steps}: nothing left to train", report.step);
    } else {
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        let (ms, loss, log) = (report.mean_step_ms, report.final_loss, out.join("loss.csv"));
        let wrote = format!("{} and {}", log.display(), report.grid.display());
        println!("trained in {minutes:.1} min ({ms:.0} ms per step), final loss {loss:.4}; wrote {wrote}");
    }
    let weights = report.weights.expect("written at the run's last step");
    println!("wrote {} (the EMA weights and the model's config)", weights.display());
    let strip = run.write_denoising_strip(ema.params(), if quick { 5 } else { 50 })?;
    println!("wrote {} (rows: samples; columns: x_t from noise to digit)", strip.display());
    print_next_steps(&weights, run.model.config.num_classes > 0);
    Ok(())
}

/// What a user runs next on the weights just written (the reading path's examples 04 to 07).
fn print_next_steps(weights: &Path, conditional: bool) {
    let (w, run) = (weights.display(), "  cargo run --release --example");
    println!("\nnext:\n{run} 04_sample -- --checkpoint {w}    # 16 new images");
    if conditional {
        println!("{run} 04_sample -- --checkpoint {w} --label 7    # sevens");
    }
    println!("{run} 05_classifier    # the judge example 06 uses (once)");
    println!("{run} 06_evaluate -- --checkpoint {w}    # Fréchet distance per sampler");
    if conditional {
        println!("{run} 07_guidance -- --checkpoint {w}    # classifier-free guidance");
    }
}
