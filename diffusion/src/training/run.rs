//! A whole training run as example 03 drives it: a new run (a preset, a noise process, data) or one resumed
//! from its checkpoint, resolved and checked before anything is allocated; trained in sittings (each ending
//! with a checkpoint, so work can be done between them, such as an evaluation); and the denoising strip of
//! the result.
//!
//! A resumed run takes every setting that defines it from its checkpoint ([`RUN_SETTINGS`]); only the
//! outputs (grids, checkpoint cadence, where to stop) can change.

use std::path::{Path, PathBuf};

use autograd::optim::Ema;
use autograd::{ParamStore, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::data::cifar::read_cifar10_path;
use crate::data::idx::read_labeled;
use crate::error::{Error, Result};
use crate::metadata::Fields;
use crate::model::unet::{UNet, UNetConfig};
use crate::plot::image_grid;
use crate::process::objective::Prediction;
use crate::process::schedule::NoiseSchedule;
use crate::sampling::sampler::{sample_traced, Method, SamplerConfig, Spacing};
use crate::training::checkpoint::{
    check_element_count, check_format, list_checkpoints, read_metadata, schedule_of, Checkpoint,
};
use crate::training::train::{train, TrainConfig, TrainReport};

/// The settings (by flag name) that define a run: stored in its checkpoints, and not to be given again when
/// resuming it.
pub const RUN_SETTINGS: [&str; 19] = [
    "conditional",
    "label-dropout",
    "preset",
    "steps",
    "batch",
    "accumulate",
    "lr",
    "warmup",
    "weight-decay",
    "grad-clip",
    "ema",
    "timesteps",
    "schedule",
    "prediction",
    "objective",
    "time-sampling",
    "min-snr",
    "seed",
    "limit",
];

/// Where a run's images come from.
pub enum Data {
    /// An IDX pair (MNIST, Fashion-MNIST), gzipped or raw.
    Idx { images: PathBuf, labels: PathBuf },
    /// CIFAR-10's binary version: a file, or the directory of its `data_batch_*.bin`.
    Cifar(PathBuf),
}

/// What defines a new run besides its [`TrainConfig`]: the architecture and the noise process.
pub struct NewRun {
    /// A U-Net preset (`small`, `tiny`, `rgb32`); sized for the data's images.
    pub preset: String,
    pub conditional: bool,
    pub prediction: String,
    pub schedule: String,
    pub timesteps: usize,
    /// Use only the first this many images (0: all).
    pub limit: usize,
}

/// How a run starts.
pub enum Start {
    New(NewRun),
    /// From a checkpoint file, or a directory's newest checkpoint.
    Resume(PathBuf),
}

/// A run ready to train: the model built, the data read, every number checked.
pub struct Run {
    pub model: UNet,
    pub params: ParamStore,
    pub schedule: NoiseSchedule,
    pub images: Tensor,
    pub labels: Vec<usize>,
    pub config: TrainConfig,
    /// The checkpoint to continue from, for a resumed run.
    pub checkpoint: Option<Checkpoint>,
}

impl Run {
    /// Resolves `start` with `config` (its outputs; for a resumed run its settings come from the
    /// checkpoint) on `data`, and checks the whole run, from flags or from a file, before anything is
    /// allocated for it. Prints what it decided (a preset sized for the data, the step it resumes at).
    pub fn prepare(start: Start, mut config: TrainConfig, data: &Data) -> Result<Run> {
        let usage = |what: &str, value: &str| Error::Usage(format!("--{what} {value:?}: unknown"));
        let (mut net_config, preset, schedule_name, schedule, limit, resume_from) = match start {
            Start::New(run) => {
                let mut net_config = UNetConfig::preset(&run.preset).ok_or_else(|| usage("preset", &run.preset))?;
                net_config.num_classes = if run.conditional { 10 } else { 0 };
                config.prediction =
                    Prediction::from_name(&run.prediction).ok_or_else(|| usage("prediction", &run.prediction))?;
                let schedule = NoiseSchedule::named(&run.schedule, run.timesteps).map_err(|problem| {
                    Error::Usage(format!("--schedule {} --timesteps {}: {problem}", run.schedule, run.timesteps))
                })?;
                (net_config, run.preset, run.schedule, schedule, run.limit, None)
            }
            Start::Resume(mut path) => {
                if path.is_dir() {
                    path = list_checkpoints(&path)?.pop().ok_or_else(|| {
                        Error::Usage(format!("--resume {:?}: the directory holds no checkpoint", path.display()))
                    })?;
                }
                let metadata = read_metadata(&path)?;
                check_format(&path, &metadata)?;
                let fields = Fields::new(&path, &metadata);
                config.set_from_metadata(&fields)?;
                let net_config = UNetConfig::from_metadata(&fields)?;
                let schedule = schedule_of(&fields)?;
                let (preset, schedule_name) =
                    (fields.text("preset")?.to_string(), fields.text("schedule")?.to_string());
                (net_config, preset, schedule_name, schedule, fields.get("data.limit")?, Some(path))
            }
        };

        let (images_path, labels_path, mut images, mut labels) = match data {
            Data::Idx { images, labels } => {
                let read = read_labeled(images, labels)?;
                (images.clone(), labels.clone(), read.images.to_tensor(), read.labels)
            }
            Data::Cifar(path) => {
                let read = read_cifar10_path(path)?;
                (path.clone(), path.clone(), read.to_tensor(), read.labels)
            }
        };
        if let Some(&big) = labels.iter().find(|&&l| l as usize >= net_config.num_classes.max(10)) {
            return Err(Error::format(&labels_path, format!("has a label {big}; digits and CIFAR-10 have labels 0-9")));
        }
        // A preset is an architecture; a new run takes the image size and channels from its data (as
        // diffusers' `sample_size` and `in_channels`), so `--preset tiny` trains on 28×28 digits too. A
        // resumed run's model is fixed, and its data must fit it.
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
            images = Tensor::from_vec(&[limit, item[0], item[1], item[2]], few);
            labels.truncate(limit);
        }
        let labels: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
        config.run_metadata.extend([
            ("preset".to_string(), preset),
            ("schedule".to_string(), schedule_name),
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
        config.validate(schedule.steps()).map_err(invalid)?;
        net_config.check_memory(config.batch, true).map_err(invalid)?;
        net_config.check_memory(config.grid_images, false).map_err(invalid)?;
        if let Some(path) = &resume_from {
            check_element_count(path, "model.", net_config.sizes().parameters)?;
        }
        let mut params = ParamStore::new();
        let model = UNet::new(net_config, &mut params, config.seed);
        let checkpoint = match &resume_from {
            Some(path) => Some(resumable(path, &params, &config, images.shape()[0], &images_path)?),
            None => None,
        };
        let passes = match config.accumulate {
            1 => String::new(),
            k => format!(" × {k} passes (gradients accumulated: {} images a step)", k * config.batch),
        };
        println!(
            "U-Net: {} parameters; {} images from {}; {} steps of batch {}{passes}",
            params.num_elements(),
            images.shape()[0],
            images_path.display(),
            config.steps,
            config.batch
        );
        Ok(Run { model, params, schedule, images, labels, config, checkpoint })
    }

    /// Trains to `stop_at` or the end, in sittings that end every `every` steps (0: one sitting); after each,
    /// `after_sitting(self, ema, step)` runs (an evaluation, say). Resuming is exact, so the run is the same
    /// as one sitting. Prints each sitting's profile table when profiling.
    pub fn train(
        &mut self,
        every: usize,
        mut after_sitting: impl FnMut(&Run, &ParamStore, usize) -> Result<()>,
    ) -> Result<(Ema, TrainReport)> {
        let end = self.config.stop_at.unwrap_or(self.config.steps).min(self.config.steps);
        loop {
            let done = self.checkpoint.as_ref().map_or(0, |c| c.step as usize);
            let stop = done.checked_div(every).map_or(end, |sittings| (sittings + 1) * every);
            let sitting = TrainConfig { stop_at: Some(stop.min(end)), ..self.config.clone() };
            let labels = Some(self.labels.as_slice());
            let resume = self.checkpoint.take();
            let (ema, report) =
                train(&self.model, &mut self.params, &self.schedule, &self.images, labels, &sitting, resume)?;
            if let Some(table) = &report.profile {
                print!("time per op over steps {}..{}:\n{table}", done + 1, report.step);
            }
            after_sitting(self, ema.params(), report.step)?;
            if report.step >= end {
                return Ok((ema, report));
            }
            self.checkpoint = Some(Checkpoint::load(&report.checkpoint, &self.params)?);
        }
    }

    /// Writes `out_dir/denoising_strip.png`: four samples of the weights `ema`, DDIM in `steps` steps, x_t
    /// every 5 steps from pure noise (left) to the result (right), one row per sample.
    pub fn write_denoising_strip(&self, ema: &ParamStore, steps: usize) -> Result<PathBuf> {
        let c = &self.model.config;
        let item = [c.image_channels, c.image_size, c.image_size];
        let sampler =
            SamplerConfig { method: Method::Ddim { eta: 0.0 }, steps, spacing: Spacing::Linspace, clip_x0: Some(1.0) };
        let (mut frames, mut k) = (Vec::new(), 0);
        let mut rng = StdRng::seed_from_u64(self.config.seed + 1);
        let shape = [4, item[0], item[1], item[2]];
        let last = sample_traced(
            &self.model,
            ema,
            &self.schedule,
            self.config.prediction,
            &sampler,
            &shape,
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
        let strip = Tensor::from_vec(&[4 * cols, item[0], item[1], item[2]], strip);
        let path = self.config.out_dir.join("denoising_strip.png");
        image_grid(&strip, cols, 2).write_png(&path)?;
        Ok(path)
    }
}

/// The checkpoint at `path`, checked against the run it is to continue: the same data, a step within the
/// run, and `--stop-at` past where it is.
fn resumable(
    path: &Path,
    template: &ParamStore,
    config: &TrainConfig,
    images: usize,
    images_path: &Path,
) -> Result<Checkpoint> {
    let c = Checkpoint::load(path, template)?;
    let stored: usize = c.config.get("data.count").and_then(|v| v.parse().ok()).unwrap_or(0);
    if stored != images {
        return Err(Error::Usage(format!(
            "{} was trained on {stored} images; {} gives {images}",
            path.display(),
            images_path.display(),
        )));
    }
    c.fits(config.steps, images)
        .map_err(|problem| Error::format(path, format!("cannot continue this run: {problem}")))?;
    if let Some(stop) = config.stop_at.filter(|&stop| stop as u64 <= c.step) {
        return Err(Error::Usage(format!("--stop-at {stop}: {} is already at step {}", path.display(), c.step)));
    }
    println!("resuming {} at step {} of {}", path.display(), c.step, config.steps);
    Ok(c)
}
