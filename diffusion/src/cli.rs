//! A small command-line flag reader for the examples: `--name value`, `--name=value` and bare `--switch`.
//! Every mistake (an unknown flag, a value that does not parse, a missing value) is an [`Error::Usage`]
//! with a one-line message; `main` prints it and exits with status 2 (see [`exit_on_error`]).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{check_range, Error, Result};

/// Parsed flags, consumed by name; [`Args::finish`] rejects whatever was not asked for.
pub struct Args {
    program: String,
    values: BTreeMap<String, Option<String>>,
    known: Vec<String>,
    given: Vec<String>,
    help: bool,
}

impl Args {
    /// Reads the process's arguments; one that is not valid UTF-8 is a usage error (`std::env::args` would
    /// panic on it).
    pub fn from_env() -> Result<Args> {
        let mut it = std::env::args_os().map(|arg| {
            arg.into_string().map_err(|bad| Error::Usage(format!("the argument {bad:?} is not valid UTF-8")))
        });
        let program = it.next().transpose()?.unwrap_or_default();
        Args::parse(program, it.collect::<Result<Vec<String>>>()?)
    }

    pub fn parse(program: String, args: impl IntoIterator<Item = String>) -> Result<Args> {
        let mut values = BTreeMap::new();
        let mut help = false;
        let mut it = args.into_iter().peekable();
        while let Some(arg) = it.next() {
            if arg == "--help" || arg == "-h" {
                help = true;
                continue;
            }
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(Error::Usage(format!("unexpected argument {arg:?} (flags look like --name value)")));
            };
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => {
                    let value = it.next_if(|next| !next.starts_with("--"));
                    (flag.to_string(), value)
                }
            };
            values.insert(name, value);
        }
        Ok(Args { program, values, known: Vec::new(), given: Vec::new(), help })
    }

    /// A `--name value` flag parsed as T, or `default` when absent.
    pub fn value<T>(&mut self, name: &str, default: T, help: &str) -> Result<T>
    where
        T: FromStr + Display,
        T::Err: Display,
    {
        self.known.push(format!("  --{name} <{default}>  {help}"));
        if self.values.contains_key(name) {
            self.given.push(name.to_string());
        }
        match self.values.remove(name) {
            None => Ok(default),
            Some(None) => Err(Error::Usage(format!("--{name} needs a value"))),
            Some(Some(v)) => v.parse().map_err(|e| Error::Usage(format!("--{name} {v:?}: {e}"))),
        }
    }

    /// A `--name value` flag parsed as T and required to lie in `range` (which a NaN never does), or
    /// `default` when absent. The range is shown in `--help`.
    pub fn value_in<T>(&mut self, name: &str, default: T, range: RangeInclusive<T>, help: &str) -> Result<T>
    where
        T: FromStr + Display + PartialOrd,
        T::Err: Display,
    {
        let value = self.value(name, default, help)?;
        if let Some(line) = self.known.last_mut() {
            line.push_str(&format!(" ({} to {})", range.start(), range.end()));
        }
        check_range(&format!("--{name}"), &value, &range).map_err(Error::Usage)?;
        Ok(value)
    }

    /// A `--name path` flag, or `default` when absent.
    pub fn path(&mut self, name: &str, default: &str, help: &str) -> Result<PathBuf> {
        Ok(PathBuf::from(self.value(name, default.to_string(), help)?))
    }

    /// The `--out` flag of an example: by default `out/<under>`, or `out/quick/<under>` in quick mode, so that
    /// a CI run never overwrites a real run's outputs.
    pub fn out(&mut self, quick: bool, under: &str, help: &str) -> Result<PathBuf> {
        self.path("out", &format!("out/{}{under}", if quick { "quick/" } else { "" }), help)
    }

    /// A bare `--name` switch.
    pub fn flag(&mut self, name: &str, help: &str) -> Result<bool> {
        self.known.push(format!("  --{name}  {help}"));
        if self.values.contains_key(name) {
            self.given.push(name.to_string());
        }
        match self.values.remove(name) {
            None => Ok(false),
            Some(None) => Ok(true),
            Some(Some(v)) => Err(Error::Usage(format!("--{name} takes no value, got {v:?}"))),
        }
    }

    /// Whether flag `name` (already read with [`Args::value`] or [`Args::flag`]) was on the command line.
    pub fn given(&self, name: &str) -> bool {
        self.given.iter().any(|g| g == name)
    }

    /// Fails on any flag that was not read; prints the flags and exits 0 on `--help`.
    pub fn finish(self) -> Result<()> {
        if self.help {
            println!("usage: {} [flags]\n{}", self.program, self.known.join("\n"));
            std::process::exit(0);
        }
        match self.values.keys().next() {
            Some(name) => Err(Error::Usage(format!("unknown flag --{name} (try --help)"))),
            None => Ok(()),
        }
    }
}

/// Runs `main`; on error prints `error: <message>` on one line and exits with status 2 (usage) or 1.
pub fn exit_on_error(main: impl FnOnce() -> Result<()>) {
    if let Err(e) = main() {
        eprintln!("error: {e}");
        std::process::exit(if matches!(e, Error::Usage(_)) { 2 } else { 1 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args> {
        Args::parse("prog".into(), list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn reads_values_switches_and_defaults() {
        let mut a = args(&["--steps", "10", "--quick", "--lr=0.5"]).unwrap();
        assert_eq!(a.value("steps", 5usize, "").unwrap(), 10);
        assert_eq!(a.value("lr", 1.0f32, "").unwrap(), 0.5);
        assert_eq!(a.value("seed", 7u64, "").unwrap(), 7);
        assert!(a.flag("quick", "").unwrap());
        assert!(a.given("steps") && a.given("quick") && !a.given("seed"));
        a.finish().unwrap();
    }

    #[test]
    fn rejects_unknown_flags_and_bad_values() {
        let a = args(&["--stpes", "10"]).unwrap();
        assert_eq!(a.finish().unwrap_err().to_string(), "unknown flag --stpes (try --help)");
        let mut a = args(&["--steps", "ten"]).unwrap();
        let err = a.value("steps", 5usize, "").unwrap_err().to_string();
        assert_eq!(err, "--steps \"ten\": invalid digit found in string");
        assert!(args(&["stray"]).is_err());
    }

    #[test]
    fn values_outside_their_range_and_nan_are_refused() {
        let mut a = args(&["--batch", "0", "--lr", "nan", "--ema", "inf", "--count", "5"]).unwrap();
        let err = a.value_in("batch", 32usize, 1..=4096, "").unwrap_err().to_string();
        assert_eq!(err, "--batch 0: out of range (1 to 4096)");
        let err = a.value_in("lr", 1e-3f32, f32::MIN_POSITIVE..=f32::MAX, "").unwrap_err().to_string();
        assert!(err.starts_with("--lr NaN: out of range"), "{err}");
        let err = a.value_in("ema", 0.999f32, 0.0..=1.0, "").unwrap_err().to_string();
        assert_eq!(err, "--ema inf: out of range (0 to 1)");
        assert_eq!(a.value_in("count", 16usize, 1..=100, "").unwrap(), 5);
        assert_eq!(a.value_in("absent", 16usize, 1..=100, "").unwrap(), 16);
    }
}
