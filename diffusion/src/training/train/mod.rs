//! The training loop for image diffusion: AdamW with warmup then cosine decay, gradient accumulation over
//! several passes a step, gradient clipping, an EMA of the weights (used for sampling), a progress line, the
//! loss of every step in a CSV file, and sample grids.
//!
//! Files: this one holds the config, its limits, the [`Trainable`] trait and the loop with its learning
//! step; `parts.rs` what the loop keeps and writes (the batches, the optimizer state, the loss log, the
//! progress, the diagnosis of a divergence); `models.rs` the U-Net and the 2-D MLP as [`Trainable`]s.

mod models;
mod parts;
#[cfg(test)]
mod tests;

pub use models::write_grid;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use autograd::optim::{clip_grad_norm, Ema, Optimizer};
use autograd::{Gradients, ParamStore, Tape, Tensor, Var};
use rand::rngs::StdRng;

use crate::data::order::{pass_rng, Stream};
use crate::error::{check_range, Error, Result};
use crate::metadata::Fields;
use crate::model::denoiser::Denoiser;
use crate::process::objective::{training_loss, Prediction, TimeSampling, Weighting};
use crate::process::schedule::NoiseSchedule;
use crate::sampling::sampler::{Method, SamplerConfig, Spacing};
use crate::training::checkpoint::{save_rotating, save_trained, Checkpoint};
use parts::{explain_non_finite_loss, Batches, LossLog, Progress, State};

/// The range of every number of a [`TrainConfig`], checked by [`TrainConfig::validate`] and by the flags that
/// set them, whatever the config came from (flags or a checkpoint).
pub mod limits {
    use std::ops::RangeInclusive;

    pub const STEPS: RangeInclusive<usize> = 1..=100_000_000;
    /// Also bounded by the memory it takes ([`crate::model::unet::UNetConfig::check_memory`]).
    pub const BATCH: RangeInclusive<usize> = 1..=65_536;
    /// Passes per step. A step's `batch · accumulate` images are drawn before its first pass, so their
    /// product is bounded like a batch, by [`BATCH`]'s end.
    pub const ACCUMULATE: RangeInclusive<usize> = 1..=65_536;
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
    /// Images per forward and backward pass: what sizes the memory of a step.
    pub batch: usize,
    /// Passes per step (gradient accumulation, diffusers' `gradient_accumulation_steps`): a step averages
    /// the gradients of `accumulate` batches, one pass each, before clipping and AdamW, so it learns from
    /// `batch · accumulate` images in the memory of `batch`.
    pub accumulate: usize,
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
    /// How each batch's timesteps are drawn (flow matching: logit-normal, as SD3).
    pub time_sampling: TimeSampling,
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
    /// EMA 0.999 (after diffusers' warmup, `Ema`), ε-prediction, grids with SDE-DPM-Solver++(2M) in 20 steps, a checkpoint every 500 steps,
    /// keep 3).
    pub fn new(steps: usize, batch: usize, out_dir: impl Into<PathBuf>) -> TrainConfig {
        TrainConfig {
            steps,
            batch,
            accumulate: 1,
            lr: 1e-3,
            warmup: 200,
            min_lr_ratio: 0.0,
            weight_decay: 0.0,
            grad_clip: 1.0,
            ema_decay: 0.999,
            prediction: Prediction::Epsilon,
            weighting: Weighting::Uniform,
            time_sampling: TimeSampling::Uniform,
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

    /// The sampler used for grids unless configured otherwise: SDE-DPM-Solver++(2M), 20 steps, linspace,
    /// x̂_0 clipped (the best at 20 evaluations on the main job's models: see the README's recipe search).
    pub fn default_grid_sampler() -> SamplerConfig {
        SamplerConfig { method: Method::DpmSolver2MSde, steps: 20, spacing: Spacing::Linspace, clip_x0: Some(1.0) }
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
        // Uniform timesteps and one pass a step, the defaults, are not written: files of runs from before
        // these options stay the same.
        .chain((self.time_sampling != TimeSampling::Uniform).then(|| ("t_sampling", self.time_sampling.name())))
        .chain((self.accumulate != 1).then(|| ("accumulate", self.accumulate.to_string())))
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
        check_range("accumulate", &self.accumulate, &limits::ACCUMULATE)?;
        check_range("images a step (batch × accumulate)", &self.batch.saturating_mul(self.accumulate), &limits::BATCH)?;
        check_range("lr", &self.lr, &limits::LR)?;
        check_range("warmup", &self.warmup, &limits::WARMUP)?;
        check_range("min_lr_ratio", &self.min_lr_ratio, &limits::MIN_LR_RATIO)?;
        check_range("weight_decay", &self.weight_decay, &limits::WEIGHT_DECAY)?;
        check_range("grad_clip", &self.grad_clip, &limits::GRAD_CLIP)?;
        check_range("ema_decay", &self.ema_decay, &limits::EMA_DECAY)?;
        if self.prediction == Prediction::Flow && self.weighting != Weighting::Uniform {
            return Err("min-SNR weighting is for the ε, x0 and v targets, not for flow matching".into());
        }
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
        self.time_sampling = match fields.text("train.t_sampling") {
            Ok(_) => fields.named("train.t_sampling", TimeSampling::from_name)?,
            Err(_) => TimeSampling::Uniform,
        };
        self.accumulate = match fields.text("train.accumulate") {
            Ok(_) => fields.get("train.accumulate")?,
            Err(_) => 1,
        };
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
    train_with(model, params, schedule, images, labels, config, resume, &Denoising)
}

/// What a training step minimises for a batch of clean images x_0 at step `step` of the run: a loss on
/// `tape` of the `model`'s predictions, drawing whatever it draws from `rng` (the step's own stream).
pub trait Objective: Sync {
    #[allow(clippy::too_many_arguments)]
    fn loss(
        &self,
        tape: &mut Tape,
        model: &dyn Denoiser,
        params: &ParamStore,
        schedule: &NoiseSchedule,
        config: &TrainConfig,
        step: usize,
        x_0: &Tensor,
        rng: &mut StdRng,
    ) -> Var;
}

/// The denoising loss of [`training_loss`] with the config's prediction target, weighting and timestep
/// sampling: what [`train`] minimises.
pub struct Denoising;

impl Objective for Denoising {
    fn loss(
        &self,
        tape: &mut Tape,
        model: &dyn Denoiser,
        params: &ParamStore,
        schedule: &NoiseSchedule,
        config: &TrainConfig,
        _step: usize,
        x_0: &Tensor,
        rng: &mut StdRng,
    ) -> Var {
        let (prediction, weighting, sampling) = (config.prediction, config.weighting, config.time_sampling);
        training_loss(tape, model, params, schedule, prediction, weighting, sampling, x_0, rng)
    }
}

/// [`train`] minimising another [`Objective`] (distillation's, for one).
#[allow(clippy::too_many_arguments)]
pub fn train_with(
    model: &impl Trainable,
    params: &mut ParamStore,
    schedule: &NoiseSchedule,
    images: &Tensor,
    labels: Option<&[usize]>,
    config: &TrainConfig,
    resume: Option<Checkpoint>,
    objective: &dyn Objective,
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
            // One batch per pass, consecutive in the data order: the step's batch · accumulate images.
            let drawn: Vec<(Tensor, Option<Vec<usize>>)> = (0..config.accumulate).map(|_| batches.next()).collect();
            let passes: Vec<(&Tensor, Box<dyn Denoiser + '_>)> = drawn
                .iter()
                .map(|(x_0, labels)| match labels {
                    Some(l) => (x_0, model.labelled(l, config.label_dropout)),
                    None => (x_0, Box::new(model) as Box<dyn Denoiser + '_>),
                })
                .collect();
            let lr = config.lr_at(step);
            tape.profile_mark("(outside the tape: batch, logs)");
            let step_state = (&mut state, step, lr);
            last_loss = learning_step(&mut tape, &passes, params, step_state, schedule, config, objective)
                .map_err(|problem| diverged(step, problem, &last_checkpoint))?;
            log.write(step + 1, last_loss, lr)?;
            let images = config.batch * config.accumulate;
            progress.update(step + 1, config.steps, last_loss, images, step + 1 == end);
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

/// One step of learning on the batches of `passes` (each with the model that predicts for it): the loss
/// and its gradient ([`step_gradients`]), clipped to `grad_clip`, AdamW at learning rate `lr`, and the EMA
/// of the weights. Returns the loss, or what went non-finite.
#[allow(clippy::too_many_arguments)]
fn learning_step(
    tape: &mut Tape,
    passes: &[(&Tensor, Box<dyn Denoiser + '_>)],
    params: &mut ParamStore,
    (state, step, lr): (&mut State, usize, f32),
    schedule: &NoiseSchedule,
    config: &TrainConfig,
    objective: &dyn Objective,
) -> std::result::Result<f32, String> {
    let (value, mut grads) = step_gradients(tape, passes, params, step, schedule, config, objective)?;
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

/// The loss of step `step` over the batches of `passes` and its gradient, or why the loss is not finite.
///
/// With several passes (gradient accumulation) the step's loss is the mean of the passes' losses,
/// L = (1/K) Σ_k L_k over K passes of equal batches: the mean over all their images, as one batch of
/// K · batch would give it. Each pass runs its forward and backward on its own, the backward seeded with
/// ∂L/∂L_k = 1/K, and the gradients add up ([`Gradients::accumulate`]), so only one pass's activations are
/// alive at a time. Pass k draws its timesteps and noise from [`pass_rng`] (seed, step, k), pass 0 from
/// the step's own generator, so a step of one pass is exactly the step without accumulation.
#[allow(clippy::too_many_arguments)]
fn step_gradients(
    tape: &mut Tape,
    passes: &[(&Tensor, Box<dyn Denoiser + '_>)],
    params: &ParamStore,
    step: usize,
    schedule: &NoiseSchedule,
    config: &TrainConfig,
    objective: &dyn Objective,
) -> std::result::Result<(f32, Gradients), String> {
    let share = 1.0 / passes.len() as f32;
    let (mut total, mut grads) = (0.0f32, Gradients::default());
    for (pass, (x_0, model)) in passes.iter().enumerate() {
        let mut rng = pass_rng(config.seed, Stream::Step, step as u64, pass as u64);
        let loss = objective.loss(tape, &**model, params, schedule, config, step, x_0, &mut rng);
        let value = loss.value().item();
        if !value.is_finite() {
            tape.clear();
            let at = (step, pass);
            return Err(explain_non_finite_loss(&**model, params, schedule, config, objective, x_0, at, value));
        }
        total += value;
        grads.accumulate(tape.backward_from(&loss, Tensor::full(loss.shape(), share)));
    }
    Ok((total * share, grads))
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
