//! Distillation: a trained model drawn in a few network evaluations.
//!
//! - [`progressive`]: progressive distillation (Salimans & Ho 2022): a student learns to take in one DDIM
//!   step what its teacher takes in two; the student of one round is the teacher of the next, halving the
//!   steps each round (64 → 32 → … → 1).
//! - [`consistency`]: easy consistency tuning (Geng et al. 2024): the model tuned into a consistency model,
//!   which maps any point of a noising path to its clean end in one evaluation.

pub mod consistency;
pub mod progressive;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The students example 12 wrote under `dir` (`steps-N/model.safetensors`, one per round), most steps first.
pub fn students(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut found: Vec<(usize, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let steps = e.file_name().to_str()?.strip_prefix("steps-")?.parse().ok()?;
            let path = e.path().join("model.safetensors");
            path.is_file().then_some((steps, path))
        })
        .collect();
    if found.is_empty() {
        return Err(Error::format(dir, "holds no steps-N/model.safetensors (run example 12 first)"));
    }
    found.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(found)
}
