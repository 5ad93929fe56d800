//! # 11 — Moving to PyTorch: the model as a diffusers pipeline folder, and back
//!
//! Writes a model of the `diffusers-mnist` preset (diffusers' `UNet2DModel`, layer for layer) as the folder
//! `DDPMPipeline.from_pretrained` opens: `model_index.json`, `unet/config.json`, the weights under
//! diffusers' names in `unet/diffusion_pytorch_model.safetensors`, and the run's schedule as
//! `scheduler/scheduler_config.json`. Beside it, `probe.safetensors` holds four noisy inputs and this
//! model's output on them, for the Python check to compare with. Then reads the folder back, as examples 04
//! to 10 do when `--checkpoint` is a folder (a pipeline trained with diffusers reads the same way), and
//! checks that it is the same model. The mapping is in `diffusion/src/training/checkpoint/diffusers/`.
//!
//! ```text
//! cargo run --release --example 03_train_mnist -- --preset diffusers-mnist --objective diffusion --out out/03d
//! cargo run --release --example 11_diffusers -- --checkpoint out/03d/model.safetensors
//! python diffusion/tests/reference/diffusers/parity.py check out/11/mnist-ddpm out/11/probe.safetensors
//! cargo run --release --example 04_sample -- --checkpoint out/11/mnist-ddpm      # sampled here again
//! cargo run --release --example 11_diffusers -- --quick                          # untrained, for CI
//! ```

use std::collections::BTreeMap;

use autograd::{ParamStore, Tape, Tensor};
use diffusion::cli::{self, exit_on_error, Common, Parser};
use diffusion::model::unet::UNetConfig;

use diffusion::training::checkpoint::{save_weights, Trained};
use diffusion::{Error, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn main() {
    exit_on_error(run);
}

/// The model's output on `x` at `t` (and `labels`).
fn output(trained: &Trained, x: &Tensor, t: &[f32], labels: Option<&[usize]>) -> Tensor {
    let mut tape = Tape::new();
    let x = tape.constant(x.clone());
    trained.model.forward(&mut tape, &trained.params, &x, t, labels, None).value().clone()
}

fn run() -> Result<()> {
    let flags: Flags = cli::parse()?;
    let c = &flags.common;
    let (quick, seed, out) = (c.quick, c.seed, c.out("11"));
    let trained = if quick {
        println!("an untrained 'diffusers-mnist' U-Net (random weights): the folder is real, the model is noise");
        Trained::untrained(UNetConfig::diffusers_mnist(), 100, seed)
    } else {
        Trained::load(&flags.checkpoint)?
    };
    let folder = out.join("mnist-ddpm");
    trained.export_diffusers(&folder)?;
    println!(
        "wrote {} ({} parameters, {} prediction, T = {})",
        folder.display(),
        trained.params.num_elements(),
        trained.prediction.name(),
        trained.schedule.steps()
    );

    // Four noisy inputs at four timesteps (and classes), and the model's output on them.
    let config = &trained.model.config;
    let x = Tensor::randn(
        &[4, config.image_channels, config.image_size, config.image_size],
        &mut StdRng::seed_from_u64(seed),
    );
    let last = trained.schedule.steps() - 1;
    let t: Vec<f32> = [0, last / 3, 2 * last / 3, last].iter().map(|&s| s as f32).collect();
    let labels: Option<Vec<usize>> = (config.num_classes > 0).then(|| (0..4).map(|i| i % config.num_classes).collect());
    let y = output(&trained, &x, &t, labels.as_deref());
    let mut probe = ParamStore::new();
    probe.add("x", x.clone());
    probe.add("t", Tensor::from_vec(&[4], t.clone()));
    probe.add("out", y.clone());
    if let Some(labels) = &labels {
        probe.add("labels", Tensor::from_vec(&[4], labels.iter().map(|&l| l as f32).collect()));
    }
    let probe_path = out.join("probe.safetensors");
    save_weights(&probe_path, &probe, &BTreeMap::new())?;
    println!(
        "wrote {} (inputs x, t{} and this model's output)",
        probe_path.display(),
        if labels.is_some() { ", labels" } else { "" }
    );

    // Read back as any example reads a folder: the same model, the same output.
    let back = Trained::load(&folder)?;
    let same_weights = back.params.iter().zip(trained.params.iter()).all(|((_, _, a), (_, _, b))| a.data() == b.data());
    let again = output(&back, &x, &t, labels.as_deref());
    if back.model.config != *config || !same_weights || again.data() != y.data() {
        return Err(Error::format(&folder, "reads back as a different model"));
    }
    println!("read back: the same config, weights and output, bit for bit");
    println!("\nnext:");
    println!(
        "  python diffusion/tests/reference/diffusers/parity.py check {} {}    # diffusers opens it (see the README)",
        folder.display(),
        probe_path.display()
    );
    println!("  cargo run --release --example 04_sample -- --checkpoint {}    # sampled here", folder.display());
    Ok(())
}

/// Write a model as a diffusers pipeline folder, and read it back.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    common: Common,
    /// Weights or a checkpoint of a `diffusers-mnist` diffusion model (03 --preset diffusers-mnist --objective diffusion)
    #[arg(long, default_value = "out/03d/model.safetensors")]
    checkpoint: std::path::PathBuf,
}
