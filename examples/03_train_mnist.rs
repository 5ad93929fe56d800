//! # 03 — Train a U-Net on handwritten digits (the main job)
//!
//! Trains the `small` U-Net (2.27 M parameters) on the 5,000 MNIST digits in `data/mnist5k` by flow
//! matching (the network learns the velocity ε − x₀ of the straight path from digit to noise; timesteps
//! drawn logit-normal) with AdamW, warmup and cosine decay, clipping and an EMA of the weights: the recipe
//! the README's search chose (2,250 steps of 64 images, each step two passes of a batch of 32 whose
//! gradients are averaged; under 20 minutes on 2 cores). Writes into `--out` (`out/03`): `loss.csv`,
//! sample grids, `samples.png`, `denoising_strip.png` (noise to digit), `model.safetensors` (the EMA weights
//! and the model's config) and `checkpoints/`, from which `--resume` continues exactly. What a run is, new or
//! resumed, lives in `diffusion::training::run`; the loop in `diffusion::training::train`.
//! Ahead of the reading path: the grids are drawn with SDE-DPM-Solver++(2M) (example 04), `--conditional` trains
//! for classifier-free guidance (example 07), `--eval-every` scores samples as example 06 does.
//!
//! ```text
//! cargo run --release --example 03_train_mnist                  # 11 to 20 minutes on 2 cores
//! cargo run --release --example 03_train_mnist -- --quick       # seconds, for CI
//! cargo run --release --example 03_train_mnist -- --resume out/03/checkpoints   # continue from the newest
//! cargo run --release --example 03_train_mnist -- --cifar DIR --preset rgb32      # CIFAR-10 (binary version)
//! cargo run --release --example 03_train_mnist -- --objective diffusion --out out/03e   # ε-prediction DDPM
//! cargo run --release --example 03_train_mnist -- --prediction v --out out/03v          # v-prediction
//! ```

use std::path::Path;
use std::time::Instant;

use diffusion::cli::{self, exit_on_error};
use diffusion::data::idx::shipped_mnist_dir;
use diffusion::eval::evaluate::DuringTraining;
use diffusion::process::objective::Weighting;
use diffusion::sampling::sampler::SamplerConfig;
use diffusion::training::flags::TrainFlags;
use diffusion::training::run::{Data, NewRun, Run, Start, RUN_SETTINGS};
use diffusion::training::train::TrainConfig;
use diffusion::{Error, Result};

fn main() {
    exit_on_error(run);
}

fn run() -> Result<()> {
    // The flags and their --help live in diffusion::training::flags.
    let (flags, given) = cli::parse_given::<TrainFlags>(std::env::args_os())?;
    let c = &flags.common;
    let (quick, out) = (c.quick, c.out("03"));
    let mnist = |file: &str| shipped_mnist_dir().join(file);
    let (steps, batch) = (flags.steps.unwrap_or(c.q(2250, 3)), flags.batch.unwrap_or(c.q(32, 4)));
    let min_snr = flags.min_snr;
    let (prediction, schedule, time_sampling) = flags.objective(&given)?;
    let config = TrainConfig {
        accumulate: flags.accumulate.unwrap_or(c.q(2, 1)),
        lr: flags.lr,
        warmup: flags.warmup.unwrap_or(c.q(200, 1)),
        weight_decay: flags.weight_decay,
        grad_clip: flags.grad_clip,
        ema_decay: flags.ema,
        weighting: if min_snr > 0.0 { Weighting::MinSnr(min_snr) } else { Weighting::Uniform },
        time_sampling,
        seed: c.seed,
        sample_every: flags.sample_every.unwrap_or(c.q(500, 0)),
        grid_images: flags.grid.unwrap_or(c.q(64, 4)),
        grid_sampler: SamplerConfig {
            steps: flags.sampler_steps.unwrap_or(c.q(20, 3)),
            ..TrainConfig::default_grid_sampler()
        },
        checkpoint_every: flags.checkpoint_every.unwrap_or(c.q(500, 2)),
        keep_checkpoints: flags.keep,
        stop_at: (flags.stop_at > 0).then_some(flags.stop_at),
        label_dropout: flags.label_dropout,
        grid_guidance: flags.guidance,
        profile: flags.profile,
        ..TrainConfig::new(steps, batch, out.clone())
    };
    let fixed = RUN_SETTINGS.iter().find(|f| given.contains(f));
    let start = match (&flags.resume, fixed) {
        (None, _) => Start::New(NewRun {
            preset: flags.preset,
            conditional: flags.conditional,
            prediction,
            schedule,
            timesteps: flags.timesteps,
            limit: flags.limit.unwrap_or(c.q(0, 64)),
        }),
        (Some(resume), None) => Start::Resume(resume.clone()),
        // The run's settings come from the checkpoint; changing them would not continue the same run.
        (Some(_), Some(flag)) => {
            let problem = "cannot be given with --resume: the checkpoint holds the run's settings";
            return Err(Error::Usage(format!("--{flag} {problem}")));
        }
    };
    let data = match flags.cifar {
        None => Data::Idx {
            images: flags.images.unwrap_or_else(|| mnist("images-idx3-ubyte.gz")),
            labels: flags.labels.unwrap_or_else(|| mnist("labels-idx1-ubyte.gz")),
        },
        Some(dir) => Data::Cifar(dir),
    };
    let mut run = Run::prepare(start, config, &data)?;
    let started = Instant::now();
    // With --eval-every, training runs in sittings that end at each evaluation (see Run::train).
    let (eval_every, judge) = (flags.eval_every, &flags.classifier);
    let evaluator =
        (eval_every > 0).then(|| DuringTraining::new(judge, &run.images, flags.eval_count, &out)).transpose()?;
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
        let grid = report.grid.as_ref().map_or(String::new(), |g| format!(" and {}", g.display()));
        let wrote = format!("{}{grid}", log.display());
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
    println!("{run} 06_evaluate -- --checkpoint {w} --samplers dpm,dpm-sde --nfe 10,20 --spacing linspace    # Fréchet distance");
    if conditional {
        println!("{run} 07_guidance -- --checkpoint {w}    # classifier-free guidance");
    }
}
