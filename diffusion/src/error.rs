//! The error type of every boundary of the crate: files, datasets, checkpoints, command lines. Each variant
//! names the file (or flag) and what is wrong with it; nothing at these boundaries panics. `thiserror`
//! writes the `Display` and `Error` impls from the messages on the variants.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A file was read but its contents are not valid.
    #[error("{}: {problem}", path.display())]
    Format { path: PathBuf, problem: String },
    /// A command-line flag or value is wrong.
    #[error("{0}")]
    Usage(String),
    /// Training produced a NaN or infinity: where, and what went non-finite first.
    #[error("training diverged at {0}")]
    Diverged(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    pub fn format(path: impl Into<PathBuf>, problem: impl Into<String>) -> Error {
        Error::Format { path: path.into(), problem: problem.into() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// `"<name> <value>: out of range (<start> to <end>)"` unless `range` holds `value` (a NaN is in no range).
/// The callers put it in the error of their boundary: a flag's usage error, or a file's format error.
pub fn check_range<T: PartialOrd + Display>(
    name: &str,
    value: &T,
    range: &RangeInclusive<T>,
) -> std::result::Result<(), String> {
    if range.contains(value) {
        return Ok(());
    }
    Err(format!("{name} {value}: out of range ({} to {})", range.start(), range.end()))
}
