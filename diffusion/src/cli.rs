//! Command-line flags for the examples, parsed by `clap` (derive): each example declares its flags as a
//! struct whose doc comments are its `--help`. What this module adds is the project's way with mistakes:
//! an unknown flag, a value that does not parse or lies outside its range, a missing value, an argument
//! that is not UTF-8 are all an [`Error::Usage`] with a one-line message, which `main` prints as
//! `error: <message>` and exits with status 2 (see [`exit_on_error`]); `--help` prints and exits 0.

use std::ffi::OsString;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;

pub use clap::{Args, Parser};

use crate::error::{Error, Result};

/// The flags every example has: `--quick`, `--seed`, `--out`.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// A short run on few images or an untrained model, for CI (and a first look)
    #[arg(long)]
    pub quick: bool,
    /// Random seed
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write [default: under out/, or out/quick/ with --quick]
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The `--checkpoint` flag of the examples that sample the main job's model.
#[derive(Args, Debug, Clone)]
pub struct Weights {
    /// Weights or a checkpoint from example 03
    #[arg(long, default_value = "out/03/model.safetensors")]
    pub checkpoint: PathBuf,
}

impl Common {
    /// `a`, or `b` with `--quick`: the defaults that shrink for CI.
    pub fn q<T>(&self, normal: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            normal
        }
    }

    /// `--out`, or by default `out/<under>` (`out/quick/<under>` in quick mode, so that a CI run never
    /// overwrites a real run's outputs).
    pub fn out(&self, under: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| PathBuf::from(format!("out/{}{under}", self.q("", "quick/"))))
    }
}

/// Parses the process's arguments into `T`.
pub fn parse<T: Parser>() -> Result<T> {
    parse_from(std::env::args_os())
}

/// Parses `args` (the program name first) into `T`: `--help` prints and exits 0, any mistake is an
/// [`Error::Usage`] holding the first line of clap's message.
pub fn parse_from<T: Parser>(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> Result<T> {
    Ok(parse_given(args)?.0)
}

/// [`parse_from`], and which flags were on the command line (as opposed to left at their default).
pub fn parse_given<T: Parser>(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> Result<(T, Given)> {
    use clap::error::ErrorKind;
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // A negative number is a value (`--guidance -1`), not a flag; the range check then judges it.
    let command = T::command().mut_args(|arg| arg.allow_negative_numbers(true));
    let parsed = command.try_get_matches_from(&args).and_then(|m| Ok((T::from_arg_matches(&m)?, m)));
    match parsed {
        Ok((value, matches)) => Ok((value, Given(matches))),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            print!("{e}");
            std::process::exit(0);
        }
        Err(e) if e.kind() == ErrorKind::InvalidUtf8 => {
            let bad = args.iter().find(|a| a.to_str().is_none()).cloned().unwrap_or_default();
            Err(Error::Usage(format!("the argument {bad:?} is not valid UTF-8")))
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            let message = first.strip_prefix("error: ").unwrap_or(first);
            let hint = if e.kind() == ErrorKind::UnknownArgument { " (try --help)" } else { "" };
            Err(Error::Usage(format!("{message}{hint}")))
        }
    }
}

/// Which flags a command line held.
pub struct Given(clap::ArgMatches);

impl Given {
    /// Whether flag `--name` was given (rather than left at its default).
    pub fn contains(&self, name: &str) -> bool {
        let id = name.replace('-', "_");
        matches!(self.0.try_contains_id(&id), Ok(true))
            && self.0.value_source(&id) == Some(clap::parser::ValueSource::CommandLine)
    }
}

/// A clap value parser for a `T` that must lie in `range` (a NaN lies in none); its error reads
/// "out of range (start to end)".
pub fn in_range<T>(range: RangeInclusive<T>) -> impl Fn(&str) -> std::result::Result<T, String> + Clone + Send + Sync
where
    T: FromStr + Display + PartialOrd + Clone + Send + Sync + 'static,
    T::Err: Display,
{
    move |text: &str| {
        let value: T = text.trim().parse().map_err(|e: T::Err| e.to_string())?;
        match range.contains(&value) {
            true => Ok(value),
            false => Err(format!("out of range ({} to {})", range.start(), range.end())),
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

    /// Flags as an example declares them.
    #[derive(Parser, Debug)]
    struct Flags {
        #[command(flatten)]
        common: Common,
        /// Training steps
        #[arg(long, default_value_t = 5, value_parser = in_range(1..=4096usize))]
        steps: usize,
        /// Learning rate
        #[arg(long, default_value_t = 1.0, value_parser = in_range(f32::MIN_POSITIVE..=f32::MAX))]
        lr: f32,
        /// EMA decay
        #[arg(long, value_parser = in_range(0.0f32..=1.0))]
        ema: Option<f32>,
    }

    fn parse(list: &[&str]) -> Result<(Flags, Given)> {
        parse_given(std::iter::once("prog").chain(list.iter().copied()))
    }

    #[test]
    fn reads_values_switches_and_defaults() {
        let (f, given) = parse(&["--steps", "10", "--quick", "--lr=0.5"]).unwrap();
        assert_eq!((f.steps, f.lr, f.common.seed, f.common.quick, f.ema), (10, 0.5, 0, true, None));
        assert!(given.contains("steps") && given.contains("quick") && !given.contains("seed"));
        assert!(!given.contains("no-such-flag"));
        assert_eq!(f.common.out("03"), PathBuf::from("out/quick/03"));
        assert_eq!(f.common.q(3000, 3), 3);
    }

    #[test]
    fn mistakes_are_one_line_usage_errors() {
        let message = |list: &[&str]| match parse(list) {
            Err(Error::Usage(m)) => m,
            other => panic!("{list:?}: {:?}", other.map(|p| p.0)),
        };
        assert_eq!(message(&["--stpes", "10"]), "unexpected argument '--stpes' found (try --help)");
        assert_eq!(
            message(&["--steps", "ten"]),
            "invalid value 'ten' for '--steps <STEPS>': invalid digit found in string"
        );
        assert_eq!(message(&["--steps"]), "a value is required for '--steps <STEPS>' but none was supplied");
        assert_eq!(message(&["stray"]), "unexpected argument 'stray' found (try --help)");
    }

    #[test]
    fn values_outside_their_range_and_nan_are_refused() {
        let message = |list: &[&str]| match parse(list) {
            Err(Error::Usage(m)) => m,
            other => panic!("{list:?}: {:?}", other.map(|p| p.0)),
        };
        assert_eq!(message(&["--steps", "0"]), "invalid value '0' for '--steps <STEPS>': out of range (1 to 4096)");
        let nan = message(&["--lr", "nan"]);
        assert!(nan.starts_with("invalid value 'nan' for '--lr <LR>': out of range ("), "{nan}");
        assert_eq!(message(&["--ema", "inf"]), "invalid value 'inf' for '--ema <EMA>': out of range (0 to 1)");
        assert_eq!(parse(&["--ema", "0.5"]).unwrap().0.ema, Some(0.5));
    }
}
