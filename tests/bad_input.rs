//! Bad input, as a hostile user would give it: every case is an error with one line naming the file or the
//! flag and the value, exit status 1 (files) or 2 (usage), never a panic, an allocation abort or a silent
//! acceptance. Files with edited numbers are re-signed (their checksum recomputed), so what is tested is the
//! check of the values, not the checksum; the checksum itself is tested on files that are not re-signed.

mod common;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use autograd::{ParamId, ParamStore};
use common::{example, fails, scratch, succeeds};
use diffusion::metadata::Fields;
use diffusion::model::unet::{UNet, UNetConfig};
use diffusion::training::checkpoint::{read_metadata, save_weights, Checkpoint, Trained};

/// A trained `tiny` run: 4 steps, T = 50, checkpoints at 2 and 4.
fn tiny_run(dir: &Path) -> PathBuf {
    let out = dir.join("run");
    // A linear-schedule ε model: the header edits below name its schedule and prediction.
    let args = ["--preset", "tiny", "--steps", "4", "--batch", "2", "--limit", "16", "--timesteps", "50"];
    let args = [&args[..], &["--schedule", "linear"]].concat();
    let more = ["--checkpoint-every", "2", "--grid", "1", "--sampler-steps", "2", "--out", out.to_str().unwrap()];
    succeeds("03_train_mnist", &[&args[..], &more[..]].concat());
    out
}

/// A copy of the weights file `from` at `to` with `edit` applied to its metadata and parameters, signed
/// anew so that only the edited values can be wrong.
fn edited_weights(from: &Path, to: &Path, edit: impl FnOnce(&mut BTreeMap<String, String>, &mut ParamStore)) {
    let trained = Trained::load(from).unwrap();
    let (mut metadata, mut params) = (trained.metadata, trained.params);
    edit(&mut metadata, &mut params);
    save_weights(to, &params, &metadata).unwrap();
}

/// The same for a checkpoint: `edit` gets the whole state.
fn edited_checkpoint(from: &Path, to: &Path, edit: impl FnOnce(&mut Checkpoint)) {
    let metadata = read_metadata(from).unwrap();
    let mut template = ParamStore::new();
    let _ = UNet::new(UNetConfig::from_metadata(&Fields::new(from, &metadata)).unwrap(), &mut template, 0);
    let mut checkpoint = Checkpoint::load(from, &template).unwrap();
    edit(&mut checkpoint);
    checkpoint.save(to).unwrap();
}

fn set(metadata: &mut BTreeMap<String, String>, key: &str, value: &str) {
    metadata.insert(key.to_string(), value.to_string());
}

/// Asserts that `name args` fails with `code` and a message that starts with `start` and contains `part`.
fn refused(name: &str, args: &[&str], code: i32, start: &str, part: &str) {
    let (got, err) = fails(example(name).args(args));
    assert_eq!(got, code, "{name} {args:?}: {err}");
    assert!(err.starts_with(&format!("error: {start}")), "{name} {args:?}: {err}");
    assert!(err.contains(part), "{name} {args:?}: {err}");
}

#[test]
fn numeric_flags_out_of_range_nan_and_non_utf8_are_usage_errors() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("03_train_mnist", &["--batch", "0"], "invalid value '0' for '--batch <BATCH>': out of range (1 to 65536)"),
        (
            "03_train_mnist",
            &["--accumulate", "0"],
            "invalid value '0' for '--accumulate <ACCUMULATE>': out of range (1 to 65536)",
        ),
        ("12_distill", &["--quick", "--from-steps", "3"], "--from-steps 3 --to-steps 2: powers of two, from above to"),
        ("12_distill", &["--quick", "--from-steps", "128"], "--from-steps 128: the model has T = 100"),
        (
            "12_distill",
            &["--quick", "--factor", "4"],
            "--factor 4: a power of two whose powers lead from --from-steps 4",
        ),
        ("12_distill", &["--factor", "1"], "invalid value '1' for '--factor <FACTOR>': out of range"),
        ("12_distill", &["--lr", "nan"], "invalid value 'nan' for '--lr <LR>': out of range"),
        ("12_distill", &["--batch", "0"], "invalid value '0' for '--batch <BATCH>': out of range (1 to 4096)"),
        ("12_distill", &["--round-steps", "0"], "invalid value '0' for '--round-steps <ROUND_STEPS>': out of range"),
        ("12_distill", &["--consistency-lr", "-1"], "invalid value '-1' for '--consistency-lr <CONSISTENCY_LR>'"),
        ("03_train_mnist", &["--batch", "1000000"], "invalid value '1000000' for '--batch <BATCH>': out of range"),
        (
            "03_train_mnist",
            &["--timesteps", "0"],
            "invalid value '0' for '--timesteps <TIMESTEPS>': out of range (2 to 100000)",
        ),
        (
            "03_train_mnist",
            &["--timesteps", "1000000000"],
            "invalid value '1000000000' for '--timesteps <TIMESTEPS>': out of range",
        ),
        ("03_train_mnist", &["--grid", "0"], "invalid value '0' for '--grid <GRID>': out of range (1 to 1024)"),
        ("03_train_mnist", &["--grid", "100000000"], "invalid value '100000000' for '--grid <GRID>': out of range"),
        ("03_train_mnist", &["--steps", "0"], "invalid value '0' for '--steps <STEPS>': out of range"),
        ("03_train_mnist", &["--lr", "-1"], "invalid value '-1' for '--lr <LR>': out of range"),
        ("03_train_mnist", &["--ema", "2"], "invalid value '2' for '--ema <EMA>': out of range (0 to 0.999999)"),
        ("03_train_mnist", &["--ema", "-1"], "invalid value '-1' for '--ema <EMA>': out of range"),
        ("03_train_mnist", &["--ema", "nan"], "invalid value 'nan' for '--ema <EMA>': out of range"),
        ("03_train_mnist", &["--grad-clip", "nan"], "invalid value 'nan' for '--grad-clip <GRAD_CLIP>': out of range"),
        ("03_train_mnist", &["--min-snr", "-1"], "invalid value '-1' for '--min-snr <MIN_SNR>': out of range"),
        (
            "03_train_mnist",
            &["--label-dropout", "2"],
            "invalid value '2' for '--label-dropout <LABEL_DROPOUT>': out of range (0 to 1)",
        ),
        (
            "03_train_mnist",
            &["--warmup", "18446744073709551615"],
            "invalid value '18446744073709551615' for '--warmup <WARMUP>': out of range",
        ),
        (
            "03_train_mnist",
            &["--schedule", "linear", "--timesteps", "15"],
            "--schedule linear --timesteps 15: the linear",
        ),
        ("03_train_mnist", &["--timesteps", "15"], "grid sampler steps 20: out of range (1 to 15)"),
        ("04_sample", &["--count", "0"], "invalid value '0' for '--count <COUNT>': out of range (1 to 100000)"),
        ("04_sample", &["--count", "100000000"], "invalid value '100000000' for '--count <COUNT>': out of range"),
        ("04_sample", &["--steps", "0"], "invalid value '0' for '--steps <STEPS>': out of range"),
        ("04_sample", &["--eta", "nan"], "invalid value 'nan' for '--eta <ETA>': out of range"),
        ("04_sample", &["--guidance", "nan"], "invalid value 'nan' for '--guidance <GUIDANCE>': out of range"),
        ("06_evaluate", &["--quick", "--batch", "0"], "invalid value '0' for '--batch <BATCH>': out of range"),
        ("06_evaluate", &["--count", "0"], "invalid value '0' for '--count <COUNT>': out of range (2 to 100000)"),
        ("07_guidance", &["--quick", "--scales", "0,nan"], "--scales: a scale NaN: out of range"),
        ("06_evaluate", &["--quick", "--nfe", "4,0"], "invalid value '0' for '--nfe <NFE>': out of range (1 to 1000)"),
        ("03_train_mnist", &["--quick", "--objective", "wave"], "--objective \"wave\": unknown (diffusion, flow)"),
        (
            "03_train_mnist",
            &["--quick", "--time-sampling", "logit-normal:0,-1"],
            "--time-sampling \"logit-normal:0,-1\": unknown",
        ),
    ];
    for (name, args, expected) in cases {
        refused(name, args, 2, expected, "");
    }
    let (code, err) = fails(example("04_sample").arg("--sampler").arg(std::ffi::OsStr::from_bytes(b"\xffddim")));
    assert_eq!((code, err.as_str()), (2, "error: the argument \"\\xFFddim\" is not valid UTF-8"));
}

#[test]
fn changed_weights_files_are_refused_and_absurd_configs_never_allocate() {
    let dir = scratch("bad-weights");
    let run = tiny_run(&dir);
    let weights = run.join("model.safetensors");
    let w = weights.to_str().unwrap();
    let sample =
        |file: &Path| ["--checkpoint", file.to_str().unwrap(), "--count", "2", "--steps", "2"].map(String::from);
    let sample_ok = |file: &Path| {
        let out = dir.join("sample.png");
        let mut args = sample(file).to_vec();
        args.extend(["--out".to_string(), out.to_str().unwrap().to_string()]);
        succeeds("04_sample", &args.iter().map(String::as_str).collect::<Vec<_>>());
    };
    sample_ok(&weights);
    refused("04_sample", &["--checkpoint", w, "--steps", "51"], 2, "--steps 51: this model has T = 50 timesteps", "");
    let out11 = dir.join("11");
    let no_counterpart = "this model has no diffusers counterpart: its U-Net has the compact skip topology";
    refused(
        "11_diffusers",
        &["--checkpoint", w, "--out", out11.to_str().unwrap()],
        2,
        no_counterpart,
        "--preset diffusers-mnist",
    );
    assert!(!out11.exists(), "nothing is written for a model that cannot be exported");
    let not_a_pipeline = dir.join("not-a-pipeline");
    std::fs::create_dir_all(&not_a_pipeline).unwrap();
    let folder = not_a_pipeline.to_str().unwrap();
    refused(
        "04_sample",
        &["--checkpoint", folder],
        1,
        folder,
        "without unet/config.json: not a diffusers pipeline folder",
    );

    // Not re-signed: any changed byte is caught by the checksum, whatever it changed.
    let bytes = std::fs::read(&weights).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let text = String::from_utf8(bytes[8..8 + header].to_vec()).unwrap();
    let flipped = {
        let mut b = bytes.clone();
        *b.last_mut().unwrap() ^= 0x40; // a bit of the last weight
        b
    };
    let edit_header = |from: &str, to: &str| {
        assert!(text.contains(from), "{from}");
        let new = text.replacen(from, to, 1);
        assert_eq!(new.len(), text.len(), "same length, so offsets hold");
        [&bytes[..8], new.as_bytes(), &bytes[8 + header..]].concat()
    };
    let swapped = {
        // Two tensors of the same shape trade places: swap their data offsets.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let offsets = |name: &str| v[name]["data_offsets"].to_string();
        let (a, b) = (offsets("down0.0.res.conv1.bias"), offsets("down0.0.res.conv2.bias"));
        let new = text.replacen(&a, "@A@", 1).replacen(&b, &a, 1).replacen("@A@", &b, 1);
        [&bytes[..8], new.as_bytes(), &bytes[8 + header..]].concat()
    };
    let unsigned: Vec<(&str, Vec<u8>)> = vec![
        ("flipped", flipped),
        ("heads", edit_header("\"unet.heads\":\"2\"", "\"unet.heads\":\"1\"")),
        ("groups", edit_header("\"unet.groups\":\"4\"", "\"unet.groups\":\"2\"")),
        ("timesteps", edit_header("\"timesteps\":\"50\"", "\"timesteps\":\"60\"")),
        ("schedule", edit_header("\"schedule\":\"linear\"", "\"schedule\":\"cosine\"")),
        ("prediction", edit_header("\"train.prediction\":\"epsilon\"", "\"train.prediction\":\"v000000\"")),
        ("swapped", swapped),
    ];
    for (name, data) in unsigned {
        let file = dir.join(format!("{name}.safetensors"));
        std::fs::write(&file, data).unwrap();
        let named = file.display().to_string();
        refused("04_sample", &sample(&file).each_ref().map(String::as_str), 1, &named, "is corrupted: its checksum");
    }

    // Re-signed: the values themselves are checked, before any allocation they would size.
    let cases: Vec<(&str, &str, &str)> = vec![
        ("format_version", "3", "is a weights file of format version 3; this program reads versions 1 to 2"),
        ("format_version", "0", "is a weights file of format version 0"),
        ("format_version", "-1", "has a \"format_version\" entry that is not valid: \"-1\""),
        ("unet.image_channels", "18446744073709551615", "image_channels 18446744073709551615: out of range (1 to 4)"),
        ("unet.blocks_per_level", "18446744073709551615", "blocks_per_level 18446744073709551615: out of range"),
        ("unet.blocks_per_level", "1000", "blocks_per_level 1000: out of range (1 to 16)"),
        ("unet.blocks_per_level", "1000000", "blocks_per_level 1000000: out of range"),
        ("unet.time_dim", "18446744073709551615", "time_dim 18446744073709551615: out of range"),
        ("unet.image_size", "4294967296", "image_size 4294967296: out of range (1 to 1024)"),
        ("unet.base_channels", "4096", "base_channels 4096: out of range (1 to 2048)"),
        ("timesteps", "18446744073709551615", "has timesteps 18446744073709551615: out of range"),
        ("timesteps", "0", "has timesteps 0: out of range (2 to 100000)"),
        ("timesteps", "15", "has the linear schedule with timesteps 15 has β_11"),
        ("schedule", "bogus", "has schedule \"bogus\": unknown"),
    ];
    for (i, (key, value, expected)) in cases.iter().enumerate() {
        let file = dir.join(format!("edited-{i}.safetensors"));
        edited_weights(&weights, &file, |m, _| set(m, key, value));
        refused("04_sample", &sample(&file).each_ref().map(String::as_str), 1, &file.display().to_string(), expected);
    }
    let nan = dir.join("nan.safetensors");
    edited_weights(&weights, &nan, |_, p| p.get_mut(ParamId(0)).data_mut()[0] = f32::NAN);
    refused("04_sample", &sample(&nan).each_ref().map(String::as_str), 1, &nan.display().to_string(), "holds NaN");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checkpoints_with_impossible_values_are_refused_on_resume() {
    let dir = scratch("bad-checkpoints");
    let run = tiny_run(&dir);
    let last = run.join("checkpoints").join("step-00000004.safetensors");
    let first = run.join("checkpoints").join("step-00000002.safetensors");
    type Edit = Box<dyn Fn(&mut Checkpoint)>;
    let config = |key: &'static str, value: &'static str| -> Edit { Box::new(move |c| set(&mut c.config, key, value)) };
    let cases: Vec<(Edit, &str)> = vec![
        (config("schedule", "bogus"), "has schedule \"bogus\": unknown"),
        (config("timesteps", "0"), "has timesteps 0: out of range"),
        (config("train.batch", "0"), "has batch 0: out of range (1 to 65536)"),
        (config("train.lr", "-1"), "has lr -1: out of range"),
        (config("train.ema_decay", "2"), "has ema_decay 2: out of range"),
        (config("unet.base_channels", "4096"), "base_channels 4096: out of range"),
        (config("unet.blocks_per_level", "1000"), "blocks_per_level 1000: out of range"),
        (config("unet.time_dim", "18446744073709551615"), "time_dim 18446744073709551615: out of range"),
        (
            Box::new(|c| c.position = 1_000_000),
            "cannot continue this run: its data position 1000000 is past the 16 images",
        ),
        (Box::new(|c| c.step = 99), "cannot continue this run: its step 99 is past the run's 4 steps"),
        (Box::new(|c| c.ema.get_mut(ParamId(3)).data_mut()[0] = f32::NAN), "holds NaN"),
    ];
    for (i, (edit, expected)) in cases.iter().enumerate() {
        let file = dir.join(format!("edited-{i}.safetensors"));
        edited_checkpoint(&first, &file, edit);
        let out = dir.join(format!("resumed-{i}"));
        let args = ["--resume", file.to_str().unwrap(), "--out", out.to_str().unwrap()];
        refused("03_train_mnist", &args, 1, &file.display().to_string(), expected);
        let training_only = ["cannot", "has batch", "has lr", "has ema_decay"];
        if !training_only.iter().any(|t| expected.starts_with(t)) {
            // Sampling reads the model, the schedule and the EMA weights of a checkpoint, checked the same way.
            let sample = ["--checkpoint", file.to_str().unwrap(), "--count", "1", "--steps", "1"];
            refused("04_sample", &sample, 1, &file.display().to_string(), expected);
        }
    }
    let (l, r) = (last.to_str().unwrap(), run.to_str().unwrap());
    refused(
        "03_train_mnist",
        &["--resume", l, "--stop-at", "2", "--out", r],
        2,
        "--stop-at 2: ",
        "is already at step 4",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_data_files_are_named_and_never_unpacked_whole() {
    let dir = scratch("bad-data");
    let shipped = diffusion::data::idx::shipped_mnist_dir();
    let images = shipped.join("images-idx3-ubyte.gz");
    let labels = shipped.join("labels-idx1-ubyte.gz");
    let gz = |bytes: &[u8]| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    // A gzip bomb: 512 MB of zeros, refused at its first 16 bytes.
    let bomb = dir.join("bomb.gz");
    std::fs::write(&bomb, gz(&vec![0; 512 << 20])).unwrap();
    let junk = dir.join("junk.gz");
    std::fs::write(&junk, [std::fs::read(&images).unwrap(), b"junk".to_vec()].concat()).unwrap();
    let mut label_bytes = diffusion::data::idx::read_labels(&labels).unwrap();
    label_bytes[7] = 200;
    let bad_labels = dir.join("labels-200.gz");
    std::fs::write(&bad_labels, gz(&[&[0, 0, 8, 1], &5000u32.to_be_bytes()[..], &label_bytes].concat())).unwrap();
    let cases: Vec<(PathBuf, PathBuf, PathBuf, &str)> = vec![
        (bomb.clone(), labels.clone(), bomb.clone(), "has magic number 0x00000000"),
        ("/dev/zero".into(), labels.clone(), "/dev/zero".into(), "has magic number 0x00000000"),
        (junk.clone(), labels.clone(), junk.clone(), "is not a valid gzip stream"),
        (images.clone(), bad_labels.clone(), bad_labels.clone(), "has a label 200"),
    ];
    for (images, labels, named, expected) in cases {
        let args = ["--quick", "--images", images.to_str().unwrap(), "--labels", labels.to_str().unwrap()];
        refused("03_train_mnist", &args, 1, &format!("{}: ", named.display()), expected);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
