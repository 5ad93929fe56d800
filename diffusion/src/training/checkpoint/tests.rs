use super::*;
use autograd::optim::AdamState;

fn store(scale: f32) -> ParamStore {
    let mut p = ParamStore::new();
    p.add("a.weight", Tensor::from_vec(&[2, 3], (0..6).map(|i| i as f32 * scale).collect()));
    p.add("a.bias", Tensor::from_vec(&[3], vec![scale; 3]));
    p
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ckpt-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn round_trip_keeps_values_names_and_metadata() {
    let path = temp("round.safetensors");
    let meta = BTreeMap::from([("preset".to_string(), "tiny".to_string())]);
    save_weights(&path, &store(1.5), &meta).unwrap();
    let mut target = store(0.0);
    assert_eq!(read_metadata(&path).unwrap(), meta);
    assert_eq!(load_weights(&path, &mut target).unwrap(), meta);
    assert_eq!(target.get(target.find("a.weight").unwrap()).data(), store(1.5).get(autograd::ParamId(0)).data());
}

#[test]
fn bad_files_are_rejected_and_leave_the_model_unchanged() {
    let path = temp("good.safetensors");
    save_weights(&path, &store(2.0), &BTreeMap::new()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", bytes[..bytes.len() - 5].to_vec(), "is not a valid safetensors file"),
        ("empty", vec![], "is not a valid safetensors file"),
        ("huge-header", [&u64::MAX.to_le_bytes()[..], &bytes[8..]].concat(), "is not a valid safetensors file"),
    ];
    for (name, data, expected) in cases {
        let p = temp(&format!("{name}.safetensors"));
        std::fs::write(&p, data).unwrap();
        let mut target = store(7.0);
        let err = load_weights(&p, &mut target).unwrap_err().to_string();
        assert!(err.starts_with(&p.display().to_string()) && err.contains(expected), "{name}: {err}");
        assert_eq!(target.get(autograd::ParamId(1)).data(), &[7.0; 3], "{name}: model untouched");
    }
    // A model with a differently shaped parameter.
    let mut other = ParamStore::new();
    other.add("a.weight", Tensor::zeros(&[3, 2]));
    other.add("a.bias", Tensor::zeros(&[3]));
    let err = load_weights(&path, &mut other).unwrap_err().to_string();
    assert!(err.contains("tensor \"a.weight\" has shape [2, 3], the model expects [3, 2]"), "{err}");
    // A model with a parameter the file lacks.
    let mut bigger = store(0.0);
    bigger.add("b.weight", Tensor::zeros(&[1]));
    let err = load_weights(&path, &mut bigger).unwrap_err().to_string();
    assert!(err.contains("has no tensor named \"b.weight\""), "{err}");
    assert_eq!(bigger.get(autograd::ParamId(0)).data(), &[0.0; 6], "no partial load");
    // A model with fewer parameters than the file.
    let mut smaller = ParamStore::new();
    smaller.add("a.bias", Tensor::zeros(&[3]));
    let err = load_weights(&path, &mut smaller).unwrap_err().to_string();
    assert!(err.contains("has 2 tensors, 1 expected"), "{err}");
}

#[test]
fn a_failed_write_keeps_the_previous_file() {
    let path = temp("keep.safetensors");
    save_weights(&path, &store(3.0), &BTreeMap::new()).unwrap();
    // Simulate a crash mid-write: a torn temporary file is left behind, the rename never happens.
    let torn = path.parent().unwrap().join(".keep.safetensors.tmp-crashed");
    std::fs::write(&torn, b"half a file").unwrap();
    let mut target = store(0.0);
    load_weights(&path, &mut target).unwrap();
    assert_eq!(target.get(autograd::ParamId(1)).data(), &[3.0; 3]);
}

/// A small training state: two parameters, Adam state for one of them.
fn state(value: f32) -> Checkpoint {
    let params = store(value);
    let adam = vec![Some(AdamState { step: 7, m: vec![value; 6], v: vec![value * value; 6] }), None];
    Checkpoint {
        step: 7,
        epoch: 2,
        position: 3,
        ema: store(value * 0.5),
        params,
        ema_updates: 7,
        adam,
        config: BTreeMap::from([("train.lr".to_string(), "0.001".to_string())]),
    }
}

fn assert_same(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!((a.step, a.epoch, a.position, a.ema_updates), (b.step, b.epoch, b.position, b.ema_updates));
    for (x, y) in [(&a.params, &b.params), (&a.ema, &b.ema)] {
        assert!(x.iter().zip(y.iter()).all(|(p, q)| p.1 == q.1 && p.2.data() == q.2.data()));
    }
    assert_eq!(a.adam, b.adam);
    assert_eq!(a.config, b.config);
}

#[test]
fn a_checkpoint_round_trips_everything() {
    let path = temp("state.safetensors");
    let saved = state(1.25);
    saved.save(&path).unwrap();
    let loaded = Checkpoint::load(&path, &store(0.0)).unwrap();
    assert_same(&saved, &loaded);
    // Readable as plain safetensors, with readable names.
    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = file.names();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "adam.m.a.weight",
            "adam.step",
            "adam.v.a.weight",
            "ema.a.bias",
            "ema.a.weight",
            "model.a.bias",
            "model.a.weight"
        ]
    );
}

#[test]
fn wrong_version_wrong_model_and_flipped_bits_are_named() {
    let path = temp("versions.safetensors");
    state(2.0).save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let error = |data: &[u8], template: &ParamStore| {
        let p = temp("variant.safetensors");
        std::fs::write(&p, data).unwrap();
        let err = Checkpoint::load(&p, template).unwrap_err().to_string();
        assert!(err.starts_with(&p.display().to_string()), "{err}");
        err
    };
    // Edits of the header that keep its length (so every offset stays valid).
    let swap = |from: &str, to: &str| {
        assert_eq!(from.len(), to.len());
        let at = bytes.windows(from.len()).position(|w| w == from.as_bytes()).expect("present in the header");
        let mut edited = bytes.clone();
        edited[at..at + to.len()].copy_from_slice(to.as_bytes());
        edited
    };
    let err = error(&swap("\"format_version\":\"1\"", "\"format_version\":\"2\""), &store(0.0));
    assert!(err.ends_with("is a checkpoint of format version 2; this program reads version 1"), "{err}");
    let err = error(&swap("scratch-diffusion checkpoint", "scratch-diffusion weights!!!"), &store(0.0));
    assert!(err.contains("is not a training checkpoint"), "{err}");
    // One flipped bit in the last weight.
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 0x10;
    let err = error(&flipped, &store(0.0));
    assert!(err.ends_with("is corrupted: its checksum does not match its contents"), "{err}");
    // A model whose parameter has another shape.
    let mut other = ParamStore::new();
    other.add("a.weight", Tensor::zeros(&[3, 2]));
    other.add("a.bias", Tensor::zeros(&[3]));
    let err = error(&bytes, &other);
    assert!(err.contains("tensor \"model.a.weight\" has shape [2, 3], the model expects [3, 2]"), "{err}");
    // A weights file is not a checkpoint.
    let weights = temp("weights-only.safetensors");
    save_weights(&weights, &store(1.0), &BTreeMap::new()).unwrap();
    let err = Checkpoint::load(&weights, &store(0.0)).unwrap_err().to_string();
    assert!(err.contains("is not a training checkpoint (no \"format\" in its metadata)"), "{err}");
    let missing = temp("does-not-exist.safetensors");
    let err = Checkpoint::load(&missing, &store(0.0)).unwrap_err().to_string();
    assert!(err.starts_with(&missing.display().to_string()) && err.contains("No such file"), "{err}");
}

/// Random corruptions of a valid checkpoint: single bit flips anywhere, truncation at any length, huge or
/// random header lengths, overwritten runs, appended bytes. Every one must be an error naming the file (the
/// checksum catches what the format cannot), and none may panic.
#[test]
fn random_corruptions_are_errors_never_panics() {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    let path = temp("pristine.safetensors");
    state(3.0).save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let target = temp("corrupt.safetensors");
    let mut rng = StdRng::seed_from_u64(2026);
    let mut kinds = [0usize; 5];
    for case in 0..1000 {
        let mut data = bytes.clone();
        let kind = case % 5;
        kinds[kind] += 1;
        match kind {
            0 => {
                let at = rng.random_range(0..data.len());
                data[at] ^= 1 << rng.random_range(0..8);
            }
            1 => data.truncate(rng.random_range(0..data.len())),
            2 => {
                let huge = [u64::MAX, u64::MAX / 2, 1 << 40, rng.random::<u64>(), rng.random_range(0..200)];
                data[..8].copy_from_slice(&huge[rng.random_range(0..huge.len())].to_le_bytes());
                if u64::from_le_bytes(data[..8].try_into().unwrap())
                    == u64::from_le_bytes(bytes[..8].try_into().unwrap())
                {
                    data[0] ^= 1;
                }
            }
            3 => {
                let at = rng.random_range(0..data.len());
                let len = rng.random_range(1..=16.min(data.len() - at));
                let before = data[at..at + len].to_vec();
                rng.fill(&mut data[at..at + len]);
                if data[at..at + len] == before[..] {
                    data[at] ^= 0xff;
                }
            }
            _ => data.extend((0..rng.random_range(1..64)).map(|_| rng.random::<u8>())),
        }
        std::fs::write(&target, &data).unwrap();
        match Checkpoint::load(&target, &store(0.0)) {
            Ok(_) => panic!("case {case} (kind {kind}) loaded a corrupted file"),
            Err(e) => assert!(e.to_string().starts_with(&target.display().to_string()), "{e}"),
        }
    }
    assert!(kinds.iter().all(|&k| k == 200));
}

#[test]
fn rotation_keeps_the_newest_checkpoints_and_clears_torn_temporaries() {
    let dir = temp("rotation");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".step-00000003.safetensors.tmp-99999"), b"torn").unwrap();
    for step in 1..=5 {
        let mut c = state(step as f32);
        c.step = step;
        save_rotating(&dir, &c, 2).unwrap();
    }
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["step-00000004.safetensors", "step-00000005.safetensors"]);
    assert_eq!(list_checkpoints(&dir).unwrap().last().unwrap(), &dir.join("step-00000005.safetensors"));
}

/// Kills a process that writes checkpoints in a loop while it is in the middle of a write (its temporary
/// file exists and is not complete), then loads the checkpoint: the previous one, whole.
#[test]
fn killing_the_writer_mid_write_keeps_the_previous_checkpoint() {
    let dir = temp("killed");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "training::checkpoint::tests::writer_process", "--ignored", "--test-threads=1"])
        .env("CHECKPOINT_WRITER_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let path = dir.join("run.safetensors");
    let temp_file = dir.join(format!(".run.safetensors.tmp-{}", child.id()));
    let started = std::time::Instant::now();
    let mut torn_size = 0;
    while started.elapsed().as_secs() < 120 {
        let complete = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let partial = std::fs::metadata(&temp_file).map(|m| m.len()).unwrap_or(0);
        if complete > 0 && partial > 0 && partial < complete {
            torn_size = partial;
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let killed = child.kill();
    let status = child.wait();
    assert!(killed.is_ok() && status.is_ok());
    assert!(torn_size > 0, "never saw a write in progress");
    let torn = std::fs::metadata(&temp_file).map(|m| m.len()).unwrap_or(0);
    assert!(torn >= torn_size && torn < std::fs::metadata(&path).unwrap().len(), "the write was cut short");
    let loaded = Checkpoint::load(&path, &big_store(0.0)).unwrap();
    let value = loaded.params.get(autograd::ParamId(0)).data()[0];
    assert!(value >= 1.0 && loaded.step == value as u64, "a whole earlier checkpoint");
    assert!(loaded.params.get(autograd::ParamId(0)).data().iter().all(|&v| v == value));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn big_store(value: f32) -> ParamStore {
    let mut p = ParamStore::new();
    p.add("big", Tensor::full(&[4 << 20], value));
    p
}

/// Not a test: the process `killing_the_writer_mid_write_keeps_the_previous_checkpoint` kills. Writes
/// checkpoints 1, 2, 3, ... of a 16 MB parameter to `$CHECKPOINT_WRITER_DIR/run.safetensors` forever.
#[test]
#[ignore = "helper process of killing_the_writer_mid_write_keeps_the_previous_checkpoint"]
fn writer_process() {
    let dir = std::path::PathBuf::from(std::env::var("CHECKPOINT_WRITER_DIR").expect("run by the kill test"));
    for step in 1.. {
        let params = big_store(step as f32);
        let c = Checkpoint {
            step,
            epoch: 0,
            position: 0,
            ema: params.clone(),
            params,
            ema_updates: step,
            adam: vec![None],
            config: BTreeMap::new(),
        };
        c.save(dir.join("run.safetensors")).unwrap();
    }
}

/// The same contents give the same bytes: metadata in key order, tensors in the crate's order.
#[test]
fn identical_contents_write_identical_bytes() {
    let meta: BTreeMap<String, String> = (0..40).map(|i| (format!("key{i}"), format!("value \"{i}\""))).collect();
    let (a, b) = (temp("same-a.safetensors"), temp("same-b.safetensors"));
    save_weights(&a, &store(1.0), &meta).unwrap();
    save_weights(&b, &store(1.0), &meta).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(read_metadata(&a).unwrap(), meta, "quotes in values survive the hand-written header");
    state(1.0).save(&a).unwrap();
    state(1.0).save(&b).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

/// A weights file from before weights files held the U-Net config (`unet.*`) still opens: the config is
/// rebuilt from the preset it names, with the classes its class embedding table has.
#[test]
fn weights_without_a_unet_config_are_rebuilt_from_their_preset() {
    use crate::model::unet::{UNet, UNetConfig};
    for num_classes in [0, 10] {
        let config = UNetConfig { num_classes, ..UNetConfig::tiny() };
        let mut params = ParamStore::new();
        let _ = UNet::new(config.clone(), &mut params, 3);
        let meta: BTreeMap<String, String> = [
            ("format", WEIGHTS_FORMAT),
            ("format_version", "1"),
            ("preset", "tiny"),
            ("train.prediction", "epsilon"),
            ("schedule", "linear"),
            ("timesteps", "50"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let path = temp(&format!("legacy-{num_classes}.safetensors"));
        save_weights(&path, &params, &meta).unwrap();
        let trained = Trained::load(&path).unwrap();
        assert_eq!(trained.model.config, config);
        assert_eq!(trained.params.get(autograd::ParamId(0)).data(), params.get(autograd::ParamId(0)).data());
        let mut unknown = meta.clone();
        unknown.insert("preset".into(), "huge".into());
        save_weights(&path, &params, &unknown).unwrap();
        let err = Trained::load(&path).err().unwrap().to_string();
        assert_eq!(err, format!("{}: has an unknown \"preset\": \"huge\"", path.display()));
    }
}
