//! The path a user walks through the README, as one chain in one directory: every file an example writes is
//! read by the example that uses it, and by this test. On the `tiny` preset and a few steps, so the models
//! are untrained in all but name; what is tested is that each command runs on what the one before wrote.
//!
//! ```text
//! 03 --out D/03 ─ model.safetensors ─┬─ 04 (and 04 on a checkpoint: the same images)
//!                                    ├─ 06 (with 05's classifier) ─ evaluation.csv, chart
//!                                    └─ 08, 09, 10
//! 03 --eval-every 3 (with 05's classifier) ─ eval.csv, and the same loss.csv as without
//! 03 --conditional --out D/03c ────── 07 (with 05's classifier), 04 --label
//! 03 --stop-at 3 --out D/03r, then 03 --resume D/03r/checkpoints: the same files as the straight run
//! 03 --preset diffusers-mnist --out D/03d ─ 11 ─ D/11/mnist-ddpm/ (a diffusers folder) ─ 04: the same images
//! 03's weights ─ 12 (progressive distillation 4 → 2 → 1, consistency tuning) ─ D/12/steps-N/, consistency/
//!                ─ 04 on each student in its N steps, 06 --distilled D/12
//! ```

mod common;

use std::path::Path;

use common::{scratch, succeeds};
use diffusion::distill::progressive::teacher_clip;
use diffusion::training::checkpoint::Trained;

/// The main job's flags, shrunk: the `tiny` preset (sized for the 28×28 digits), 6 steps of 4 images.
const TRAIN: [&str; 16] = [
    "--preset",
    "tiny",
    "--steps",
    "6",
    "--batch",
    "4",
    "--limit",
    "64",
    "--timesteps",
    "50",
    "--checkpoint-every",
    "3",
    "--grid",
    "4",
    "--sampler-steps",
    "3",
];

/// (width, height) of a PNG, decoding it whole.
fn png_size(path: &Path) -> (u32, u32) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert!(pixels.iter().any(|&p| p != pixels[0]), "{} is one flat colour", path.display());
    (info.width, info.height)
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of a CSV file after its header, split at commas.
fn csv_rows(path: &Path, header: &str) -> Vec<Vec<String>> {
    let text = text(path);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(header), "{}", path.display());
    lines.map(|l| l.split(',').map(str::to_string).collect()).collect()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn the_readme_path_runs_as_a_chain_on_what_each_example_wrote() {
    let dir = scratch("user-path");
    let run03 = dir.join("03");

    // 03, the main job: its outputs, and the commands it says to run next.
    let printed = succeeds("03_train_mnist", &[&TRAIN[..], &["--out", s(&run03)]].concat());
    let weights = run03.join("model.safetensors");
    assert!(printed.contains(&format!("04_sample -- --checkpoint {}", weights.display())), "{printed}");
    assert!(printed.contains(&format!("06_evaluate -- --checkpoint {}", weights.display())), "{printed}");
    let losses = csv_rows(&run03.join("loss.csv"), "step,loss,lr");
    assert_eq!(losses.len(), 6);
    assert!(losses.iter().all(|row| row[1].parse::<f32>().unwrap().is_finite()));
    png_size(&run03.join("samples.png"));
    png_size(&run03.join("denoising_strip.png"));
    let trained = Trained::load(&weights).unwrap();
    assert_eq!((trained.model.config.image_size, trained.model.config.base_channels), (28, 8));
    assert_eq!(trained.metadata["preset"], "tiny");
    let checkpoint = run03.join("checkpoints").join("step-00000006.safetensors");
    assert!(run03.join("checkpoints").join("step-00000003.safetensors").exists());

    // 04 on the weights and on the last checkpoint (whose EMA weights they are): the same images.
    let from_weights = dir.join("04").join("weights.png");
    let from_checkpoint = dir.join("04").join("checkpoint.png");
    let sample = ["--steps", "3", "--count", "4"];
    succeeds("04_sample", &[&sample[..], &["--checkpoint", s(&weights), "--out", s(&from_weights)]].concat());
    succeeds("04_sample", &[&sample[..], &["--checkpoint", s(&checkpoint), "--out", s(&from_checkpoint)]].concat());
    assert_eq!(png_size(&from_weights), (2 * 2 * 28 + 2 * 3, 2 * 2 * 28 + 2 * 3), "a 2×2 grid of 28×28 at ×2");
    assert_eq!(bytes(&from_weights), bytes(&from_checkpoint));
    for sampler in [["--sampler", "ddim"], ["--sampler", "ddpm"]] {
        let png = dir.join("04").join(format!("{}.png", sampler[1]));
        let printed =
            succeeds("04_sample", &[&sample[..], &sampler, &["--checkpoint", s(&weights), "--out", s(&png)]].concat());
        let evaluations = if sampler[1] == "ddpm" { "50" } else { "3" };
        assert!(printed.contains(&format!("with {evaluations} network evaluations")), "{printed}");
        png_size(&png);
    }

    // 12 distils the weights, round by round; 04 draws from each student in its own steps.
    let run12 = dir.join("12");
    assert_eq!(teacher_clip(&Trained::load(&weights).unwrap().metadata), Some(1.0));
    let distill =
        ["--from-steps", "4", "--to-steps", "1", "--round-steps", "2", "--batch", "2", "--consistency-steps", "2"];
    let printed = succeeds("12_distill", &[&distill[..], &["--checkpoint", s(&weights), "--out", s(&run12)]].concat());
    assert!(printed.contains("| 1 |") && printed.contains("| consistency (1, 2) |"), "{printed}");
    let consistency = Trained::load(run12.join("consistency").join("model.safetensors")).unwrap();
    assert_eq!(consistency.metadata["distill.method"], "consistency");
    png_size(&run12.join("consistency").join("samples.png"));
    for steps in [2, 1] {
        let student = run12.join(format!("steps-{steps}"));
        assert_eq!(csv_rows(&student.join("loss.csv"), "step,loss,lr").len(), 2);
        png_size(&student.join("samples.png"));
        let trained = Trained::load(student.join("model.safetensors")).unwrap();
        assert_eq!(trained.metadata["distill.steps"], steps.to_string());
        // As the next round's teacher (12 --checkpoint <a student>), its x̂ is not clipped; the trained model's is.
        assert_eq!(teacher_clip(&trained.metadata), None);
        // The main job's flow-matching model, distilled: the student keeps its teacher's path and target.
        assert_eq!((trained.metadata["schedule"].as_str(), trained.prediction.name()), ("flow", "flow"));
        let png = student.join("04.png");
        // The 2-step student with Meng et al.'s stochastic overshoot, the 1-step one with DDIM.
        let sampler = if steps == 2 { "ddim-overshoot" } else { "ddim" };
        let flags = ["--sampler", sampler, "--spacing", "trailing", "--steps", &steps.to_string(), "--count", "4"];
        let student_weights = student.join("model.safetensors");
        let printed =
            succeeds("04_sample", &[&flags[..], &["--checkpoint", s(&student_weights), "--out", s(&png)]].concat());
        assert!(printed.contains(&format!("with {steps} network evaluations")), "{printed}");
    }

    // 05 trains the judge; 06 evaluates the main job's weights with it.
    let classifier = dir.join("05").join("classifier.safetensors");
    succeeds("05_classifier", &["--quick", "--out", s(&classifier)]);
    diffusion::eval::classifier::load(&classifier).unwrap();
    let run06 = dir.join("06");
    let args = ["--checkpoint", s(&weights), "--classifier", s(&classifier), "--count", "16", "--out", s(&run06)];
    let samplers = ["--samplers", "ddpm,ddim,heun,unipc", "--nfe", "3,5", "--distilled", s(&run12)];
    succeeds("06_evaluate", &[&args[..], &samplers[..]].concat());
    let header = "sampler,nfe,frechet,floor,ceiling,confidence,seconds,histogram";
    let rows = csv_rows(&run06.join("evaluation.csv"), header);
    let runs: Vec<(&str, &str)> = rows.iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
    let expected = [("ddpm", "50"), ("ddim", "3"), ("ddim", "5"), ("heun", "3"), ("heun", "5")];
    assert_eq!(runs[..5], expected);
    let distilled = [
        ("distilled", "2"),
        ("distilled-overshoot", "2"),
        ("distilled", "1"),
        ("distilled-overshoot", "1"),
        ("consistency", "1"),
        ("consistency", "2"),
    ];
    assert_eq!(runs[5..7], [("unipc", "3"), ("unipc", "5")]);
    assert_eq!(runs[7..], distilled);
    for row in &rows {
        let [frechet, floor, ceiling]: [f64; 3] = [2, 3, 4].map(|i| row[i].parse().unwrap());
        assert!(frechet.is_finite() && 0.0 <= floor && floor < ceiling, "{row:?}");
        let histogram: usize = row[7].split(' ').map(|h| h.parse::<usize>().unwrap()).sum();
        assert_eq!(histogram, 16);
        png_size(&run06.join(format!("{}_{}.png", row[0], row[1])));
    }
    png_size(&run06.join("frechet_vs_nfe.png"));

    // Evaluating during training (with the same classifier) trains in sittings and leaves the loss log as it
    // was without evaluations.
    let run03e = dir.join("03e");
    let args = ["--eval-every", "3", "--eval-count", "8", "--classifier", s(&classifier), "--out", s(&run03e)];
    succeeds("03_train_mnist", &[&TRAIN[..], &args[..]].concat());
    let evals = csv_rows(&run03e.join("eval.csv"), "step,frechet,floor,ceiling,confidence");
    assert_eq!(evals.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["3", "6"]);
    assert_eq!(text(&run03e.join("loss.csv")), text(&run03.join("loss.csv")));

    // A conditional run: 07 guides it, 04 draws one class from it.
    let run03c = dir.join("03c");
    let printed =
        succeeds("03_train_mnist", &[&TRAIN[..], &["--conditional", "--profile", "--out", s(&run03c)]].concat());
    assert!(printed.contains("time per op over steps 1..6") && printed.contains("conv2d"), "{printed}");
    assert!(printed.contains("--label 7"), "the next commands of a conditional model: {printed}");
    let conditional = run03c.join("model.safetensors");
    assert_eq!(Trained::load(&conditional).unwrap().model.config.num_classes, 10);
    let run07 = dir.join("07");
    let args = ["--checkpoint", s(&conditional), "--classifier", s(&classifier), "--per-class", "1", "--steps", "2"];
    let printed = succeeds("07_guidance", &[&args[..], &["--out", s(&run07)]].concat());
    assert_eq!(printed.matches("are the digit asked for").count(), 4, "{printed}");
    for w in 0..4 {
        assert_eq!(png_size(&run07.join(format!("guidance_w{w}.png"))).1, 10 * 2 * 28 + 11 * 2, "a row per class");
    }
    let sevens = dir.join("04").join("sevens.png");
    succeeds(
        "04_sample",
        &[&sample[..], &["--checkpoint", s(&conditional), "--label", "7", "--guidance", "2", "--out", s(&sevens)]]
            .concat(),
    );
    png_size(&sevens);

    // 08, 09, 10 steer the main job's model.
    for (name, file, args) in [
        ("08_img2img", "08/img2img.png", ["--steps", "4", "--count", "2"]),
        ("09_inpaint", "09/inpaint.png", ["--steps", "3", "--count", "2"]),
        ("10_interpolate", "10/interpolation.png", ["--steps", "3", "--rows", "1"]),
    ] {
        let png = dir.join(file);
        succeeds(name, &[&args[..], &["--checkpoint", s(&weights), "--out", s(&png)]].concat());
        png_size(&png);
    }

    // The same run in two sittings writes the same files, byte for byte, and samples the same images.
    let run03r = dir.join("03r");
    let printed = succeeds("03_train_mnist", &[&TRAIN[..], &["--stop-at", "3", "--out", s(&run03r)]].concat());
    assert!(printed.contains("continue with --resume"), "{printed}");
    assert!(!run03r.join("model.safetensors").exists(), "a sitting that stops early writes no final weights");
    let checkpoints = run03r.join("checkpoints");
    let resume = ["--resume", s(&checkpoints), "--grid", "4", "--sampler-steps", "3", "--out", s(&run03r)];
    succeeds("03_train_mnist", &resume);
    for file in ["loss.csv", "model.safetensors", "samples.png", "checkpoints/step-00000006.safetensors"] {
        assert!(bytes(&run03.join(file)) == bytes(&run03r.join(file)), "{file} differs after resuming");
    }
    let resumed = dir.join("04").join("resumed.png");
    let resumed_weights = run03r.join("model.safetensors");
    let args = ["--checkpoint", s(&resumed_weights), "--out", s(&resumed)];
    succeeds("04_sample", &[&sample[..], &args[..]].concat());
    assert_eq!(bytes(&resumed), bytes(&from_weights));

    // Resuming a finished run trains nothing and writes its weights again.
    let printed = succeeds("03_train_mnist", &resume);
    assert!(printed.contains("nothing left to train"), "{printed}");
    assert_eq!(bytes(&resumed_weights), bytes(&weights));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_model_written_as_a_diffusers_folder_samples_the_same_images_from_it() {
    let dir = scratch("diffusers-path");
    let run03 = dir.join("03d");
    let mut train = TRAIN.to_vec();
    train[1] = "diffusers-mnist";
    // diffusers' DDPMScheduler has no flow matching: a diffusion model (ε, the scheduler's default).
    succeeds("03_train_mnist", &[&train[..], &["--objective", "diffusion", "--out", s(&run03)]].concat());
    let weights = run03.join("model.safetensors");
    let printed = succeeds("11_diffusers", &["--checkpoint", s(&weights), "--out", s(&dir.join("11"))]);
    assert!(printed.contains("read back: the same config, weights and output, bit for bit"), "{printed}");
    let folder = dir.join("11").join("mnist-ddpm");
    for file in [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ] {
        assert!(folder.join(file).is_file(), "{file}");
    }
    assert!(dir.join("11").join("probe.safetensors").is_file());
    let scheduler = text(&folder.join("scheduler/scheduler_config.json"));
    assert!(scheduler.contains("\"num_train_timesteps\": 50"), "{scheduler}");
    let (from_folder, from_weights) = (Trained::load(&folder).unwrap(), Trained::load(&weights).unwrap());
    assert_eq!(from_folder.model.config, from_weights.model.config);
    assert_eq!(from_folder.schedule, from_weights.schedule);

    // 04 on the folder draws what it draws from the weights file.
    let sample = ["--steps", "3", "--count", "4"];
    let (a, b) = (dir.join("04").join("weights.png"), dir.join("04").join("folder.png"));
    succeeds("04_sample", &[&sample[..], &["--checkpoint", s(&weights), "--out", s(&a)]].concat());
    succeeds("04_sample", &[&sample[..], &["--checkpoint", s(&folder), "--out", s(&b)]].concat());
    png_size(&b);
    assert_eq!(bytes(&a), bytes(&b));
    std::fs::remove_dir_all(&dir).unwrap();
}
