//! The models the loop trains, as [`Trainable`]s: the U-Net (conditional or not, with its sample grids)
//! and the MLP of 2-D points.

use std::collections::BTreeMap;
use std::path::Path;

use autograd::{ParamStore, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{TrainConfig, Trainable};
use crate::error::Result;
use crate::model::denoiser::Denoiser;
use crate::model::guidance::{Conditional, Guided};
use crate::model::mlp::MlpDenoiser;
use crate::model::unet::UNet;
use crate::plot::image_grid;
use crate::process::schedule::NoiseSchedule;
use crate::sampling::sampler::{sample, sample_batched};

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

    /// `grid_images` samples with a fixed seed (the same noise every time), drawn at most a training batch
    /// at a time (so the grid needs no more memory than a step); a class-conditional model draws class i in
    /// row i (⌊grid_images / classes⌋ of each), guided with `grid_guidance`.
    fn grid(&self, params: &ParamStore, schedule: &NoiseSchedule, config: &TrainConfig) -> Option<(Tensor, usize)> {
        let c = &self.config;
        let shape = [config.grid_images, c.image_channels, c.image_size, c.image_size];
        let mut rng = StdRng::seed_from_u64(0x6e1d);
        let (prediction, sampler) = (config.prediction, &config.grid_sampler);
        // A conditional model: whole rows only, `cols` samples of each class.
        Some(if let Some(per_class) = config.grid_images.checked_div(c.num_classes) {
            let cols = per_class.max(1);
            let labels: Vec<usize> = (0..cols * c.num_classes).map(|i| i / cols).collect();
            let mut images = Vec::with_capacity(labels.len() * shape[1..].iter().product::<usize>());
            for chunk in labels.chunks(config.batch.max(1)) {
                let guided = Guided { model: self, labels: chunk.to_vec(), scale: config.grid_guidance };
                let shape = [chunk.len(), shape[1], shape[2], shape[3]];
                images
                    .extend_from_slice(sample(&guided, params, schedule, prediction, sampler, &shape, &mut rng).data());
            }
            (Tensor::from_vec(&[labels.len(), shape[1], shape[2], shape[3]], images), cols)
        } else {
            let cols = (config.grid_images as f64).sqrt().ceil() as usize;
            let batch = config.batch;
            (sample_batched(self, params, schedule, prediction, sampler, &shape, batch, &mut rng), cols)
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
