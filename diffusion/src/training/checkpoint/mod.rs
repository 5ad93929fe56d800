//! Saving and loading weights as safetensors (the ecosystem's weight format: a JSON header of names,
//! dtypes, shapes and offsets, then raw little-endian data; no code runs on load, and Python's
//! `safetensors` and `torch` read it unchanged). Parameter names are the store's (`down1.0.res.conv1.weight`).
//!
//! Writes are crash-safe: the bytes go to a temporary file in the same directory, which is flushed and
//! synced, then renamed over the destination (atomic on POSIX), then the directory is synced; a crash
//! at any point leaves either the old file or the new one, never a torn one. Loads check everything
//! before touching the model: a missing, extra, wrong-dtype or wrong-shape tensor is an error naming the
//! file, and the parameters are left as they were.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use autograd::{ParamStore, Tensor};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use checksum::checksum;

mod checksum;
pub mod diffusers;
mod state;
mod trained;
pub use state::{check_format, list_checkpoints, save_rotating, Checkpoint, FORMAT, FORMAT_VERSION};
pub use trained::{save_trained, schedule_of, Trained, WEIGHTS_FORMAT, WEIGHTS_VERSION};

/// Writes every parameter of `params` and the string `metadata` to `path`, crash-safe, with a `checksum`
/// entry over both.
pub fn save_weights(path: impl AsRef<Path>, params: &ParamStore, metadata: &BTreeMap<String, String>) -> Result<()> {
    let tensors = params.iter().map(|(_, name, t)| Entry::f32(name.to_string(), t.shape(), t.data())).collect();
    write_atomically(path.as_ref(), &encode(tensors, metadata.clone()))
}

/// One tensor of a file to be written: name, dtype, shape and little-endian bytes.
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Entry {
    fn f32(name: String, shape: &[usize], values: &[f32]) -> Entry {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Entry { name, dtype: Dtype::F32, shape: shape.to_vec(), bytes }
    }
}

/// The bytes of a safetensors file holding `tensors` and `metadata`: the same contents always give the same
/// bytes (identical runs write identical files). The `safetensors` crate takes its metadata as a `HashMap`
/// and writes it in a different order every run, so the header is written here:
/// ```text
/// [u64 little-endian: header length n] [n bytes of JSON, padded with spaces to a multiple of 8] [data]
/// {"__metadata__":{key: value, … in key order},"name":{"dtype":"F32","shape":[…],"data_offsets":[begin,end]}, …}
/// ```
/// A `checksum` entry ([`checksum::checksum`]) covers every tensor and every other entry.
/// Tensors go in the order the crate itself uses (wider dtypes first, then by name), so each stays aligned
/// to its element size; offsets count from the start of the data.
fn encode(tensors: Vec<Entry>, mut metadata: BTreeMap<String, String>) -> Vec<u8> {
    assert!(!metadata.contains_key("checksum"), "encode: the checksum entry is computed here");
    let sum =
        checksum(tensors.iter().map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice(), t.bytes.as_slice())), &metadata);
    metadata.insert("checksum".into(), sum);
    encode_exact(tensors, &metadata)
}

/// [`encode`] without adding a checksum: the file holds exactly `metadata` (diffusers' weights files hold
/// `{"format": "pt"}` alone).
fn encode_exact(mut tensors: Vec<Entry>, metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let width = |d: Dtype| if d == Dtype::I64 { 8 } else { 4 };
    tensors.sort_by(|a, b| width(b.dtype).cmp(&width(a.dtype)).then_with(|| a.name.cmp(&b.name)));
    let quote = |s: &str| serde_json::to_string(s).expect("a string always encodes");
    let mut fields = Vec::with_capacity(tensors.len() + 1);
    if !metadata.is_empty() {
        let entries: Vec<String> = metadata.iter().map(|(k, v)| format!("{}:{}", quote(k), quote(v))).collect();
        fields.push(format!("\"__metadata__\":{{{}}}", entries.join(",")));
    }
    let mut offset = 0;
    for t in &tensors {
        let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
        let (begin, end) = (offset, offset + t.bytes.len());
        offset = end;
        let dtype = quote(&format!("{:?}", t.dtype));
        let info = format!("{{\"dtype\":{dtype},\"shape\":[{}],\"data_offsets\":[{begin},{end}]}}", shape.join(","));
        fields.push(format!("{}:{info}", quote(&t.name)));
    }
    let mut header = format!("{{{}}}", fields.join(",")).into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend((header.len() as u64).to_le_bytes());
    bytes.extend(header);
    for t in tensors {
        bytes.extend(t.bytes);
    }
    bytes
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new file whole.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&temp);
        return Err(Error::io(&temp, e));
    }
    std::fs::rename(&temp, path).map_err(|e| Error::io(path, e))?;
    // The rename is durable only once the directory entry is on disk.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The string metadata of a safetensors file, without loading any tensor into a model (to learn which
/// model to build first), without its own `checksum` entry, once that has been checked ([`verify_checksum`]): nothing is built
/// from metadata that may have been changed.
pub fn read_metadata(path: impl AsRef<Path>) -> Result<BTreeMap<String, String>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (file, mut metadata) = parse(path, &bytes)?;
    verify_checksum(path, &file, &metadata)?;
    metadata.remove("checksum");
    Ok(metadata)
}

/// Fails unless the file's `checksum` entry matches its tensors and other entries. A file without one is
/// accepted only as one written before files had it: no `format_version` or version 1, and no `unet.*`
/// config (which came later). A checkpoint needs its checksum whatever its version ([`Checkpoint::load`]).
pub fn verify_checksum(path: &Path, file: &SafeTensors, metadata: &BTreeMap<String, String>) -> Result<()> {
    let Some(stored) = metadata.get("checksum") else {
        let old_version = matches!(metadata.get("format_version").map(String::as_str), None | Some("1"));
        if old_version && !metadata.keys().any(|k| k.starts_with("unet.")) {
            return Ok(());
        }
        return Err(Error::format(path, "has no \"checksum\" entry in its metadata"));
    };
    let mut names = file.names();
    names.sort_unstable();
    let views: Vec<_> = names.iter().map(|n| (*n, file.tensor(n).expect("name listed by the file"))).collect();
    let mut rest = metadata.clone();
    rest.remove("checksum");
    if checksum(views.iter().map(|(n, v)| (*n, v.dtype(), v.shape(), v.data())), &rest) != *stored {
        return Err(Error::format(path, "is corrupted: its checksum does not match its contents"));
    }
    Ok(())
}

/// Fails unless the tensors of `path` whose names start with `prefix` hold `expected` elements in all: the
/// parameter count of the model its metadata describes ([`crate::model::unet::UNetConfig::sizes`]), checked before
/// that model is built, so a config edited to an outsized model is refused before it allocates anything.
pub fn check_element_count(path: &Path, prefix: &str, expected: usize) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::format(path, format!("is not a valid safetensors file ({e})")))?;
    let held: u128 = header
        .tensors()
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, info)| info.shape.iter().map(|&d| d as u128).product::<u128>())
        .sum();
    if held != expected as u128 {
        let what = if prefix.is_empty() { "tensors".to_string() } else { format!("\"{prefix}*\" tensors") };
        return Err(Error::format(
            path,
            format!("describes a U-Net of {expected} parameters, but its {what} hold {held} values"),
        ));
    }
    Ok(())
}

/// The shape of the tensor `name` in the safetensors file `path`, if it holds one.
fn tensor_shape(path: &Path, name: &str) -> Result<Option<Vec<usize>>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (file, _) = parse(path, &bytes)?;
    Ok(file.tensor(name).ok().map(|view| view.shape().to_vec()))
}

/// Loads `path` into `params`: every parameter must be present as f32 with its shape; returns the file's
/// metadata. On any error the parameters are unchanged.
pub fn load_weights(path: impl AsRef<Path>, params: &mut ParamStore) -> Result<BTreeMap<String, String>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (file, mut metadata) = parse(path, &bytes)?;
    verify_checksum(path, &file, &metadata)?;
    metadata.remove("checksum");
    let loaded = read_store(path, &file, "", params)?;
    check_no_extra(path, &file, params.len())?;
    *params = loaded;
    Ok(metadata)
}

/// The tensors and string metadata of a safetensors file, or an error naming the file.
fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<(SafeTensors<'a>, BTreeMap<String, String>)> {
    let invalid =
        |e: safetensors::SafeTensorError| Error::format(path, format!("is not a valid safetensors file ({e})"));
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(invalid)?;
    let file = SafeTensors::deserialize(bytes).map_err(invalid)?;
    Ok((file, header.metadata().clone().unwrap_or_default().into_iter().collect()))
}

/// A copy of `template` with every value read from the tensor `prefix + name`, which must be f32 with the
/// template's shape.
fn read_store(path: &Path, file: &SafeTensors, prefix: &str, template: &ParamStore) -> Result<ParamStore> {
    let mut store = template.clone();
    for (id, name, current) in template.iter() {
        *store.get_mut(id) = read_f32(path, file, &format!("{prefix}{name}"), current.shape())?;
    }
    Ok(store)
}

/// The tensor `name`, which must be f32 of `shape`.
fn read_f32(path: &Path, file: &SafeTensors, name: &str, shape: &[usize]) -> Result<Tensor> {
    let bad = |problem: String| Error::format(path, problem);
    let view = file.tensor(name).map_err(|_| bad(format!("has no tensor named {name:?}")))?;
    if view.dtype() != Dtype::F32 {
        return Err(bad(format!("tensor {name:?} is {:?}, expected F32", view.dtype())));
    }
    if view.shape() != shape {
        return Err(bad(format!("tensor {name:?} has shape {:?}, the model expects {shape:?}", view.shape())));
    }
    let values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    if let Some(bad_value) = values.iter().find(|v| !v.is_finite()) {
        return Err(bad(format!("tensor {name:?} holds {bad_value}: a model cannot be loaded with it")));
    }
    Ok(Tensor::from_vec(shape, values))
}

/// Fails when the file holds more tensors than the `expected` number that were read from it.
fn check_no_extra(path: &Path, file: &SafeTensors, expected: usize) -> Result<()> {
    if file.len() == expected {
        return Ok(());
    }
    let mut names = file.names();
    names.sort_unstable();
    let shown = names.iter().take(3).map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
    Err(Error::format(
        path,
        format!("has {} tensors, {expected} expected (a different model?); its first: {shown}", file.len()),
    ))
}

#[cfg(test)]
mod tests;
