//! Running the example binaries that `cargo test` builds beside the integration tests.

use std::path::PathBuf;
use std::process::{Command, Output};

/// `target/<profile>/examples/<name>`, next to the test's `target/<profile>/deps/`.
pub fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} is built by cargo test", path.display());
    let mut command = Command::new(path);
    command.env_remove("RUST_BACKTRACE");
    command
}

/// Runs `name` with `args`, asserts that it exits 0, and returns what it printed on stdout.
#[allow(dead_code)] // not every test file runs examples that succeed
pub fn succeeds(name: &str, args: &[&str]) -> String {
    let output: Output = example(name).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name} {args:?} failed ({}):\n{stdout}\n{stderr}", output.status);
    stdout
}

/// A fresh directory under the system's temporary directory, unique to this process and `name`.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scratch-diffusion-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs and returns (exit code, stderr), checking that stderr is one line starting "error: ".
#[allow(dead_code)]
pub fn fails(command: &mut Command) -> (i32, String) {
    let output = command.output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    (output.status.code().unwrap(), stderr.trim_end().to_string())
}
