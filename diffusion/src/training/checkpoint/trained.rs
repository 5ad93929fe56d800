//! Loading a trained model to sample from, from either kind of file example 03 writes: a training
//! checkpoint (its EMA weights are used) or a weights file (the EMA weights alone). Both carry, in their
//! metadata, the U-Net config (`unet.*`), the noise schedule (`schedule`, `timesteps`) and the prediction
//! target (`train.prediction`), so the model is rebuilt from the file alone.

use std::collections::BTreeMap;
use std::path::Path;

use autograd::{ParamStore, Tensor};
use rand::rngs::StdRng;

use super::diffusers::Pipeline;
use super::{check_element_count, load_weights, read_metadata, save_weights, tensor_shape, Checkpoint, FORMAT};
use crate::error::{Error, Result};
use crate::metadata::Fields;
use crate::model::unet::{UNet, UNetConfig};
use crate::process::objective::Prediction;
use crate::process::schedule::NoiseSchedule;
use crate::sampling::sampler::{sample_batched, SamplerConfig};

/// What weights files say in their `format` entry, and the newest version this code writes and reads:
/// 2 has a `checksum` entry; 1 (before 2026-12) had none, and until then no `unet.*` config either.
pub const WEIGHTS_FORMAT: &str = "scratch-diffusion weights";
pub const WEIGHTS_VERSION: u32 = 2;

/// Writes the weights file of a trained model: `params` (the EMA weights) and `record` (what
/// `TrainConfig::record` says of the run: `unet.*`, `train.*`, `schedule`, `timesteps`, ...), with the
/// format and its version, so that [`Trained::load`] rebuilds the model from the file alone.
pub fn save_trained(path: &Path, params: &ParamStore, record: &BTreeMap<String, String>) -> Result<()> {
    let mut metadata = record.clone();
    metadata.insert("format".to_string(), WEIGHTS_FORMAT.to_string());
    metadata.insert("format_version".to_string(), WEIGHTS_VERSION.to_string());
    save_weights(path, params, &metadata)
}

/// A model ready to sample from.
pub struct Trained {
    pub model: UNet,
    /// The weights to sample with (a checkpoint's EMA weights).
    pub params: ParamStore,
    pub prediction: Prediction,
    pub schedule: NoiseSchedule,
    /// Everything the file's metadata says.
    pub metadata: BTreeMap<String, String>,
}

impl Trained {
    /// A model with random weights (for the examples' quick modes: the code runs, the images are noise).
    pub fn untrained(config: UNetConfig, timesteps: usize, seed: u64) -> Trained {
        let mut params = ParamStore::new();
        let mut metadata = config.to_metadata();
        metadata.insert("schedule".into(), "linear".into());
        metadata.insert("timesteps".into(), timesteps.to_string());
        metadata.insert("train.prediction".into(), Prediction::Epsilon.name().into());
        let model = UNet::new(config, &mut params, seed);
        let schedule = NoiseSchedule::linear_scaled(timesteps);
        Trained { model, params, prediction: Prediction::Epsilon, schedule, metadata }
    }

    /// The examples' choice: with `quick`, an untrained `small` U-Net with T = 20 (the code runs, the images
    /// are noise); otherwise the model in `path`.
    pub fn load_or_untrained(path: &Path, quick: bool, seed: u64) -> Result<Trained> {
        if quick {
            Ok(Trained::untrained(UNetConfig::small(), 20, seed))
        } else {
            Trained::load(path)
        }
    }

    /// Fails with a usage error unless the model draws 1×28×28 images (what the digit classifier and the
    /// shipped digits are).
    pub fn require_digits(&self) -> Result<()> {
        let c = &self.model.config;
        if (c.image_channels, c.image_size) == (1, 28) {
            return Ok(());
        }
        Err(Error::Usage(format!(
            "this needs a model of 1×28×28 digits; this one draws {}×{s}×{s} images",
            c.image_channels,
            s = c.image_size
        )))
    }

    /// Fails with a usage error naming `--steps` unless `steps` is within this model's T, or naming the images
    /// unless drawing `images` at once fits in memory ([`UNetConfig::check_memory`]).
    pub fn check_sampling(&self, steps: usize, images: usize) -> Result<()> {
        let total = self.schedule.steps();
        if !(1..=total).contains(&steps) {
            return Err(Error::Usage(format!("--steps {steps}: this model has T = {total} timesteps (1 to {total})")));
        }
        self.model.config.check_memory(images, false).map_err(Error::Usage)
    }

    /// `count` images drawn with `config`, `batch` at a time (each batch goes on drawing from `rng`), as
    /// one tensor [count, C, H, W].
    pub fn sample_batched(&self, config: &SamplerConfig, count: usize, batch: usize, rng: &mut StdRng) -> Tensor {
        let c = &self.model.config;
        let shape = [count, c.image_channels, c.image_size, c.image_size];
        sample_batched(&self.model, &self.params, &self.schedule, self.prediction, config, &shape, batch, rng)
    }

    /// Reads the metadata, builds the model it describes, then loads its weights; any problem is an error
    /// naming the file. A folder is read as a diffusers pipeline folder ([`super::diffusers::import`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Trained> {
        let path = path.as_ref();
        if path.is_dir() {
            return Ok(Trained::from_pipeline(super::diffusers::import(path)?));
        }
        let metadata = read_metadata(path)?;
        let fields = Fields::new(path, &metadata);
        let config = if metadata.keys().any(|k| k.starts_with("unet.")) {
            UNetConfig::from_metadata(&fields)?
        } else {
            let config = config_from_preset(path, &fields)?;
            eprintln!(
                "note: {} holds no U-Net config and no checksum (written before weights files had them); rebuilt the model from its preset {:?}",
                path.display(),
                fields.text("preset")?
            );
            config
        };
        let prediction = fields.named("train.prediction", Prediction::from_name)?;
        let schedule = schedule_of(&fields)?;
        if fields.text("format")? == WEIGHTS_FORMAT {
            let version: u32 = fields.get("format_version")?;
            if !(1..=WEIGHTS_VERSION).contains(&version) {
                return Err(fields.error(format!(
                    "is a weights file of format version {version}; this program reads versions 1 to {WEIGHTS_VERSION}"
                )));
            }
        }
        let prefix = if fields.text("format")? == FORMAT { "ema." } else { "" };
        check_element_count(path, prefix, config.sizes().parameters)?;
        let mut params = ParamStore::new();
        let model = UNet::new(config, &mut params, 0);
        match fields.text("format")? {
            FORMAT => params = Checkpoint::load(path, &params)?.ema,
            WEIGHTS_FORMAT => {
                load_weights(path, &mut params)?;
            }
            other => return Err(Error::format(path, format!("has an unknown format {other:?}"))),
        }
        Ok(Trained { model, params, prediction, schedule, metadata })
    }
}

impl Trained {
    /// A model read from a diffusers pipeline folder, with the metadata a weights file would have.
    pub fn from_pipeline(pipeline: Pipeline) -> Trained {
        let Pipeline { model, params, schedule, schedule_name, prediction } = pipeline;
        let mut metadata = model.config.to_metadata();
        metadata.extend([
            ("preset".to_string(), "diffusers".to_string()),
            ("schedule".to_string(), schedule_name),
            ("timesteps".to_string(), schedule.steps().to_string()),
            ("train.prediction".to_string(), prediction.name().to_string()),
        ]);
        Trained { model, params, prediction, schedule, metadata }
    }

    /// Writes the model as a diffusers `DDPMPipeline` folder ([`super::diffusers::export`]); its metadata's
    /// `schedule` names the β schedule.
    pub fn export_diffusers(&self, folder: &Path) -> Result<()> {
        let name = self.metadata.get("schedule").map_or("", String::as_str);
        super::diffusers::export(&self.model, &self.params, (&self.schedule, name), self.prediction, folder)
    }
}

/// The U-Net config of a weights file written before weights files held `unet.*`: the preset it names (such
/// files were trained with the preset as it is), with the classes a conditional model's class embedding
/// table has (its rows are the classes and "no class").
fn config_from_preset(path: &Path, fields: &Fields) -> Result<UNetConfig> {
    let mut config = fields.named("preset", UNetConfig::preset)?;
    if let Some(shape) = tensor_shape(path, "class_embedding.weight")? {
        config.num_classes = shape[0].saturating_sub(1);
    }
    Ok(config)
}

/// The noise schedule a file records (`schedule`, `timesteps`), checked as flags are
/// ([`NoiseSchedule::named`]).
pub fn schedule_of(fields: &Fields) -> Result<NoiseSchedule> {
    let timesteps: usize = fields.get("timesteps")?;
    NoiseSchedule::named(fields.text("schedule")?, timesteps).map_err(|problem| fields.error(format!("has {problem}")))
}
