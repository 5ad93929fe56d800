//! # 03 — Train a U-Net on handwritten digits (the main job)
//!
//! Trains the `small` U-Net (2.27 M parameters) on the 5,000 MNIST digits shipped in `data/mnist5k`, with
//! AdamW, warmup and cosine decay, gradient clipping and an EMA of the weights, then samples new digits
//! with the EMA weights. Writes into `--out` (default `out/03`): `loss.csv` (every step), a sample grid every
//! `--sample-every` steps and `samples.png` at the end, `denoising_strip.png` (four samples, x_t from
//! pure noise on the left to the digit on the right), and `model.safetensors` (the EMA weights).
//!
//! ```text
//! cargo run --release --example 03_train_mnist                  # about 20 minutes on 2 cores
//! cargo run --release --example 03_train_mnist -- --quick       # seconds, for CI
//! cargo run --release --example 03_train_mnist -- --images PATH --labels PATH   # any IDX pair
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use autograd::ParamStore;
use diffusion::checkpoint::save_weights;
use diffusion::cli::{exit_on_error, Args};
use diffusion::idx::{read_labeled, shipped_mnist_dir};
use diffusion::objective::{Prediction, Weighting};
use diffusion::plot::image_grid;
use diffusion::sampler::{sample_traced, Method, SamplerConfig, Spacing};
use diffusion::schedule::NoiseSchedule;
use diffusion::train::{train, TrainConfig};
use diffusion::unet::{UNet, UNetConfig};
use diffusion::{Error, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn main() {
    exit_on_error(run);
}

fn run() -> Result<()> {
    let mut args = Args::from_env()?;
    let quick = args.flag("quick", "a few steps on a few images, for CI")?;
    let data = shipped_mnist_dir();
    let default_images = data.join("images-idx3-ubyte.gz").display().to_string();
    let default_labels = data.join("labels-idx1-ubyte.gz").display().to_string();
    let images_path = PathBuf::from(args.value("images", default_images, "IDX images (gz or raw)")?);
    let labels_path = PathBuf::from(args.value("labels", default_labels, "IDX labels, checked against the images")?);
    let preset: String = args.value("preset", "small".to_string(), "U-Net preset: small, tiny, rgb32")?;
    let steps: usize = args.value("steps", if quick { 3 } else { 3000 }, "training steps")?;
    let batch: usize = args.value("batch", if quick { 4 } else { 32 }, "images per step")?;
    let lr: f32 = args.value("lr", 1e-3, "peak learning rate (AdamW)")?;
    let warmup: usize = args.value("warmup", if quick { 1 } else { 200 }, "warmup steps")?;
    let weight_decay: f32 = args.value("weight-decay", 0.0, "AdamW decoupled weight decay")?;
    let grad_clip: f32 = args.value("grad-clip", 1.0, "global gradient-norm bound (0: off)")?;
    let ema_decay: f32 = args.value("ema", 0.999, "EMA decay of the weights used for sampling")?;
    let timesteps: usize = args.value("timesteps", 1000, "diffusion steps T")?;
    let schedule_name: String =
        args.value("schedule", "linear".to_string(), "beta schedule: linear, cosine, sigmoid")?;
    let prediction_name: String = args.value("prediction", "epsilon".to_string(), "network target: epsilon, x0, v")?;
    let min_snr: f64 = args.value("min-snr", 0.0, "min-SNR-gamma loss weighting (0: uniform)")?;
    let sample_every: usize = args.value("sample-every", if quick { 0 } else { 500 }, "steps between sample grids")?;
    let grid: usize = args.value("grid", if quick { 4 } else { 64 }, "images in each sample grid")?;
    let sampler_steps: usize =
        args.value("sampler-steps", if quick { 3 } else { 20 }, "DPM-Solver++ steps for the grids")?;
    let seed: u64 = args.value("seed", 0, "random seed")?;
    let out = PathBuf::from(args.value("out", "out/03".to_string(), "output directory")?);
    args.finish()?;

    let usage = |what: &str, value: &str| Error::Usage(format!("--{what} {value:?}: unknown"));
    let net_config = UNetConfig::preset(&preset).ok_or_else(|| usage("preset", &preset))?;
    let prediction = Prediction::from_name(&prediction_name).ok_or_else(|| usage("prediction", &prediction_name))?;
    let schedule = match schedule_name.as_str() {
        "linear" => {
            NoiseSchedule::linear(timesteps, 1e-4 * 1000.0 / timesteps as f64, 0.02 * 1000.0 / timesteps as f64)
        }
        "cosine" => NoiseSchedule::cosine(timesteps),
        "sigmoid" => NoiseSchedule::sigmoid(timesteps, 1e-4, 0.02),
        other => return Err(usage("schedule", other)),
    };

    let data = read_labeled(&images_path, &labels_path)?;
    let mut images = data.images.to_tensor();
    if images.shape()[1..] != [net_config.image_channels, net_config.image_size, net_config.image_size] {
        return Err(Error::Usage(format!(
            "--preset {preset} expects {}×{}×{} images, {} holds {:?}",
            net_config.image_channels,
            net_config.image_size,
            net_config.image_size,
            images_path.display(),
            &images.shape()[1..]
        )));
    }
    if quick {
        let few = images.data()[..64 * 28 * 28].to_vec();
        images = autograd::Tensor::from_vec(&[64, 1, 28, 28], few);
    }

    let mut params = ParamStore::new();
    let model = UNet::new(net_config, &mut params, seed);
    println!(
        "U-Net '{preset}': {} parameters; {} images from {}; {steps} steps of batch {batch}",
        params.num_elements(),
        images.shape()[0],
        images_path.display()
    );
    let config = TrainConfig {
        steps,
        batch,
        lr,
        warmup,
        min_lr_ratio: 0.0,
        weight_decay,
        grad_clip,
        ema_decay,
        prediction,
        weighting: if min_snr > 0.0 { Weighting::MinSnr(min_snr) } else { Weighting::Uniform },
        seed,
        sample_every,
        grid_images: grid,
        grid_sampler: SamplerConfig { steps: sampler_steps, ..TrainConfig::default_grid_sampler() },
        out_dir: out.clone(),
    };
    let started = Instant::now();
    let (ema, report) = train(&model, &mut params, &schedule, &images, &config)?;
    // The EMA weights and what it takes to rebuild the model, for example 04 (and Python's safetensors).
    let weights = out.join("model.safetensors");
    let metadata = BTreeMap::from([
        ("format".to_string(), "scratch-diffusion weights 1".to_string()),
        ("preset".to_string(), preset.clone()),
        ("prediction".to_string(), prediction.name().to_string()),
        ("schedule".to_string(), schedule_name.clone()),
        ("timesteps".to_string(), timesteps.to_string()),
        ("steps_trained".to_string(), steps.to_string()),
    ]);
    save_weights(&weights, ema.params(), &metadata)?;
    println!(
        "trained in {:.1} min ({:.0} ms per step), final loss {:.4}; wrote {} and {}",
        started.elapsed().as_secs_f64() / 60.0,
        report.mean_step_ms,
        report.final_loss,
        out.join("loss.csv").display(),
        report.grid.display()
    );
    println!("wrote {} (EMA weights; sample from them with example 04)", weights.display());

    // The denoising strip: four samples, DDIM with 50 steps, x_t every 5 steps, then the result.
    let strip_sampler = SamplerConfig {
        method: Method::Ddim { eta: 0.0 },
        steps: if quick { 5 } else { 50 },
        spacing: Spacing::Linspace,
        clip_x0: Some(1.0),
    };
    let mut frames = Vec::new();
    let mut rng = StdRng::seed_from_u64(seed + 1);
    let mut k = 0;
    let last = sample_traced(
        &model,
        ema.params(),
        &schedule,
        prediction,
        &strip_sampler,
        &[4, 1, 28, 28],
        &mut rng,
        |_, x| {
            if k % 5 == 0 {
                frames.push(x.clone());
            }
            k += 1;
        },
    );
    frames.push(last);
    // Arrange as rows = samples, columns = time.
    let (cols, pixels) = (frames.len(), 28 * 28);
    let mut strip = Vec::with_capacity(4 * cols * pixels);
    for s in 0..4 {
        for f in &frames {
            strip.extend_from_slice(&f.data()[s * pixels..(s + 1) * pixels]);
        }
    }
    let strip = autograd::Tensor::from_vec(&[4 * cols, 1, 28, 28], strip);
    let path = out.join("denoising_strip.png");
    image_grid(&strip, cols, 2).write_png(&path)?;
    println!("wrote {} (rows: samples; columns: x_t from noise to digit)", path.display());
    Ok(())
}
