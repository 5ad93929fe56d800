//! The training checkpoint: everything a run needs to continue exactly where it stopped, in one safetensors
//! file.
//!
//! ```text
//! tensors   model.<name>     the parameters                          f32, the parameter's shape
//!           ema.<name>       their exponential moving average        f32
//!           adam.m.<name>    Adam's first moment                     f32 (absent before the first step)
//!           adam.v.<name>    Adam's second moment                    f32
//!           adam.step        Adam's step count per parameter         i64 [parameters] (0: no state yet)
//! metadata  format = "scratch-diffusion checkpoint", format_version = "1"
//!           step, epoch, position, ema_updates                      where training stands
//!           unet.*, train.*, schedule.*, data.*                     the model config and the run's flags
//!           checksum = "fnv1a64-words:<hex>"                        over all of the above
//! ```
//! The random state needs no bytes of its own: every step draws from a generator keyed by (seed, step) and
//! every epoch shuffles with one keyed by (seed, epoch) (see [`crate::training::train`]), so the seed in `train.seed`
//! with `step` and `epoch` *is* the generator state. The data order position is (`epoch`, `position`).
//!
//! safetensors has no checksum, and a flipped bit in a weight would load silently; the `checksum` entry
//! covers every tensor (name, dtype, shape, bytes) and every other metadata entry, so any single changed
//! byte is an error on load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use autograd::optim::AdamState;
use autograd::ParamStore;
use safetensors::{Dtype, SafeTensors};

use super::{check_no_extra, encode, parse, read_f32, read_store, verify_checksum, write_atomically, Entry};
use crate::error::{Error, Result};
use crate::metadata::Fields;

/// What [`Checkpoint`] files say in their `format` entry, and the version this code writes and reads.
pub const FORMAT: &str = "scratch-diffusion checkpoint";
pub const FORMAT_VERSION: u32 = 1;

/// A training run's full state.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Optimizer steps taken so far.
    pub step: u64,
    /// The data order: which shuffled pass over the data (from 0), and how many of its items were used.
    pub epoch: u64,
    pub position: u64,
    pub params: ParamStore,
    pub ema: ParamStore,
    pub ema_updates: u64,
    /// Adam's state per parameter, in the store's order.
    pub adam: Vec<Option<AdamState>>,
    /// The model config and the run's flags as strings (`unet.*`, `train.*`, ...).
    pub config: BTreeMap<String, String>,
}

const RESERVED: [&str; 7] = ["format", "format_version", "step", "epoch", "position", "ema_updates", "checksum"];

impl Checkpoint {
    /// Writes the checkpoint to `path`, crash-safe ([`write_atomically`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut tensors: Vec<Entry> = Vec::new();
        for (prefix, store) in [("model.", &self.params), ("ema.", &self.ema)] {
            for (_, name, t) in store.iter() {
                tensors.push(Entry::f32(format!("{prefix}{name}"), t.shape(), t.data()));
            }
        }
        let mut steps = Vec::with_capacity(self.params.len());
        for (id, name, t) in self.params.iter() {
            let state = self.adam.get(id.0).and_then(Option::as_ref);
            steps.push(state.map_or(0, |s| s.step as i64));
            if let Some(s) = state {
                tensors.push(Entry::f32(format!("adam.m.{name}"), t.shape(), &s.m));
                tensors.push(Entry::f32(format!("adam.v.{name}"), t.shape(), &s.v));
            }
        }
        let bytes = steps.iter().flat_map(|s| s.to_le_bytes()).collect();
        tensors.push(Entry { name: "adam.step".to_string(), dtype: Dtype::I64, shape: vec![steps.len()], bytes });

        let mut metadata = self.config.clone();
        if let Some(key) = metadata.keys().find(|k| RESERVED.contains(&k.as_str())) {
            panic!("Checkpoint::save: config key {key:?} is reserved for the checkpoint itself");
        }
        metadata.insert("format".into(), FORMAT.into());
        metadata.insert("format_version".into(), FORMAT_VERSION.to_string());
        metadata.insert("step".into(), self.step.to_string());
        metadata.insert("epoch".into(), self.epoch.to_string());
        metadata.insert("position".into(), self.position.to_string());
        metadata.insert("ema_updates".into(), self.ema_updates.to_string());
        write_atomically(path.as_ref(), &encode(tensors, metadata))
    }

    /// Reads a checkpoint for a model whose parameters have the names and shapes of `template`. Checks the
    /// format, version and checksum, then every tensor; any problem is an error naming the file, and nothing
    /// is returned half-read.
    pub fn load(path: impl AsRef<Path>, template: &ParamStore) -> Result<Checkpoint> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (file, metadata) = parse(path, &bytes)?;
        let bad = |problem: String| Error::format(path, problem);
        let fields = Fields::new(path, &metadata);
        check_format(path, &metadata)?;
        if !metadata.contains_key("checksum") {
            return Err(bad("has no \"checksum\" entry in its metadata".into()));
        }
        verify_checksum(path, &file, &metadata)?;

        let params = read_store(path, &file, "model.", template)?;
        let ema = read_store(path, &file, "ema.", template)?;
        let steps = read_i64(path, &file, "adam.step", template.len())?;
        let mut adam = Vec::with_capacity(template.len());
        let mut read = 2 * template.len() + 1;
        for ((_, name, t), &step) in template.iter().zip(&steps) {
            if step < 0 {
                return Err(bad(format!("tensor \"adam.step\" holds a negative step count for {name:?}")));
            }
            if step == 0 {
                adam.push(None);
                continue;
            }
            let m = read_f32(path, &file, &format!("adam.m.{name}"), t.shape())?.data().to_vec();
            let v = read_f32(path, &file, &format!("adam.v.{name}"), t.shape())?.data().to_vec();
            adam.push(Some(AdamState { step: step as u64, m, v }));
            read += 2;
        }
        check_no_extra(path, &file, read)?;
        let config = metadata.iter().filter(|(k, _)| !RESERVED.contains(&k.as_str()));
        Ok(Checkpoint {
            step: fields.get("step")?,
            epoch: fields.get("epoch")?,
            position: fields.get("position")?,
            params,
            ema,
            ema_updates: fields.get("ema_updates")?,
            adam,
            config: config.map(|(k, v)| (k.clone(), v.clone())).collect(),
        })
    }
}

impl Checkpoint {
    /// Whether this checkpoint can continue a run of `steps` steps on `images` images: its step within the run,
    /// its place in the data within the data, and no more EMA updates than steps. (Its checksum only says
    /// the bytes are the ones that were written, not that the numbers make sense.)
    pub fn fits(&self, steps: usize, images: usize) -> std::result::Result<(), String> {
        if self.step > steps as u64 {
            return Err(format!("its step {} is past the run's {steps} steps", self.step));
        }
        if self.position > images as u64 {
            return Err(format!("its data position {} is past the {images} images", self.position));
        }
        if self.ema_updates > self.step {
            return Err(format!("it counts {} EMA updates in {} steps", self.ema_updates, self.step));
        }
        Ok(())
    }
}

/// Fails unless the metadata says this is a checkpoint of the version this code reads.
pub fn check_format(path: &Path, metadata: &BTreeMap<String, String>) -> Result<()> {
    let fields = Fields::new(path, metadata);
    match metadata.get("format") {
        Some(f) if f == FORMAT => {}
        Some(other) => {
            return Err(Error::format(path, format!("is not a training checkpoint (its format is {other:?})")))
        }
        None => return Err(Error::format(path, "is not a training checkpoint (no \"format\" in its metadata)")),
    }
    let version: u32 = fields.get("format_version")?;
    if version != FORMAT_VERSION {
        return Err(Error::format(
            path,
            format!("is a checkpoint of format version {version}; this program reads version {FORMAT_VERSION}"),
        ));
    }
    Ok(())
}

/// A 1-D i64 tensor of `len` entries.
fn read_i64(path: &Path, file: &SafeTensors, name: &str, len: usize) -> Result<Vec<i64>> {
    let bad = |problem: String| Error::format(path, problem);
    let view = file.tensor(name).map_err(|_| bad(format!("has no tensor named {name:?}")))?;
    if view.dtype() != Dtype::I64 || view.shape() != [len] {
        return Err(bad(format!("tensor {name:?} is {:?} {:?}, expected I64 [{len}]", view.dtype(), view.shape())));
    }
    Ok(view.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect())
}

/// Writes `checkpoint` as `dir/step-<step>.safetensors` (crash-safe), then deletes all but the newest `keep`
/// checkpoints in `dir` (`keep` = 0 keeps all) and any temporary file a crashed write left. Returns the path.
pub fn save_rotating(dir: &Path, checkpoint: &Checkpoint, keep: usize) -> Result<PathBuf> {
    let path = dir.join(format!("step-{:08}.safetensors", checkpoint.step));
    checkpoint.save(&path)?;
    let mut all = list_checkpoints(dir)?;
    if keep > 0 && all.len() > keep {
        for old in all.drain(..all.len() - keep) {
            std::fs::remove_file(&old).map_err(|e| Error::io(&old, e))?;
        }
    }
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".step-") && name.contains(".tmp-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(path)
}

/// The checkpoints `save_rotating` wrote in `dir`, oldest first.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with("step-") && name.ends_with(".safetensors")
        })
        .collect();
    found.sort();
    Ok(found)
}
