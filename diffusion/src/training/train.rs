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
use crate::model::denoiser::Denoiser;
use crate::model::guidance::{Conditional, Guided};
use crate::model::mlp::MlpDenoiser;
use crate::model::unet::UNet;
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
    pub fn record(&self, model: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        self.to_metadata().into_iter().chain(model.clone()).chain(self.run_metadata.clone()).collect()
    }

    /// Whether this run can be trained on a schedule of `timesteps` steps: every number within [`limits`]
    /// and the grid sampler within the schedule. ([`train`] checks the memory the batch and the grid imply
    /// against the model, [`Trainable::check_memory`].)
    pub fn validate(&self, timesteps: usize) -> std::result::Result<(), String> {
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
        Ok(())
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
    /// The last sample grid (`None` for a model that draws none).
    pub grid: Option<PathBuf>,
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

/// What the training loop needs of a model besides its predictions: what it is conditioned on, what to
/// record beside its weights, the memory a batch takes, and its sample grids. The U-Net implements it,
/// and so does the MLP of 2-D points (which draws no grid).
pub trait Trainable: Denoiser {
    /// The classes it is conditioned on (0: unconditional).
    fn num_classes(&self) -> usize;
    /// The model predicting for batch rows labelled `labels`, each label dropped with probability
    /// `dropout` in training (classifier-free guidance). Called only when [`Trainable::num_classes`] > 0.
    fn labelled<'a>(&'a self, labels: &'a [usize], dropout: f32) -> Box<dyn Denoiser + 'a>;
    /// The entries saved beside its weights that say what model they are (the U-Net's `unet.*` config).
    fn record(&self) -> BTreeMap<String, String>;
    /// Whether a batch of `batch` fits the memory bound (training: with the backward's buffers).
    fn check_memory(&self, batch: usize, training: bool) -> std::result::Result<(), String>;
    /// About `config.grid_images` samples drawn with the grid's sampler from a fixed seed, and the grid's
    /// column count; `None` for models of something other than images.
    fn grid(&self, params: &ParamStore, schedule: &NoiseSchedule, config: &TrainConfig) -> Option<(Tensor, usize)>;
}

/// Trains `model` on `images` [N, …] (values in [−1, 1]) as configured, from scratch or from `resume`;
/// writes `loss.csv`, `samples_step<k>.png` every `sample_every` steps, `samples.png` and
/// `model.safetensors` (the EMA weights, which [`crate::training::checkpoint::Trained::load`] opens for a
/// U-Net) at the end, and checkpoints into `out_dir/checkpoints`. Returns the EMA parameters (for sampling)
/// and a report.
///
/// A run resumed from the checkpoint of step k continues exactly as the uninterrupted run would have: the
/// parameters, the EMA, Adam's moments, the data order and every random draw are restored or recomputed
/// from (seed, step). A loss, gradient or parameter that is NaN or infinite stops training with
/// [`Error::Diverged`], naming the step and the first parameter or activation that went non-finite; the
/// checkpoints written before are kept.
pub fn train(
    model: &impl Trainable,
    params: &mut ParamStore,
    schedule: &NoiseSchedule,
    images: &Tensor,
    labels: Option<&[usize]>,
    config: &TrainConfig,
    resume: Option<Checkpoint>,
) -> Result<(Ema, TrainReport)> {
    let labels = check_labels(model, images, labels)?;
    config.validate(schedule.steps()).map_err(Error::Usage)?;
    model
        .check_memory(config.batch, true)
        .and_then(|_| model.check_memory(config.grid_images, false))
        .map_err(Error::Usage)?;
    let record = config.record(&model.record());
    let checkpoint_dir = config.out_dir.join("checkpoints");
    std::fs::create_dir_all(&checkpoint_dir).map_err(|e| Error::io(&checkpoint_dir, e))?;
    let (mut state, start) = State::new(params, config, resume, images.shape()[0])?;
    let end = config.stop_at.unwrap_or(config.steps).min(config.steps);
    let mut log = LossLog::open(&config.out_dir, start)?;
    let mut batches = Batches::new(images, labels, config, state.epoch, state.position);
    let mut tape = Tape::new();
    if config.profile {
        tape.enable_profile();
    }
    let mut progress = Progress::new(start, config.steps);
    let (mut last_loss, mut last_checkpoint) = (f32::NAN, None);
    let started = Instant::now();
    // The other threads keep polling for work between the step's parallel loops (see
    // `autograd::cpu::with_spinning_workers`): the same result, less time lost waking them.
    autograd::cpu::with_spinning_workers(|| -> Result<()> {
        for step in start..end {
            let (x_0, batch_labels) = batches.next();
            let denoiser: Box<dyn Denoiser + '_> = match &batch_labels {
                Some(l) => model.labelled(l, config.label_dropout),
                None => Box::new(model),
            };
            let lr = config.lr_at(step);
            tape.profile_mark("(outside the tape: batch, logs)");
            last_loss = learning_step(&mut tape, &*denoiser, params, &mut state, schedule, config, &x_0, step, lr)
                .map_err(|problem| diverged(step, problem, &last_checkpoint))?;
            log.write(step + 1, last_loss, lr)?;
            progress.update(step + 1, config.steps, last_loss, config.batch, step + 1 == end);
            if config.sample_every > 0 && (step + 1) % config.sample_every == 0 && step + 1 < config.steps {
                let path = config.out_dir.join(format!("samples_step{}.png", step + 1));
                write_grid(model, state.ema.params(), schedule, config, &path)?;
            }
            if (config.checkpoint_every > 0 && (step + 1) % config.checkpoint_every == 0) || step + 1 == end {
                log.flush()?; // the log holds every step the checkpoint holds before the checkpoint exists
                let checkpoint = state.checkpoint(params, step + 1, &batches, &record);
                last_checkpoint = Some(save_rotating(&checkpoint_dir, &checkpoint, config.keep_checkpoints)?);
            }
        }
        Ok(())
    })?;
    let mean_step_ms = started.elapsed().as_secs_f64() * 1e3 / (end - start).max(1) as f64;
    log.flush()?;
    let name = if end == config.steps { "samples.png".into() } else { format!("samples_step{end}.png") };
    let grid = config.out_dir.join(name);
    let grid = write_grid(model, state.ema.params(), schedule, config, &grid)?.then_some(grid);
    let checkpoint = last_checkpoint.unwrap_or_else(|| checkpoint_dir.join(format!("step-{end:08}.safetensors")));
    let weights = (end == config.steps).then(|| config.out_dir.join("model.safetensors"));
    if let Some(path) = &weights {
        save_trained(path, state.ema.params(), &record)?;
    }
    let report = TrainReport {
        step: end,
        trained_steps: end.saturating_sub(start),
        final_loss: last_loss,
        mean_step_ms,
        grid,
        checkpoint,
        weights,
        profile: config.profile.then(|| tape.profile_report()),
    };
    Ok((state.ema, report))
}

/// One step of learning on the batch x_0: the loss, its gradient (clipped to `grad_clip`), AdamW at
/// learning rate `lr`, and the EMA of the weights. Returns the loss, or what went non-finite.
#[allow(clippy::too_many_arguments)]
fn learning_step(
    tape: &mut Tape,
    model: &dyn Denoiser,
    params: &mut ParamStore,
    state: &mut State,
    schedule: &NoiseSchedule,
    config: &TrainConfig,
    x_0: &Tensor,
    step: usize,
    lr: f32,
) -> std::result::Result<f32, String> {
    let mut rng = keyed_rng(config.seed, Stream::Step, step as u64);
    let loss = training_loss(tape, model, params, schedule, config.prediction, config.weighting, x_0, &mut rng);
    let value = loss.value().item();
    if !value.is_finite() {
        tape.clear();
        return Err(explain_non_finite_loss(model, params, schedule, config, x_0, step, value));
    }
    let mut grads = tape.backward(&loss);
    tape.profile_mark("(outside the tape: gradients out of backward)");
    // Clipping computes the global norm anyway, and it is finite exactly when every gradient is.
    let finite = match config.grad_clip > 0.0 {
        true => clip_grad_norm(&mut grads, config.grad_clip).is_finite(),
        false => grads.params().all(|(_, g)| g.all_finite()),
    };
    if !finite {
        let what = match grads.params().find(|(_, g)| !g.all_finite()) {
            Some((id, _)) => format!("the gradient of parameter {} is not finite", params.name(id)),
            None => "the global gradient norm overflows f32".to_string(),
        };
        return Err(format!("the loss is {value} but {what}"));
    }
    tape.profile_mark("(outside the tape: gradient clipping)");
    state.opt.set_lr(lr);
    state.opt.step(params, &grads);
    tape.profile_mark("(outside the tape: AdamW)");
    state.ema.update(params);
    tape.profile_mark("(outside the tape: EMA)");
    Ok(value)
}

/// The labels to train on: `None` for an unconditional model (whatever was passed), else one valid label
/// per image.
fn check_labels<'a>(
    model: &impl Trainable,
    images: &Tensor,
    labels: Option<&'a [usize]>,
) -> Result<Option<&'a [usize]>> {
    let classes = model.num_classes();
    match labels {
        None if classes > 0 => Err(Error::Usage("a class-conditional model needs labels to train on".into())),
        Some(l) if l.len() != images.shape()[0] => {
            Err(Error::Usage(format!("{} labels for {} images", l.len(), images.shape()[0])))
        }
        Some(l) if classes > 0 && l.iter().any(|&c| c >= classes) => {
            Err(Error::Usage(format!("a label is not below num_classes = {classes}")))
        }
        _ => Ok(labels.filter(|_| classes > 0)),
    }
}

/// A step's problem as the run's error: the step, what went wrong, and the checkpoint that is kept.
fn diverged(step: usize, problem: String, last_checkpoint: &Option<PathBuf>) -> Error {
    let kept = match last_checkpoint {
        Some(p) => format!("the last good checkpoint is {}", p.display()),
        None => "no checkpoint was written in this run".to_string(),
    };
    Error::Diverged(format!("step {}: {problem}; {kept}", step + 1))
}

/// What the loop changes besides the parameters: AdamW's moments and the EMA, and where the data order
/// stood when it started (for resuming).
struct State {
    opt: Adam,
    ema: Ema,
    epoch: u64,
    position: usize,
}

impl State {
    /// A fresh state, or the one `resume` holds (checked against the run); and the step to start at.
    fn new(
        params: &mut ParamStore,
        config: &TrainConfig,
        resume: Option<Checkpoint>,
        n: usize,
    ) -> Result<(State, usize)> {
        let mut opt = Adam::adamw(config.lr, config.weight_decay);
        let Some(c) = resume else {
            return Ok((State { opt, ema: Ema::new(params, config.ema_decay), epoch: 0, position: 0 }, 0));
        };
        c.fits(config.steps, n).map_err(|problem| Error::Usage(format!("cannot resume: {problem}")))?;
        *params = c.params;
        opt.set_state(c.adam);
        let ema = Ema::from_parts(c.ema, config.ema_decay, c.ema_updates);
        Ok((State { opt, ema, epoch: c.epoch, position: c.position as usize }, c.step as usize))
    }

    /// The checkpoint of the run after `step` steps, the data order at `batches`' position.
    fn checkpoint(
        &self,
        params: &ParamStore,
        step: usize,
        batches: &Batches,
        record: &BTreeMap<String, String>,
    ) -> Checkpoint {
        Checkpoint {
            step: step as u64,
            epoch: batches.epoch,
            position: batches.position as u64,
            params: params.clone(),
            ema: self.ema.params().clone(),
            ema_updates: self.ema.updates(),
            adam: self.opt.state().to_vec(),
            config: record.clone(),
        }
    }
}

/// The training batches: items in each epoch's shuffled order ([`epoch_order`]), moving on to the next
/// epoch's order at the end of one.
struct Batches<'a> {
    images: &'a Tensor,
    labels: Option<&'a [usize]>,
    batch: usize,
    seed: u64,
    order: Vec<usize>,
    epoch: u64,
    position: usize,
}

impl<'a> Batches<'a> {
    fn new(
        images: &'a Tensor,
        labels: Option<&'a [usize]>,
        config: &TrainConfig,
        epoch: u64,
        position: usize,
    ) -> Batches<'a> {
        let order = epoch_order(images.shape()[0], config.seed, epoch);
        Batches { images, labels, batch: config.batch, seed: config.seed, order, epoch, position }
    }

    /// The next batch [batch, …] and its labels.
    fn next(&mut self) -> (Tensor, Option<Vec<usize>>) {
        let n = self.images.shape()[0];
        let row = self.images.numel() / n;
        let mut data = Vec::with_capacity(self.batch * row);
        let mut labels = self.labels.map(|_| Vec::with_capacity(self.batch));
        for _ in 0..self.batch {
            if self.position == n {
                self.epoch += 1;
                self.order = epoch_order(n, self.seed, self.epoch);
                self.position = 0;
            }
            let k = self.order[self.position];
            self.position += 1;
            data.extend_from_slice(&self.images.data()[k * row..(k + 1) * row]);
            if let (Some(out), Some(all)) = (labels.as_mut(), self.labels) {
                out.push(all[k]);
            }
        }
        let mut shape = self.images.shape().to_vec();
        shape[0] = self.batch;
        (Tensor::from_vec(&shape, data), labels)
    }
}

/// `loss.csv`: step, loss and learning rate of every step.
struct LossLog {
    path: PathBuf,
    file: BufWriter<File>,
}

impl LossLog {
    fn open(out_dir: &Path, start: usize) -> Result<LossLog> {
        std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
        let path = out_dir.join("loss.csv");
        let file = loss_csv(&path, start)?;
        Ok(LossLog { path, file })
    }

    fn write(&mut self, step: usize, loss: f32, lr: f32) -> Result<()> {
        writeln!(self.file, "{step},{loss},{lr}").map_err(|e| Error::io(&self.path, e))
    }

    fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
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
    model: &dyn Denoiser,
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

/// Writes the model's sample grid ([`Trainable::grid`]) to `path`; false if the model draws none.
pub fn write_grid(
    model: &impl Trainable,
    params: &ParamStore,
    schedule: &NoiseSchedule,
    config: &TrainConfig,
    path: &Path,
) -> Result<bool> {
    let Some((images, cols)) = model.grid(params, schedule, config) else { return Ok(false) };
    image_grid(&images, cols, 2).write_png(path)?;
    Ok(true)
}

impl Trainable for UNet {
    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn labelled<'a>(&'a self, labels: &'a [usize], dropout: f32) -> Box<dyn Denoiser + 'a> {
        Box::new(Conditional { model: self, labels: Some(labels), label_dropout: dropout })
    }

    fn record(&self) -> BTreeMap<String, String> {
        self.config.to_metadata()
    }

    fn check_memory(&self, batch: usize, training: bool) -> std::result::Result<(), String> {
        self.config.check_memory(batch, training)
    }

    /// `grid_images` samples with a fixed seed (the same noise every time); a class-conditional model draws
    /// class i in row i (⌊grid_images / classes⌋ of each), guided with `grid_guidance`.
    fn grid(&self, params: &ParamStore, schedule: &NoiseSchedule, config: &TrainConfig) -> Option<(Tensor, usize)> {
        let c = &self.config;
        let shape = [config.grid_images, c.image_channels, c.image_size, c.image_size];
        let mut rng = StdRng::seed_from_u64(0x6e1d);
        let (prediction, sampler) = (config.prediction, &config.grid_sampler);
        // A conditional model: whole rows only, `cols` samples of each class.
        Some(if let Some(per_class) = config.grid_images.checked_div(c.num_classes) {
            let cols = per_class.max(1);
            let labels: Vec<usize> = (0..cols * c.num_classes).map(|i| i / cols).collect();
            let shape = [labels.len(), shape[1], shape[2], shape[3]];
            let guided = Guided { model: self, labels, scale: config.grid_guidance };
            (sample(&guided, params, schedule, prediction, sampler, &shape, &mut rng), cols)
        } else {
            let cols = (config.grid_images as f64).sqrt().ceil() as usize;
            (sample(self, params, schedule, prediction, sampler, &shape, &mut rng), cols)
        })
    }
}

/// The MLP of 2-D points trains in the same loop: unconditional, no grid (its samples are points, not
/// images), and small enough that any batch within [`limits::BATCH`] fits (65,536 rows of a few
/// hundred floats per layer).
impl Trainable for MlpDenoiser {
    fn num_classes(&self) -> usize {
        0
    }

    fn labelled<'a>(&'a self, _labels: &'a [usize], _dropout: f32) -> Box<dyn Denoiser + 'a> {
        Box::new(self)
    }

    fn record(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("model".to_string(), "mlp".to_string())])
    }

    fn check_memory(&self, _batch: usize, _training: bool) -> std::result::Result<(), String> {
        Ok(())
    }

    fn grid(&self, _: &ParamStore, _: &NoiseSchedule, _: &TrainConfig) -> Option<(Tensor, usize)> {
        None
    }
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

    /// `train` takes any [`Trainable`] denoiser: the MLP of example 02 learns 2-D moons in it, and the run
    /// writes its log, checkpoint and weights but no grid.
    #[test]
    fn the_loop_trains_the_2d_mlp_too() {
        use crate::data::toy2d::Toy2d;
        let mut rng = StdRng::seed_from_u64(3);
        let points = Toy2d::Moons.sample(512, &mut rng);
        let mut params = ParamStore::new();
        let model = MlpDenoiser::new(&mut params, 2, 64, 2, &mut rng);
        let schedule = NoiseSchedule::linear_scaled(100);
        let cfg = TrainConfig { batch: 64, sample_every: 10, ..config(300, "mlp") };
        let (_, report) = train(&model, &mut params, &schedule, &points, None, &cfg, None).unwrap();
        let loss = losses(&cfg.out_dir);
        let (first, last) = (loss[..20].iter().sum::<f32>() / 20.0, loss[280..].iter().sum::<f32>() / 20.0);
        assert!(last < 0.7 * first, "the loss falls: first 20 steps {first}, last 20 {last}");
        assert!(report.grid.is_none() && report.weights.is_some_and(|w| w.exists()));
        assert!(!cfg.out_dir.join("samples_step10.png").exists(), "no grid for points");
        std::fs::remove_dir_all(&cfg.out_dir).unwrap();
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
        assert!(report.grid.as_ref().is_some_and(|g| g.exists()) && report.checkpoint.exists());
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
