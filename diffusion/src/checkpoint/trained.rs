//! Loading a trained model to sample from, from either kind of file example 03 writes: a training
//! checkpoint (its EMA weights are used) or a weights file (the EMA weights alone). Both carry, in their
//! metadata, the U-Net config (`unet.*`), the noise schedule (`schedule`, `timesteps`) and the prediction
//! target (`train.prediction`), so the model is rebuilt from the file alone.

use std::collections::BTreeMap;
use std::path::Path;

use autograd::ParamStore;

use super::{load_weights, read_metadata, Checkpoint, Fields, FORMAT};
use crate::error::{Error, Result};
use crate::objective::Prediction;
use crate::schedule::NoiseSchedule;
use crate::unet::{UNet, UNetConfig};

/// What weights files say in their `format` entry.
pub const WEIGHTS_FORMAT: &str = "scratch-diffusion weights";

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
        let metadata = config.to_metadata();
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

    /// Reads the metadata, builds the model it describes, then loads its weights; any problem is an error
    /// naming the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Trained> {
        let path = path.as_ref();
        let metadata = read_metadata(path)?;
        let fields = Fields::new(path, &metadata);
        let config = UNetConfig::from_metadata(&fields)?;
        let prediction = fields.named("train.prediction", Prediction::from_name)?;
        let timesteps: usize = fields.get("timesteps")?;
        if timesteps < 2 {
            return Err(Error::format(path, format!("has timesteps = {timesteps}; at least 2 are needed")));
        }
        let schedule = fields.named("schedule", |name| NoiseSchedule::by_name(name, timesteps))?;
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
