//! The examples' command lines: a mistake gets one line on stderr and a non-zero exit, never a backtrace.
//! Runs the example binaries `cargo test` builds beside this test.

mod common;

use common::{example, fails, scratch, succeeds};
use std::path::PathBuf;

#[test]
fn unknown_flags_and_bad_values_are_usage_errors() {
    let (code, err) = fails(example("03_train_mnist").args(["--quick", "--stpes", "3"]));
    assert_eq!((code, err.as_str()), (2, "error: unexpected argument '--stpes' found (try --help)"));
    let (code, err) = fails(example("03_train_mnist").args(["--steps", "ten"]));
    assert_eq!(
        (code, err.as_str()),
        (2, "error: invalid value 'ten' for '--steps <STEPS>': invalid digit found in string")
    );
    let (code, err) = fails(example("04_sample").args(["--sampler", "lms"]));
    let names = "ddpm, ddim, ddim-overshoot, dpm, dpm3m, dpm-sde, euler, euler-a, heun, unipc";
    assert_eq!((code, err.as_str()), (2, format!("error: --sampler \"lms\": unknown ({names})").as_str()));
    let (code, err) = fails(example("03_train_mnist").args(["--preset", "huge"]));
    assert_eq!((code, err.as_str()), (2, "error: --preset \"huge\": unknown"));
    let (code, err) = fails(example("03_train_mnist").args(["--quick", "--batch", "64", "--accumulate", "4096"]));
    let problem = "error: images a step (batch × accumulate) 262144: out of range (1 to 65536)";
    assert_eq!((code, err.as_str()), (2, problem));
    let args = ["--quick", "--eval-every", "1", "--classifier", "/no/such/classifier.safetensors"];
    let (code, err) = fails(example("03_train_mnist").args(args));
    assert_eq!(code, 2);
    assert!(err.contains("/no/such/classifier.safetensors") && err.contains("run it first"), "{err}");
}

#[test]
fn help_comes_from_the_flags_doc_comments_and_exits_0() {
    let output = example("04_sample").arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("--steps <STEPS>") && text.contains("Network evaluations, ddpm: all T"), "{text}");
    let output = example("03_train_mnist").arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && text.contains("--weight-decay <WEIGHT_DECAY>"), "{text}");
}

#[test]
fn missing_and_corrupt_files_are_named() {
    let (code, err) = fails(example("03_train_mnist").args(["--quick", "--images", "/no/such/images.gz"]));
    assert_eq!(code, 1);
    assert!(err.starts_with("error: /no/such/images.gz: ") && err.contains("No such file"), "{err}");
    let dir = scratch("corrupt");
    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, b"\x10\0\0\0\0\0\0\0{\"a\": not json}").unwrap();
    for (name, flag) in [("04_sample", "--checkpoint"), ("03_train_mnist", "--resume")] {
        let (code, err) = fails(example(name).args([flag, bad.to_str().unwrap()]));
        assert_eq!(code, 1);
        assert!(err.starts_with(&format!("error: {}: is not a valid safetensors file", bad.display())), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A quick run stopped after 2 of 3 steps, then resumed: the run's settings cannot be changed on resume,
/// and the resumed run writes the same loss log as one that never stopped.
#[test]
fn stop_and_resume_from_the_command_line() {
    let (straight, sittings) = (scratch("straight"), scratch("sittings"));
    let run = |args: &[&str]| {
        let output = example("03_train_mnist").args(args).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    let out = |dir: &PathBuf| dir.to_str().unwrap().to_string();
    run(&["--quick", "--out", &out(&straight)]);
    run(&["--quick", "--stop-at", "2", "--out", &out(&sittings)]);
    let checkpoints = sittings.join("checkpoints");
    let (code, err) = fails(example("03_train_mnist").args(["--resume", checkpoints.to_str().unwrap(), "--lr", "1"]));
    assert_eq!(
        (code, err.as_str()),
        (2, "error: --lr cannot be given with --resume: the checkpoint holds the run's settings")
    );
    run(&["--quick", "--resume", checkpoints.to_str().unwrap(), "--out", &out(&sittings)]);
    let log = |dir: &PathBuf| std::fs::read_to_string(dir.join("loss.csv")).unwrap();
    assert_eq!(log(&straight), log(&sittings));
    assert_eq!(log(&straight).lines().count(), 4, "a header and 3 steps");

    // Sampling from a checkpoint gives the same images for the same seed, every time.
    let last = checkpoints.join("step-00000003.safetensors");
    let draw = |name: &str| {
        let png = sittings.join(name);
        let args =
            ["--checkpoint", last.to_str().unwrap(), "--steps", "3", "--count", "4", "--out", png.to_str().unwrap()];
        let output = example("04_sample").args(args).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        std::fs::read(png).unwrap()
    };
    assert_eq!(draw("a.png"), draw("b.png"));
    for dir in [straight, sittings] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A run that diverges exits with status 1 and one line naming the step, the first bad activation and the
/// checkpoint that is kept.
#[test]
fn a_diverging_run_exits_non_zero_and_keeps_its_last_checkpoint() {
    let dir = scratch("diverge");
    let args = ["--quick", "--lr", "1e30", "--warmup", "0", "--grad-clip", "0", "--checkpoint-every", "1", "--out"];
    let (code, err) = fails(example("03_train_mnist").args(args).arg(&dir));
    assert_eq!(code, 1);
    let kept = dir.join("checkpoints").join("step-00000001.safetensors");
    assert!(err.starts_with("error: training diverged at step 2: the loss is "), "{err}");
    assert!(err.ends_with(&format!("the last good checkpoint is {}", kept.display())), "{err}");
    assert!(kept.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A flow-matching run stopped and resumed from its checkpoint (which records the flow prediction, schedule
/// and timestep sampling), then sampled by 04 from the weights it wrote.
#[test]
fn a_flow_matching_run_resumes_and_its_weights_sample() {
    let dir = scratch("flow");
    let out = dir.to_str().unwrap();
    succeeds("03_train_mnist", &["--quick", "--objective", "flow", "--stop-at", "2", "--out", out]);
    let checkpoints = dir.join("checkpoints");
    succeeds("03_train_mnist", &["--quick", "--resume", checkpoints.to_str().unwrap(), "--out", out]);
    let weights = dir.join("model.safetensors");
    let png = dir.join("heun.png");
    let args = ["--checkpoint", weights.to_str().unwrap(), "--sampler", "heun", "--steps", "5", "--count", "4"];
    let printed = succeeds("04_sample", &[&args[..], &["--out", png.to_str().unwrap()]].concat());
    assert!(
        printed.contains("flow prediction, flow schedule") && printed.contains("with 5 network evaluations"),
        "{printed}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
