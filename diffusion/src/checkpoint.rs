//! Saving and loading weights as safetensors (the ecosystem's weight format: a JSON header of names,
//! dtypes, shapes and offsets, then raw little-endian data; no code runs on load, and Python's
//! `safetensors` and `torch` read it unchanged). Parameter names are the store's (`down1.0.res.conv1.weight`).
//!
//! Writes are crash-safe: the bytes go to a temporary file in the same directory, which is flushed and
//! synced, then renamed over the destination (atomic on POSIX), then the directory is synced; a crash
//! at any point leaves either the old file or the new one, never a torn one. Loads check everything
//! before touching the model: a missing, extra, wrong-dtype or wrong-shape tensor is an error naming the
//! file, and the parameters are left as they were.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::Path;

use autograd::{ParamStore, Tensor};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// Writes every parameter of `params` and the string `metadata` to `path`, crash-safe.
pub fn save_weights(path: impl AsRef<Path>, params: &ParamStore, metadata: &BTreeMap<String, String>) -> Result<()> {
    let path = path.as_ref();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = params
        .iter()
        .map(|(_, name, t)| {
            (name.to_string(), t.shape().to_vec(), t.data().iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), data).expect("sizes agree by construction");
            (name.clone(), view)
        })
        .collect::<Vec<_>>();
    let info: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let buffer = safetensors::serialize(views, Some(info))
        .map_err(|e| Error::format(path, format!("could not be encoded as safetensors: {e}")))?;
    write_atomically(path, &buffer)
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
/// model to build first).
pub fn read_metadata(path: impl AsRef<Path>) -> Result<BTreeMap<String, String>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::format(path, format!("is not a valid safetensors file ({e})")))?;
    Ok(header.metadata().clone().unwrap_or_default().into_iter().collect())
}

/// Loads `path` into `params`: every parameter must be present as f32 with its shape; returns the file's
/// metadata. On any error the parameters are unchanged.
pub fn load_weights(path: impl AsRef<Path>, params: &mut ParamStore) -> Result<BTreeMap<String, String>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |problem: String| Error::format(path, problem);
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("is not a valid safetensors file ({e})")))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("is not a valid safetensors file ({e})")))?;
    let mut loaded = Vec::with_capacity(params.len());
    for (id, name, current) in params.iter() {
        let view = file.tensor(name).map_err(|_| bad(format!("has no tensor named {name:?}")))?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("tensor {name:?} is {:?}, expected F32", view.dtype())));
        }
        if view.shape() != current.shape() {
            return Err(bad(format!(
                "tensor {name:?} has shape {:?}, the model expects {:?}",
                view.shape(),
                current.shape()
            )));
        }
        let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        loaded.push((id, Tensor::from_vec(current.shape(), values)));
    }
    if file.len() != params.len() {
        let mut extra: Vec<&str> = file.names().into_iter().filter(|n| params.find(n).is_none()).collect();
        extra.sort_unstable();
        let shown = extra.iter().take(3).map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
        let more = if extra.len() > 3 { format!(" and {} more", extra.len() - 3) } else { String::new() };
        return Err(bad(format!("has {} tensors the model does not ({shown}{more})", extra.len())));
    }
    for (id, tensor) in loaded {
        *params.get_mut(id) = tensor;
    }
    Ok(header.metadata().clone().unwrap_or_default().into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(scale: f32) -> ParamStore {
        let mut p = ParamStore::new();
        p.add("a.weight", Tensor::from_vec(&[2, 3], (0..6).map(|i| i as f32 * scale).collect()));
        p.add("a.bias", Tensor::from_vec(&[3], vec![scale; 3]));
        p
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ckpt-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn round_trip_keeps_values_names_and_metadata() {
        let path = temp("round.safetensors");
        let meta = BTreeMap::from([("preset".to_string(), "tiny".to_string())]);
        save_weights(&path, &store(1.5), &meta).unwrap();
        let mut target = store(0.0);
        assert_eq!(read_metadata(&path).unwrap(), meta);
        assert_eq!(load_weights(&path, &mut target).unwrap(), meta);
        assert_eq!(target.get(target.find("a.weight").unwrap()).data(), store(1.5).get(autograd::ParamId(0)).data());
    }

    #[test]
    fn bad_files_are_rejected_and_leave_the_model_unchanged() {
        let path = temp("good.safetensors");
        save_weights(&path, &store(2.0), &BTreeMap::new()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("truncated", bytes[..bytes.len() - 5].to_vec(), "is not a valid safetensors file"),
            ("empty", vec![], "is not a valid safetensors file"),
            ("huge-header", [&u64::MAX.to_le_bytes()[..], &bytes[8..]].concat(), "is not a valid safetensors file"),
        ];
        for (name, data, expected) in cases {
            let p = temp(&format!("{name}.safetensors"));
            std::fs::write(&p, data).unwrap();
            let mut target = store(7.0);
            let err = load_weights(&p, &mut target).unwrap_err().to_string();
            assert!(err.starts_with(&p.display().to_string()) && err.contains(expected), "{name}: {err}");
            assert_eq!(target.get(autograd::ParamId(1)).data(), &[7.0; 3], "{name}: model untouched");
        }
        // A model with a differently shaped parameter.
        let mut other = ParamStore::new();
        other.add("a.weight", Tensor::zeros(&[3, 2]));
        other.add("a.bias", Tensor::zeros(&[3]));
        let err = load_weights(&path, &mut other).unwrap_err().to_string();
        assert!(err.contains("tensor \"a.weight\" has shape [2, 3], the model expects [3, 2]"), "{err}");
        // A model with a parameter the file lacks.
        let mut bigger = store(0.0);
        bigger.add("b.weight", Tensor::zeros(&[1]));
        let err = load_weights(&path, &mut bigger).unwrap_err().to_string();
        assert!(err.contains("has no tensor named \"b.weight\""), "{err}");
        assert_eq!(bigger.get(autograd::ParamId(0)).data(), &[0.0; 6], "no partial load");
        // A model with fewer parameters than the file.
        let mut smaller = ParamStore::new();
        smaller.add("a.bias", Tensor::zeros(&[3]));
        let err = load_weights(&path, &mut smaller).unwrap_err().to_string();
        assert!(err.contains("has 1 tensors the model does not (\"a.weight\")"), "{err}");
    }

    #[test]
    fn a_failed_write_keeps_the_previous_file() {
        let path = temp("keep.safetensors");
        save_weights(&path, &store(3.0), &BTreeMap::new()).unwrap();
        // Simulate a crash mid-write: a torn temporary file is left behind, the rename never happens.
        let torn = path.parent().unwrap().join(".keep.safetensors.tmp-crashed");
        std::fs::write(&torn, b"half a file").unwrap();
        let mut target = store(0.0);
        load_weights(&path, &mut target).unwrap();
        assert_eq!(target.get(autograd::ParamId(1)).data(), &[3.0; 3]);
    }
}
