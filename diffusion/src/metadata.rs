//! The string metadata of the files this crate writes (safetensors' `__metadata__`: a flat map of strings),
//! read with types and with errors that name the file and the entry. The U-Net config, the training
//! settings and the checkpoints' own entries are all read through [`Fields`].

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Typed access to string metadata, with errors that name the file and the entry.
pub struct Fields<'a> {
    path: &'a Path,
    metadata: &'a BTreeMap<String, String>,
}

impl<'a> Fields<'a> {
    pub fn new(path: &'a Path, metadata: &'a BTreeMap<String, String>) -> Fields<'a> {
        Fields { path, metadata }
    }

    /// An error about this file.
    pub fn error(&self, problem: impl Into<String>) -> Error {
        Error::format(self.path, problem)
    }

    /// The raw string of `key`.
    pub fn text(&self, key: &str) -> Result<&'a str> {
        let metadata: &'a BTreeMap<String, String> = self.metadata;
        metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::format(self.path, format!("has no {key:?} entry in its metadata")))
    }

    /// `key` parsed as T.
    pub fn get<T: FromStr>(&self, key: &str) -> Result<T> {
        let text = self.text(key)?;
        text.parse().map_err(|_| Error::format(self.path, format!("has a {key:?} entry that is not valid: {text:?}")))
    }

    /// `key` as a comma-separated list of T.
    pub fn list<T: FromStr>(&self, key: &str) -> Result<Vec<T>> {
        let text = self.text(key)?;
        text.split(',')
            .map(|item| item.trim().parse())
            .collect::<std::result::Result<Vec<T>, _>>()
            .map_err(|_| Error::format(self.path, format!("has a {key:?} entry that is not a valid list: {text:?}")))
    }

    /// `key` parsed by `parse` (for names such as "epsilon" or "cosine").
    pub fn named<T>(&self, key: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T> {
        let text = self.text(key)?;
        parse(text).ok_or_else(|| Error::format(self.path, format!("has an unknown {key:?}: {text:?}")))
    }
}

/// Joins a list for [`Fields::list`].
pub fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}
