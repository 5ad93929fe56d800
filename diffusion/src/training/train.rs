//! The training loop for image diffusion: AdamW with warmup then cosine decay, gradient clipping, an EMA of
//! the weights (used for sampling), a progress line, the loss of every step in a CSV file, and sample grids.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use autograd::optim::{clip_grad_norm, Adam, Ema, Optimizer};
use autograd::{ParamStore, Tape, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::data::order::{epoch_order, keyed_rng, Stream};
use crate::error::{check_range, Error, Result};
use crate::metadata::Fields;
use crate::model::guidance::{Conditional, Guided};
use crate::model::unet::{UNet, UNetConfig};
use crate::plot::image_grid;
use crate::process::objective::{training_loss, Prediction, Weighting};
use crate::process::schedule::NoiseSchedule;
use crate::sampling::sampler::{sample, Method, SamplerConfig, Spacing};
use crate::training::checkpoint::{save_rotating, save_trained, Checkpoint};

/// The range of every number of a [`TrainConfig`], checked by [`TrainConfig::validate`] and by the flags that
/// set them, whatever the config came from (flags or a checkpoint).
pub mod limits {
    use std::ops::RangeInclusive;

    pub const STEPS: RangeInclusive<usize> = 1..=100_000_000;
    /// Also bounded by the memory it takes ([`crate::model::unet::UNetConfig::check_memory`]).
    pub const BATCH: RangeInclusive<usize> = 1..=65_536;
    /// Positive and finite; a huge one diverges, and training says so at the step it does.
    pub const LR: RangeInclusive<f32> = f32::MIN_POSITIVE..=f32::MAX;
    pub const MIN_LR_RATIO: RangeInclusive<f32> = 0.0..=1.0;
    pub const WEIGHT_DECAY: RangeInclusive<f32> = 0.0..=1e6;
    /// 0 turns clipping off.
    pub const GRAD_CLIP: RangeInclusive<f32> = 0.0..=f32::MAX;
    /// Below 1: a decay of 1 would never move the average from the initial weights.
    pub const EMA_DECAY: RangeInclusive<f32> = 0.0..=0.999_999;
    /// min-SNR-γ's γ.
    pub const MIN_SNR_GAMMA: RangeInclusive<f64> = 1e-6..=1e6;
    /// The command line's γ, where 0 means uniform weighting.
    pub const MIN_SNR_FLAG: RangeInclusive<f64> = 0.0..=1e6;
    pub const WARMUP: RangeInclusive<usize> = 0..=100_000_000;
    pub const LABEL_DROPOUT: RangeInclusive<f32> = 0.0..=1.0;
    pub const GRID_IMAGES: RangeInclusive<usize> = 1..=1024;
}

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
    /// Write a checkpoint into `out_dir/checkpoints` every this many steps (0 = only where training stops).
    pub checkpoint_every: usize,
    /// Keep the newest this many checkpoints (0 = all).
    pub keep_checkpoints: usize,
    /// Stop after this many steps of the `steps` schedule, with a checkpoint (to train in sittings).
    pub stop_at: Option<usize>,
    /// Probability of training a labeled example as unlabeled (classifier-free guidance; class-conditional
    /// models only).
    pub label_dropout: f32,
    /// Guidance scale of the sample grids of a class-conditional model (row i of a grid is class i).
    pub grid_guidance: f32,
    /// Stored in every checkpoint beside the training settings and the model config: what else it takes to
    /// rebuild the run (the schedule, the data).
    pub run_metadata: BTreeMap<String, String>,
    /// Time every op of every step ([`Tape::enable_profile`]) and return the table in the report.
    pub profile: bool,
}

impl TrainConfig {
    /// A run with the usual settings (AdamW at 1e-3 without weight decay, 200 warmup steps, clipping at 1,
    /// EMA 0.999, ε-prediction, grids with DPM-Solver++ 20 steps, a checkpoint every 500 steps, keep 3).
    pub fn new(steps: usize, batch: usize, out_dir: impl Into<PathBuf>) -> TrainConfig {
        TrainConfig {
            steps,
            batch,
            lr: 1e-3,
            warmup: 200,
            min_lr_ratio: 0.0,
            weight_decay: 0.0,
            grad_clip: 1.0,
            ema_decay: 0.999,
            prediction: Prediction::Epsilon,
            weighting: Weighting::Uniform,
            seed: 0,
            sample_every: 0,
            grid_images: 64,
            grid_sampler: TrainConfig::default_grid_sampler(),
            out_dir: out_dir.into(),
            checkpoint_every: 500,
            keep_checkpoints: 3,
            stop_at: None,
            label_dropout: 0.1,
            grid_guidance: 3.0,
            run_metadata: BTreeMap::new(),
            profile: false,
        }
    }

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

    /// The settings that define the optimization (everything that changes the numbers), as `train.*`
    /// metadata entries; outputs (grids, checkpoints, where to stop) are not among them.
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let weighting = match self.weighting {
            Weighting::Uniform => "uniform".to_string(),
            Weighting::MinSnr(gamma) => format!("min-snr:{gamma}"),
        };
        [
            ("steps", self.steps.to_string()),
            ("batch", self.batch.to_string()),
            ("lr", self.lr.to_string()),
            ("warmup", self.warmup.to_string()),
            ("min_lr_ratio", self.min_lr_ratio.to_string()),
            ("weight_decay", self.weight_decay.to_string()),
            ("grad_clip", self.grad_clip.to_string()),
            ("ema_decay", self.ema_decay.to_string()),
            ("prediction", self.prediction.name().to_string()),
            ("weighting", weighting),
            ("seed", self.seed.to_string()),
            ("label_dropout", self.label_dropout.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("train.{k}"), v))
        .collect()
    }

    /// What every file of a run records beside its tensors, checkpoints and the final weights alike: the
    /// optimization settings (`train.*`), the model config (`unet.*`) and the run's own entries
    /// ([`TrainConfig::run_metadata`]: the schedule, the data).
    /// [`crate::training::checkpoint::Trained::load`] rebuilds the model from it.
    pub fn record(&self, model: &UNetConfig) -> BTreeMap<String, String> {
        self.to_metadata().into_iter().chain(model.to_metadata()).chain(self.run_metadata.clone()).collect()
    }

    /// Whether this run can be trained with `model` on a schedule of `timesteps` steps: every number within
    /// [`limits`], the grid sampler within the schedule, and the memory the
    /// batch and the grid imply within [`crate::model::unet::limits::MEMORY_BYTES`]. Call with a validated model.
    pub fn validate(&self, model: &UNetConfig, timesteps: usize) -> std::result::Result<(), String> {
        check_range("steps", &self.steps, &limits::STEPS)?;
        check_range("batch", &self.batch, &limits::BATCH)?;
        check_range("lr", &self.lr, &limits::LR)?;
        check_range("warmup", &self.warmup, &limits::WARMUP)?;
        check_range("min_lr_ratio", &self.min_lr_ratio, &limits::MIN_LR_RATIO)?;
        check_range("weight_decay", &self.weight_decay, &limits::WEIGHT_DECAY)?;
        check_range("grad_clip", &self.grad_clip, &limits::GRAD_CLIP)?;
        check_range("ema_decay", &self.ema_decay, &limits::EMA_DECAY)?;
        if let Weighting::MinSnr(gamma) = self.weighting {
            check_range("min-SNR gamma", &gamma, &limits::MIN_SNR_GAMMA)?;
        }
        check_range("label_dropout", &self.label_dropout, &limits::LABEL_DROPOUT)?;
        check_range("grid images", &self.grid_images, &limits::GRID_IMAGES)?;
        check_range("grid sampler steps", &self.grid_sampler.steps, &(1..=timesteps))?;
        check_range("grid guidance", &self.grid_guidance, &crate::model::guidance::SCALE)?;
        if let Some(stop) = self.stop_at {
            check_range("stop_at", &stop, &(1..=self.steps))?;
        }
        model.check_memory(self.batch, true)?;
        model.check_memory(self.grid_images, false)
    }

    /// Replaces the optimization settings with those stored by [`TrainConfig::to_metadata`].
    pub fn set_from_metadata(&mut self, fields: &Fields) -> Result<()> {
        self.steps = fields.get("train.steps")?;
        self.batch = fields.get("train.batch")?;
        self.lr = fields.get("train.lr")?;
        self.warmup = fields.get("train.warmup")?;
        self.min_lr_ratio = fields.get("train.min_lr_ratio")?;
        self.weight_decay = fields.get("train.weight_decay")?;
        self.grad_clip = fields.get("train.grad_clip")?;
        self.ema_decay = fields.get("train.ema_decay")?;
        self.prediction = fields.named("train.prediction", Prediction::from_name)?;
        self.weighting = fields.named("train.weighting", |w| match w.strip_prefix("min-snr:") {
            Some(gamma) => gamma.parse().ok().map(Weighting::MinSnr),
            None => (w == "uniform").then_some(Weighting::Uniform),
        })?;
        self.seed = fields.get("train.seed")?;
        if fields.text("train.label_dropout").is_ok() {
            self.label_dropout = fields.get("train.label_dropout")?;
        }
        Ok(())
    }
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// The step training stopped at (`steps`, or `stop_at`).
    pub step: usize,
    /// Steps taken in this call (0 when resuming a checkpoint of the step it was to stop at).
    pub trained_steps: usize,
    /// The loss of the last step taken in this call (NaN if it took none).
    pub final_loss: f32,
    pub mean_step_ms: f64,
    pub grid: PathBuf,
    /// The checkpoint written where training stopped.
    pub checkpoint: PathBuf,
    /// `out_dir/model.safetensors`, the EMA weights with the run's [`TrainConfig::record`], written when
    /// the run reached its last step (not when it stopped early at `stop_at`).
    pub weights: Option<PathBuf>,
    /// Time per op over the run's training steps, largest first (with [`TrainConfig::profile`]).
    pub profile: Option<String>,
}

/// The training progress: step, loss, images/s, elapsed and ETA. On a terminal an `indicatif` bar,
/// redrawn in place; otherwise (a log file, CI) a plain line every 10 s and at the end.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    first_step: usize,
    started: Instant,
    last_print: Instant,
}

impl Progress {
    fn new(first_step: usize, total: usize) -> Progress {
        let now = Instant::now();
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = indicatif::ProgressStyle::with_template("{bar:30} step {pos:>6}/{len}  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            let bar = indicatif::ProgressBar::new(total as u64).with_style(style);
            bar.set_position(first_step as u64);
            bar
        });
        Progress { bar, first_step, started: now, last_print: now }
    }

    fn update(&mut self, step: usize, total: usize, loss: f32, batch: usize, last: bool) {
        let every = if self.bar.is_some() { 0.2 } else { 10.0 };
        if !last && self.last_print.elapsed().as_secs_f64() < every {
            return;
        }
        self.last_print = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64();
        let per_step = elapsed / (step - self.first_step).max(1) as f64;
        let eta = per_step * (total - step) as f64;
        let rate = batch as f64 / per_step;
        let status = format!("loss {loss:.4}  {rate:.1} img/s  elapsed {}  eta {}", clock(elapsed), clock(eta));
        match &self.bar {
            Some(bar) => {
                bar.set_position(step as u64);
                bar.set_message(status);
                if last {
                    bar.abandon();
                }
            }
            None => eprintln!("step {step:>6}/{total}  {status}"),
        }
    }
}

fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Trains `model` on `images` [N, C, H, W] (values in [−1, 1]) as configured, from scratch or from
/// `resume`; writes `loss.csv`, `samples_step<k>.png` every `sample_every` steps, `samples.png` and
/// `model.safetensors` (the EMA weights, which [`crate::training::checkpoint::Trained::load`] opens) at the
/// end, and checkpoints into `out_dir/checkpoints`. Returns the EMA parameters (for sampling) and a report.
///
/// A run resumed from the checkpoint of step k continues exactly as the uninterrupted run would have: the
/// parameters, the EMA, Adam's moments, the data order and every random draw are restored or recomputed
/// from (seed, step). A loss, gradient or parameter that is NaN or infinite stops training with
/// [`Error::Diverged`], naming the step and the first parameter or activation that went non-finite; the
/// checkpoints written before are kept.
pub fn train(
    model: &UNet,
    params: &mut ParamStore,
    schedule: &NoiseSchedule,
    images: &Tensor,
    labels: Option<&[usize]>,
    config: &TrainConfig,
    resume: Option<Checkpoint>,
) -> Result<(Ema, TrainReport)> {
    let conditional = model.config.num_classes > 0;
    match labels {
        None if conditional => {
            return Err(Error::Usage("a class-conditional model needs labels to train on".into()));
        }
        Some(l) if l.len() != images.shape()[0] => {
            return Err(Error::Usage(format!("{} labels for {} images", l.len(), images.shape()[0])));
        }
        Some(l) if conditional && l.iter().any(|&c| c >= model.config.num_classes) => {
            return Err(Error::Usage(format!("a label is not below num_classes = {}", model.config.num_classes)));
        }
        _ => {}
    }
    config.validate(&model.config, schedule.steps()).map_err(Error::Usage)?;
    let labels = labels.filter(|_| conditional);
    std::fs::create_dir_all(&config.out_dir).map_err(|e| Error::io(&config.out_dir, e))?;
    let checkpoint_dir = config.out_dir.join("checkpoints");
    std::fs::create_dir_all(&checkpoint_dir).map_err(|e| Error::io(&checkpoint_dir, e))?;
    let mut opt = Adam::adamw(config.lr, config.weight_decay);
    let (start, mut epoch, mut position, mut ema) = match resume {
        None => (0, 0, 0, Ema::new(params, config.ema_decay)),
        Some(c) => {
            c.fits(config.steps, images.shape()[0])
                .map_err(|problem| Error::Usage(format!("cannot resume: {problem}")))?;
            *params = c.params;
            opt.set_state(c.adam);
            (c.step as usize, c.epoch, c.position as usize, Ema::from_parts(c.ema, config.ema_decay, c.ema_updates))
        }
    };
    let end = config.stop_at.unwrap_or(config.steps).min(config.steps);
    let csv_path = config.out_dir.join("loss.csv");
    let mut csv = loss_csv(&csv_path, start)?;

    let (n, row) = (images.shape()[0], images.numel() / images.shape()[0]);
    let mut item_shape = images.shape().to_vec();
    item_shape[0] = config.batch;
    let mut order = epoch_order(n, config.seed, epoch);
    let mut tape = Tape::new();
    if config.profile {
        tape.enable_profile();
    }
    let mut progress = Progress::new(start, config.steps);
    let mut last_loss = f32::NAN;
    let mut last_checkpoint: Option<PathBuf> = None;
    let started = Instant::now();
    // The other threads keep polling for work between the step's parallel loops (see
    // `autograd::cpu::with_spinning_workers`): the same result, less time lost waking them.
    autograd::cpu::with_spinning_workers(|| -> Result<()> {
        for step in start..end {
            // The next batch: items in this epoch's order, moving to the next epoch's order at the end.
            let mut batch = Vec::with_capacity(config.batch * row);
            let mut batch_labels = Vec::with_capacity(config.batch);
            for _ in 0..config.batch {
                if position == n {
                    epoch += 1;
                    order = epoch_order(n, config.seed, epoch);
                    position = 0;
                }
                let k = order[position];
                position += 1;
                batch.extend_from_slice(&images.data()[k * row..(k + 1) * row]);
                batch_labels.extend(labels.map(|l| l[k]));
            }
            let x_0 = Tensor::from_vec(&item_shape, batch);

            let lr = config.lr_at(step);
            opt.set_lr(lr);
            let mut rng = keyed_rng(config.seed, Stream::Step, step as u64);
            let denoiser = Conditional {
                model,
                labels: labels.map(|_| batch_labels.as_slice()),
                label_dropout: config.label_dropout,
            };
            tape.profile_mark("(outside the tape: batch, logs)");
            let loss = training_loss(
                &mut tape,
                &denoiser,
                params,
                schedule,
                config.prediction,
                config.weighting,
                &x_0,
                &mut rng,
            );
            last_loss = loss.value().item();
            let diverged = |problem: String| {
                let kept = match &last_checkpoint {
                    Some(p) => format!("the last good checkpoint is {}", p.display()),
                    None => "no checkpoint was written in this run".to_string(),
                };
                Error::Diverged(format!("step {}: {problem}; {kept}", step + 1))
            };
            if !last_loss.is_finite() {
                tape.clear();
                return Err(diverged(explain_non_finite_loss(
                    &denoiser, params, schedule, config, &x_0, step, last_loss,
                )));
            }
            let mut grads = tape.backward(&loss);
            // Clipping computes the global norm anyway, and it is finite exactly when every gradient is; without
            // clipping, look at each.
            tape.profile_mark("(outside the tape: gradients out of backward)");
            let finite = if config.grad_clip > 0.0 {
                clip_grad_norm(&mut grads, config.grad_clip).is_finite()
            } else {
                grads.params().all(|(_, g)| g.all_finite())
            };
            if !finite {
                let what = match grads.params().find(|(_, g)| !g.all_finite()) {
                    Some((id, _)) => format!("the gradient of parameter {} is not finite", params.name(id)),
                    None => "the global gradient norm overflows f32".to_string(),
                };
                return Err(diverged(format!("the loss is {last_loss} but {what}")));
            }
            tape.profile_mark("(outside the tape: gradient clipping)");
            opt.step(params, &grads);
            tape.profile_mark("(outside the tape: AdamW)");
            ema.update(params);
            tape.profile_mark("(outside the tape: EMA)");
            writeln!(csv, "{},{last_loss},{lr}", step + 1).map_err(|e| Error::io(&csv_path, e))?;
            progress.update(step + 1, config.steps, last_loss, config.batch, step + 1 == end);
            if config.sample_every > 0 && (step + 1) % config.sample_every == 0 && step + 1 < config.steps {
                let path = config.out_dir.join(format!("samples_step{}.png", step + 1));
                write_grid(model, ema.params(), schedule, config, &path)?;
            }
            let periodic = config.checkpoint_every > 0 && (step + 1) % config.checkpoint_every == 0;
            if periodic || step + 1 == end {
                // The csv must hold every step the checkpoint holds before the checkpoint exists.
                csv.flush().map_err(|e| Error::io(&csv_path, e))?;
                let checkpoint = Checkpoint {
                    step: step as u64 + 1,
                    epoch,
                    position: position as u64,
                    params: params.clone(),
                    ema: ema.params().clone(),
                    ema_updates: ema.updates(),
                    adam: opt.state().to_vec(),
                    config: config.record(&model.config),
                };
                last_checkpoint = Some(save_rotating(&checkpoint_dir, &checkpoint, config.keep_checkpoints)?);
            }
        }
        Ok(())
    })?;
    let mean_step_ms = started.elapsed().as_secs_f64() * 1e3 / (end - start).max(1) as f64;
    let profile = config.profile.then(|| tape.profile_report());
    csv.flush().map_err(|e| Error::io(&csv_path, e))?;
    let grid =
        config.out_dir.join(if end == config.steps { "samples.png".into() } else { format!("samples_step{end}.png") });
    write_grid(model, ema.params(), schedule, config, &grid)?;
    let checkpoint = last_checkpoint.unwrap_or_else(|| checkpoint_dir.join(format!("step-{end:08}.safetensors")));
    let weights = config.out_dir.join("model.safetensors");
    let weights = (end == config.steps).then_some(weights);
    if let Some(path) = &weights {
        save_trained(path, ema.params(), &config.record(&model.config))?;
    }
    let trained_steps = end.saturating_sub(start);
    Ok((
        ema,
        TrainReport {
            step: end,
            trained_steps,
            final_loss: last_loss,
            mean_step_ms,
            grid,
            checkpoint,
            weights,
            profile,
        },
    ))
}

/// Opens the loss log for appending after step `start`: a new file with its header when starting from
/// scratch; when resuming, the rows up to `start` are kept and any later ones (written after the checkpoint
/// by the interrupted run) dropped, so the file reads as one uninterrupted run.
fn loss_csv(path: &Path, start: usize) -> Result<BufWriter<File>> {
    let mut kept = String::from("step,loss,lr\n");
    if start > 0 {
        if let Ok(previous) = std::fs::read_to_string(path) {
            for line in previous.lines().skip(1) {
                match line.split(',').next().and_then(|s| s.parse::<usize>().ok()) {
                    Some(s) if s <= start => {
                        kept.push_str(line);
                        kept.push('\n');
                    }
                    _ => break,
                }
            }
        }
    }
    let mut file = BufWriter::new(File::create(path).map_err(|e| Error::io(path, e))?);
    file.write_all(kept.as_bytes()).map_err(|e| Error::io(path, e))?;
    Ok(file)
}

/// Why the loss of `step` is not finite: the first parameter that is not, or else the first activation
/// that is not, found by running the step's forward pass again (same batch, same random draws) with the
/// tape's finite check on.
fn explain_non_finite_loss(
    model: &Conditional,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    config: &TrainConfig,
    x_0: &Tensor,
    step: usize,
    loss: f32,
) -> String {
    if let Some((_, name, _)) = params.iter().find(|(_, _, t)| !t.all_finite()) {
        return format!("the loss is {loss}; parameter {name} is not finite");
    }
    if !x_0.all_finite() {
        return format!("the loss is {loss}; the training batch holds non-finite pixels");
    }
    let mut tape = Tape::new();
    tape.enable_finite_check();
    let mut rng = keyed_rng(config.seed, Stream::Step, step as u64);
    let _ = training_loss(&mut tape, model, params, schedule, config.prediction, config.weighting, x_0, &mut rng);
    let Some(first) = tape.first_non_finite() else { return format!("the loss is {loss}") };
    let layer = match first.params.first() {
        Some(&id) => format!(" of {}", params.name(id).rsplit_once('.').map_or(params.name(id), |(layer, _)| layer)),
        None => String::new(),
    };
    format!(
        "the loss is {loss}; the first non-finite activation is the output of op #{} ({}{layer}), shape {:?} from \
         inputs {:?}",
        first.op_index, first.op, first.shape, first.input_shapes
    )
}

/// Samples `grid_images` images with a fixed seed (the same noise every time) and writes them as a grid; a
/// class-conditional model draws class i in row i (⌊grid_images / classes⌋ of each), guided with
/// `grid_guidance`.
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
    // A conditional model: whole rows only, `cols` samples of each class.
    let (images, cols) = if let Some(per_class) = config.grid_images.checked_div(c.num_classes) {
        let cols = per_class.max(1);
        let labels: Vec<usize> = (0..cols * c.num_classes).map(|i| i / cols).collect();
        let shape = [labels.len(), shape[1], shape[2], shape[3]];
        let guided = Guided { model, labels, scale: config.grid_guidance };
        (sample(&guided, params, schedule, config.prediction, &config.grid_sampler, &shape, &mut rng), cols)
    } else {
        let cols = (config.grid_images as f64).sqrt().ceil() as usize;
        (sample(model, params, schedule, config.prediction, &config.grid_sampler, &shape, &mut rng), cols)
    };
    image_grid(&images, cols, 2).write_png(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::unet::UNetConfig;
    use rand::RngExt;

    fn config(steps: usize, out: &str) -> TrainConfig {
        TrainConfig {
            lr: 2e-3,
            warmup: 10,
            ema_decay: 0.9,
            seed: 1,
            grid_images: 4,
            grid_sampler: SamplerConfig { steps: 5, ..TrainConfig::default_grid_sampler() },
            checkpoint_every: 0,
            ..TrainConfig::new(steps, 8, std::env::temp_dir().join(format!("train-test-{}-{out}", std::process::id())))
        }
    }

    /// `count` 8×8 "images": a bright 3×3 square on a dark background at a random position.
    fn squares(count: usize) -> Tensor {
        let mut rng = StdRng::seed_from_u64(5);
        let mut data = vec![-1.0f32; count * 64];
        for i in 0..count {
            let (y, x) = (rng.random_range(0..5usize), rng.random_range(0..5usize));
            for dy in 0..3 {
                for dx in 0..3 {
                    data[i * 64 + (y + dy) * 8 + x + dx] = 1.0;
                }
            }
        }
        Tensor::from_vec(&[count, 1, 8, 8], data)
    }

    fn losses(out_dir: &Path) -> Vec<f32> {
        std::fs::read_to_string(out_dir.join("loss.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
            .collect()
    }

    fn bits(store: &ParamStore) -> Vec<u32> {
        store.iter().flat_map(|(_, _, t)| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>()).collect()
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
        let images = squares(64);
        let mut params = ParamStore::new();
        let model = UNet::new(UNetConfig::tiny(), &mut params, 0);
        let schedule = NoiseSchedule::linear(200, 1e-4, 0.04);
        let cfg = config(300, "tiny");
        let (_, report) = train(&model, &mut params, &schedule, &images, None, &cfg, None).unwrap();
        let losses = losses(&cfg.out_dir);
        assert_eq!(losses.len(), 300);
        let first: f32 = losses[..30].iter().sum::<f32>() / 30.0;
        let last: f32 = losses[270..].iter().sum::<f32>() / 30.0;
        assert!(last < 0.6 * first, "loss {first} → {last}");
        assert!(report.grid.exists() && report.checkpoint.exists());
        std::fs::remove_dir_all(&cfg.out_dir).unwrap();
    }

    /// N steps straight, against N/2 steps, a stop, a resume from the checkpoint, and N/2 more: the same
    /// losses and the same parameters, EMA and Adam moments, bit for bit. Dropout is on, and 20 images in
    /// batches of 8 make batches straddle epochs, so the random draws and the data order are both tested.
    #[test]
    fn a_resumed_run_equals_the_uninterrupted_run_bit_for_bit() {
        let images = squares(20);
        let net = UNetConfig { dropout: 0.1, ..UNetConfig::tiny() };
        let schedule = NoiseSchedule::linear(200, 1e-4, 0.04);
        let steps = 12;

        let straight = config(steps, "straight");
        let mut p_straight = ParamStore::new();
        let model = UNet::new(net.clone(), &mut p_straight, 3);
        let (ema_straight, _) = train(&model, &mut p_straight, &schedule, &images, None, &straight, None).unwrap();

        let sittings = TrainConfig { stop_at: Some(steps / 2), ..config(steps, "sittings") };
        let mut p_first = ParamStore::new();
        let model = UNet::new(net, &mut p_first, 3);
        let (_, first) = train(&model, &mut p_first, &schedule, &images, None, &sittings, None).unwrap();
        assert_eq!(first.step, steps / 2);
        // A fresh model (different initial weights) receives everything from the checkpoint.
        let mut p_resumed = ParamStore::new();
        let model = UNet::new(model.config.clone(), &mut p_resumed, 99);
        let checkpoint = Checkpoint::load(&first.checkpoint, &p_resumed).unwrap();
        assert_eq!((checkpoint.step, checkpoint.epoch, checkpoint.position), (6, 2, 8), "48 items = 2 epochs + 8");
        let resume = TrainConfig { stop_at: None, ..sittings.clone() };
        let (ema_resumed, report) =
            train(&model, &mut p_resumed, &schedule, &images, None, &resume, Some(checkpoint)).unwrap();
        assert_eq!(report.step, steps);

        assert_eq!(losses(&straight.out_dir), losses(&sittings.out_dir), "loss.csv holds the same rows");
        assert_eq!(losses(&straight.out_dir).len(), steps);
        assert!(bits(&p_straight) == bits(&p_resumed), "parameters differ");
        assert!(bits(ema_straight.params()) == bits(ema_resumed.params()), "EMA differs");
        let last = |dir: &Path| Checkpoint::load(dir.join("checkpoints/step-00000012.safetensors"), &p_straight);
        let (a, b) = (last(&straight.out_dir).unwrap(), last(&sittings.out_dir).unwrap());
        assert!(a.adam == b.adam && a.ema_updates == b.ema_updates && a.position == b.position);
        for dir in [&straight.out_dir, &sittings.out_dir] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn training_is_bit_identical_on_one_and_two_threads() {
        let images = squares(24);
        let schedule = NoiseSchedule::linear(200, 1e-4, 0.04);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let cfg = config(6, &format!("threads{threads}"));
                let mut params = ParamStore::new();
                let model = UNet::new(UNetConfig { dropout: 0.1, ..UNetConfig::tiny() }, &mut params, 4);
                train(&model, &mut params, &schedule, &images, None, &cfg, None).unwrap();
                let losses: Vec<u32> = losses(&cfg.out_dir).iter().map(|l| l.to_bits()).collect();
                std::fs::remove_dir_all(&cfg.out_dir).unwrap();
                (bits(&params), losses)
            })
        };
        let (one, two) = (run(1), run(2));
        assert!(one == two, "1 and 2 threads disagree");
    }

    #[test]
    fn a_class_conditional_model_trains_on_labels_and_refuses_to_train_without() {
        let images = squares(16);
        let labels: Vec<usize> = (0..16).map(|i| i % 3).collect();
        let schedule = NoiseSchedule::linear(200, 1e-4, 0.04);
        let cfg = TrainConfig { grid_images: 6, ..config(4, "conditional") };
        let mut params = ParamStore::new();
        let model = UNet::new(UNetConfig { num_classes: 3, ..UNetConfig::tiny() }, &mut params, 0);
        let before = params.get(params.find("class_embedding.weight").unwrap()).clone();
        let err = train(&model, &mut params, &schedule, &images, None, &cfg, None).unwrap_err().to_string();
        assert_eq!(err, "a class-conditional model needs labels to train on");
        let err = train(&model, &mut params, &schedule, &images, Some(&[5; 16]), &cfg, None).unwrap_err().to_string();
        assert_eq!(err, "a label is not below num_classes = 3");
        let (_, report) = train(&model, &mut params, &schedule, &images, Some(&labels), &cfg, None).unwrap();
        let after = params.get(params.find("class_embedding.weight").unwrap());
        assert!(after.data() != before.data(), "the class embedding learns");
        let checkpoint = Checkpoint::load(&report.checkpoint, &params).unwrap();
        assert_eq!(checkpoint.config["unet.num_classes"], "3");
        assert_eq!(checkpoint.config["train.label_dropout"], "0.1");
        std::fs::remove_dir_all(&cfg.out_dir).unwrap();
    }

    #[test]
    fn a_nan_stops_training_naming_the_step_and_what_went_bad_first() {
        let images = squares(16);
        let schedule = NoiseSchedule::linear(200, 1e-4, 0.04);
        // A parameter that is NaN from the start is named at step 1.
        let cfg = config(5, "nan-param");
        let mut params = ParamStore::new();
        let model = UNet::new(UNetConfig::tiny(), &mut params, 0);
        let id = params.find("mid.res1.conv2.bias").unwrap();
        params.get_mut(id).data_mut()[0] = f32::NAN;
        let err = train(&model, &mut params, &schedule, &images, None, &cfg, None).unwrap_err().to_string();
        assert_eq!(
            err,
            "training diverged at step 1: the loss is NaN; parameter mid.res1.conv2.bias is not finite; \
             no checkpoint was written in this run"
        );
        // A learning rate of 1e30 makes the weights huge after one step and the activations overflow in the
        // second; the checkpoint of step 1 is kept and still loads.
        let cfg = TrainConfig { lr: 1e30, warmup: 0, grad_clip: 0.0, checkpoint_every: 1, ..config(5, "nan-lr") };
        let mut params = ParamStore::new();
        let model = UNet::new(UNetConfig::tiny(), &mut params, 0);
        let err = train(&model, &mut params, &schedule, &images, None, &cfg, None).unwrap_err();
        assert!(matches!(err, Error::Diverged(_)));
        let err = err.to_string();
        let kept = cfg.out_dir.join("checkpoints/step-00000001.safetensors");
        assert!(err.starts_with("training diverged at step 2: the loss is "), "{err}");
        assert!(
            err.contains("the first non-finite activation is the output of op #3 (linear of time.linear2)"),
            "{err}"
        );
        assert!(err.ends_with(&format!("the last good checkpoint is {}", kept.display())), "{err}");
        assert_eq!(Checkpoint::load(&kept, &params).unwrap().step, 1);
        std::fs::remove_dir_all(&cfg.out_dir).unwrap();
    }
}
