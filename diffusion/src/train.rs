//! The training loop for image diffusion: AdamW with warmup then cosine decay, gradient clipping, an EMA of
//! the weights (used for sampling), a progress line, the loss of every step in a CSV file, and sample grids.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use autograd::optim::{clip_grad_norm, Adam, Ema, Optimizer};
use autograd::{ParamStore, Tape, Tensor};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::error::{Error, Result};
use crate::objective::{training_loss, Prediction, Weighting};
use crate::plot::image_grid;
use crate::sampler::{sample, Method, SamplerConfig, Spacing};
use crate::schedule::NoiseSchedule;
use crate::unet::UNet;

/// Every knob of a training run.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch: usize,
    pub lr: f32,
    /// Linear warmup from 0 over this many steps, then cosine decay to `min_lr_ratio · lr`.
    pub warmup: usize,
    pub min_lr_ratio: f32,
    pub weight_decay: f32,
    /// Global gradient-norm bound (0 = no clipping).
    pub grad_clip: f32,
    pub ema_decay: f32,
    pub prediction: Prediction,
    pub weighting: Weighting,
    pub seed: u64,
    /// Write a sample grid every this many steps (0 = only at the end).
    pub sample_every: usize,
    /// Images in each sample grid, and the sampler that draws them.
    pub grid_images: usize,
    pub grid_sampler: SamplerConfig,
    pub out_dir: PathBuf,
}

impl TrainConfig {
    /// Learning rate at `step`: linear warmup, then cosine decay.
    /// ```text
    /// lr(s) = lr · s/warmup                                                  s < warmup
    /// lr(s) = lr · (m + (1 − m) · ½(1 + cos(π · (s − warmup)/(steps − warmup))))   otherwise, m = min_lr_ratio
    /// ```
    pub fn lr_at(&self, step: usize) -> f32 {
        if step < self.warmup {
            return self.lr * (step + 1) as f32 / self.warmup as f32;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1) as f32;
        let progress = ((step - self.warmup) as f32 / span).min(1.0);
        let m = self.min_lr_ratio;
        self.lr * (m + (1.0 - m) * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos()))
    }

    /// The sampler used for grids unless configured otherwise: DPM-Solver++(2M), 20 steps, x̂_0 clipped.
    pub fn default_grid_sampler() -> SamplerConfig {
        SamplerConfig { method: Method::DpmSolver2M, steps: 20, spacing: Spacing::Linspace, clip_x0: Some(1.0) }
    }
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct TrainReport {
    pub final_loss: f32,
    pub mean_step_ms: f64,
    pub grid: PathBuf,
}

/// A progress line: step, loss, images/s, ETA. Rewritten in place on a terminal; plain lines otherwise.
struct Progress {
    terminal: bool,
    started: Instant,
    last_print: Instant,
}

impl Progress {
    fn new() -> Progress {
        let now = Instant::now();
        Progress { terminal: std::io::stderr().is_terminal(), started: now, last_print: now }
    }

    fn update(&mut self, step: usize, total: usize, loss: f32, batch: usize, force: bool) {
        let every = if self.terminal { 0.2 } else { 10.0 };
        if !force && self.last_print.elapsed().as_secs_f64() < every {
            return;
        }
        self.last_print = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64();
        let per_step = elapsed / step.max(1) as f64;
        let eta = per_step * (total - step) as f64;
        let line = format!(
            "step {step:>6}/{total}  loss {loss:.4}  {:.1} img/s  elapsed {}  eta {}",
            batch as f64 / per_step,
            clock(elapsed),
            clock(eta)
        );
        if self.terminal {
            eprint!("\r{line}\x1b[K");
            if force {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
    }
}

fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Trains `model` on `images` [N, C, H, W] (values in [−1, 1]) as configured; writes `loss.csv`,
/// `samples_step<k>.png` every `sample_every` steps and `samples.png` at the end into `out_dir`.
/// Returns the EMA parameters (for sampling) and a report.
pub fn train(
    model: &UNet,
    params: &mut ParamStore,
    schedule: &NoiseSchedule,
    images: &Tensor,
    config: &TrainConfig,
) -> Result<(Ema, TrainReport)> {
    std::fs::create_dir_all(&config.out_dir).map_err(|e| Error::io(&config.out_dir, e))?;
    let csv_path = config.out_dir.join("loss.csv");
    let mut csv = BufWriter::new(File::create(&csv_path).map_err(|e| Error::io(&csv_path, e))?);
    writeln!(csv, "step,loss,lr").map_err(|e| Error::io(&csv_path, e))?;

    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut opt = Adam::adamw(config.lr, config.weight_decay);
    let mut ema = Ema::new(params, config.ema_decay);
    let (n, row) = (images.shape()[0], images.numel() / images.shape()[0]);
    let mut item_shape = images.shape().to_vec();
    let mut order: Vec<usize> = (0..n).collect();
    let mut position = n; // forces a shuffle at the first batch
    let mut tape = Tape::new();
    let mut progress = Progress::new();
    let mut last_loss = f32::NAN;
    let started = Instant::now();
    for step in 0..config.steps {
        // The next batch in a fresh permutation each epoch.
        let mut batch = Vec::with_capacity(config.batch * row);
        for _ in 0..config.batch {
            if position == n {
                for i in (1..n).rev() {
                    order.swap(i, rng.random_range(0..=i));
                }
                position = 0;
            }
            let k = order[position];
            position += 1;
            batch.extend_from_slice(&images.data()[k * row..(k + 1) * row]);
        }
        item_shape[0] = config.batch;
        let x_0 = Tensor::from_vec(&item_shape, batch);

        let lr = config.lr_at(step);
        opt.set_lr(lr);
        let loss =
            training_loss(&mut tape, model, params, schedule, config.prediction, config.weighting, &x_0, &mut rng);
        let mut grads = tape.backward(&loss);
        if config.grad_clip > 0.0 {
            clip_grad_norm(&mut grads, config.grad_clip);
        }
        opt.step(params, &grads);
        ema.update(params);
        last_loss = loss.value().item();
        writeln!(csv, "{},{last_loss},{lr}", step + 1).map_err(|e| Error::io(&csv_path, e))?;
        progress.update(step + 1, config.steps, last_loss, config.batch, step + 1 == config.steps);
        if config.sample_every > 0 && (step + 1) % config.sample_every == 0 && step + 1 < config.steps {
            let path = config.out_dir.join(format!("samples_step{}.png", step + 1));
            write_grid(model, ema.params(), schedule, config, &path)?;
        }
    }
    let mean_step_ms = started.elapsed().as_secs_f64() * 1e3 / config.steps.max(1) as f64;
    csv.flush().map_err(|e| Error::io(&csv_path, e))?;
    let grid = config.out_dir.join("samples.png");
    write_grid(model, ema.params(), schedule, config, &grid)?;
    Ok((ema, TrainReport { final_loss: last_loss, mean_step_ms, grid }))
}

/// Samples `grid_images` images with a fixed seed (the same noise every time) and writes them as a grid.
pub fn write_grid(
    model: &UNet,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    config: &TrainConfig,
    path: &Path,
) -> Result<()> {
    let c = &model.config;
    let shape = [config.grid_images, c.image_channels, c.image_size, c.image_size];
    let mut rng = StdRng::seed_from_u64(0x6e1d);
    let images = sample(model, params, schedule, config.prediction, &config.grid_sampler, &shape, &mut rng);
    let cols = (config.grid_images as f64).sqrt().ceil() as usize;
    image_grid(&images, cols, 2).write_png(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unet::UNetConfig;

    fn config(steps: usize, out: &str) -> TrainConfig {
        TrainConfig {
            steps,
            batch: 8,
            lr: 2e-3,
            warmup: 10,
            min_lr_ratio: 0.0,
            weight_decay: 0.0,
            grad_clip: 1.0,
            ema_decay: 0.9,
            prediction: Prediction::Epsilon,
            weighting: Weighting::Uniform,
            seed: 1,
            sample_every: 0,
            grid_images: 4,
            grid_sampler: SamplerConfig {
                method: Method::DpmSolver2M,
                steps: 5,
                spacing: Spacing::Linspace,
                clip_x0: Some(1.0),
            },
            out_dir: std::env::temp_dir().join(format!("train-test-{}-{out}", std::process::id())),
        }
    }

    #[test]
    fn warmup_then_cosine() {
        let c = TrainConfig { steps: 110, ..config(110, "lr") };
        assert!((c.lr_at(0) - 2e-4).abs() < 1e-9);
        assert!((c.lr_at(9) - 2e-3).abs() < 1e-9);
        assert!((c.lr_at(10) - 2e-3).abs() < 1e-9);
        assert!((c.lr_at(60) - 1e-3).abs() < 1e-6); // halfway through the decay
        assert!(c.lr_at(109) < 1e-5);
    }

    #[test]
    fn tiny_unet_training_lowers_the_loss_and_writes_its_outputs() {
        // A batch of 8×8 "images": a bright square on a dark background, with a random position.
        let mut rng = StdRng::seed_from_u64(5);
        let mut data = vec![-1.0f32; 64 * 64];
        for i in 0..64 {
            let (y, x) = (rng.random_range(0..5usize), rng.random_range(0..5usize));
            for dy in 0..3 {
                for dx in 0..3 {
                    data[i * 64 + (y + dy) * 8 + x + dx] = 1.0;
                }
            }
        }
        let images = Tensor::from_vec(&[64, 1, 8, 8], data);
        let mut params = ParamStore::new();
        let model = UNet::new(UNetConfig::tiny(), &mut params, 0);
        let schedule = NoiseSchedule::linear(200, 1e-4, 0.04);
        let cfg = config(300, "tiny");
        let csv = cfg.out_dir.join("loss.csv");
        let (_, report) = train(&model, &mut params, &schedule, &images, &cfg).unwrap();
        let losses: Vec<f32> = std::fs::read_to_string(&csv)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(losses.len(), 300);
        let first: f32 = losses[..30].iter().sum::<f32>() / 30.0;
        let last: f32 = losses[270..].iter().sum::<f32>() / 30.0;
        assert!(last < 0.6 * first, "loss {first} → {last}");
        assert!(report.grid.exists());
        std::fs::remove_dir_all(&cfg.out_dir).unwrap();
    }
}
