//! Reading a diffusers JSON config key by key: each getter names the file, the key and the value it could
//! not use, and a key the file leaves out takes diffusers' default (as `from_pretrained` does).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A JSON object read from `path`, remembering which keys were asked for.
pub struct Config<'a> {
    pub path: &'a Path,
    map: Map<String, Value>,
    asked: std::cell::RefCell<BTreeSet<String>>,
}

impl<'a> Config<'a> {
    /// Reads and parses `path`, which must hold a JSON object.
    pub fn read(path: &'a Path) -> Result<Config<'a>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(Config { path, map, asked: Default::default() }),
            Ok(_) => Err(Error::format(path, "is not a JSON object")),
            Err(e) => Err(Error::format(path, format!("is not valid JSON ({e})"))),
        }
    }

    /// An error naming the key and its value.
    pub fn error(&self, key: &str, problem: impl std::fmt::Display) -> Error {
        let value = self.map.get(key).map_or("absent".to_string(), Value::to_string);
        Error::format(self.path, format!("{key} = {value}: {problem}"))
    }

    /// The value of `key`, `None` when absent or null.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.asked.borrow_mut().insert(key.to_string());
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        self.optional_usize(key).map(|v| v.unwrap_or(default))
    }

    /// A non-negative integer, `None` when absent or null.
    pub fn optional_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.error(key, "not a non-negative integer")),
        }
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.value(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.error(key, "not a number")),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.value(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.error(key, "not true or false")),
        }
    }

    /// A string, `None` when absent or null.
    pub fn optional_str(&self, key: &str) -> Result<Option<&str>> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.error(key, "not a string")),
        }
    }

    pub fn str_or<'s>(&'s self, key: &str, default: &'s str) -> Result<&'s str> {
        self.optional_str(key).map(|v| v.unwrap_or(default))
    }

    /// Fails unless the string `key` (or its default) is one of `allowed`.
    pub fn expect_str(&self, key: &str, default: &str, allowed: &[&str]) -> Result<String> {
        let value = self.str_or(key, default)?;
        if allowed.contains(&value) {
            return Ok(value.to_string());
        }
        Err(self.error(key, format!("this project builds only {}", allowed.join(" or "))))
    }

    /// A list of strings, or `default` when absent.
    pub fn strings_or(&self, key: &str, default: &[&str]) -> Result<Vec<String>> {
        match self.value(key) {
            None => Ok(default.iter().map(|s| s.to_string()).collect()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| self.error(key, "not a list of strings")))
                .collect(),
            Some(_) => Err(self.error(key, "not a list of strings")),
        }
    }

    /// A list of non-negative integers, or `default` when absent.
    pub fn usizes_or(&self, key: &str, default: &[usize]) -> Result<Vec<usize>> {
        match self.value(key) {
            None => Ok(default.to_vec()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| self.error(key, "not a list of integers"))
                })
                .collect(),
            Some(_) => Err(self.error(key, "not a list of integers")),
        }
    }

    /// A list of numbers, `None` when absent or null.
    pub fn optional_f64s(&self, key: &str) -> Result<Option<Vec<f64>>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_f64().ok_or_else(|| self.error(key, "not a list of numbers")))
                .collect::<Result<Vec<f64>>>()
                .map(Some),
            Some(_) => Err(self.error(key, "not a list of numbers")),
        }
    }

    /// Fails on a key no getter asked for (other than diffusers' own `_…` bookkeeping): a setting this
    /// project does not know might change the model, so it is refused rather than ignored.
    pub fn refuse_unknown(&self, class: &str) -> Result<()> {
        let asked = self.asked.borrow();
        match self.map.keys().find(|k| !k.starts_with('_') && !asked.contains(*k)) {
            None => Ok(()),
            Some(key) => Err(self.error(key, format!("not a {class} setting this project knows"))),
        }
    }
}

impl Config<'_> {
    /// Whether the file has `key` at all (null included).
    pub fn map_has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }
}
