//! Seeded fuzzing of every reader of untrusted bytes: weights files and checkpoints (their metadata values,
//! re-signed so the value checks are what is tested; and raw byte changes, not re-signed, which the checksum
//! must catch), IDX and CIFAR headers. For every mutation: no panic, no allocation over [`BOUND`] while
//! reading, and no silent acceptance: a file whose bytes changed loads only if what it loads is unchanged.
//! A counting global allocator measures the allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use autograd::ParamStore;
use diffusion::metadata::Fields;
use diffusion::model::unet::{UNet, UNetConfig};
use diffusion::training::checkpoint::{read_metadata, save_trained, Checkpoint, Trained};
use diffusion::training::train::TrainConfig;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The most any one read of a mutated small file may allocate above what was live before it: 64 MiB (the
/// largest valid file here is under 1 MB; the readers' own bounds are far larger, so hitting this would
/// mean a header sized an allocation before it was checked).
const BOUND: usize = 64 << 20;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The tests share one allocator count, so they take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `read`, returning its result and the most it allocated above what was live when it started.
fn measured<T>(read: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = read();
    (out, PEAK.load(Ordering::Relaxed) - before)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fuzz-inputs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Values a hostile or broken file might hold in a metadata entry.
const VALUES: [&str; 22] = [
    "0",
    "1",
    "2",
    "3",
    "-1",
    "7",
    "64",
    "1000",
    "4096",
    "65536",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "1e30",
    "nan",
    "inf",
    "-0",
    "",
    "x",
    "1,2,3,4,5,6,7,8,9",
    "0,0",
    "linear",
];

/// One step of a `tiny` model's weights and its checkpoint, written by the library itself.
fn files(dir: &Path) -> (PathBuf, PathBuf) {
    let config = UNetConfig { image_size: 8, ..UNetConfig::tiny() };
    let mut params = ParamStore::new();
    let model = UNet::new(config, &mut params, 1);
    let schedule = diffusion::process::schedule::NoiseSchedule::linear_scaled(50);
    let images = autograd::Tensor::randn_seeded(&[4, 1, 8, 8], 2);
    let mut train = TrainConfig::new(1, 2, dir);
    train.grid_images = 1;
    train.grid_sampler.steps = 1;
    train.run_metadata.extend([
        ("schedule".to_string(), "linear".to_string()),
        ("timesteps".to_string(), "50".to_string()),
        ("preset".to_string(), "tiny".to_string()),
    ]);
    let (ema, report) =
        diffusion::training::train::train(&model, &mut params, &schedule, &images, None, &train, None).unwrap();
    let weights = dir.join("model.safetensors");
    save_trained(&weights, ema.params(), &train.record(&model.config.to_metadata())).unwrap();
    (weights, report.checkpoint)
}

/// Everything a load gives that a changed file could change.
fn loaded(t: &Trained) -> (UNetConfig, Vec<u32>, Vec<usize>) {
    let bits = t.params.iter().flat_map(|(_, _, p)| p.data().iter().map(|v| v.to_bits())).collect();
    (t.model.config.clone(), bits, vec![t.schedule.steps()])
}

#[test]
fn mutated_weights_and_checkpoints_never_panic_overallocate_or_load_changed() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("models");
    let (weights, checkpoint) = files(&dir);
    let mut rng = StdRng::seed_from_u64(18);
    let mut outcomes = BTreeMap::new();
    for original in [&weights, &checkpoint] {
        let reference = loaded(&Trained::load(original).unwrap());
        let metadata = read_metadata(original).unwrap();
        let keys: Vec<&String> = metadata.keys().collect();
        let bytes = std::fs::read(original).unwrap();
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mutant = dir.join("mutant.safetensors");
        for round in 0..150 {
            // Half the rounds: one metadata value replaced, the file re-signed. The other half: raw bytes
            // changed (in the header or anywhere), not re-signed.
            let resigned = round % 2 == 0;
            if resigned {
                let (key, value) = (keys[rng.random_range(0..keys.len())], VALUES[rng.random_range(0..VALUES.len())]);
                let mut edited = metadata.clone();
                edited.insert(key.clone(), value.to_string());
                resign(original, &mutant, edited);
            } else {
                let mut b = bytes.clone();
                for _ in 0..rng.random_range(1..4) {
                    let at = if rng.random_bool(0.7) {
                        rng.random_range(0..8 + header)
                    } else {
                        rng.random_range(0..b.len())
                    };
                    b[at] = rng.random();
                }
                if rng.random_bool(0.1) {
                    b.truncate(rng.random_range(0..b.len()));
                }
                std::fs::write(&mutant, b).unwrap();
            }
            let (result, allocated) = measured(|| Trained::load(&mutant));
            assert!(allocated <= BOUND, "round {round}: loading allocated {allocated} bytes");
            let outcome = match result {
                Ok(_) if resigned => "loaded (a valid value)",
                Ok(t) => {
                    assert_eq!(loaded(&t), reference, "round {round}: a changed file loaded changed values");
                    "loaded unchanged"
                }
                Err(e) => {
                    let message = e.to_string();
                    assert!(message.starts_with(&mutant.display().to_string()), "{message}");
                    assert_eq!(message.lines().count(), 1, "{message}");
                    "refused"
                }
            };
            *outcomes.entry((resigned, outcome)).or_insert(0) += 1;
        }
    }
    eprintln!("outcomes (re-signed, outcome): {outcomes:?}");
    assert!(outcomes.get(&(false, "refused")).copied().unwrap_or(0) > 100, "raw changes are caught: {outcomes:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes the tensors of `original` with `metadata`, through the library's own writers, so the checksum is
/// valid for the new values.
fn resign(original: &Path, to: &Path, mut metadata: BTreeMap<String, String>) {
    let old = read_metadata(original).unwrap();
    let fields = Fields::new(original, &old);
    let mut template = ParamStore::new();
    let _ = UNet::new(UNetConfig::from_metadata(&fields).unwrap(), &mut template, 0);
    if old["format"] == diffusion::training::checkpoint::FORMAT {
        let mut c = Checkpoint::load(original, &template).unwrap();
        for key in ["format", "format_version", "step", "epoch", "position", "ema_updates"] {
            let value = metadata.remove(key).unwrap();
            match key {
                "step" => c.step = value.parse().unwrap_or(c.step),
                "epoch" => c.epoch = value.parse().unwrap_or(c.epoch),
                "position" => c.position = value.parse().unwrap_or(c.position),
                "ema_updates" => c.ema_updates = value.parse().unwrap_or(c.ema_updates),
                _ => {}
            }
        }
        c.config = metadata;
        c.save(to).unwrap();
    } else {
        let mut params = template.clone();
        diffusion::training::checkpoint::load_weights(original, &mut params).unwrap();
        diffusion::training::checkpoint::save_weights(to, &params, &metadata).unwrap();
    }
}

#[test]
fn mutated_idx_and_cifar_headers_never_panic_or_overallocate() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("data");
    let mut rng = StdRng::seed_from_u64(3);
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5];
    images.extend((0..60u8).map(|i| i * 4));
    let mut cifar = Vec::new();
    for label in [3u8, 9] {
        cifar.push(label);
        cifar.extend((0..3072).map(|i| (i % 251) as u8));
    }
    let path = dir.join("mutant");
    // First a fixed case: 16 bytes claiming 60 images of 4096×4096 (1 GB, within the reader's bound).
    let claim = [&[0, 0, 8, 3][..], &60u32.to_be_bytes(), &4096u32.to_be_bytes(), &4096u32.to_be_bytes()].concat();
    std::fs::write(&path, &claim).unwrap();
    let (result, allocated) = measured(|| diffusion::data::idx::read_images(&path).map(|i| i.pixels.len()));
    assert!(result.unwrap_err().to_string().contains("is truncated"));
    assert!(allocated <= BOUND, "a 16-byte file made the reader allocate {allocated} bytes");
    for round in 0..400 {
        let (original, is_idx) = if round % 2 == 0 { (&images, true) } else { (&cifar, false) };
        let mut b = original.clone();
        // Headers mostly: the first 16 bytes (IDX's magic and sizes; CIFAR's first label and pixels).
        for _ in 0..rng.random_range(1..4) {
            let at = if rng.random_bool(0.8) { rng.random_range(0..16) } else { rng.random_range(0..b.len()) };
            b[at] = if rng.random_bool(0.5) { 0xff } else { rng.random() };
        }
        if rng.random_bool(0.3) {
            b.truncate(rng.random_range(0..b.len()));
        }
        let gzipped = rng.random_bool(0.3);
        if gzipped {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&b).unwrap();
            b = e.finish().unwrap();
        }
        std::fs::write(&path, &b).unwrap();
        let (result, allocated) = if is_idx {
            let (r, a) = measured(|| diffusion::data::idx::read_images(&path).map(|i| i.pixels.len()));
            (r, a)
        } else {
            measured(|| diffusion::data::cifar::read_cifar10(&path).map(|c| c.labels.len()))
        };
        assert!(allocated <= BOUND, "round {round}: reading allocated {allocated} bytes");
        if let Err(e) = result {
            assert!(e.to_string().starts_with(&path.display().to_string()), "{e}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
