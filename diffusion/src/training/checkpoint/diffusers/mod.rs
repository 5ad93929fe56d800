//! diffusers' pipeline folder, written and read: a model trained here opens with
//! `DDPMPipeline.from_pretrained(folder)`, and a `UNet2DModel` trained with diffusers samples here.
//!
//! ```text
//! folder/model_index.json                           {"_class_name": "DDPMPipeline", "unet": [...], "scheduler": [...]}
//! folder/unet/config.json                           UNet2DModel's settings            (unet_config.rs)
//! folder/unet/diffusion_pytorch_model.safetensors   its weights, diffusers' names      (names.rs), metadata {"format": "pt"}
//! folder/scheduler/scheduler_config.json            DDPMScheduler: β schedule, T, prediction type   (scheduler.rs)
//! ```
//! Only U-Nets of the diffusers topology ([`crate::model::unet::Topology::Diffusers`], for example the
//! `diffusers-mnist` preset) have a `UNet2DModel` counterpart. Reading checks everything before building
//! anything: a setting this project cannot express is an error naming the key and its value, the weights'
//! element count is checked against the config before the model is allocated, and every tensor must be
//! present, f32, of its shape, with nothing left over.

pub mod json;
pub mod names;
pub mod scheduler;
pub mod unet_config;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autograd::ParamStore;
use safetensors::SafeTensors;
use serde_json::json;

use super::{check_element_count, check_no_extra, encode_exact, read_f32, write_atomically, Entry};
use crate::error::{Error, Result};
use crate::model::unet::UNet;
use crate::process::objective::Prediction;
use crate::process::schedule::NoiseSchedule;

/// What a pipeline folder holds: the U-Net with its weights, the schedule (and its name: `linear`, `cosine`
/// and `sigmoid` are this project's; others are written as their β) and the prediction target.
/// [`crate::training::checkpoint::Trained`] is built from one, and writes one (`Trained::export_diffusers`).
pub struct Pipeline {
    pub model: UNet,
    pub params: ParamStore,
    pub schedule: NoiseSchedule,
    pub schedule_name: String,
    pub prediction: Prediction,
}

/// Where the weights live in a pipeline folder.
pub fn weights_path(folder: &Path) -> PathBuf {
    folder.join("unet").join("diffusion_pytorch_model.safetensors")
}

/// Writes a model of the diffusers topology, its weights `params`, `schedule` (named `schedule_name`) and
/// `prediction`, as a `DDPMPipeline` folder. Files are written crash-safe, one by one, after every check.
pub fn export(
    model: &UNet,
    params: &ParamStore,
    schedule: (&NoiseSchedule, &str),
    prediction: Prediction,
    folder: &Path,
) -> Result<()> {
    let config = &model.config;
    let refuse = |problem: String| Error::Usage(format!("this model has no diffusers counterpart: {problem}"));
    let unet = unet_config::to_json(config).map_err(refuse)?;
    let scheduler = scheduler::to_json(schedule.1, schedule.0, prediction).map_err(refuse)?;
    let index = json!({
        "_class_name": "DDPMPipeline",
        "_diffusers_version": unet_config::DIFFUSERS_VERSION,
        "scheduler": ["diffusers", "DDPMScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
    });
    let levels = config.channel_mult.len();
    let mut tensors = Vec::new();
    for (_, name, tensor) in params.iter() {
        for part in names::parts(name, tensor.shape(), levels) {
            let len: usize = part.shape.iter().product();
            tensors.push(Entry::f32(part.name, &part.shape, &tensor.data()[part.offset..part.offset + len]));
        }
    }
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let pretty = |value: &serde_json::Value| {
        let mut text = serde_json::to_string_pretty(value).expect("JSON values always encode");
        text.push('\n');
        text.into_bytes()
    };
    write_atomically(&weights_path(folder), &encode_exact(tensors, &metadata))?;
    write_atomically(&folder.join("unet").join("config.json"), &pretty(&unet))?;
    write_atomically(&folder.join("scheduler").join("scheduler_config.json"), &pretty(&scheduler))?;
    write_atomically(&folder.join("model_index.json"), &pretty(&index))
}

/// Reads a pipeline folder (`DDPMPipeline`'s, or any with `unet/` holding a `UNet2DModel` and
/// `scheduler/scheduler_config.json`).
pub fn import(folder: &Path) -> Result<Pipeline> {
    let unet_config_path = folder.join("unet").join("config.json");
    if !unet_config_path.is_file() {
        return Err(Error::format(folder, "is a folder without unet/config.json: not a diffusers pipeline folder"));
    }
    let config = unet_config::from_json(&json::Config::read(&unet_config_path)?)?;
    let scheduler_path = folder.join("scheduler").join("scheduler_config.json");
    let (schedule, schedule_name, prediction) = scheduler::from_json(&json::Config::read(&scheduler_path)?)?;

    let path = weights_path(folder);
    if !path.is_file() && folder.join("unet").join("diffusion_pytorch_model.bin").is_file() {
        return Err(Error::format(
            folder,
            "holds its weights as a PyTorch pickle (unet/diffusion_pytorch_model.bin); this project reads safetensors (save with safe_serialization=True)",
        ));
    }
    check_element_count(&path, "", config.sizes().parameters)?;
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::format(&path, format!("is not a valid safetensors file ({e})")))?;
    let mut params = ParamStore::new();
    let model = UNet::new(config, &mut params, 0);
    let levels = model.config.channel_mult.len();
    let mut read = 0;
    let mut loaded = params.clone();
    for (id, name, tensor) in params.iter() {
        let mut values = tensor.data().to_vec();
        for part in names::parts(name, tensor.shape(), levels) {
            let piece = read_f32(&path, &file, &part.name, &part.shape)?;
            values[part.offset..part.offset + piece.data().len()].copy_from_slice(piece.data());
            read += 1;
        }
        *loaded.get_mut(id) = autograd::Tensor::from_vec(tensor.shape(), values);
    }
    check_no_extra(&path, &file, read)?;
    Ok(Pipeline { model, params: loaded, schedule, schedule_name, prediction })
}
